"""Refresh-token credentials: credfsctl add/list/remove/status against a
running daemon, rotation made durable, invalid_grant and invalid_client,
damaged records, a full disk, rekey, and the store's permissions."""

import errno
import json
import os
import signal
import stat
import subprocess
import time

import pytest

from harness import (CLIENT_ID, CLIENT_SECRET, CREDFSCTL, fill, open_errno,
                      tmpfs, wait_for)

OUTPUTS = []  # every credfsctl output, searched for secrets at the end


def rt_config(m, store, tenants=("acme",), providers=("idp",), **kw):
    """Providers with the refresh_token grant; every tenant has each."""
    return {
        "providers": {p: m.provider_conf(grant="refresh_token", **kw)
                      for p in providers},
        "tenants": {t: {"credentials": {p: {"scopes": ["read"]}
                                        for p in providers}}
                    for t in tenants},
        "store": {"dir": str(store), "key_file": str(m.tmp / "master.key")},
    }


def ctl(m, *args, input=None, timeout=30):
    r = subprocess.run([CREDFSCTL] + list(args) + ["--config", m.config_path],
                       input=input, capture_output=True, text=True,
                       timeout=timeout)
    OUTPUTS.append(r.stdout + r.stderr)
    return r


def setup_store(m, config):
    m.write_config(config)
    r = ctl(m, "init")
    assert r.returncode == 0, r.stderr


def add(m, provider, tenant, prov="idp", rt=None):
    rt = rt or provider.mint_refresh_token(CLIENT_ID, "read")
    r = ctl(m, "add", tenant, prov, input=rt + "\n")
    assert r.returncode == 0, r.stdout + r.stderr
    return rt


def rendered_files(m):
    """Every file of the mount but access_token, as text."""
    out = []
    for root, _, files in os.walk(m.mnt):
        for f in files:
            if f != "access_token":
                with open(os.path.join(root, f), errors="replace") as fh:
                    out.append(fh.read())
    return "\n".join(out)


def no_secrets_in_outputs(provider, m):
    """No token, refresh token, key or client secret in anything credfsctl
    printed, in any status file, or in the daemon's log."""
    with provider.lock:
        secrets = list(provider.tokens) + list(provider.refresh)
    key = (m.tmp / "master.key").read_bytes()
    text = "\n".join(OUTPUTS) + rendered_files(m) + m.log()
    assert not [s for s in secrets if s in text], "a token in ctl output"
    assert key.hex() not in text and CLIENT_SECRET not in text
    assert key not in text.encode(errors="replace")
    OUTPUTS.clear()


def record_path(store, tenant, prov="idp"):
    return os.path.join(str(store), tenant, prov + ".rec")


def test_add_read_list_remove_while_running(mount, provider, tmp_path):
    m = mount()
    c = rt_config(m, tmp_path / "store", tenants=("acme", "beta"))
    c["providers"]["cc"] = m.provider_conf()  # client_credentials beside
    c["tenants"]["acme"]["credentials"]["cc"] = {"scopes": ["read"]}
    setup_store(m, c)
    m.start()
    acme = m.path("tenants", "acme")
    # No record, no directory: the credential is declared but absent.
    assert sorted(os.listdir(acme)) == ["cc"]
    assert open_errno(os.path.join(acme, "idp", "access_token")) == \
        errno.ENOENT
    assert "acme/idp state=absent" in m.read("status")

    r = ctl(m, "add", "acme", "idp",
            input=provider.mint_refresh_token(CLIENT_ID, "read") + "\n")
    assert r.returncode == 0, r.stderr
    assert "acme/idp: valid, expires in" in r.stdout
    # Served at once through the running mount, no restart.
    assert sorted(os.listdir(acme)) == ["cc", "idp"]
    tok = m.token("acme", "idp")
    assert provider.issued(tok)
    st = m.status("acme", "idp")
    assert st["grant"] == "refresh_token" and st["state"] == "valid"
    assert st["generation"] >= 1 and st["persist_error"] is None

    # A whole token response is accepted too, from a file.
    resp = tmp_path / "resp.json"
    resp.write_text(json.dumps({
        "access_token": "unused-here", "token_type": "Bearer",
        "expires_in": 3600, "scope": "read",
        "refresh_token": provider.mint_refresh_token(CLIENT_ID, "read")}))
    r = ctl(m, "add", "beta", "idp", "--from-file", str(resp))
    assert r.returncode == 0, r.stderr
    assert m.read("tenants", "beta", "idp", "access_token") == "unused-here"

    lines = ctl(m, "list").stdout.splitlines()
    rows = {tuple(l.split()[:2]): l.split() for l in lines[1:]}
    assert rows[("acme", "idp")][2:4] == ["refresh_token", "valid"]
    assert rows[("acme", "cc")][2:4] == ["client_credentials", "valid"]
    assert rows[("beta", "idp")][3] == "valid"
    assert int(rows[("acme", "idp")][5]) == m.status("acme", "idp")[
        "generation"]
    r = ctl(m, "list", "--json")
    assert r.returncode == 0 and r.stdout.count("\n") == 1
    lj = {(o["tenant"], o["provider"]): o for o in json.loads(r.stdout)}
    assert set(lj) == set(rows)
    assert lj[("acme", "idp")]["grant"] == "refresh_token"
    assert lj[("acme", "idp")]["state"] == "valid"
    assert lj[("acme", "idp")]["generation"] == int(rows[("acme", "idp")][5])
    assert lj[("acme", "cc")]["generation"] is None
    assert lj[("acme", "idp")]["expires_at"] == rows[("acme", "idp")][4]
    r = ctl(m, "status", "acme", "idp")
    assert r.returncode == 0 and "state: valid" in r.stdout
    sj = json.loads(ctl(m, "status", "--json", "acme").stdout)
    assert [s["provider"] for s in sj] == ["cc", "idp"]
    assert "acme/idp state=valid" in ctl(m, "status").stdout

    # Refused: secrets on the command line, undeclared credentials, the
    # client_credentials grant, empty or garbage input.
    r = ctl(m, "add", "acme", "idp", "fakert-on-argv")
    assert r.returncode == 2 and "too many arguments" in r.stderr
    assert "fakert-on-argv" not in r.stderr + r.stdout
    r = ctl(m, "add", "acme", "idp", "--refresh-token=fakert-opt")
    assert r.returncode == 2 and "'--refresh-token'" in r.stderr
    assert "fakert-opt" not in r.stderr + r.stdout
    r = ctl(m, "add", "acme", "nope", input="x\n")
    assert r.returncode == 1 and "acme/nope is not declared" in r.stderr
    r = ctl(m, "add", "acme", "cc", input="x\n")
    assert r.returncode == 1 and "client_credentials grant" in r.stderr
    r = ctl(m, "add", "acme", "idp", input="\n")
    assert r.returncode == 1 and "empty input" in r.stderr
    r = ctl(m, "add", "acme", "idp", input="two words\n")
    assert r.returncode == 1 and "not a refresh token" in r.stderr
    r = ctl(m, "add", "acme", "idp", input='{"access_token": "x"}')
    assert r.returncode == 1 and "no usable \"refresh_token\"" in r.stderr
    assert m.token("acme", "idp") == tok  # nothing changed

    # remove: the directory goes at once; an open file keeps its bytes.
    with open(m.path("tenants", "acme", "idp", "access_token")) as f:
        r = ctl(m, "remove", "acme", "idp")
        assert r.returncode == 0, r.stderr
        assert "acme/idp: no record; removed" in r.stdout
        assert sorted(os.listdir(acme)) == ["cc"]
        assert f.read() == tok
    assert open_errno(m.path("tenants", "acme", "idp", "access_token")) \
        == errno.ENOENT
    assert not os.path.exists(record_path(tmp_path / "store", "acme"))
    r = ctl(m, "remove", "acme", "idp")
    assert r.returncode == 1 and "no record in the store" in r.stderr
    assert m.token("beta", "idp") == "unused-here"  # the rest serves on
    no_secrets_in_outputs(provider, m)


def test_rotation_is_durable_and_restart_serves_the_stored_token(
        mount, provider, tmp_path):
    provider.lifetime = 4  # refreshed about every 2 s, rotating each time
    m = mount()
    store = tmp_path / "store"
    setup_store(m, rt_config(m, store, tenants=("acme", "beta")))
    m.start()
    add(m, provider, "acme")
    add(m, provider, "beta")
    g0 = m.status("acme", "idp")["generation"]
    st = wait_for(lambda: (lambda s: s if s["generation"] >= g0 + 2
                           else None)(m.status("acme", "idp")), 15,
                  what="two rotations")
    assert st["persist_error"] is None
    # The record on disk is that generation (its header says so).
    with open(record_path(store, "acme"), "rb") as f:
        head = f.read(13)
    assert head[:5] == b"CFSR\x01"
    assert int.from_bytes(head[5:13], "big") >= st["generation"] - 1

    # Restart just after a rotation: the stored access token is served.
    g = m.status("acme", "idp")["generation"]
    wait_for(lambda: m.status("acme", "idp")["generation"] > g, 15,
             what="a rotation")
    tok = m.token("acme", "idp")
    assert m.stop() == 0
    m.start()
    # The stored token, or (on a slow machine, where the stop waited for
    # a refresh in flight, or the next came due) one issued after it.
    after = m.token("acme", "idp")
    assert after == tok or provider.issued(after)["issued"] >= \
        provider.issued(tok)["issued"]
    # And the stored refresh token works: rotations go on.
    g = m.status("acme", "idp")["generation"]
    wait_for(lambda: m.status("acme", "idp")["generation"] > g, 15,
             what="a rotation after the restart")
    assert provider.stats()["reused_refresh_tokens"] == 0
    # Its 4 s token is refreshed every ~2 s: either state is right.
    assert m.status("beta", "idp")["state"] in ("valid", "refreshing")


def test_invalid_grant_revokes_until_a_new_token_is_added(
        mount, provider, tmp_path):
    provider.lifetime = 3
    m = mount()
    setup_store(m, rt_config(m, tmp_path / "store", tenants=("acme", "beta"),
                             open_wait_s=0.5))
    m.start()
    rt = add(m, provider, "acme")
    add(m, provider, "beta")
    # The user disconnects the app at the provider.
    provider.revoke_family(provider.family_of(rt))
    st = wait_for(lambda: (lambda s: s if s["state"] == "revoked" else None)(
        m.status("acme", "idp")), 10, what="revoked")
    assert st["last_error"].startswith("invalid_grant")
    assert st["last_error_at"] is not None
    path = m.path("tenants", "acme", "idp", "access_token")
    assert open_errno(path) == errno.EKEYREVOKED
    assert "acme/idp state=revoked" in m.read("status")
    n = len(provider.token_requests())
    time.sleep(2)  # no more requests for a revoked credential
    assert all(r[4] == "ok" for r in provider.token_requests()[n:])
    assert provider.issued(m.token("beta", "idp"))  # others unaffected
    # The refusal is in the record: a restarted daemon does not present
    # the dead refresh token again, and says why it serves nothing.
    wait_for(lambda: not any(m.metrics("credfs_store_unpersisted")), 10,
             what="the revoked state written")
    m.stop()
    assert "revoked" in ctl(m, "list").stdout.split("acme")[1].split("\n")[0]
    n = len(provider.token_requests())
    m.start()
    st = m.status("acme", "idp")
    assert st["state"] == "revoked", st
    assert st["last_error"].startswith("invalid_grant"), st
    assert open_errno(path) == errno.EKEYREVOKED
    time.sleep(1)
    assert all(r[4] == "ok" for r in provider.token_requests()[n:])
    # A new refresh token brings it back.
    r = ctl(m, "add", "acme", "idp",
            input=provider.mint_refresh_token(CLIENT_ID, "read"))
    assert r.returncode == 0 and "acme/idp: valid" in r.stdout
    assert provider.issued(m.token("acme", "idp"))["active"]
    no_secrets_in_outputs(provider, m)


def test_invalid_grant_rereads_the_store_first(mount, provider, tmp_path):
    """A record replaced without telling the daemon (another writer) is
    found when the old refresh token is refused: no revoked state."""
    provider.lifetime = 3
    m = mount()
    store = tmp_path / "store"
    setup_store(m, rt_config(m, store))
    m.start()
    old = add(m, provider, "acme")
    sock = os.path.join(str(store), "control.sock")
    os.rename(sock, sock + ".away")  # credfsctl cannot reach the daemon
    try:
        new = provider.mint_refresh_token(CLIENT_ID, "read")
        r = ctl(m, "add", "acme", "idp", input=new)
        assert r.returncode == 0 and "no credfs daemon runs" in r.stdout
        provider.revoke_family(provider.family_of(old))
        fam = provider.family_of(new)
        wait_for(lambda: provider.issued(m.token("acme", "idp"))["family"]
                 == fam, 10, what="a token of the new family")
        # 3 s tokens: a refresh may be in flight by now.
        assert m.status("acme", "idp")["state"] in ("valid", "refreshing")
        assert "stored record changed during the request" in m.log()
        assert "revoked" not in m.log()
    finally:
        os.rename(sock + ".away", sock)


def test_invalid_client_puts_the_whole_provider_in_client_error(
        mount, provider, tmp_path):
    provider.lifetime = 3
    m = mount()
    setup_store(m, rt_config(m, tmp_path / "store",
                             tenants=("acme", "beta", "gamma"),
                             backoff_max_s=4))
    m.start()
    for t in ("acme", "beta", "gamma"):
        add(m, provider, t)
        time.sleep(0.5)  # refreshes half a second apart
    provider.inject("invalid_client", count=-1)  # from now on, refused
    wait_for(lambda: "client_error" in m.read("status"), 10,
             what="client_error")
    lines = m.read("status").splitlines()
    assert len(lines) == 3
    assert all("state=client_error" in l for l in lines), lines
    refused = [r for r in provider.token_requests() if r[4] != "ok"]
    assert len(refused) == 1  # one refusal, told to all three
    # Tokens still valid keep being served.
    assert provider.issued(m.token("acme", "idp"))
    # The provider takes the client again: every credential is back.
    provider.clear_faults()
    wait_for(lambda: m.read("status").count("state=valid") == 3, 15,
             what="recovery")


def test_unusable_records_at_start(mount, provider, tmp_path):
    m = mount()
    store = tmp_path / "store"
    setup_store(m, rt_config(m, store, tenants=("acme", "beta")))
    m.start()
    add(m, provider, "acme")
    add(m, provider, "beta")
    assert m.stop() == 0
    good = open(record_path(store, "acme"), "rb").read()
    cases = {
        "magic": 0, "generation": 8, "nonce": 16, "ciphertext":
        len(good) // 2, "tag": len(good) - 1}
    for what, off in cases.items():
        bad = bytearray(good)
        bad[off] ^= 0x10
        open(record_path(store, "acme"), "wb").write(bytes(bad))
        m.start()
        st = m.status("acme", "idp")
        assert st["state"] == "error", what
        assert "stored record is unusable" in st["last_error"], what
        assert open_errno(m.path("tenants", "acme", "idp",
                                 "access_token")) == errno.EAGAIN
        assert provider.issued(m.token("beta", "idp")), what
        assert m.stop() == 0
    # beta's record in acme's place: bound to beta, refused.
    open(record_path(store, "acme"), "wb").write(
        open(record_path(store, "beta"), "rb").read())
    m.start()
    assert "not authentic" in m.status("acme", "idp")["last_error"]
    assert provider.issued(m.token("beta", "idp"))


def test_rolled_back_record_is_written_again(mount, provider, tmp_path):
    provider.lifetime = 3
    m = mount()
    store = tmp_path / "store"
    setup_store(m, rt_config(m, store))
    m.start()
    add(m, provider, "acme")
    old = open(record_path(store, "acme"), "rb").read()
    g = m.status("acme", "idp")["generation"]
    wait_for(lambda: m.status("acme", "idp")["generation"] >= g + 1, 10,
             what="a rotation")
    open(record_path(store, "acme"), "wb").write(old)  # put the old back
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: "rolled back" in m.log(), 5, what="the rollback")
    # Written again from memory; the provider never sees a reuse.
    wait_for(lambda: open(record_path(store, "acme"), "rb").read() != old
             and m.status("acme", "idp")["persist_error"] is None, 10,
             what="the rewrite")
    g = m.status("acme", "idp")["generation"]
    wait_for(lambda: m.status("acme", "idp")["generation"] > g, 10,
             what="the next rotation")
    assert provider.stats()["reused_refresh_tokens"] == 0


@pytest.fixture
def tiny_fs(tmp_path):
    with tmpfs(tmp_path / "tiny", "256k") as d:
        yield d


def test_disk_full_serves_from_memory_and_persists_later(
        mount, provider, tmp_path, tiny_fs):
    provider.lifetime = 3
    m = mount()
    store = tiny_fs / "store"
    setup_store(m, rt_config(m, store, tenants=("acme", "beta")))
    m.start()
    add(m, provider, "acme")
    add(m, provider, "beta")
    filler = fill(tiny_fs / "filler")
    st = wait_for(lambda: (lambda s: s if s["persist_error"] else None)(
        m.status("acme", "idp")), 10, what="a failed write")
    assert "No space left on device" in st["persist_error"]
    assert st["health"] == "store_failing"
    assert "credfs_store_unpersisted{tenant=\"acme\",provider=\"idp\"} 1" \
        in m.read("metrics")
    # Rotations go on from memory; every token served is a live one.
    g = st["generation"]
    wait_for(lambda: m.status("acme", "idp")["generation"] > g + 1, 15,
             what="rotations while the disk is full")
    assert provider.issued(m.token("acme", "idp"))["active"]
    wait_for(lambda: '"event":"persist_error"' in m.log(), 10,
             what="the persist_error audit line")  # audited
    os.unlink(filler)
    wait_for(lambda: m.status("acme", "idp")["persist_error"] is None and
             m.status("beta", "idp")["persist_error"] is None, 20,
             what="the write once space is back")
    # A restart loses nothing: the newest refresh token was written.
    assert m.stop() == 0
    m.start()
    for t in ("acme", "beta"):
        g = m.status(t, "idp")["generation"]
        wait_for(lambda: m.status(t, "idp")["generation"] > g, 15,
                 what="a rotation after the restart")
    assert provider.stats()["reused_refresh_tokens"] == 0
    assert all(r[4] == "ok" for r in provider.token_requests())


def test_store_permissions_and_rekey(mount, provider, tmp_path):
    m = mount()
    store = tmp_path / "store"
    setup_store(m, rt_config(m, store, tenants=("acme", "beta")))
    m.start()
    add(m, provider, "acme")
    add(m, provider, "beta")
    for root, dirs, files in os.walk(str(store)):
        assert stat.S_IMODE(os.stat(root).st_mode) == 0o700, root
        for f in files:
            p = os.path.join(root, f)
            st = os.lstat(p)
            assert stat.S_IMODE(st.st_mode) == 0o600, p
            assert stat.S_ISREG(st.st_mode) or (
                f == "control.sock" and stat.S_ISSOCK(st.st_mode)), p
    # Rekey needs the daemon gone, and says so.
    r = ctl(m, "rekey", "--new-key-file", str(tmp_path / "new.key"))
    assert r.returncode == 1 and "in use by another credfs" in r.stderr
    tok = m.token("acme", "idp")
    assert m.stop() == 0
    r = ctl(m, "rekey", "--new-key-file", str(tmp_path / "new.key"))
    assert r.returncode == 0, r.stderr
    assert "re-encrypted 2 records" in r.stdout
    assert stat.S_IMODE(os.stat(tmp_path / "new.key").st_mode) == 0o600
    # The old key no longer opens the store; the new one does.
    r = ctl(m, "list")
    assert r.returncode == 1 and "does not open this store" in r.stderr
    c = json.load(open(m.config_path))
    c["store"]["key_file"] = str(tmp_path / "new.key")
    m.write_config(c)
    m.start()
    assert m.token("acme", "idp") == tok  # served from the store
    assert m.status("beta", "idp")["state"] == "valid"
    no_secrets_in_outputs(provider, m)
