"""Provider presets: each preset's documented response shapes (JSON and
form-encoded, errors in a 200, no expires_in, extra fields) replayed by the
fake provider, OpenID Connect discovery, and the per-provider request rate
and rate-limit hold."""

import errno
import json
import os
import signal
import subprocess
import time

import pytest

from fake_provider import FakeProvider
from harness import CLIENT_ID, CLIENT_SECRET, CREDFSCTL, open_errno, wait_for
from test_handoff import free_port

# preset -> (does the fake rotate refresh tokens, extra config keys)
PRESETS = {
    "google": (False, {"refresh_token_lifetime_s": 604800}),
    "entra": (True, {"entra_tenant": "contoso.onmicrosoft.com",
                     "grant": "refresh_token"}),
    "slack": (True, {}),
    "hubspot": (False, {}),
    "salesforce": (False, {"grant": "refresh_token",
                           "default_lifetime_s": 3}),
    "github": (True, {}),
    "atlassian": (True, {}),
}


def ctl(m, *args, input=None):
    r = subprocess.run([CREDFSCTL] + list(args) + ["--config", m.config_path],
                       input=input, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def preset_config(m, preset, **kw):
    """Provider "p" from @preset; only the token endpoint (and secrets)
    point at the fake: every other field is the preset's."""
    conf = {"preset": preset, "token_url": m.provider.url + "/token",
            "client_id": CLIENT_ID, "client_secret_file": m.secret_file(),
            "min_lifetime_s": 1}
    conf.update(kw)
    return {"providers": {"p": conf},
            "tenants": {"acme": {"credentials": {"p": {"scopes": ["read"]}}}},
            "store": {"dir": str(m.tmp / "store"),
                      "key_file": str(m.tmp / "master.key")}}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_success_and_error_shapes(mount, provider, preset):
    rotates, extra = PRESETS[preset]
    provider.dialect = preset
    provider.rotate = rotates
    provider.lifetime = 3
    m = mount()
    m.write_config(preset_config(m, preset, **extra))
    ctl(m, "init")
    rt = provider.mint_refresh_token(CLIENT_ID, "read")
    family = provider.family_of(rt)
    t0 = time.time()
    ctl(m, "add", "acme", "p", input=rt + "\n")
    m.start()

    # Served, and refreshed in the provider's shape, more than once.
    first = m.token("acme", "p")
    assert provider.issued(first), "not a token the provider issued"
    wait_for(lambda: m.status("acme", "p")["refresh_count"] >= 3, 15,
             what="three refreshes")
    st = m.status("acme", "p")
    assert st["state"] == "valid" and st["health"] == "ok", st
    assert st["refresh_token_rotates"] is rotates
    tok = m.token("acme", "p")
    assert tok != first and provider.issued(tok)
    assert m.read("tenants", "acme", "p", "scopes") == "read\n"
    assert provider.stats()["reused_refresh_tokens"] == 0
    # Salesforce sends no expires_in: the lifetime is the profile's (here
    # overridden to 3 s), and instance_url and id are files.
    if preset == "salesforce":
        assert st["expires_in"] <= 3
        files = os.listdir(m.path("tenants", "acme", "p"))
        assert "instance_url" in files and "id" in files
        assert m.read("tenants", "acme", "p", "instance_url") == \
            provider.instance_url + "\n"
    else:
        assert "instance_url" not in os.listdir(m.path("tenants", "acme",
                                                       "p"))
    # A refresh-token expiry the profile (or response) knows shows early.
    if preset == "github":  # refresh_token_expires_in: 6 months
        exp = m.metrics("credfs_refresh_token_expires_in_seconds")[0]
        assert abs(exp - 15811200) < 60, exp
        assert st["refresh_token_expiring"] is False
    elif preset == "google":  # an app in testing: 7 days from the add
        exp = m.metrics("credfs_refresh_token_expires_in_seconds")[0]
        assert abs(exp - (604800 - (time.time() - t0))) < 60, exp
        assert st["refresh_token_expiring"] is True
        text = m.read("tenants", "acme", "p", "status")
        assert "refresh_token_expiring: yes: reconnect" in text
    elif preset in ("entra", "atlassian"):  # 90 days unused
        exp = m.metrics("credfs_refresh_token_expires_in_seconds")[0]
        assert abs(exp - 7776000) < 60, exp
    else:
        assert m.metrics("credfs_refresh_token_expires_in_seconds") == [-1]

    # The user disconnects the app: the dialect's own way of saying the
    # refresh token is dead (a 200 for Slack and GitHub, "status" for
    # HubSpot, 403 for Atlassian) ends in "revoked".
    provider.revoke_family(family)
    wait_for(lambda: m.status("acme", "p")["state"] == "revoked", 15,
             what="revoked")
    assert open_errno(m.path("tenants", "acme", "p",
                             "access_token")) == errno.EKEYREVOKED
    m.stop()
    m.check_log_clean()


def test_preset_keys_override_and_check(mount, provider):
    """credfsctl check accepts a preset overridden field by field and
    names what is wrong with a bad one."""
    m = mount()
    m.write_config(preset_config(m, "entra", grant="refresh_token",
                                 entra_tenant="contoso.com",
                                 default_lifetime_s=120))
    r = subprocess.run([CREDFSCTL, "check", "--config", m.config_path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    m.write_config(preset_config(m, "entra", grant="refresh_token"))
    r = subprocess.run([CREDFSCTL, "check", "--config", m.config_path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "providers.p.entra_tenant: missing: preset entra needs" in \
        r.stderr


def oidc_config(m, **kw):
    conf = {"preset": "oidc", "issuer": m.provider.url,
            "client_id": CLIENT_ID, "client_secret_file": m.secret_file()}
    conf.update(kw)
    return {"providers": {"corp": conf},
            "tenants": {"acme": {"credentials": {"corp": {
                "scopes": ["read"]}}}}}


def test_oidc_discovery(mount, provider):
    provider.discovery_auth_methods = ["client_secret_post"]
    m = mount()
    m.start(oidc_config(m))
    tok = m.token("acme", "corp")
    assert provider.issued(tok)
    assert provider.discovery_requests == 1
    # A reload does not ask the issuer again: the document is cached.
    provider.discovery_status = 503
    m.reload()
    assert m.metrics("credfs_config_last_reload_successful") == [1]
    assert provider.discovery_requests == 1
    tok = m.token("acme", "corp")

    # An issuer new to the daemon, added by a reload, is discovered then
    # (and only it: the running one's document is still the cached one),
    # without a restart.
    other = FakeProvider(clients={CLIENT_ID: CLIENT_SECRET}).start()
    try:
        c = oidc_config(m)
        c["providers"]["corp2"] = dict(c["providers"]["corp"],
                                       issuer=other.url)
        c["tenants"]["acme"]["credentials"]["corp2"] = {"scopes": ["read"]}
        m.reload(c)
        assert m.metrics("credfs_config_last_reload_successful") == [1], \
            m.log()
        assert other.discovery_requests == 1
        assert provider.discovery_requests == 1
        assert other.issued(m.token("acme", "corp2"))
        assert m.token("acme", "corp") == tok
        # One that cannot be discovered refuses the reload, naming it;
        # the running configuration stays, every credential served.
        c["providers"]["corp3"] = dict(c["providers"]["corp"],
                                       issuer="http://127.0.0.1:%d"
                                       % free_port())
        m.reload(c)
        assert m.metrics("credfs_config_last_reload_successful") == [0]
        assert "reload: %s: providers.corp3.issuer: OpenID Connect " \
            "discovery failed: " % m.config_path in m.log()
        assert "the running configuration stays in force" in m.log()
        assert m.token("acme", "corp") == tok
        assert other.issued(m.token("acme", "corp2"))
    finally:
        other.stop()
    m.stop()
    m.check_log_clean()


def test_a_cold_start_with_the_issuer_down_uses_the_saved_document(
        mount, provider, tmp_path):
    """A daemon with a store saves the discovery documents it has, sealed,
    in the store's directory. A cold start while the issuer cannot be
    discovered starts on the saved one (said in the log) and serves. One
    altered, or sealed under another master key, is not used: the start
    is refused, naming the issuer, as with nothing saved."""
    from test_refresh import ctl, setup_store
    store = tmp_path / "store"
    saved = store / "discovery.sealed"
    m = mount()
    c = oidc_config(m)
    c["store"] = {"dir": str(store), "key_file": str(m.tmp / "master.key")}
    setup_store(m, c)
    m.start()
    assert provider.issued(m.token("acme", "corp"))
    assert saved.stat().st_mode & 0o777 == 0o600
    assert b"token_endpoint" not in saved.read_bytes()  # sealed
    m.stop()
    # credfsctl rekey seals it again under the new key.
    r = ctl(m, "rekey", "--new-key-file", str(m.tmp / "new.key"))
    assert r.returncode == 0 and "was not sealed again" not in r.stderr, \
        r.stderr
    c["store"]["key_file"] = str(m.tmp / "new.key")
    m.write_config(c)

    provider.discovery_status = 503
    m.start()
    assert "providers.corp.issuer: %s could not be discovered" \
        % provider.url in m.log()
    assert "using the document saved when it was fetched at" in m.log()
    assert provider.discovery_requests == 2
    tok = m.token("acme", "corp")
    assert provider.issued(tok)  # from the saved token endpoint
    r = ctl(m, "refresh", "acme", "corp")
    assert r.returncode == 0, r.stdout + r.stderr
    assert m.token("acme", "corp") != tok
    m.stop()

    data = bytearray(saved.read_bytes())
    data[-1] ^= 1
    saved.write_bytes(bytes(data))
    r = m.start(check=False)
    assert r.returncode != 0
    log = m.log()
    assert "%s: not authentic (altered, or sealed under another master " \
        "key): the saved discovery documents are not used" % saved in log
    assert "providers.corp.issuer: OpenID Connect discovery failed" in log
    # Reachable again: a start fetches it and saves it anew.
    provider.discovery_status = 200
    m.start()
    assert provider.issued(m.token("acme", "corp"))
    m.stop()
    provider.discovery_status = 503
    m.start()
    assert provider.issued(m.token("acme", "corp"))
    m.check_log_clean()


def test_discovery_documents_are_fetched_again_past_their_age(mount,
                                                             provider):
    """discovery_max_age_s: past it, a reload fetches the issuer's document
    again before it loads the config, and what the document now says is
    used (here, a token endpoint on another server). An issuer that is
    down at such a reload leaves the document it had in force."""
    other = FakeProvider(lifetime=3, clients={CLIENT_ID: CLIENT_SECRET})
    other.start()
    provider.lifetime = 3  # rotating every couple of seconds
    try:
        m = mount()
        m.start(oidc_config(m, discovery_max_age_s=1, min_lifetime_s=1))
        assert provider.issued(m.token("acme", "corp"))
        assert provider.discovery_requests == 1
        provider.discovery_extra = {"token_endpoint": other.url + "/token"}
        time.sleep(1.1)  # the document's age passes
        os.kill(m.pid, signal.SIGHUP)
        wait_for(lambda: "discovery document fetched again" in m.log(), 10,
                 what="the document fetched again")
        assert provider.discovery_requests == 2
        wait_for(lambda: other.issued(m.token("acme", "corp")), 15,
                 what="a token from the newly discovered endpoint")
        # Down at the next one: the reload still applies, on the document
        # it had; the log says so.
        provider.discovery_status = 503
        time.sleep(1.1)
        n = m.log().count("applied")
        os.kill(m.pid, signal.SIGHUP)
        wait_for(lambda: m.log().count("applied") > n, 10, what="the reload")
        assert "could not be fetched again" in m.log()
        assert "HTTP 503" in m.log()
        assert m.metrics("credfs_config_last_reload_successful") == [1]
        assert other.issued(m.token("acme", "corp"))
        m.stop()
        m.check_log_clean()
    finally:
        other.stop()


def test_oidc_discovery_failures_are_named(mount, provider):
    m = mount()
    cases = [
        (lambda: setattr(provider, "discovery_status", 503),
         "providers.corp.issuer: OpenID Connect discovery failed: %s/"
         ".well-known/openid-configuration: HTTP 503" % provider.url),
        (lambda: (setattr(provider, "discovery_status", 200),
                  setattr(provider, "discovery_issuer",
                          "https://evil.example")),
         "providers.corp.issuer: the discovery document names another "
         "issuer"),
        (lambda: (setattr(provider, "discovery_issuer", None),
                  setattr(provider, "discovery_auth_methods",
                          ["private_key_jwt"])),
         "does not list auth_method client_secret_basic"),
    ]
    for arrange, msg in cases:
        arrange()
        r = m.start(oidc_config(m), check=False)
        assert r.returncode != 0
        assert msg in m.log(), m.log()
        assert not os.path.ismount(m.mnt)


def many_config(m, n, **kw):
    return {"providers": {"idp": m.provider_conf(**kw)},
            "tenants": {"t%02d" % i: {"credentials": {"idp": {
                "scopes": ["read"]}}} for i in range(n)}}


def max_in_window(times, window):
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while t - times[j] > window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_provider_request_rate_is_bounded(mount, provider):
    """30 credentials of one provider with max_requests_per_s 10: never
    more than 10 requests in any second, and all of them served."""
    m = mount()
    m.start(many_config(m, 30, max_requests_per_s=10, max_concurrency=8))
    wait_for(lambda: len(provider.token_requests()) >= 30, 10,
             what="30 token requests")
    times = [r[0] for r in provider.token_requests()]
    assert max_in_window(times, 1.0) <= 11, sorted(times)
    assert max(times) - min(times) >= 2.5  # spread, not a burst
    for i in range(30):
        assert provider.issued(m.token("t%02d" % i, "idp"))
    m.stop()


def test_rate_limit_holds_the_whole_provider(mount, provider):
    """A 429 with Retry-After: 2 for one credential holds every
    credential of that provider for 2 s, then all are served."""
    provider.inject("rate_limit", retry_after=2)
    m = mount()
    m.start(many_config(m, 6, max_concurrency=1))
    wait_for(lambda: len([r for r in provider.token_requests()
                          if r[4] == "ok"]) >= 6, 15, what="6 tokens")
    reqs = provider.token_requests()
    limited = [r[0] for r in reqs if r[4] == "fault:rate_limit"]
    assert len(limited) == 1
    after = [r[0] for r in reqs if r[0] > limited[0]]
    assert after and min(after) - limited[0] >= 1.9, (limited, after)
    for i in range(6):
        assert provider.issued(m.token("t%02d" % i, "idp"))
    m.stop()


def test_example_configs_are_valid(provider, tmp_path):
    """examples/providers/*.json pass credfsctl check, with their secret
    and key files made real and the OIDC issuer pointed at the fake."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                        "providers")
    secret = tmp_path / "secret"
    secret.write_text("x\n")
    os.chmod(secret, 0o600)
    key = tmp_path / "key.pem"
    subprocess.run(["openssl", "ecparam", "-genkey", "-name", "prime256v1",
                    "-noout", "-out", str(key)], check=True, timeout=30)
    os.chmod(key, 0o600)
    names = sorted(f for f in os.listdir(root) if f.endswith(".json"))
    assert [n[:-5] for n in names] == sorted(
        ["google", "entra", "slack", "hubspot", "salesforce", "github",
         "atlassian", "oidc"])
    for name in names:
        with open(os.path.join(root, name)) as f:
            config = json.load(f)
        for p in config["providers"].values():
            assert "preset" in p, name
            if "client_secret_file" in p:
                p["client_secret_file"] = str(secret)
            if "private_key_file" in p:
                p["private_key_file"] = str(key)
            if "issuer" in p:
                p["issuer"] = provider.url
        if "store" in config:
            config["store"] = {"dir": str(tmp_path / "store"),
                               "key_file": str(tmp_path / "master.key")}
        path = tmp_path / name
        path.write_text(json.dumps(config))
        r = subprocess.run([CREDFSCTL, "check", "--config", str(path)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, name + ": " + r.stderr
