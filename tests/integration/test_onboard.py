"""Onboarding and revocation: credfsctl connect (authorization code with
PKCE through a loopback redirect) and device (RFC 8628), remove --revoke
(RFC 7009), introspection noticing a revoked grant (RFC 7662), and
private_key_jwt client authentication (RFC 7523). The test plays the
browser with plain HTTP requests."""

import errno
import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest

from harness import CLIENT_ID, CREDFSCTL, open_errno, wait_for
from test_refresh import OUTPUTS, ctl, no_secrets_in_outputs, setup_store


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kw):
        return None


BROWSER = urllib.request.build_opener(NoRedirect)


def browse(url):
    """GET @url as a browser would, without following redirects:
    (status, Location or body)."""
    try:
        r = BROWSER.open(url, timeout=10)
        return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location") or e.read().decode()


def onboard_config(m, store, **kw):
    url = m.provider.url
    prov = m.provider_conf(
        grant="refresh_token", authorization_url=url + "/authorize",
        device_authorization_url=url + "/device_authorization",
        revocation_url=url + "/revoke",
        authorization_params={"access_type": "offline"},
        authorization_scopes=["offline_access"],
        device_min_interval_s=1,  # the fake's 1 s interval, not RFC's 5
        **kw)
    return {
        "providers": {"idp": prov},
        "tenants": {"acme": {"credentials": {"idp": {"scopes": [
            "read", "write"]}}}},
        "store": {"dir": str(store), "key_file": str(m.tmp / "master.key")},
    }


def finish(proc, first, timeout):
    """Wait for a credfsctl started with Popen (bounded; killed if need
    be) and read the rest of its output through the same buffered pipes
    readline() used. (returncode, stdout, stderr)."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = first + proc.stdout.read()
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    OUTPUTS.append(out + err)
    return proc.returncode, out, err


class Connect:
    """credfsctl connect running in the background."""

    def __init__(self, m, *extra):
        self.proc = subprocess.Popen(
            [CREDFSCTL, "connect", "acme", "idp", "--config", m.config_path,
             "--timeout", "20"] + list(extra),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        q = urllib.parse.urlsplit(self.url).query
        self.params = dict(urllib.parse.parse_qsl(q))

    def finish(self):
        return finish(self.proc, "", 30)


@pytest.fixture
def onboard(mount, provider, tmp_path):
    # No issuer: credfs listens on a path of the provider's own.
    provider.redirect_uris[CLIENT_ID] = ["http://127.0.0.1/callback/idp"]
    m = mount()
    setup_store(m, onboard_config(m, tmp_path / "store"))
    m.start()
    return m


def test_connect_stores_and_serves(onboard, provider):
    m = onboard
    c = Connect(m)
    p = c.params
    # What is asked: S256 PKCE, a random state, exactly the scopes plus
    # what a refresh token needs.
    assert c.url.startswith(provider.url + "/authorize?")
    assert p["response_type"] == "code" and p["client_id"] == CLIENT_ID
    assert p["code_challenge_method"] == "S256"
    assert len(p["code_challenge"]) == 43 and len(p["state"]) >= 22
    assert p["scope"].split() == ["read", "write", "offline_access"]
    assert p["access_type"] == "offline"
    assert p["redirect_uri"].startswith("http://127.0.0.1:")
    assert p["redirect_uri"].endswith("/callback/idp")
    status, location = browse(c.url)
    assert status == 302 and location.startswith(p["redirect_uri"])
    status, page = browse(location)
    assert status == 200 and "authorization received" in page
    rc, out, err = c.finish()
    assert rc == 0, err
    assert "stored acme/idp" in out and "acme/idp: valid" in out
    tok = m.token("acme", "idp")
    assert provider.issued(tok)["active"]
    assert m.status("acme", "idp")["grant"] == "refresh_token"
    # Replaying the code is refused by the provider, which then revokes
    # what it issued for it.
    code = dict(urllib.parse.parse_qsl(
        urllib.parse.urlsplit(location).query))["code"]
    status, body = token_post(provider, grant_type="authorization_code",
                              code=code, redirect_uri=p["redirect_uri"],
                              code_verifier="x" * 43)
    assert status == 400 and body["error_description"] == \
        "code already used"
    no_secrets_in_outputs(provider, m)


def token_post(provider, **form):
    """POST to the fake's token endpoint as our client: (status, JSON)."""
    import base64
    data = urllib.parse.urlencode(form).encode()
    req = urllib.request.Request(provider.url + "/token", data=data)
    req.add_header("Authorization", "Basic " + base64.b64encode(
        ("%s:%s" % (CLIENT_ID, "s3cret-client")).encode()).decode())
    try:
        r = urllib.request.urlopen(req, timeout=10)
        return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_connect_refusals(onboard, provider):
    m = onboard
    # A callback whose state differs, with a code or with an error, is
    # answered and ignored: any local process or web page that knows the
    # port could send one, and it must not end the pending connect.
    c = Connect(m)
    status, location = browse(c.url)
    forged = location.replace("state=", "state=x")
    status, page = browse(forged)
    assert status == 400 and "State mismatch" in page
    status, page = browse("%s?state=x&error=access_denied"
                          "&error_description=haha" %
                          c.params["redirect_uri"])
    assert status == 400 and "State mismatch" in page
    assert c.proc.poll() is None, "a forged callback ended the connect"
    # The user says no at the provider: with the right state, that ends
    # it, and only then is the provider's text shown.
    status, location = browse(c.url + "&_action=deny")
    assert "error=access_denied" in location
    status, page = browse(location)
    assert status == 400
    rc, out, err = c.finish()
    assert rc == 1 and "error=access_denied: the user said no" in err
    assert err.count("ignored a callback whose state does not match") == 2
    assert "haha" not in err
    # A callback without a code.
    c = Connect(m)
    status, page = browse("%s?state=%s" % (c.params["redirect_uri"],
                                           c.params["state"]))
    rc, out, err = c.finish()
    assert rc == 1 and "no authorization code" in err
    # A code from another authorization (another PKCE challenge) slipped
    # into this callback: the provider refuses the verifier.
    c = Connect(m)
    other = c.url.replace(c.params["code_challenge"], "A" * 43)
    status, location = browse(other)
    assert status == 302
    status, page = browse(location)  # same state: passes the listener
    rc, out, err = c.finish()
    assert rc == 1 and "PKCE verifier mismatch" in err
    assert "nothing was stored" in err
    assert sorted(os.listdir(m.path("tenants", "acme"))) == []


def test_connect_refuses_a_second_callback(onboard, provider):
    m = onboard
    c = Connect(m)
    status, location = browse(c.url)
    provider.inject("delay", seconds=1.5)  # the exchange takes a while
    status, page = browse(location)
    assert status == 200
    status, page = browse(location)  # again, during the exchange
    assert status == 400 and "already completed" in page
    rc, out, err = c.finish()
    assert rc == 0, err


def test_connect_public_client_with_a_fixed_redirect_uri(
        mount, provider, tmp_path):
    provider.public_clients.add("public-app")
    uri = "http://127.0.0.1:%d/cb" % free_port()
    provider.redirect_uris["public-app"] = [uri]
    m = mount()
    c = onboard_config(m, tmp_path / "store", redirect_uri=uri,
                       auth_method="none", client_id="public-app")
    del c["providers"]["idp"]["client_secret_file"]
    setup_store(m, c)
    m.start()
    con = Connect(m)
    assert con.params["redirect_uri"] == uri
    status, location = browse(con.url)
    status, page = browse(location)
    assert status == 200
    rc, out, err = con.finish()
    assert rc == 0, err
    assert provider.issued(m.token("acme", "idp"))


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Device:
    def __init__(self, m):
        self.proc = subprocess.Popen(
            [CREDFSCTL, "device", "acme", "idp", "--config", m.config_path,
             "--timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.first = self.proc.stdout.readline()
        self.user_code = self.first.strip().rsplit(" ", 1)[1]

    def finish(self):
        return finish(self.proc, self.first, 60)


def device_record(provider, user_code):
    with provider.lock:
        return next(d for d in provider.devices.values()
                    if d["user_code"] == user_code)


def test_device_flow(onboard, provider):
    m = onboard
    d = Device(m)
    assert "open %s/device and enter the code: " % provider.url in d.first
    # Pending for a few polls, honouring the 1 s interval.
    wait_for(lambda: device_record(provider, d.user_code)["polls"] >= 2, 10,
             what="polls while pending")
    assert provider.device_decide(d.user_code)
    rc, out, err = d.finish()
    assert rc == 0, err
    assert "Or open: %s/device?user_code=%s" % (provider.url,
                                                  d.user_code) in out
    assert "acme/idp: valid" in out
    assert device_record(provider, d.user_code)["slow_downs"] == 0
    assert provider.issued(m.token("acme", "idp"))
    no_secrets_in_outputs(provider, m)


def test_device_flow_slow_down_denial_and_expiry(onboard, provider):
    m = onboard
    provider.device_slow_down_first = True
    d = Device(m)
    wait_for(lambda: device_record(provider, d.user_code)["polls"] >= 2, 15,
             what="the poll after slow_down")
    times = device_record(provider, d.user_code)["poll_times"]
    assert times[1] - times[0] >= 5.9  # interval + 5 s (RFC 8628 3.5)
    provider.device_decide(d.user_code, approve=False)
    rc, out, err = d.finish()
    assert rc == 1 and "the user denied the authorization" in err
    provider.device_slow_down_first = False
    provider.device_lifetime = 2
    d = Device(m)
    rc, out, err = d.finish()
    assert rc == 1 and "the device code expired (after its 2 s) before " \
        "it was approved" in err
    assert not os.path.exists(m.path("tenants", "acme", "idp"))


def test_remove_revoke(onboard, provider):
    m = onboard
    rt = provider.mint_refresh_token(CLIENT_ID, "read write")
    assert ctl(m, "add", "acme", "idp", input=rt).returncode == 0
    m.token("acme", "idp")
    # The provider cannot be reached: nothing deleted without --force.
    c = json.load(open(m.config_path))
    good = c["providers"]["idp"]["revocation_url"]
    c["providers"]["idp"]["revocation_url"] = \
        "http://127.0.0.1:%d/revoke" % free_port()
    m.write_config(c)
    r = ctl(m, "remove", "acme", "idp", "--revoke")
    assert r.returncode == 1 and "nothing deleted" in r.stderr
    assert "no answer from the provider" in r.stdout
    assert os.path.exists(m.path("tenants", "acme", "idp"))
    c["providers"]["idp"]["revocation_url"] = good
    m.write_config(c)
    family = provider.family_of(rt)
    r = ctl(m, "remove", "acme", "idp", "--revoke")
    assert r.returncode == 0, r.stderr
    assert "refresh_token revoked (HTTP 200)" in r.stdout
    assert "access_token revoked (HTTP 200)" in r.stdout
    assert [k for k, _ in provider.revocations] == ["refresh_token",
                                                    "access_token"]
    assert not os.path.exists(m.path("tenants", "acme", "idp"))
    # The provider now refuses that refresh token.
    status, body = token_post(provider, grant_type="refresh_token",
                              refresh_token=rt)
    assert status == 400 and body["error"] == "invalid_grant"
    assert family in provider.revoked_families
    # --force deletes even when the provider cannot be asked.
    assert ctl(m, "add", "acme", "idp", input=provider.mint_refresh_token(
        CLIENT_ID, "read")).returncode == 0
    c["providers"]["idp"]["revocation_url"] = \
        "http://127.0.0.1:%d/revoke" % free_port()
    m.write_config(c)
    r = ctl(m, "remove", "acme", "idp", "--revoke", "--force")
    assert r.returncode == 0 and "deleting it anyway" in r.stderr
    assert not os.path.exists(m.path("tenants", "acme", "idp"))


def test_introspection_notices_revocation(mount, provider, tmp_path):
    m = mount()
    c = onboard_config(m, tmp_path / "store",
                       introspection_url=provider.url + "/introspect",
                       introspection_interval_s=1)
    c["tenants"]["beta"] = {"credentials": {"idp": {"scopes": ["read"]}}}
    setup_store(m, c)
    m.start()
    rt = provider.mint_refresh_token(CLIENT_ID, "read")
    assert ctl(m, "add", "acme", "idp", input=rt).returncode == 0
    assert ctl(m, "add", "beta", "idp", input=provider.mint_refresh_token(
        CLIENT_ID, "read")).returncode == 0
    # The introspection endpoint failing never revokes anything.
    provider.introspect_status = 503
    wait_for(lambda: m.log().count("introspection failed") >= 2, 15,
             what="two failed introspections")
    assert m.status("acme", "idp")["state"] in ("valid", "refreshing")
    provider.introspect_status = 200
    # Revoked at the provider, with nobody reading: noticed within about
    # one interval, though the token has an hour left.
    provider.revoke_family(provider.family_of(rt))
    # The next introspection, one interval on (bounded generously: the
    # event, not the machine's speed, is what is tested).
    wait_for(lambda: m.status("acme", "idp")["state"] == "revoked", 15,
             what="revoked")
    st = m.status("acme", "idp")
    assert st["last_error"].startswith("introspection: token not active")
    assert open_errno(m.path("tenants", "acme", "idp", "access_token")) \
        == errno.EKEYREVOKED
    # The audit line follows the event by up to 5 ms (src/audit.c).
    wait_for(lambda: '"event":"revoked"' in m.log(), 10,
             what="the revoked audit line")
    assert m.status("beta", "idp")["state"] == "valid"
    # Only a new refresh token brings it back.
    assert ctl(m, "add", "acme", "idp", input=provider.mint_refresh_token(
        CLIENT_ID, "read")).returncode == 0
    assert provider.issued(m.token("acme", "idp"))["active"]


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_private_key_jwt(mount, provider, tmp_path, kind):
    key = tmp_path / ("%s.pem" % kind)
    gen = ["openssl", "genpkey", "-out", str(key)] + (
        ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
        if kind == "rsa" else
        ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"])
    subprocess.run(gen, check=True, capture_output=True, timeout=30)
    os.chmod(key, 0o600)
    pub = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"],
                         check=True, capture_output=True, text=True,
                         timeout=30).stdout
    provider.jwt_keys["jwt-app"] = pub

    def config(m):
        return {"providers": {"idp": {
            "token_url": provider.url + "/token", "client_id": "jwt-app",
            "auth_method": "private_key_jwt",
            "private_key_file": str(key), "key_id": "k1"}},
            "tenants": {"acme": {"credentials": {"idp": {
                "scopes": ["read"]}}}}}
    m = mount(config)
    assert provider.issued(m.token("acme", "idp"))
    assert len(provider.jwt_seen) == 1
    # Another key: the provider refuses the client.
    provider.jwt_keys["jwt-app"] = subprocess.run(
        ["openssl", "pkey", "-pubout"], input=subprocess.run(
            gen[:2] + gen[4:] + ["-out", "/dev/stdout"], check=True,
            capture_output=True, text=True, timeout=30).stdout,
        check=True, capture_output=True, text=True, timeout=30).stdout
    m2 = mount(config, name="m2")
    assert m2.status("acme", "idp")["state"] == "client_error"


def test_rfc9700_guardrails_refuse_at_load(mount, provider, tmp_path):
    m = mount()
    for grant, rfc in (("implicit", "2.1.2"), ("password", "2.4")):
        c = {"providers": {"idp": m.provider_conf(grant=grant)},
             "tenants": {}}
        m.write_config(c)
        r = subprocess.run([CREDFSCTL, "check", "--config", m.config_path],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 1
        assert "providers.idp.grant: \"%s\" is forbidden by RFC 9700 " \
            "(section %s" % (grant, rfc) in r.stderr
    c = {"providers": {"idp": m.provider_conf(
        redirect_uri="http://127.0.0.1:*/cb")}, "tenants": {}}
    m.write_config(c)
    r = subprocess.run([CREDFSCTL, "check", "--config", m.config_path],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "no wildcards" in r.stderr
