"""Onboarding and client authentication under attack (RFC 9700): hostile
local servers of the suite's own against connect, device, remove
--revoke and private_key_jwt. Each test fails before its fix."""

import json
import os
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import CLIENT_ID
from test_onboard import onboard_config
from test_refresh import ctl, setup_store


class Hostile:
    """An HTTP server on 127.0.0.1 whose POST handler is @handle(form)
    -> (status, JSON body); every form it got is kept in .forms."""

    def __init__(self, handle):
        self.forms = []
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(
                    self.rfile.read(n).decode()))
                outer.forms.append(form)
                status, body = handle(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)
        self.thread.start()
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def hostile():
    made = []

    def make(handle):
        h = Hostile(handle)
        made.append(h)
        return h
    yield make
    for h in made:
        h.stop()


def post(url, form):
    req = urllib.request.Request(
        url, data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def jwt_key(tmp_path, provider, client_id):
    key = tmp_path / "client.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(key)],
                   check=True, capture_output=True, timeout=30)
    os.chmod(key, 0o600)
    provider.jwt_keys[client_id] = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout"], check=True,
        capture_output=True, text=True, timeout=30).stdout
    return str(key)


def test_a_revocation_endpoint_cannot_replay_the_client_assertion(
        mount, provider, tmp_path, hostile):
    """The assertion sent to the revocation endpoint names that endpoint:
    replayed at the token endpoint, it gets nothing."""
    replays = []

    def replay(form):
        replays.append(post(provider.url + "/token", {
            "grant_type": "client_credentials",
            "client_id": form.get("client_id", ""),
            "client_assertion_type": form.get("client_assertion_type", ""),
            "client_assertion": form.get("client_assertion", "")}))
        return 200, {}

    evil = hostile(replay)
    m = mount()
    cfg = onboard_config(m, tmp_path / "store", auth_method="private_key_jwt",
                         private_key_file=jwt_key(tmp_path, provider,
                                                  CLIENT_ID))
    del cfg["providers"]["idp"]["client_secret_file"]
    cfg["providers"]["idp"]["revocation_url"] = evil.url + "/revoke"
    setup_store(m, cfg)
    rt = provider.mint_refresh_token(CLIENT_ID, "read")
    assert ctl(m, "add", "acme", "idp", input=rt).returncode == 0
    r = ctl(m, "remove", "acme", "idp", "--revoke")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(evil.forms) == 1  # the refresh token (no access token yet)
    claims = json.loads(__import__("base64").urlsafe_b64decode(
        evil.forms[0]["client_assertion"].split(".")[1] + "=="))
    assert claims["aud"] == evil.url + "/revoke"
    assert [s for s, _ in replays] == [401], replays
    assert not [t for t, rec in provider.tokens.items()
                if rec["client_id"] == CLIENT_ID and rec["family"] is None]
