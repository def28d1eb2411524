"""Onboarding and client authentication under attack (RFC 9700): hostile
local servers of the suite's own against connect, device, remove
--revoke and private_key_jwt. Each test fails before its fix."""

import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fake_provider import FakeProvider
from harness import CLIENT_ID, CLIENT_SECRET, CREDFSCTL, wait_for
from test_onboard import browse, finish, onboard_config
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


class Connect:
    """credfsctl connect TENANT PROVIDER in the background."""

    def __init__(self, m, provider_name, timeout=20):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [CREDFSCTL, "connect", "acme", provider_name, "--config",
             m.config_path, "--timeout", str(timeout)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        q = urllib.parse.urlsplit(self.url).query
        self.params = dict(urllib.parse.parse_qsl(q))

    def finish(self, timeout=30):
        return finish(self.proc, "", timeout)


def two_providers(m, store, evil):
    """honest (the suite's provider) and evil, each known by its issuer."""
    def conf(p):
        return m.provider_conf(grant="refresh_token", issuer=p.url)
    return {"providers": {"honest": conf(m.provider), "evil": conf(evil)},
            "tenants": {"acme": {"credentials": {
                "honest": {"scopes": ["read"]},
                "evil": {"scopes": ["read"]}}}},
            "store": {"dir": str(store),
                      "key_file": str(m.tmp / "master.key")}}


@pytest.fixture
def evil():
    p = FakeProvider(clients={CLIENT_ID: CLIENT_SECRET}).start()
    p.redirect_uris[CLIENT_ID] = ["http://127.0.0.1/callback"]
    yield p
    p.stop()


def test_mix_up_attack_is_refused_by_iss(mount, provider, evil, tmp_path):
    """RFC 9700 4.4: connect is started for the attacker's provider,
    which sends the browser on to the honest one with the same request.
    The callback comes back with the honest iss: refused, naming the
    mismatch; the code goes to no token endpoint; nothing is stored."""
    provider.redirect_uris[CLIENT_ID] = ["http://127.0.0.1/callback"]
    m = mount()
    setup_store(m, two_providers(m, tmp_path / "store", evil))
    c = Connect(m, "evil")
    assert c.url.startswith(evil.url + "/authorize?")
    # The attacker's authorization endpoint forwards the request.
    status, location = browse(provider.url + "/authorize?" +
                              urllib.parse.urlsplit(c.url).query)
    assert status == 302 and "iss=" in location
    status, page = browse(location)
    assert status == 400 and "Issuer mismatch" in page
    rc, out, err = c.finish()
    assert rc == 1
    assert ("the callback's iss %s is not this provider's issuer %s: a "
            "mix-up attack" % (provider.url, evil.url)) in err, err
    assert evil.arrivals == 0 and provider.arrivals == 0, "code sent"
    assert not os.path.exists(tmp_path / "store" / "acme")

    # A provider whose metadata promises iss: a callback without it is
    # refused the same way.
    c = Connect(m, "honest")
    status, location = browse(c.url)
    stripped = re.sub(r"&?iss=[^&]*", "", location)
    status, page = browse(stripped)
    assert status == 400
    rc, out, err = c.finish()
    assert rc == 1 and "the callback has no iss" in err, err
    assert provider.arrivals == 0

    # The honest flow itself goes through.
    c = Connect(m, "honest")
    status, location = browse(c.url)
    status, page = browse(location)
    assert status == 200, page
    rc, out, err = c.finish()
    assert rc == 0, err
    assert "stored acme/honest" in out


def test_providers_without_issuer_need_their_own_redirect_uri(mount):
    m = mount()
    uri = "http://127.0.0.1:8765/cb"
    m.write_config({"providers": {
        "a": m.provider_conf(authorization_url=m.provider.url + "/a",
                             redirect_uri=uri),
        "b": m.provider_conf(authorization_url=m.provider.url + "/b",
                             redirect_uri=uri)},
        "tenants": {}})
    r = ctl(m, "check")
    assert r.returncode == 1
    assert "providers.a.redirect_uri: the same as providers.b's: a " \
        "provider without an issuer needs a redirect URI of its own" \
        in r.stderr, r.stderr


def test_a_slow_sender_stalls_neither_the_callback_nor_the_timeout(
        mount, provider, tmp_path):
    """One byte every second on one connection (and on fifteen more)
    holds none of the others: the real callback is answered at once, and
    --timeout ends the wait on time."""
    provider.redirect_uris[CLIENT_ID] = ["http://127.0.0.1/callback/idp"]
    m = mount()
    setup_store(m, onboard_config(m, tmp_path / "store"))
    stop = threading.Event()

    def slowloris(port):
        try:
            with socket.create_connection(("127.0.0.1", port)) as s:
                for ch in "GET /callback/idp?state=x HTTP/1.0\r\n":
                    if stop.wait(1):
                        return
                    s.send(ch.encode())
        except OSError:
            pass

    c = Connect(m, "idp")
    port = urllib.parse.urlsplit(c.params["redirect_uri"]).port
    slow = [threading.Thread(target=slowloris, args=(port,))
            for _ in range(16)]
    for t in slow:
        t.start()
    try:
        time.sleep(1.5)  # every connection slot held by a slow sender
        status, location = browse(c.url)
        t0 = time.monotonic()
        status, page = browse(location)
        took = time.monotonic() - t0
        assert status == 200, page
        rc, out, err = c.finish()
        assert rc == 0, err
        assert took < 3, "the callback waited %.1fs" % took

        c = Connect(m, "idp", timeout=3)
        port = urllib.parse.urlsplit(c.params["redirect_uri"]).port
        more = [threading.Thread(target=slowloris, args=(port,))
                for _ in range(4)]
        for t in more:
            t.start()
        slow += more
        rc, out, err = c.finish(timeout=15)
        assert rc == 1 and "no callback within 3 s" in err, err
        assert time.monotonic() - c.t0 < 6
    finally:
        stop.set()
        for t in slow:
            t.join(10)


def test_outside_strings_are_escaped_in_messages(mount, provider):
    """A discovery document's token_endpoint with terminal escapes and a
    newline (a forged log line) is shown escaped, on one line."""
    provider.discovery_extra = {
        "token_endpoint": "\x1b[2J\nerror: credfs: all tokens revoked"}
    m = mount()
    m.write_config({"providers": {"idp": m.provider_conf(
        issuer=provider.url, token_url=None)}, "tenants": {}})
    c = json.load(open(m.config_path))
    del c["providers"]["idp"]["token_url"]
    m.write_config(c)
    r = ctl(m, "check")
    assert r.returncode == 1
    assert "\x1b" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "\\x1b[2J\\x0aerror: credfs" in r.stderr, r.stderr
    r = m.start(check=False, timeout=10)
    assert r.returncode != 0
    assert "\x1b" not in m.log() and "\\x1b[2J" in m.log()
    assert not [x for x in m.log().splitlines()
                if x.startswith("error: credfs")]


def test_remove_revoke_deletes_nothing_unless_every_revocation_confirmed(
        mount, provider, tmp_path, hostile):
    half = hostile(lambda form: (200, {}) if form.get(
        "token_type_hint") == "refresh_token" else (500, {}))
    m = mount()
    cfg = onboard_config(m, tmp_path / "store")
    cfg["providers"]["idp"]["revocation_url"] = half.url + "/revoke"
    setup_store(m, cfg)
    answer = json.dumps({"refresh_token": "rt-123", "access_token": "at-456",
                         "expires_in": 3600, "token_type": "Bearer"})
    assert ctl(m, "add", "acme", "idp", input=answer).returncode == 0
    r = ctl(m, "remove", "acme", "idp", "--revoke")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "acme/idp: refresh_token revoked (HTTP 200)" in r.stdout
    assert "acme/idp: access_token: the provider answered HTTP 500" in \
        r.stdout
    assert "nothing deleted" in r.stderr
    assert os.path.exists(tmp_path / "store" / "acme" / "idp.rec")
    r = ctl(m, "remove", "acme", "idp", "--revoke", "--force")
    assert r.returncode == 0 and "deleting it anyway" in r.stderr
    assert not os.path.exists(tmp_path / "store" / "acme" / "idp.rec")


def test_weak_or_foreign_private_keys_are_refused(mount, provider, tmp_path):
    m = mount()

    def check(key):
        m.write_config({"providers": {"idp": {
            "token_url": provider.url + "/token", "client_id": "jwt-app",
            "auth_method": "private_key_jwt", "private_key_file": key}},
            "tenants": {}})
        return ctl(m, "check")

    weak = tmp_path / "weak.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:1024", "-out", str(weak)], check=True,
                   capture_output=True, timeout=30)
    os.chmod(weak, 0o600)
    r = check(str(weak))
    assert r.returncode == 1
    assert "is a 1024-bit RSA key; RS256 needs at least 2048 bits" in \
        r.stderr, r.stderr
    foreign = jwt_key(tmp_path, provider, "jwt-app")
    assert check(foreign).returncode == 0
    os.chown(foreign, 65534, 65534)  # nobody's, still 0600
    r = check(foreign)
    assert r.returncode == 1
    assert "owned by another user, who could replace it" in r.stderr, \
        r.stderr


class Device:
    def __init__(self, m, timeout=30):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [CREDFSCTL, "device", "acme", "idp", "--config", m.config_path,
             "--timeout", str(timeout)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def finish(self, timeout=60):
        return finish(self.proc, "", timeout)


def device_setup(mount, provider, tmp_path, **kw):
    m = mount()
    cfg = onboard_config(m, tmp_path / "store", **kw)
    setup_store(m, cfg)
    return m, cfg


def test_device_flow_under_a_hostile_provider(mount, provider, tmp_path):
    # interval 0 is polled at RFC 8628's 5 s, not thousands of times; a
    # --timeout that ends the wait says so.
    m, cfg = device_setup(mount, provider, tmp_path)
    del cfg["providers"]["idp"]["device_min_interval_s"]  # the default 5
    m.write_config(cfg)
    provider.device_interval = 0
    rc, out, err = Device(m, timeout=3).finish()
    assert rc == 1
    assert "--timeout (3 s) ended the wait before the code was approved" \
        in err, err
    polls = [r for r in provider.token_requests()
             if r[2].endswith("device_code")]
    assert len(polls) <= 1, "%d polls" % len(polls)

    # A verification page off the authorization server: http refused,
    # another host warned about by name.
    provider.device_interval = 1
    cfg["providers"]["idp"]["device_min_interval_s"] = 1
    m.write_config(cfg)
    provider.verification_uri = "http://phish.example/device"
    rc, out, err = Device(m).finish()
    assert rc == 1 and "http://phish.example/device, which is not an " \
        "https:// URL; refused" in err, err
    assert "enter the code" not in out
    provider.verification_uri = "https://phish.example/device"
    d = Device(m, timeout=3)
    rc, out, err = d.finish()
    assert "warning: the verification page is on phish.example, not on " \
        "the authorization server 127.0.0.1" in out, out

    # One 503 while polling is asked again, and the flow completes.
    provider.verification_uri = None
    d = Device(m)
    user_code = d.proc.stdout.readline().strip().rsplit(" ", 1)[1]
    provider.inject("status", count=1, status=503)
    wait_for(lambda: provider.stats()["faults_queued"] == 0, 10,
             what="the 503 to be taken")
    provider.device_decide(user_code)
    rc, out, err = d.finish()
    assert rc == 0, err
    assert "the token endpoint failed" in out


def test_a_stalled_control_client_holds_no_other(mount, provider, tmp_path):
    """A client that connects to the control socket and says nothing (or
    one byte at a time) holds only itself: status answers at once beside
    it, and the stalled one is dropped after its deadline."""
    from test_refresh import add, rt_config
    m = mount()
    store = tmp_path / "store"
    setup_store(m, rt_config(m, store))
    add(m, provider, "acme")
    m.start()
    sock = str(store / "control.sock")
    stalled = []
    try:
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            s.send(b"sta")  # and nothing more
            stalled.append(s)
        t0 = time.monotonic()
        r = ctl(m, "status")
        took = time.monotonic() - t0
        assert r.returncode == 0, r.stderr
        assert "acme" in r.stdout
        assert took < 1.5, "status took %.1fs beside stalled clients" % took
        # Each stalled one is closed after its request deadline.
        stalled[0].settimeout(10)
        t0 = time.monotonic()
        assert stalled[0].recv(100) == b""
        assert time.monotonic() - t0 < 5
    finally:
        for s in stalled:
            s.close()
    m.stop()
    m.check_log_clean()
