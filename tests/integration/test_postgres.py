"""The PostgreSQL store: the same sealed records in a real database
(initdb'd per test, password from a passfile), credfsctl on it, one
daemon per database, migration from a file store, rekey, and a database
outage while the daemon serves."""

import errno
import json
import os
import subprocess
import time

from harness import CLIENT_ID, CREDFS, CREDFSCTL, is_mounted, open_errno, \
    wait_for


def pg_config(m, pg, tenants=("acme",), name="state"):
    return {
        "providers": {"idp": m.provider_conf(grant="refresh_token")},
        "tenants": {t: {"credentials": {"idp": {"scopes": ["read"]}}}
                    for t in tenants},
        "store": {"backend": "postgres", "dsn": pg.dsn,
                  "dir": str(m.tmp / name),
                  "key_file": str(m.tmp / "master.key")},
    }


def ctl(m, *args, input=None, config=None):
    return subprocess.run([CREDFSCTL] + list(args) +
                          ["--config", config or m.config_path],
                          input=input, capture_output=True, text=True,
                          timeout=60)


def add(m, provider, tenant, config=None):
    rt = provider.mint_refresh_token(CLIENT_ID, "read")
    r = ctl(m, "add", tenant, "idp", input=rt + "\n", config=config)
    assert r.returncode == 0, r.stdout + r.stderr
    return rt


def db_records(pg):
    """(tenant, provider, generation, record as hex) of every row."""
    return [tuple(line.split("|")) for line in pg.psql(
        "SELECT tenant, provider, generation, encode(record, 'hex')"
        " FROM credfs_records ORDER BY 1, 2")]


def test_postgres_store_serves_and_persists(mount, provider, postgres):
    provider.lifetime = 3
    m = mount()
    m.write_config(pg_config(m, postgres, tenants=("acme", "beta")))
    r = ctl(m, "init")
    assert r.returncode == 0 and "(PostgreSQL) is ready" in r.stdout, \
        r.stderr
    assert ctl(m, "init").returncode == 0  # again: nothing changes
    assert sorted(postgres.psql("SELECT key FROM credfs_meta")) == \
        ["keycheck", "schema"]
    rts = [add(m, provider, "acme"), add(m, provider, "beta")]
    added = {t: int(g) for t, _, g, _ in db_records(postgres)}
    m.start()
    tok = m.token("acme", "idp")
    assert provider.issued(tok)
    wait_for(lambda: all(int(g) >= added[t] + 3 for t, _, g, _ in
                         db_records(postgres)), 15,
             what="three rotations written to the database")
    # The database holds sealed bytes only: no token in clear.
    with provider.lock:
        secrets = list(provider.tokens) + list(provider.refresh)
    blob = " ".join(rec for _, _, _, rec in db_records(postgres))
    assert not [s for s in secrets + rts
                if s.encode().hex() in blob]
    assert provider.stats()["reused_refresh_tokens"] == 0
    # A second daemon on the same database is refused.
    b = mount(name="b")
    b.write_config(pg_config(b, postgres, tenants=("acme", "beta"),
                             name="state-b"))
    subprocess.run([CREDFSCTL, "init", "--config", b.config_path],
                   capture_output=True, timeout=60)
    r = subprocess.run([CREDFS, "--config", b.config_path, b.mnt],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and not is_mounted(b.mnt)
    assert "the database is in use by another credfs daemon" in r.stderr
    # A restart serves the stored state: the rotated refresh token works.
    m.stop()
    gen = {t: int(g) for t, _, g, _ in db_records(postgres)}
    m.start()
    assert provider.issued(m.token("beta", "idp"))
    wait_for(lambda: all(int(g) > gen[t] for t, _, g, _ in db_records(
        postgres)), 15, what="refreshes after the restart")
    assert provider.stats()["reused_refresh_tokens"] == 0
    # list and remove work on this backend too.
    r = ctl(m, "list")
    assert r.returncode == 0 and "acme" in r.stdout and "beta" in r.stdout
    assert ctl(m, "remove", "beta", "idp").returncode == 0
    wait_for(lambda: open_errno(m.path("tenants", "beta", "idp",
                                       "access_token")) == errno.ENOENT,
             10, what="the removed credential to go")
    assert [t for t, _, _, _ in db_records(postgres)] == ["acme"]
    m.stop()
    m.check_log_clean()


def test_postgres_config_errors(mount, postgres):
    m = mount()
    c = pg_config(m, postgres)
    c["store"]["dsn"] = "host=/tmp dbname=credfs password=hunter2"
    m.write_config(c)
    r = ctl(m, "check")
    assert r.returncode != 0
    assert "store.dsn: holds a password; put it in a passfile" in r.stderr
    assert "hunter2" not in r.stderr
    c["store"]["dsn"] = postgres.dsn
    del c["store"]["backend"]
    m.write_config(c)
    r = ctl(m, "check")
    assert "store.dsn: only for \"backend\": \"postgres\"" in r.stderr
    # Before init: the daemon says what to do.
    key = m.tmp / "master.key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o600)
    m.write_config(pg_config(m, postgres))
    r = m.start(check=False)
    assert r.returncode != 0
    assert "the database has no credfs schema" in m.log() and \
        "credfsctl init" in m.log()


def test_migrate_file_store_and_rekey(mount, provider, postgres, tmp_path):
    m = mount()
    tenants = ("acme", "beta", "gamma")
    file_cfg = {
        "providers": {"idp": m.provider_conf(grant="refresh_token")},
        "tenants": {t: {"credentials": {"idp": {"scopes": ["read"]}}}
                    for t in tenants},
        "store": {"dir": str(tmp_path / "files"),
                  "key_file": str(tmp_path / "old.key")},
    }
    old = str(tmp_path / "old.json")
    with open(old, "w") as f:
        json.dump(file_cfg, f)
    assert ctl(m, "init", config=old).returncode == 0
    for t in tenants:
        add(m, provider, t, config=old)
    # Into PostgreSQL, under another master key.
    m.write_config(pg_config(m, postgres, tenants=tenants))
    assert ctl(m, "init").returncode == 0
    r = ctl(m, "migrate", "--from-config", old)
    assert r.returncode == 0, r.stderr
    assert "copied 3 records" in r.stdout
    assert [t for t, _, _, _ in db_records(postgres)] == list(tenants)
    r = ctl(m, "migrate", "--from-config", old)  # again: all kept
    assert "copied 0 records, kept 3" in r.stdout
    # Rekey the database, then the daemon serves with the new key only.
    r = ctl(m, "rekey", "--new-key-file", str(tmp_path / "new.key"))
    assert r.returncode == 0 and "re-encrypted 3 records" in r.stdout, \
        r.stderr
    r = m.start(check=False)
    assert r.returncode != 0 and "does not open this database" in m.log()
    c = pg_config(m, postgres, tenants=tenants)
    c["store"]["key_file"] = str(tmp_path / "new.key")
    m.start(c)
    for t in tenants:
        assert provider.issued(m.token(t, "idp"))
    assert provider.stats()["reused_refresh_tokens"] == 0
    m.stop()


def test_database_outage_keeps_serving(mount, provider, postgres):
    """The database stops for 8 s under a daemon with rotating 4 s
    tokens: reads go on, the rotated refresh tokens wait in memory
    (health store_failing), and are written when it is back."""
    provider.lifetime = 4
    m = mount()
    m.write_config(pg_config(m, postgres))
    assert ctl(m, "init").returncode == 0
    add(m, provider, "acme")
    m.start()
    wait_for(lambda: m.status("acme", "idp")["refresh_count"] >= 1, 10,
             what="a first refresh")
    postgres.stop()
    end = time.monotonic() + 8
    failing = False
    while time.monotonic() < end:
        assert provider.issued(m.token("acme", "idp"))
        failing |= m.status("acme", "idp")["health"] == "store_failing"
        time.sleep(0.2)
    assert failing, "the outage never showed in status"
    postgres.start()
    wait_for(lambda: m.status("acme", "idp")["health"] == "ok", 20,
             what="the store to catch up")
    st = m.status("acme", "idp")
    gen = int(db_records(postgres)[0][2])
    assert gen == st["generation"], (gen, st)
    assert provider.stats()["reused_refresh_tokens"] == 0
    m.stop()
    m.check_log_clean()
