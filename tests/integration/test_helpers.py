"""credfsctl token: the shapes credential helpers expect, checked against
what their consumers parse (the real git for the git helper)."""

import json
import os
import signal
import subprocess
import time

from harness import CREDFSCTL, reap, simple_config, wait_for


def token(m, *args, input=None):
    return subprocess.run([CREDFSCTL, "token", "acme", "idp", "--mount",
                           m.mnt] + list(args), input=input,
                          capture_output=True, text=True, timeout=20)


def test_formats(mount, provider):
    m = mount(simple_config)
    tok = m.token("acme", "idp")
    st = m.status("acme", "idp")
    r = token(m)
    assert r.returncode == 0 and r.stdout == tok + "\n"
    r = token(m, "--format", "header")
    assert r.stdout == "Authorization: Bearer %s\n" % tok
    j = json.loads(token(m, "--format", "json").stdout)
    assert j["access_token"] == tok and j["token_type"] == "Bearer"
    assert j["expires_at"] == st["expires_at"]
    assert j["scopes"] == ["read"] and 3500 < j["expires_in"] <= 3600
    # What a kubeconfig exec plugin must print (client.authentication
    # .k8s.io/v1): kind, apiVersion, status.token, an RFC 3339 expiry.
    ec = json.loads(token(m, "--format", "exec-credential").stdout)
    assert ec == {"apiVersion": "client.authentication.k8s.io/v1",
                  "kind": "ExecCredential",
                  "status": {"token": tok,
                             "expirationTimestamp": st["expires_at"]}}
    assert time.strptime(ec["status"]["expirationTimestamp"],
                         "%Y-%m-%dT%H:%M:%SZ")
    r = token(m, "--format", "aws")
    assert r.returncode == 2 and "not an AWS key" in r.stderr


def test_git_credential_helper(mount, provider, tmp_path):
    m = mount(simple_config)
    tok = m.token("acme", "idp")
    helper = "!%s token acme idp --mount %s --format git" % (CREDFSCTL,
                                                              m.mnt)
    env = dict(os.environ, HOME=str(tmp_path), GIT_TERMINAL_PROMPT="0")
    r = subprocess.run(["git", "-c", "credential.helper=", "-c",
                        "credential.helper=" + helper, "credential", "fill"],
                       input="protocol=https\nhost=git.example.com\n\n",
                       capture_output=True, text=True, timeout=20, env=env)
    assert r.returncode == 0, r.stderr
    got = dict(l.split("=", 1) for l in r.stdout.splitlines())
    assert got["password"] == tok
    assert got["username"] == "x-access-token"
    assert got["host"] == "git.example.com"
    # store and erase are accepted and change nothing.
    for op in ("approve", "reject"):
        r = subprocess.run(["git", "-c", "credential.helper=", "-c",
                            "credential.helper=" + helper, "credential", op],
                           input="protocol=https\nhost=git.example.com\n"
                           "username=x-access-token\npassword=%s\n\n" % tok,
                           capture_output=True, text=True, timeout=20,
                           env=env)
        assert r.returncode == 0, r.stderr
    assert m.token("acme", "idp") == tok


def test_errors_say_why(mount, provider):
    m = mount(simple_config)
    r = token_at(m.mnt, "acme", "nope")
    assert r.returncode == 1
    assert "acme/nope: tenant acme has no credential nope in the daemon's " \
        "configuration" in r.stderr
    r = token_at(m.mnt, "zeta", "idp")
    assert r.returncode == 1
    assert "zeta/idp: no tenant zeta here, or you are not one of its " \
        "readers" in r.stderr
    r = token(m, "--format", "raw", "get")
    assert r.returncode == 2 and "'get' is for --format git" in r.stderr
    r = token_at("/nonexistent", "acme", "idp")
    assert r.returncode == 1
    assert "/nonexistent: no such directory: is credfs running" in r.stderr


def token_at(mnt, tenant, provider):
    return subprocess.run([CREDFSCTL, "token", tenant, provider, "--mount",
                           mnt], capture_output=True, text=True, timeout=20)


def test_token_says_when_the_daemon_is_not_there(mount, provider, tmp_path):
    """Stopped, killed (a dead mount), never mounted there, or the
    credential declared and not yet connected: each said, with what to
    do, and not as "no such credential"."""
    store = tmp_path / "store"
    m = mount()
    config = simple_config(m)
    config["providers"]["rt"] = m.provider_conf(grant="refresh_token")
    config["tenants"]["acme"]["credentials"]["rt"] = {"scopes": ["read"]}
    config["store"] = {"dir": str(store),
                       "key_file": str(tmp_path / "master.key")}
    m.write_config(config)
    r = subprocess.run([CREDFSCTL, "init", "--config", m.config_path],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    m.start()
    r = token_at(m.mnt, "acme", "rt")
    assert r.returncode == 1
    assert "acme/rt: declared, but no account is connected yet: " \
        "credfsctl connect, device or add acme rt" in r.stderr

    m.stop()
    r = token(m)
    assert r.returncode == 1
    assert "%s is not a credfs mount: the daemon is stopped" % m.mnt \
        in r.stderr

    m.start()
    os.kill(m.pid, signal.SIGKILL)
    assert reap(m.pid, 10) is not None
    m.pid = None
    try:
        r = token(m)
        assert r.returncode == 1
        assert "the mount on %s is not served (is credfs running?" % m.mnt \
            in r.stderr
    finally:
        subprocess.run(["fusermount3", "-uz", m.mnt], timeout=10)


def test_list_and_status_without_a_store(mount, provider):
    """A client_credentials-only config has no store, so no control
    socket: list and status read the mount instead."""
    m = mount(lambda m: simple_config(m, tenants=("acme", "beta")))

    def ctl(*args):
        return subprocess.run([CREDFSCTL] + list(args) + [
            "--config", m.config_path, "--mount", m.mnt],
            capture_output=True, text=True, timeout=20)

    r = ctl("list")
    assert r.returncode == 0, r.stderr
    rows = {tuple(l.split()[:2]): l.split() for l in
            r.stdout.splitlines()[1:]}
    assert rows[("acme", "idp")][2:4] == ["client_credentials", "valid"]
    assert set(rows) == {("acme", "idp"), ("beta", "idp")}
    lj = json.loads(ctl("list", "--json").stdout)
    assert [(o["tenant"], o["state"]) for o in lj] == [("acme", "valid"),
                                                       ("beta", "valid")]
    assert lj[0]["expires_at"] == m.status("acme", "idp")["expires_at"]
    r = ctl("status")
    assert r.returncode == 0 and "acme/idp state=valid" in r.stdout
    r = ctl("status", "beta")
    assert r.returncode == 0 and r.stdout.startswith("tenant: beta\n")
    sj = json.loads(ctl("status", "acme", "idp", "--json").stdout)
    assert [s["tenant"] for s in sj] == ["acme"]
    assert sj[0]["fingerprint"] == m.status("acme", "idp")["fingerprint"]
    r = ctl("status", "zeta")
    assert r.returncode == 1 and "zeta: not in the configuration" in r.stderr
    m.stop()
    r = ctl("list")
    assert r.returncode == 1
    assert "credfsctl list: %s is not a credfs mount" % m.mnt in r.stderr


def test_exec_restarts_or_signals_the_command_on_rotation(mount, provider,
                                                          tmp_path):
    """credfsctl exec: the token in the command's environment, never in
    an argv; on rotation the command is restarted with the new one, or
    signalled with --signal; signals and the exit status pass through."""
    provider.lifetime = 3
    m = mount(simple_config)
    out = tmp_path / "seen"
    child = ('echo "$$ $TOKEN" >> "$0"; trap "exit 0" TERM; '
             'trap "echo $$ hup >> $0" HUP; while :; do sleep 0.05; done')
    p = subprocess.Popen([CREDFSCTL, "exec", "acme", "idp", "--mount", m.mnt,
                          "--env", "TOKEN", "--", "sh", "-c", child,
                          str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        def seen():
            if not out.exists():
                return None
            rows = [l.split() for l in out.read_text().splitlines()]
            return rows if len([r for r in rows if r[1] != "hup"]) >= 3 \
                else None
        rows = wait_for(seen, 20, what="two restarts")
        with open("/proc/%d/cmdline" % p.pid, "rb") as f:
            argv = f.read()
        for pid, tok in rows[:3]:
            assert provider.issued(tok), tok
            assert tok.encode() not in argv
        assert len({pid for pid, _ in rows[:3]}) == 3
        assert len({tok for _, tok in rows[:3]}) == 3
    finally:
        p.terminate()
        rc = p.wait(20)
    assert rc == 0, p.stderr.read()  # the child's "exit 0" on SIGTERM

    out.unlink()
    p = subprocess.Popen([CREDFSCTL, "exec", "acme", "idp", "--mount", m.mnt,
                          "--env", "TOKEN", "--signal", "HUP", "--", "sh",
                          "-c", child, str(out)], stderr=subprocess.PIPE,
                         text=True)
    try:
        rows = wait_for(lambda: out.exists() and (lambda r: r if len(
            [x for x in r if x[1] == "hup"]) >= 2 else None)(
            [l.split() for l in out.read_text().splitlines()]), 20,
            what="two signals")
        assert len({pid for pid, _ in rows}) == 1
        assert provider.issued(rows[0][1])
    finally:
        p.terminate()
        rc = p.wait(20)
    assert rc == 0, p.stderr.read()

    r = subprocess.run([CREDFSCTL, "exec", "acme", "idp", "--mount", m.mnt,
                        "--", "sh", "-c", 'test -n "$ACCESS_TOKEN"; exit 7'],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 7, r.stderr
    r = subprocess.run([CREDFSCTL, "exec", "acme", "idp", "--mount", m.mnt],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "missing -- COMMAND" in r.stderr
    r = subprocess.run([CREDFSCTL, "exec", "acme", "idp", "--mount", m.mnt,
                        "--signal", "BOGUS", "--", "true"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "--signal BOGUS: name a signal" in r.stderr


def test_watch_runs_a_command_after_each_rotation(mount, provider, tmp_path):
    provider.lifetime = 3
    m = mount(simple_config)
    out = tmp_path / "hooks"
    p = subprocess.Popen([CREDFSCTL, "watch", "acme", "idp", "--mount",
                          m.mnt, "--", "sh", "-c",
                          'echo "$CREDFS_TENANT $CREDFS_PROVIDER '
                          '$CREDFS_FINGERPRINT $(cat "$1")" >> "$0"',
                          str(out), m.path("tenants", "acme", "idp",
                                           "access_token")],
                         stderr=subprocess.PIPE, text=True)
    try:
        rows = wait_for(lambda: out.exists() and (lambda r: r if len(r) >= 2
                        else None)([l.split() for l in
                                    out.read_text().splitlines()]), 20,
                        what="two rotations")
    finally:
        p.terminate()
        rc = p.wait(20)
    assert rc == 0, p.stderr.read()
    for tenant, prov, fp, tok in rows:
        assert (tenant, prov) == ("acme", "idp")
        assert provider.issued(tok)
    # Each run saw its own rotation (the token read may be newer still).
    assert len({fp for _, _, fp, _ in rows}) == len(rows)
