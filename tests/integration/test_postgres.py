"""The PostgreSQL store: the same sealed records in a real database
(initdb'd per test, password from a passfile), credfsctl on it,
migration from a file store, rekey, a database
outage, three daemons sharing one database, and a lease holder killed
mid-refresh."""

import errno
import json
import os
import signal
import subprocess
import threading
import time

from fake_provider import FakeProvider
from harness import ASAN_BUILD, CLIENT_ID, CLIENT_SECRET, CREDFSCTL, \
    open_errno, wait_for


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
    # A second daemon on the same database serves the same credentials,
    # taking the first one's rotations instead of refreshing them itself.
    b = mount(name="b")
    b.start(pg_config(b, postgres, tenants=("acme", "beta"),
                      name="state-b"))
    assert provider.issued(b.token("acme", "idp"))
    # Both serve through the next rotations of every credential.
    gen = {t: int(g) for t, _, g, _ in db_records(postgres)}
    wait_for(lambda: all(int(g) > gen[t] for t, _, g, _ in db_records(
        postgres)), 30, what="a rotation of each beside the second daemon")
    assert provider.issued(b.token("beta", "idp"))
    assert provider.stats()["reused_refresh_tokens"] == 0
    b.stop()
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


def add_many(m, provider, tenants):
    """One credfsctl add per tenant."""
    for t in tenants:
        add(m, provider, t)


def shared_mounts(mount, pg, tenants, n=3, **provider_kw):
    """@n daemons, each with its own mount and local dir, on one
    database."""
    mounts = []
    for i in range(n):
        m = mount(name="d%d" % i)
        c = pg_config(m, pg, tenants=tenants, name="state%d" % i)
        c["providers"]["idp"].update(provider_kw)
        c["store"]["key_file"] = str(m.tmp / "master.key")
        m.write_config(c)
        mounts.append(m)
    return mounts


def refresh_outcomes(provider):
    return [r[4] for r in provider.token_requests("refresh_token")]


def test_three_daemons_share_one_database(mount, provider, postgres):
    """Three daemons, one database, rotating 5 s tokens: every rotation
    is done by exactly one daemon (no refresh token presented twice, no
    invalid_grant), and every read on every mount is a token the provider
    issued and has not expired."""
    n_creds, seconds = (50, 20) if ASAN_BUILD else (200, 60)
    n_creds = int(os.environ.get("PG_SHARE_CREDS", n_creds))
    seconds = int(os.environ.get("PG_SHARE_SECONDS", seconds))
    tenants = ["t%03d" % i for i in range(n_creds)]
    provider.lifetime = 5
    mounts = shared_mounts(mount, postgres, tenants)
    assert ctl(mounts[0], "init").returncode == 0
    add_many(mounts[0], provider, tenants)
    for m in mounts:
        m.start()
    stale, reads, stop = [], [0], threading.Event()

    def reader(m):
        i = 0
        while not stop.is_set():
            t = tenants[i % n_creds]
            i += 7
            tok = m.token(t, "idp")
            rec = provider.issued(tok)
            if rec is None or rec["expires"] <= time.time():
                stale.append((m.mnt, t))
            reads[0] += 1
            time.sleep(0.002)  # leave the fake provider (GIL) its share

    threads = [threading.Thread(target=reader, args=(m,)) for m in mounts]
    for th in threads:
        th.start()
    try:
        time.sleep(seconds)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=10)
    outcomes = refresh_outcomes(provider)
    done = [m.metrics("credfs_refresh_success_total") for m in mounts]
    for m in mounts:
        m.stop()
        m.check_log_clean()
    print("\n%d credentials, %d s: %d rotations (%s by daemon), %d reads"
          % (n_creds, seconds, outcomes.count("ok"),
             "/".join("%d" % sum(d) for d in done), reads[0]))
    assert stale == [], stale[:5]
    assert reads[0] > 100
    assert provider.stats()["reused_refresh_tokens"] == 0
    assert set(outcomes) == {"ok"}, set(outcomes)
    # At least every token's half-life, across the daemons, and each
    # daemon did its share.
    assert outcomes.count("ok") >= n_creds * seconds / 2.5 * 0.7
    assert all(sum(d) > 0 for d in done), done


def lease_holder(pg, tenant):
    rows = pg.psql("SELECT coalesce(lease_owner, '') FROM credfs_records"
                   " WHERE tenant = '%s' AND lease_until > now()" % tenant)
    return rows[0] if rows and rows[0] else None


def test_killed_lease_holder_is_taken_over(mount, provider, postgres):
    """The daemon holding a credential's lease dies mid-refresh (the
    provider has not answered): another daemon refreshes it within the
    lease (timeout_s 2 + 10 s), with the same refresh token, and nothing
    is lost."""
    provider.lifetime = 6
    mounts = shared_mounts(mount, postgres, ["acme"], timeout_s=2)
    assert ctl(mounts[0], "init").returncode == 0
    add(mounts[0], provider, "acme")
    for m in mounts:
        m.start()
    before = refresh_outcomes(provider).count("ok")
    provider.inject("slowloris", interval=0.2, seconds=30)
    wait_for(lambda: lease_holder(postgres, "acme"), 10,
             what="a daemon to take the lease")
    pid = int(lease_holder(postgres, "acme").split(":")[1])
    holder = [m for m in mounts if m.pid == pid]
    assert len(holder) == 1, (pid, [m.pid for m in mounts])
    killed_at = time.monotonic()
    assert holder[0].stop(signal.SIGKILL) == signal.SIGKILL
    holder[0].exit_status = None  # killed on purpose
    provider.clear_faults()
    wait_for(lambda: refresh_outcomes(provider).count("ok") > before, 20,
             what="another daemon to refresh")
    took = time.monotonic() - killed_at
    assert took <= 2 + 10 + 3, took
    for m in mounts:
        if m is not holder[0]:
            assert provider.issued(m.token("acme", "idp"))
    assert provider.stats()["reused_refresh_tokens"] == 0
    assert "invalid_grant" not in refresh_outcomes(provider)


def test_database_outage_keeps_serving(mount, provider, postgres):
    """The database stops for 20 s under three daemons: reads go on with
    the valid tokens, no rotating refresh token is refreshed meanwhile
    (status and metrics say why), and all refresh once it is back."""
    provider.lifetime = 40  # a refresh comes due during the outage
    tenants = ["t%d" % i for i in range(5)]
    mounts = shared_mounts(mount, postgres, tenants)
    assert ctl(mounts[0], "init").returncode == 0
    add_many(mounts[0], provider, tenants)
    for m in mounts:
        m.start()
    for m in mounts:  # every daemon serves before the database goes
        for t in tenants:
            assert provider.issued(m.token(t, "idp"))
    postgres.stop()
    down_at = time.time()
    seen_down = False
    while time.time() < down_at + 20:
        for m in mounts:
            for t in tenants:
                assert provider.issued(m.token(t, "idp"))
            if m.metrics("credfs_store_reachable") == [0]:
                seen_down = True
                errors = [m.status(t, "idp")["persist_error"] or ""
                          for t in tenants]
                # In libpq's words (the server is gone), not "I/O error".
                assert [e for e in errors if e.startswith(
                    "the store cannot be reached (") and
                    ": not refreshing" in e and
                    "Input/output error" not in e], errors
        time.sleep(0.5)
    during = [r for r in provider.token_requests("refresh_token")
              if down_at < r[0] < down_at + 20]
    assert seen_down, "no daemon said the store was unreachable"
    assert during == [], "refreshed a rotating token with the store down"
    postgres.start()
    wait_for(lambda: refresh_outcomes(provider).count("ok") >= 5, 30,
             what="the postponed refreshes")
    wait_for(lambda: all(m.metrics("credfs_store_reachable") == [1]
                         for m in mounts), 10, what="the store back")
    for m in mounts:
        for t in tenants:
            assert provider.issued(m.token(t, "idp"))
        m.stop()
        m.check_log_clean()
    assert provider.stats()["reused_refresh_tokens"] == 0
    assert set(refresh_outcomes(provider)) == {"ok"}


def test_a_hung_database_is_named_and_bounded(mount, provider, postgres):
    """The daemon's database backend stops answering (SIGSTOP: the socket
    stays open, nothing comes back). Each call gives up after 5 s and
    connects anew; the log and status say so in words; the
    client-credentials token and the stored ones are served throughout,
    and the refresh-token credential refreshes again on the new
    connection. The store's calls run on a worker of their own: the
    client-credentials token (4 s) goes on rotating on time while a call
    hangs, never left to expire (a refresher thread waiting out the 5 s
    would leave a gap of more than its lifetime)."""
    cc = FakeProvider(lifetime=4, clients={CLIENT_ID: CLIENT_SECRET})
    cc.start()
    provider.lifetime = 8  # a refresh (and its lease) comes due soon
    try:
        m = mount()
        cfg = pg_config(m, postgres)
        cfg["providers"]["cc"] = dict(m.provider_conf(), token_url=cc.url +
                                      "/token")
        cfg["tenants"]["acme"]["credentials"]["cc"] = {"scopes": ["read"]}
        m.write_config(cfg)
        assert ctl(m, "init").returncode == 0
        add(m, provider, "acme")
        m.start()
        assert provider.issued(m.token("acme", "idp"))
        backend = int(postgres.psql(
            "SELECT pid FROM pg_stat_activity WHERE application_name"
            " = 'credfs'")[0])
        before = len(provider.token_requests("refresh_token"))
        hung_at = time.time()
        os.kill(backend, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 25
            while "the database did not answer within 5 s" not in m.log():
                assert time.monotonic() < deadline, m.log()
                assert cc.issued(m.token("acme", "cc"))
                assert provider.issued(m.token("acme", "idp"))
                time.sleep(0.2)
            # On a new connection the refreshes go on.
            wait_for(lambda: len(provider.token_requests(
                "refresh_token")) > before, 30,
                what="a refresh after the hang")
            assert cc.issued(m.token("acme", "cc"))
            hang_seen = time.time()
        finally:
            os.kill(backend, signal.SIGCONT)
        # Every gap between client-credentials requests while the
        # database hung stayed under the token's lifetime.
        times = [r[0] for r in cc.token_requests()
                 if hung_at - 4 <= r[0] <= hang_seen]
        assert len(times) >= 3, times
        gaps = [b - a for a, b in zip(times, times[1:])]
        print("\nclient-credentials requests while the database hung: "
              "%d, longest gap %.2f s" % (len(times), max(gaps)))
        assert max(gaps) < 4, gaps
        assert "Input/output error" not in m.log()
        assert provider.stats()["reused_refresh_tokens"] == 0
        m.stop()
        m.check_log_clean()
    finally:
        cc.stop()


def serves(m, tenant):
    """The token @m serves for tenant/idp, or None (an errno instead)."""
    try:
        return m.token(tenant, "idp")
    except OSError:
        return None


def within(pred, bound, what):
    """Wait up to @bound s for @pred on every daemon; the time it took."""
    t0 = time.monotonic()
    wait_for(pred, bound, interval=0.02, what=what)
    return time.monotonic() - t0


def test_every_daemon_hears_of_changes_at_once(mount, provider, postgres):
    """Three daemons on one database, none told anything but by the
    database: an add on one host is served by all, a removal drops it on
    all, a rotation by one is served by the others, a refusal (revoked)
    reaches all, and a new grant brings it back everywhere; each within a
    moment, where their own schedules would take 15 s or never."""
    provider.lifetime = 30
    mounts = shared_mounts(mount, postgres, ["acme", "beta"])
    # Daemon 0 refreshes 1.5 s after each token; 1 and 2 only after 15 s.
    c = json.loads(open(mounts[0].config_path).read())
    c["providers"]["idp"]["refresh_fraction"] = 0.95
    mounts[0].write_config(c)
    assert ctl(mounts[0], "init").returncode == 0
    rt = add(mounts[0], provider, "acme")
    for m in mounts:
        m.start()
    took = {}
    # An add on host 0 (its credfsctl tells daemon 0 only).
    add(mounts[0], provider, "beta")
    took["add"] = within(lambda: all(serves(m, "beta") for m in mounts), 3,
                         "beta served everywhere")
    # Rotations by daemon 0 are served by 1 and 2 at once.
    first = serves(mounts[1], "acme")
    wait_for(lambda: serves(mounts[0], "acme") != first, 10,
             what="daemon 0 to rotate acme")
    took["rotation"] = within(
        lambda: len({serves(m, "acme") for m in mounts}) == 1, 3,
        "the rotated token everywhere")
    assert provider.issued(serves(mounts[2], "acme"))["active"]
    # A removal on host 0.
    r = ctl(mounts[0], "remove", "beta", "idp")
    assert r.returncode == 0, r.stdout + r.stderr
    took["remove"] = within(
        lambda: all(open_errno(m.path("tenants", "beta", "idp",
                                      "access_token")) == errno.ENOENT
                    for m in mounts), 3, "beta gone everywhere")
    # The grant is revoked at the provider: daemon 0's next refresh is
    # refused, and the refusal, kept in the record, reaches 1 and 2.
    provider.revoke_family(provider.family_of(rt))
    path = ("tenants", "acme", "idp", "access_token")
    wait_for(lambda: open_errno(mounts[0].path(*path)) == errno.EKEYREVOKED,
             10, what="daemon 0 to find acme revoked")
    took["revoked"] = within(
        lambda: all(open_errno(m.path(*path)) == errno.EKEYREVOKED
                    for m in mounts), 3, "acme revoked everywhere")
    for m in mounts[1:]:
        assert m.status("acme", "idp")["last_error"].startswith(
            "invalid_grant")
    # A new grant, added on host 2, re-arms it on every host.
    add(mounts[2], provider, "acme")
    took["re-add"] = within(
        lambda: all(provider.issued(serves(m, "acme") or "") for m in mounts),
        3, "acme served again everywhere")
    print("\nseen by every daemon after: %s" % ", ".join(
        "%s %.0f ms" % (k, v * 1000) for k, v in took.items()))
    outcomes = refresh_outcomes(provider)
    assert outcomes.count("invalid_grant") == 1, outcomes
    assert provider.stats()["reused_refresh_tokens"] == 0
    for m in mounts:
        m.stop()
        m.check_log_clean()


def test_a_lost_notification_connection_catches_up(mount, provider,
                                                   postgres):
    """Two daemons: a record added while no notification can be sent
    (the trigger off, as for a notification lost with its connection) is
    not seen by the other daemon; once its notification connection is
    killed (pg_terminate_backend) it reconnects and catches up by
    comparing generations."""
    provider.lifetime = 3600
    mounts = shared_mounts(mount, postgres, ["acme", "beta"], n=2)
    assert ctl(mounts[0], "init").returncode == 0
    add(mounts[0], provider, "acme")
    for m in mounts:
        m.start()
    postgres.psql("ALTER TABLE credfs_records DISABLE TRIGGER"
                  " credfs_records_changed")
    try:
        add(mounts[0], provider, "beta")  # daemon 0 is told; 1 is not
    finally:
        postgres.psql("ALTER TABLE credfs_records ENABLE TRIGGER"
                      " credfs_records_changed")
    assert serves(mounts[0], "beta")
    time.sleep(1)
    assert serves(mounts[1], "beta") is None
    killed = postgres.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE application_name = 'credfs-watch'")
    assert killed == ["t", "t"], killed
    wait_for(lambda: serves(mounts[1], "beta"), 10,
             what="daemon 1 to catch up")
    assert provider.issued(serves(mounts[1], "beta"))["active"]
    assert "1 records changed while nobody listened" in mounts[1].log()
    # Listening again: a change now is heard at once.
    add(mounts[0], provider, "beta")
    wait_for(lambda: serves(mounts[1], "beta") == serves(mounts[0], "beta"),
             3, what="the new beta on daemon 1")
    for m in mounts:
        m.stop()
        m.check_log_clean()
