"""Who may read: real users and groups (useradd/groupadd), a real cgroup,
the audit log, least-privilege scopes, and the kernel-cache read path."""

import errno
import fcntl
import grp
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid

import pytest

from harness import (CREDFS, CREDFSCTL, audit_lines, open_errno,
                     simple_config, system_users, tagged, wait_audit,
                     wait_for)

EKEYEXPIRED = 127
USERS = tuple(tagged("credfs-" + u) for u in ("alice", "bob", "eve", "ops"))
GROUPS = tuple(tagged("credfs-" + g) for g in ("beta", "opsgrp"))


@pytest.fixture(scope="module")
def people():
    """alice; bob (supplementary group credfs-beta); eve (nobody's reader);
    ops (supplementary group credfs-opsgrp). Removed afterwards."""
    made_groups = []
    try:
        for g in GROUPS:
            if subprocess.run(["getent", "group", g],
                              capture_output=True).returncode:
                subprocess.run(["groupadd", g], check=True)
                made_groups.append(g)
        with system_users(USERS) as users:
            subprocess.run(["usermod", "-a", "-G", GROUPS[0], USERS[1]],
                           check=True)
            subprocess.run(["usermod", "-a", "-G", GROUPS[1], USERS[3]],
                           check=True)
            yield {**{u.pw_name.split("-")[1]: u for u in users},
                   "beta": grp.getgrnam(GROUPS[0]).gr_gid,
                   "opsgrp": grp.getgrnam(GROUPS[1]).gr_gid}
    finally:
        for g in made_groups:
            subprocess.run(["groupdel", g], capture_output=True)


def as_user(user, *cmd, cgroup_procs=None):
    """Run @cmd as @user with its supplementary groups, optionally first
    moving the process into a cgroup (by its cgroup.procs file)."""
    run = ["setpriv", "--reuid=%d" % user.pw_uid, "--regid=%d" % user.pw_gid,
           "--init-groups"] + list(cmd)
    if cgroup_procs:
        run = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', cgroup_procs] + run
    return subprocess.run(run, capture_output=True, text=True, timeout=20)


def fp(token):
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def two_tenants(people, audit, **extra):
    def config(m):
        c = simple_config(m, tenants=("alpha", "beta"))
        c["tenants"]["alpha"]["readers"] = {"uids": [people["alice"].pw_uid]}
        c["tenants"]["beta"]["readers"] = {"gids": [people["beta"]]}
        c["audit_log"] = audit
        c["ops_gids"] = [people["opsgrp"]]
        c.update(extra)
        return c
    return config


def test_tenant_isolation_with_users_and_groups(mount, provider, people,
                                                public_dir, tmp_path):
    audit = str(tmp_path / "audit.log")
    m = mount(two_tenants(people, audit), mnt=os.path.join(public_dir, "m"))
    alice, bob, eve = people["alice"], people["bob"], people["eve"]
    tok = {t: m.token(t, "idp") for t in ("alpha", "beta")}
    p = {t: m.path("tenants", t, "idp", "access_token") for t in tok}

    # Listing shows only what each may read.
    assert as_user(alice, "ls", m.path("tenants")).stdout.split() == ["alpha"]
    assert as_user(bob, "ls", m.path("tenants")).stdout.split() == ["beta"]
    assert as_user(eve, "ls", m.path("tenants")).stdout.split() == []
    assert sorted(os.listdir(m.path("tenants"))) == ["alpha", "beta"]

    # alice: reads alpha; beta does not exist for her.
    before = len(audit_lines(audit))
    r = as_user(alice, "cat", p["alpha"])
    assert r.returncode == 0 and r.stdout == tok["alpha"]
    r = as_user(alice, "cat", p["beta"])
    assert r.returncode != 0 and "No such file or directory" in r.stderr
    # bob reads beta through his supplementary group, not alpha.
    r = as_user(bob, "cat", p["beta"])
    assert r.returncode == 0 and r.stdout == tok["beta"]
    r = as_user(bob, "cat", p["alpha"])
    assert r.returncode != 0 and "No such file or directory" in r.stderr

    # Exactly one audit line per allowed read and per denial (each cat
    # makes one open, so one lookup of the tenant). Only alice's and bob's:
    # the lines of root's reads above, and of the first refreshes, may
    # still be on their way to the file when @before is taken (the writer
    # gathers lines for a few milliseconds, src/audit.c).
    def theirs(a):
        return a.get("uid") in (alice.pw_uid, bob.pw_uid)
    lines = [a for a in wait_audit(
        audit, lambda a: theirs(a) and a["event"] in ("read", "denied"), 4,
        before) if theirs(a)]
    reads = [a for a in lines if a["event"] == "read"]
    denied = [a for a in lines if a["event"] == "denied"]
    assert len(reads) == 2 and len(denied) == 2, \
        [(a["event"], a["uid"], a["tenant"], a["comm"], a["pid"],
          a["time"]) for a in lines]
    ra = [a for a in reads if a["uid"] == alice.pw_uid][0]
    assert ra["tenant"] == "alpha" and ra["provider"] == "idp"
    assert ra["outcome"] == "ok" and ra["comm"] == "cat"
    assert ra["fingerprint"] == fp(tok["alpha"])
    assert ra["gid"] == alice.pw_gid and ra["pid"] > 0
    assert ra["cgroup"].startswith("/")
    for d in denied:
        assert d["outcome"] == "ENOENT" and d["provider"] is None
        assert d["fingerprint"] is None
    assert {(d["uid"], d["tenant"]) for d in denied} == \
        {(alice.pw_uid, "beta"), (bob.pw_uid, "alpha")}
    # Neither can she stat or list it; each denied lookup is logged.
    for cmd in (["stat", m.path("tenants", "beta")],
                ["ls", m.path("tenants", "beta")]):
        r = as_user(alice, *cmd)
        assert r.returncode != 0 and "No such file or directory" in r.stderr
    wait_audit(audit, lambda a: a["event"] == "denied" and
               a["uid"] == alice.pw_uid, 2, before)
    with open(audit) as f:
        text = f.read()
    assert tok["alpha"] not in text and tok["beta"] not in text

    # credfsctl token says which: a tenant hidden from her, or a
    # directory on the way she cannot enter (tmp_path is 0700).
    ctl = os.path.join(public_dir, "credfsctl")
    shutil.copy(CREDFSCTL, ctl)
    r = as_user(alice, ctl, "token", "alpha", "idp", "--mount", m.mnt)
    assert r.returncode == 0 and r.stdout == tok["alpha"] + "\n"
    r = as_user(alice, ctl, "token", "beta", "idp", "--mount", m.mnt)
    assert r.returncode == 1
    assert "no tenant beta here, or you are not one of its readers" \
        in r.stderr
    r = as_user(alice, ctl, "token", "alpha", "idp", "--mount",
                str(tmp_path / "m"))
    closed = next(d for d in (os.sep.join(str(tmp_path).split(os.sep)[:i])
                              for i in range(2, 99))
                  if not os.stat(d).st_mode & 0o001)
    assert r.returncode == 1
    assert "you cannot enter %s (permission denied)" % closed in r.stderr


def test_root_follows_allow_root(mount, provider, people, public_dir,
                                 tmp_path):
    audit = str(tmp_path / "audit.log")
    m = mount(two_tenants(people, audit, allow_root=False),
              mnt=os.path.join(public_dir, "m"))
    assert os.listdir(m.path("tenants")) == []
    assert open_errno(m.path("tenants", "alpha", "idp", "access_token")) \
        == errno.ENOENT
    # alice still reads her tenant.
    r = as_user(people["alice"], "cat",
                m.path("tenants", "alpha", "idp", "access_token"))
    assert r.returncode == 0 and provider.issued(r.stdout)


def test_credential_narrowing_gives_eacces(mount, provider, people,
                                           public_dir, tmp_path):
    audit = str(tmp_path / "audit.log")

    def config(m):
        c = two_tenants(people, audit)(m)
        c["tenants"]["beta"]["credentials"]["idp"]["readers"] = {
            "uids": [people["alice"].pw_uid]}
        return c
    m = mount(config, mnt=os.path.join(public_dir, "m"))
    path = m.path("tenants", "beta", "idp", "access_token")
    bob = people["bob"]
    r = as_user(bob, "cat", path)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    # The credential is visible to bob (his tenant), just not readable.
    assert as_user(bob, "ls", m.path("tenants", "beta")).stdout.split() \
        == ["idp"]
    # bob's lines only: the first refreshes' lines reach the file when
    # the writer gets to them (src/audit.c), before or after bob's.
    lines = wait_audit(audit, lambda a: a["event"] == "denied")
    assert [(a["event"], a["outcome"], a["tenant"], a["provider"])
            for a in lines if a.get("uid") == bob.pw_uid] == \
        [("denied", "EACCES", "beta", "idp")]


@pytest.fixture
def cgroup_dirs():
    """A parent cgroup v2 directory with "allowed" and "other" children."""
    root = None
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[2] == "cgroup2":
                root = parts[1]
                break
    if root is None:
        pytest.skip("no cgroup v2 hierarchy is mounted")
    name = "credfs-test-" + uuid.uuid4().hex[:8]
    base = os.path.join(root, name)
    os.mkdir(base)
    for child in ("allowed", "other"):
        os.mkdir(os.path.join(base, child))
    yield root, "/" + name
    for child in ("allowed", "other", ""):
        d = os.path.join(base, child)
        for _ in range(50):  # processes leave the cgroup as they exit
            try:
                os.rmdir(d)
                break
            except OSError:
                time.sleep(0.1)


def test_cgroup_rule(mount, provider, people, public_dir, tmp_path,
                     cgroup_dirs):
    root, name = cgroup_dirs
    audit = str(tmp_path / "audit.log")

    def config(m):
        c = two_tenants(people, audit)(m)
        c["tenants"]["alpha"]["readers"]["cgroups"] = [name + "/allowed"]
        return c
    m = mount(config, mnt=os.path.join(public_dir, "m"))
    path = m.path("tenants", "alpha", "idp", "access_token")
    alice = people["alice"]
    inside = os.path.join(root, name.lstrip("/"), "allowed", "cgroup.procs")
    outside = os.path.join(root, name.lstrip("/"), "other", "cgroup.procs")
    r = as_user(alice, "cat", path, cgroup_procs=inside)
    assert r.returncode == 0, r.stderr
    assert provider.issued(r.stdout)
    r = as_user(alice, "cat", path, cgroup_procs=outside)
    assert r.returncode != 0 and "No such file or directory" in r.stderr
    r = as_user(alice, "cat", path)  # wherever the test runs
    assert r.returncode != 0
    wait_audit(audit, lambda a: a["event"] == "denied", 2)
    ok = [a for a in audit_lines(audit) if a["event"] == "read"]
    assert ok and ok[-1]["cgroup"] == name + "/allowed"
    denied = [a for a in audit_lines(audit) if a["event"] == "denied"]
    assert any(a["cgroup"] == name + "/other" for a in denied)


def test_root_status_and_metrics_are_filtered(mount, provider, people,
                                              public_dir, tmp_path):
    m = mount(two_tenants(people, str(tmp_path / "audit.log")),
              mnt=os.path.join(public_dir, "m"))
    m.token("alpha", "idp")
    m.token("beta", "idp")
    r = as_user(people["alice"], "cat", m.path("status"))
    assert [line.split()[0] for line in r.stdout.splitlines()] == \
        ["alpha/idp"]
    r = as_user(people["alice"], "cat", m.path("metrics"))
    assert 'tenant="alpha"' in r.stdout and 'tenant="beta"' not in r.stdout
    r = as_user(people["eve"], "cat", m.path("status"))
    assert r.returncode == 0 and r.stdout == ""
    # ops group members and root see everything.
    for out in (as_user(people["ops"], "cat", m.path("status")).stdout,
                m.read("status")):
        assert [line.split()[0] for line in out.splitlines()] == \
            ["alpha/idp", "beta/idp"]


def test_sighup_reopens_audit_log(mount, provider, tmp_path):
    audit = str(tmp_path / "audit.log")

    def config(m):
        c = simple_config(m)
        c["audit_log"] = audit
        return c
    m = mount(config)
    m.token("acme", "idp")
    os.rename(audit, audit + ".1")  # what logrotate does
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: "audit log reopened" in m.log(), 5, what="the reopen")
    tok = m.token("acme", "idp")
    lines = wait_audit(audit, lambda a: a["event"] == "read")
    assert [a["event"] for a in lines] == ["read"]
    assert lines[0]["fingerprint"] == fp(tok)
    assert any(a["event"] == "refresh_ok" for a in audit_lines(audit + ".1"))
    assert os.stat(audit).st_mode & 0o777 == 0o600


def test_a_stalled_audit_log_holds_no_open(mount, provider):
    """The audit log stops taking lines (stderr, a pipe nobody reads: a
    disk that hangs). Opens go on, every one audited in memory: 3,000
    reads finish while not one line more can be written, and once the
    pipe is read again every line comes out, none dropped."""
    r, w = os.pipe()
    fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: full after ~13 lines
    m = mount()
    reader = None
    try:
        m.start(dict(simple_config(m), log_level="error"), output=w)
        os.close(w)
        w = None
        path = m.path("tenants", "acme", "idp", "access_token")
        done = []

        def reads():
            for _ in range(3000):
                with open(path) as f:
                    f.read()
            done.append(True)
        t = threading.Thread(target=reads, daemon=True)
        t.start()
        t.join(60)
        blocked = not done
        got = []

        def drain():
            while True:
                b = os.read(r, 65536)
                if not b:
                    return
                got.append(b)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()  # unblocks a writer that waits, either way
        t.join(30)
        assert not blocked, "opens waited for the audit log's writes"

        def all_lines():
            n = b"".join(got).count(b'"event":"read"')
            return n if n >= 3000 else None
        wait_for(all_lines, 30, what="3,000 read lines from the pipe")
    finally:
        m.stop()
        if w is not None:
            os.close(w)
        if reader:
            reader.join(10)
        os.close(r)


def test_audit_write_failure_is_visible(mount, provider):
    def config(m):
        c = simple_config(m)
        c["audit_log"] = "/dev/full"  # every write fails with ENOSPC
        return c
    m = mount(config)
    assert provider.issued(m.token("acme", "idp"))  # reads still work
    # Rendered files follow within a second.
    st = wait_for(lambda: (lambda s: s if s["audit"].startswith("failing:")
                           else None)(m.status("acme", "idp")), 10,
                  what="the audit failure in status")
    assert "No space left on device" in st["audit"]
    metrics = m.read("metrics")
    line = [x for x in metrics.splitlines()
            if x.startswith("credfs_audit_write_failures_total ")][0]
    assert int(line.split()[1]) >= 1


def test_over_privileged_grant_flagged_and_strict_refuses(mount, provider,
                                                          tmp_path):
    provider.grant_scope = "read admin"

    def config(m):
        c = simple_config(m, tenants=("lax", "strict"))
        c["tenants"]["strict"]["credentials"]["idp"]["strict_scopes"] = True
        c["audit_log"] = str(tmp_path / "audit.log")
        return c
    m = mount(config)
    assert provider.issued(m.token("lax", "idp"))
    st = m.status("lax", "idp")
    assert st["over_privileged"] == ["admin"] and st["refused"] is None
    assert "over_privileged: admin" in m.read("tenants", "lax", "idp",
                                              "status")
    path = m.path("tenants", "strict", "idp", "access_token")
    assert open_errno(path) == errno.EACCES
    st = m.status("strict", "idp")
    assert st["strict_scopes"] is True
    assert st["refused"] == \
        "granted scopes wider than requested (strict_scopes)"
    denied = [a for a in wait_audit(str(tmp_path / "audit.log"),
                                    lambda a: a["event"] == "denied")
              if a["event"] == "denied"]
    assert denied[-1]["detail"].startswith("granted scopes wider")


def test_high_risk_scope_refused_at_load(mount):
    m = mount()
    c = simple_config(m, scopes=("read", "admin.delete"))
    c["providers"]["idp"]["high_risk_scopes"] = ["admin.*"]
    m.write_config(c)
    r = subprocess.run([CREDFS, "--config", m.config_path, m.mnt],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "tenants.acme.credentials.idp.scopes[1]: \"admin.delete\" is " \
        "high-risk for provider idp; list it in allow_high_risk" in r.stderr
    c["tenants"]["acme"]["credentials"]["idp"]["allow_high_risk"] = \
        ["admin.delete"]
    m.start(c)
    assert m.token("acme", "idp")


# -- kernel-cache read path ----------------------------------------------------

def test_cache_kernel_refuses_what_modes_cannot_say(mount, people):
    m = mount()
    c = simple_config(m)
    c["tenants"]["acme"]["readers"] = {"uids": [1], "cgroups": ["/x"]}
    m.write_config(c)
    r = subprocess.run([CREDFS, "-o", "cache=kernel", "--config",
                        m.config_path, m.mnt], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode != 0
    assert "tenants.acme.readers: with -o cache=kernel only file modes " \
        "are checked" in r.stderr
    r = subprocess.run([CREDFS, "-o", "cache=fast", "--config",
                        m.config_path, m.mnt], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode != 0 and "use cache=audited or cache=kernel" in \
        r.stderr


def test_cache_kernel_stays_fresh_without_torn_reads(mount, provider, people,
                                                     public_dir, tmp_path):
    provider.lifetime = 2
    audit = str(tmp_path / "audit.log")

    def config(m):
        c = simple_config(m, tenants=("alpha",))
        c["tenants"]["alpha"]["readers"] = {"uids": [people["alice"].pw_uid]}
        c["audit_log"] = audit
        return c
    m = mount(config, args=("-o", "cache=kernel"),
              mnt=os.path.join(public_dir, "m"))
    path = m.path("tenants", "alpha", "idp", "access_token")
    seen, n = set(), 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        fd = os.open(path, os.O_RDONLY)
        try:
            parts = []
            while True:
                b = os.read(fd, 16)
                if not b:
                    break
                parts.append(b)
        finally:
            os.close(fd)
        tok = b"".join(parts).decode()
        rec = provider.issued(tok)
        assert rec is not None, "torn or unknown token"
        assert rec["expires"] > time.time(), "expired token served"
        seen.add(tok)
        n += 1
    assert n > 1000 and len(seen) >= 3  # many reads, across rotations
    # Opens never reached the daemon: no per-read audit lines.
    assert not [a for a in audit_lines(audit) if a["event"] == "read"]
    # Ownership is enforced by the kernel for other users.
    r = as_user(people["alice"], "cat", path)
    assert r.returncode == 0 and provider.issued(r.stdout)
    r = as_user(people["eve"], "cat", path)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_cache_kernel_never_serves_an_expired_token(mount, provider):
    provider.lifetime = 3
    m = mount(lambda m: simple_config(m, backoff_initial_s=0.2,
                                      backoff_max_s=0.5),
              args=("-o", "cache=kernel"))
    path = m.path("tenants", "acme", "idp", "access_token")
    tok = m.token("acme", "idp")
    provider.inject("status", count=-1, status=503)
    assert m.token("acme", "idp") == tok  # cached, still valid
    time.sleep(max(0, provider.issued(tok)["expires"] - time.time()) + 0.3)
    assert open_errno(path) == EKEYEXPIRED
    provider.clear_faults()
    wait_for(lambda: open_errno(path) == 0, 5, what="recovery")
    assert provider.issued(m.token("acme", "idp"))["expires"] > time.time()


def test_cache_kernel_applies_strict_scopes_at_lookup(mount, provider):
    provider.grant_scope = "read admin"

    def config(m):
        c = simple_config(m, tenants=("lax", "strict"))
        c["tenants"]["strict"]["credentials"]["idp"]["strict_scopes"] = True
        return c
    m = mount(config, args=("-o", "cache=kernel"))
    assert provider.issued(m.token("lax", "idp"))
    assert open_errno(m.path("tenants", "strict", "idp", "access_token")) \
        == errno.EACCES


def test_a_tenant_visible_to_all(mount, provider, people, public_dir,
                                 tmp_path):
    """visible_to_all: the tenant's name is listed and found by every
    caller (so the kernel may cache it); its credentials stay its
    readers' (EACCES, audited), decided by the daemon where the modes
    cannot say it. Another tenant stays hidden. A reload that makes it
    private hides the name at once."""
    audit = str(tmp_path / "audit.log")
    alice, bob, eve = people["alice"], people["bob"], people["eve"]

    def config(m, visible=True):
        c = simple_config(m, tenants=("alpha", "beta"))
        # Two uids: the modes cannot say it, every check is the daemon's.
        c["tenants"]["alpha"]["readers"] = {"uids": [alice.pw_uid,
                                                     bob.pw_uid]}
        c["tenants"]["alpha"]["visible_to_all"] = visible
        c["tenants"]["beta"]["readers"] = {"gids": [people["beta"]]}
        c["audit_log"] = audit
        return c
    m = mount(config, mnt=os.path.join(public_dir, "m"))
    tok = m.token("alpha", "idp")
    path = m.path("tenants", "alpha", "idp", "access_token")
    assert as_user(alice, "cat", path).stdout == tok
    for _ in range(2):  # the second time through names the kernel keeps
        assert as_user(eve, "ls", m.path("tenants")).stdout.split() == \
            ["alpha"]
        r = as_user(eve, "stat", "-c", "%F", m.path("tenants", "alpha"))
        assert r.returncode == 0 and r.stdout.strip() == "directory"
        for cmd in (["cat", path], ["stat", path],
                    ["ls", m.path("tenants", "alpha")]):
            r = as_user(eve, *cmd)
            assert r.returncode != 0 and "Permission denied" in r.stderr, \
                (cmd, r.stdout, r.stderr)
        r = as_user(eve, "cat", m.path("tenants", "beta", "idp",
                                      "access_token"))
        assert "No such file or directory" in r.stderr
        assert as_user(bob, "cat", path).stdout == m.token("alpha", "idp")
    denied = wait_audit(audit, lambda a: a["event"] == "denied" and
                        a["uid"] == eve.pw_uid and a["tenant"] == "alpha")
    assert {a["outcome"] for a in denied if a["event"] == "denied" and
            a["tenant"] == "alpha"} == {"EACCES"}

    m.write_config(config(m, visible=False))
    os.kill(m.pid, signal.SIGHUP)
    wait_for(lambda: "reload: " in m.log(), 10, what="the reload")
    assert as_user(eve, "ls", m.path("tenants")).stdout.split() == []
    r = as_user(eve, "stat", m.path("tenants", "alpha"))
    assert "No such file or directory" in r.stderr
    assert as_user(alice, "cat", path).stdout == m.token("alpha", "idp")
