"""Structural reloads in place: SIGHUP applies a configuration that adds,
removes and renames tenants, providers and credentials, without
unmounting, while readers read and tokens rotate. Unchanged credentials
keep their token and generation; added ones have their first token when
the reload is over; removed ones are gone at once, but a file open on one
keeps its bytes.
"""

import errno
import json
import os
import signal
import socket
import time

import pytest

from fake_provider import FakeProvider
from harness import (CLIENT_ID, CLIENT_SECRET, Readers, open_errno,
                     simple_config, wait_for)
from test_refresh import add, ctl, rt_config, setup_store


@pytest.fixture
def long_provider():
    """A second provider whose tokens live an hour: nothing rotates them
    during a test, so any change is the reload's."""
    p = FakeProvider(lifetime=3600,
                     clients={CLIENT_ID: CLIENT_SECRET}).start()
    yield p
    p.stop()


def valid_token(provider):
    def check(data):
        rec = provider.issued(data.decode(errors="replace"))
        return rec is not None and rec["expires"] > time.time()
    return check


def reload(m, n):
    """SIGHUP and wait for the @n-th applied reload."""
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: m.log().count(" applied: ") >= n, 30,
             what="reload %d applied" % n)


def config(m, long, tenants, extra=()):
    """Tenant names -> one credential of "idp" each (2 s tokens, so they
    rotate throughout); "stable" has one of "long" (an hour, from
    @long), and @extra tenants one of "idp2"."""
    cfg = simple_config(m, tenants=tenants)
    cfg["providers"]["long"] = m.provider_conf(token_url=long.url +
                                               "/token")
    cfg["tenants"]["stable"] = {"credentials": {"long": {"scopes": ["x"]}}}
    if extra:
        cfg["providers"]["idp2"] = m.provider_conf()
        for t in extra:
            cfg["tenants"].setdefault(t, {"credentials": {}})
            cfg["tenants"][t]["credentials"]["idp2"] = {"scopes": ["read"]}
    return cfg


def test_twenty_structural_reloads_while_readers_read(
        mount, provider, long_provider):
    provider.lifetime = 2  # "idp" tokens rotate about every second
    m = mount()
    m.start(config(m, long_provider, ["acme", "t0", "t1"]))
    stable = m.token("stable", "long")
    stable_gen = m.status("stable", "long")["generation"]
    readers = [Readers(m.path("tenants", t, p, "access_token"),
                       check=valid_token(pv))
               for t, p, pv in (("acme", "idp", provider),
                                ("stable", "long", long_provider))]
    try:
        live = ["acme", "t0", "t1"]
        n = 0
        for i in range(2, 22):
            # Add one, take the oldest away; every fourth, rename it
            # (a tenant that goes and one that comes in the same reload)
            # and give the new one a second provider.
            gone = live.pop(1)
            held = open(m.path("tenants", gone, "idp", "access_token"), "rb")
            live.append(("r%d" % i) if i % 4 == 0 else ("t%d" % i))
            extra = [live[-1]] if i % 4 == 0 else []
            m.write_config(config(m, long_provider, live, extra))
            n += 1
            time.sleep(0.1)  # over 2 s in all: "idp" tokens rotate
            reload(m, n)
            # Gone at once: not listed, not found; the open file reads on.
            assert gone not in os.listdir(m.path("tenants"))
            assert open_errno(m.path("tenants", gone, "idp",
                                     "access_token")) == errno.ENOENT
            data = held.read()  # the token it opened, whole
            assert provider.issued(data.decode()), data
            assert os.fstat(held.fileno()).st_size == len(data)
            held.close()
            # Come with a valid token: the reload waited for it.
            assert provider.issued(m.token(live[-1], "idp"))
            if extra:
                assert provider.issued(m.token(live[-1], "idp2"))
            assert sorted(os.listdir(m.path("tenants"))) == \
                sorted(live + ["stable"])
    finally:
        for r in readers:
            r.stop()
    for r in readers:
        assert r.errors == {}, r.errors
        assert not r.bad
        assert r.reads > 100
    # Untouched by every reload: the same token, the same generation.
    assert m.token("stable", "long") == stable
    assert m.status("stable", "long")["generation"] == stable_gen
    assert len(long_provider.token_requests()) == 1
    assert "applied: 1 credentials added, 1 removed" in m.log()


def test_a_name_that_comes_back_is_served_afresh(mount, provider):
    """A credential removed and added back gets its slot (and its
    directory's inode number) again, and a new token: never the bytes it
    had before, whatever the kernel cached for them."""
    m = mount()
    m.start(simple_config(m, tenants=("acme", "beta")))
    first = m.token("beta", "idp")
    ino = os.stat(m.path("tenants", "beta")).st_ino
    tok_ino = os.stat(m.path("tenants", "beta", "idp", "access_token")).st_ino
    m.write_config(simple_config(m, tenants=("acme",)))
    reload(m, 1)
    assert open_errno(m.path("tenants", "beta")) == errno.ENOENT
    m.write_config(simple_config(m, tenants=("acme", "beta")))
    reload(m, 2)
    again = m.token("beta", "idp")
    assert again != first and provider.issued(again)
    assert os.stat(m.path("tenants", "beta")).st_ino == ino
    # The token's inode carries its generation (the low 32 bits): later.
    again_ino = os.stat(m.path("tenants", "beta", "idp",
                               "access_token")).st_ino
    assert again_ino >> 32 == tok_ino >> 32
    assert again_ino & 0xffffffff > tok_ino & 0xffffffff


def test_a_reload_adds_refresh_token_credentials_from_the_store(
        mount, provider, tmp_path):
    """A credential of the refresh_token grant added by a reload is
    served from the record credfsctl added before it was configured."""
    m = mount()
    store = tmp_path / "store"
    cfg = rt_config(m, store)
    setup_store(m, cfg)
    m.start()
    add(m, provider, "acme")
    cfg["tenants"]["beta"] = {"credentials": {"idp": {"scopes": ["read"]}}}
    m.write_config(cfg)
    # Stored; the running daemon does not know beta yet, and says so.
    rt = provider.mint_refresh_token(CLIENT_ID, "read")
    r = ctl(m, "add", "beta", "idp", input=rt + "\n")
    assert "stored beta/idp" in r.stdout
    assert "not in the daemon's configuration" in r.stdout
    reload(m, 1)
    assert provider.issued(m.token("beta", "idp"))
    assert m.status("beta", "idp")["state"] == "valid"


def test_ready_comes_after_the_added_credentials_answered(
        mount, provider, tmp_path):
    """Under Type=notify, the reload's READY=1 comes once the added
    credential had its first answer (the provider holds it 1 s)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    try:
        m = mount()
        m.write_config(simple_config(m))
        m.start(env=dict(os.environ, NOTIFY_SOCKET=path))

        def message(key):
            while True:
                lines = sock.recv(4096).decode().splitlines()
                if key in lines:
                    return time.monotonic()

        message("READY=1")
        m.write_config(simple_config(m, tenants=("acme", "beta")))
        provider.inject("delay", seconds=1)
        os.kill(m.pid, signal.SIGHUP)
        t0 = message("RELOADING=1")
        t1 = message("READY=1")
        assert t1 - t0 >= 0.9, t1 - t0
        assert m.status("beta", "idp")["state"] == "valid"
    finally:
        sock.close()


def test_a_reload_that_cannot_apply_changes_nothing(mount, provider):
    """A provider that keeps its name but changes its grant cannot be
    applied in place: refused, naming it; the tree stays as it was."""
    m = mount()
    m.start(simple_config(m, tenants=("acme",)))
    token = m.token("acme", "idp")
    cfg = simple_config(m, tenants=("acme", "beta"))
    cfg["providers"]["idp"]["grant"] = "refresh_token"
    cfg["store"] = {"dir": str(m.tmp / "store"),
                    "key_file": str(m.tmp / "k")}
    m.write_config(cfg)
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: "restart credfs to apply" in m.log(), 10,
             what="the refused reload")
    assert "store changed" in m.log() or "providers.idp" in m.log()
    assert os.listdir(m.path("tenants")) == ["acme"]
    assert m.token("acme", "idp") == token
    json.loads(m.read("tenants", "acme", "idp", "status.json"))


def test_removing_a_credential_mid_rotation_keeps_its_refresh_token(
        mount, provider, long_provider, tmp_path):
    """A reload removes a refresh_token credential while its rotation is
    in flight: the answer is waited for and the rotated refresh token
    stored, so that the credential added back presents that one, not
    the one the provider already replaced (a reuse, which a strict
    provider answers by revoking the grant)."""
    provider.lifetime = 2  # refreshed about every second
    provider.reuse_grace = 5  # a reuse would show as a grace replay
    m = mount()
    store = tmp_path / "store"
    cfg = rt_config(m, store, tenants=("beta",))
    # Another tenant, on another provider: every request to @provider
    # is beta's.
    cfg["providers"]["long"] = m.provider_conf(token_url=long_provider.url +
                                               "/token")
    cfg["tenants"]["stable"] = {"credentials": {"long": {"scopes": ["x"]}}}
    setup_store(m, cfg)
    m.start()
    add(m, provider, "beta")
    without = json.loads(json.dumps(cfg))
    del without["tenants"]["beta"]
    for n in range(1, 7, 2):
        # Every request held 1.5 s: the reload comes while one is out.
        provider.inject("delay", count=-1, seconds=1.5)
        before = provider.arrivals
        wait_for(lambda: provider.arrivals > before, 10,
                 what="a refresh in flight")
        m.write_config(without)
        reload(m, n)
        provider.clear_faults()
        m.write_config(cfg)
        reload(m, n + 1)
        # Back, and served: at once from its record, or (the stored
        # token, 2 s long and held 1.5 s by the provider, may have
        # expired meanwhile) pending until its first answer.
        wait_for(lambda: m.status("beta", "idp")["state"] in
                 ("valid", "refreshing"), 10, what="beta served again")
        # Its next rotation presents the refresh token the store has.
        gen = m.status("beta", "idp")["generation"]
        wait_for(lambda: m.status("beta", "idp")["generation"] > gen, 10,
                 what="beta's next rotation")
    assert "its refresh token is lost" not in m.log()
    assert provider.stats()["reused_refresh_tokens"] == 0
    assert provider.grace_replays == []
    assert not provider.revoked_families


def test_tenants_dir_files_come_and_go_with_sighup(mount, provider):
    """tenants_dir: one file per tenant. A SIGHUP serves the tenant of a
    file added and drops the one of a file removed, the others served on;
    a broken file refuses the reload, naming it."""
    m = mount()
    tdir = m.tmp / "tenants.d"
    tdir.mkdir()
    cred = {"credentials": {"idp": {"scopes": ["read"]}}}
    cfg = simple_config(m, tenants=("acme",))
    cfg["tenants_dir"] = str(tdir)
    (tdir / "beta.json").write_text(json.dumps(cred))
    m.start(cfg)
    assert provider.issued(m.token("beta", "idp"))
    (tdir / "gamma.json").write_text(json.dumps(cred))
    (tdir / "beta.json").unlink()
    reload(m, 1)
    assert provider.issued(m.token("gamma", "idp"))
    assert open_errno(m.path("tenants", "beta")) == errno.ENOENT
    assert provider.issued(m.token("acme", "idp"))
    assert "beta/idp" not in m.read("status")
    assert "gamma/idp" in m.read("status")
    (tdir / "delta.json").write_text("{\"credentials\": ")
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: "delta.json:1:" in m.log(), 10,
             what="the broken file named")
    assert provider.issued(m.token("gamma", "idp"))
    assert open_errno(m.path("tenants", "delta")) == errno.ENOENT
