"""A hostile or broken provider. Each answer that is not a token ends in a
classified error in status.json within the provider's timeout_s, the
credential keeps serving its still-valid token, and the same daemon keeps
serving fresh tokens of another provider throughout."""

import subprocess
import time

import pytest

from harness import CLIENT_ID, CLIENT_SECRET, open_errno, wait_for
from fake_provider import FakeProvider

TIMEOUT_S = 1.0
MB = 1024 * 1024


@pytest.fixture
def good():
    """A second, well-behaved provider with 3 s tokens: its credential is
    refreshed about every 1.5 s while the other provider misbehaves."""
    p = FakeProvider(lifetime=3, clients={CLIENT_ID: CLIENT_SECRET}).start()
    yield p
    p.stop()


@pytest.fixture
def elsewhere():
    """Another host (127.0.0.2) that a redirect points to."""
    p = FakeProvider(host="127.0.0.2",
                     clients={CLIENT_ID: CLIENT_SECRET}).start()
    yield p
    p.stop()


def config(m, providers):
    """Tenant acme with one credential per provider; @providers maps a
    name to (FakeProvider, extra provider keys)."""
    return {
        "providers": {
            name: m.provider_conf(token_url=p.url + "/token",
                                  refresh_fraction=0.5, **kw)
            for name, (p, kw) in providers.items()},
        "tenants": {"acme": {"credentials": {
            name: {"scopes": ["read"]} for name in providers}}},
    }


def check_fresh(m, provider, name):
    tok = m.token("acme", name)
    rec = provider.issued(tok)
    assert rec is not None, "%s: a token %s did not issue" % (name, name)
    assert rec["expires"] > time.time(), "%s: expired token served" % name


def answer_200(**body):
    """A "status" fault's arguments: HTTP 200 with this JSON body."""
    return {"status": 200, "body": body}


# (fault kind, its arguments, what last_error must say). The transport's
# faults, and one body of each family end to end; every body shape and
# its words are unit tests (tests/unit/test_oauth.c,
# hostile_bodies_are_named).
HOSTILE = [
    ("huge", {}, "response body over the 4194304 byte limit"),
    ("slowloris", {"interval": 0.2}, "timed out after"),
    ("partial", {}, "transfer closed with"),
    ("close", {"count": 2}, "Empty reply from server"),
    ("html", {}, "body is not a JSON object"),
    ("truncated", {}, "body is not a JSON object"),
    ("status", answer_200(access_token="A" * MB, token_type="Bearer",
                          expires_in=3600),
     "access_token is 1048576 bytes, over"),
    ("status", answer_200(access_token="x5", expires_in="3600"),
     "expires_in is not a number"),
    ("status", {"status": 502, "body": "<html>Bad gateway</html>"},
     "HTTP 502"),
]


def provoke(m, bad, good, kind, kw):
    """Queue one fault at @bad, wait for the refresh it breaks; reads the
    good credential all the while. Returns (status, seconds from the
    faulty request's arrival to its error showing in status.json)."""
    before = m.status("acme", "bad")["failure_count"]
    bad.inject(kind, **kw)
    deadline = time.monotonic() + TIMEOUT_S + 10
    while True:
        check_fresh(m, good, "good")
        st = m.status("acme", "bad")
        seen = time.time()
        if st["failure_count"] > before:
            break
        assert time.monotonic() < deadline, "no failure from %s" % kind
        time.sleep(0.02)
    arrived = [r[0] for r in bad.token_requests()
               if r[4] == "fault:" + kind]
    assert arrived, "the fault was never served"
    return st, seen - arrived[-1]


def test_hostile_answers_are_classified_within_the_timeout(
        mount, provider, good):
    provider.lifetime = 3
    m = mount(lambda m: config(m, {
        "bad": (provider, {"timeout_s": TIMEOUT_S,
                           "max_response_bytes": 4 * MB,
                           "backoff_initial_s": 0.05,
                           "backoff_max_s": 0.2}),
        "good": (good, {})}))
    check_fresh(m, provider, "bad")
    for kind, kw, message in HOSTILE:
        st, latency = provoke(m, provider, good, kind, dict(kw))
        print("%-10s %5.2fs %s" % (kind, latency, st["last_error"]))
        assert message in st["last_error"], (kind, kw, st["last_error"])
        # Classified: no token text, printable, bounded.
        assert "AAAA" not in st["last_error"]
        assert st["last_error"].isprintable()
        assert len(st["last_error"]) < 300
        # Within the timeout (plus polling and scheduling slack); the
        # stalled sender took the whole timeout, and no longer.
        assert latency <= TIMEOUT_S + 1.0, (kind, latency)
        if kind == "slowloris":
            assert latency >= TIMEOUT_S - 0.1, latency
        # The broken credential still serves a valid token, and recovers.
        check_fresh(m, provider, "bad")
        wait_for(lambda: m.status("acme", "bad")["consecutive_failures"]
                 == 0, 10, what="recovery after " + kind)
    st = m.status("acme", "bad")
    assert st["failure_count"] >= len(HOSTILE)
    assert st["state"] in ("valid", "refreshing"), st
    assert len(good.token_requests()) >= 3  # good kept refreshing


def test_redirects_are_not_followed(mount, provider, good, elsewhere):
    provider.lifetime = 3
    m = mount(lambda m: config(m, {
        "bad": (provider, {"backoff_initial_s": 0.05,
                           "backoff_max_s": 0.2}),
        "good": (good, {})}))
    for location in (elsewhere.url + "/token",
                     provider.url + "/token?again=1"):
        st, latency = provoke(m, provider, good, "redirect",
                              {"location": location})
        assert st["last_error"] == "HTTP 307 (redirects are not followed)"
        check_fresh(m, provider, "bad")
    # The request, its secret and refresh token never reached the other
    # host, and no second request followed the redirect to the same one.
    assert elsewhere.stats()["requests"] == 0
    assert not [r for r in provider.requests if r[1] != "/token"]


def make_cert(tmp_path, name, san):
    key, crt = tmp_path / (name + ".key"), tmp_path / (name + ".pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "1", "-subj", "/CN=credfs test " + name,
                    "-addext", "subjectAltName=" + san,
                    "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=30)
    return str(crt), str(key)


def test_tls_certificates_are_verified(mount, provider, good, tmp_path):
    """One HTTPS provider with a self-signed certificate for 127.0.0.1,
    another whose certificate names a different host. Untrusted: refused.
    Trusted through ca_file: served. Trusted but for another name:
    refused."""
    right = make_cert(tmp_path, "right", "IP:127.0.0.1")
    wrong = make_cert(tmp_path, "wrong", "DNS:wrong.example")
    tls = FakeProvider(clients={CLIENT_ID: CLIENT_SECRET}, tls=right).start()
    tls_wrong = FakeProvider(clients={CLIENT_ID: CLIENT_SECRET},
                             tls=wrong).start()
    try:
        m = mount(lambda m: config(m, {
            "untrusted": (tls, {}),
            "trusted": (tls, {"ca_file": right[0]}),
            "wrongname": (tls_wrong, {"ca_file": wrong[0]}),
            "good": (good, {})}))
        assert tls.url.startswith("https://")
        check_fresh(m, tls, "trusted")
        check_fresh(m, good, "good")
        for name, message in (("untrusted", "self-signed certificate"),
                              ("wrongname", "subject name matches target host "
                               "name '127.0.0.1'")):
            st = wait_for(lambda: (lambda s: s if s["last_error"] else None)(
                m.status("acme", name)), 10, what=name + "'s error")
            assert message in st["last_error"], (name, st["last_error"])
            assert st["state"] == "error", st
            assert open_errno(m.path("tenants", "acme", name,
                                     "access_token")) != 0
        # Only the trusted credential's request got through the handshake.
        assert len(tls.token_requests()) == 1
        assert tls_wrong.stats()["requests"] == 0
    finally:
        tls.stop()
        tls_wrong.stop()
