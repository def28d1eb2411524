"""The mount never goes away: a crash under the service manager's fd store
(tests/harness.py FakeSystemd plays systemd's side) and an upgrade by
SIGUSR2 leave the mount in place, and a reader that opens access_token
every 2 ms throughout sees no error and no token but a valid one, with
the provider up or refusing everything.
"""

import os
import shutil
import signal
import socket
import stat
import subprocess
import time

from harness import (CREDFS, CREDFSCTL, FakeSystemd, Readers, is_mounted,
                     reap, simple_config, wait_for)
from test_refresh import add, ctl, rt_config, setup_store


def valid_token(provider):
    """A check for Readers: the bytes are a token the provider issued and
    has not seen expire."""
    def check(data):
        rec = provider.issued(data.decode(errors="replace"))
        return rec is not None and rec["expires"] > time.time()
    return check


def under_systemd(mount):
    """A mount of simple_config() for FakeSystemd to start (not started)."""
    m = mount()
    m.write_config(simple_config(m))
    return m, FakeSystemd(m)


def token_requests(provider):
    return len(provider.token_requests())


def test_sigkill_under_the_fd_store_readers_never_fail(mount, provider):
    """20 SIGKILLs, each followed by a restart with the fds systemd kept:
    no reader error, the same token served (no new token request: the
    client_credentials token is carried in the state image), and the
    kernel's node ids still valid (a file opened before is read after)."""
    m, sd = under_systemd(mount)
    try:
        first = sd.start()
        assert set(sd.stored()) >= {"fuse", "init"}, sd.stored()
        wait_for(lambda: any(n.startswith("state") for n in sd.stored()), 10,
                 what="a state image in the fd store")
        token = m.token("acme", "idp")
        asked = token_requests(provider)
        held = open(m.path("tenants", "acme", "idp", "access_token"), "rb")
        readers = Readers(m.path("tenants", "acme", "idp", "access_token"),
                          check=valid_token(provider))
        try:
            pids = {first}
            for _ in range(20):
                time.sleep(0.15)
                pids.add(sd.restart_after_crash())
        finally:
            readers.stop()
        print("%d reads, worst %.3fs, errors %r" %
              (readers.reads, readers.worst, readers.errors))
        assert readers.errors == {}, readers.errors
        assert not readers.bad, readers.bad
        assert readers.reads > 500
        assert len(pids) == 21
        assert m.token("acme", "idp") == token
        assert token_requests(provider) == asked
        assert held.read().decode() == token
        held.close()
        assert "resuming the mount" in m.log()
    finally:
        sd.stop()
    assert not is_mounted(m.mnt)


def upgrade(m, timeout=30):
    """SIGUSR2, and wait for the new daemon to take over: the pid file
    names it, and the old one has exited (cleanly)."""
    old = m.pid
    os.kill(old, signal.SIGUSR2)
    wait_for(lambda: open(m.pid_file).read().strip() not in ("", str(old)),
             timeout, what="the new daemon's pid in the pid file")
    status = reap(old, timeout)
    assert status is not None and os.WIFEXITED(status) and \
        os.WEXITSTATUS(status) == 0, "old daemon: %r\n%s" % (status, m.log())
    m.pid = int(open(m.pid_file).read())
    return m.pid


def test_sigusr2_upgrades_in_place_and_readers_never_fail(
        mount, provider, tmp_path):
    """10 upgrades by SIGUSR2, each to the binary at the daemon's path:
    readers see no error and the same token (no request to the provider),
    a file opened before every upgrade reads the same after them, the
    refresh-token credential's store (and its lock) goes along, and the
    mount is never unmounted."""
    m = mount()
    store = tmp_path / "store"
    cfg = rt_config(m, store)
    cfg["providers"]["cc"] = m.provider_conf()
    cfg["tenants"]["acme"]["credentials"]["cc"] = {"scopes": ["read"]}
    setup_store(m, cfg)
    m.start()
    add(m, provider, "acme")
    cc = m.token("acme", "cc")
    rt = m.token("acme", "idp")
    asked = token_requests(provider)
    held = open(m.path("tenants", "acme", "cc", "access_token"), "rb")
    status = open(m.path("tenants", "acme", "cc", "status"), "rb")
    readers = Readers(m.path("tenants", "acme", "cc", "access_token"),
                      check=valid_token(provider))
    try:
        pids = {m.pid}
        for _ in range(10):
            time.sleep(0.2)
            pids.add(upgrade(m))
            assert is_mounted(m.mnt)
    finally:
        readers.stop()
    print("%d reads, worst %.3fs, errors %r" %
          (readers.reads, readers.worst, readers.errors))
    assert readers.errors == {}, readers.errors
    assert not readers.bad
    assert len(pids) == 11
    assert m.token("acme", "cc") == cc and m.token("acme", "idp") == rt
    assert token_requests(provider) == asked
    assert held.read().decode() == cc
    assert b"state:" in status.read()
    held.close()
    status.close()
    assert m.log().count("that an upgrade handed over: 2 of 2") == 10
    # The store went along: credfsctl reaches the new daemon.
    listed = ctl(m, "list").stdout
    assert any(line.split()[:4] == ["acme", "idp", "refresh_token", "valid"]
               for line in listed.splitlines()), listed


def test_an_upgrade_that_fails_leaves_the_old_daemon_serving(
        mount, provider, tmp_path):
    """SIGUSR2 when the binary at the daemon's path does not start, or
    the configuration no longer loads: the old daemon says why and serves
    on, readers see nothing; once both are good again, the next SIGUSR2
    upgrades, to a configuration with one more tenant."""
    exe = str(tmp_path / "credfs")
    shutil.copy(CREDFS, exe)
    m = mount()
    m.exe = exe
    m.start(simple_config(m))
    token = m.token("acme", "idp")
    first = m.pid
    readers = Readers(m.path("tenants", "acme", "idp", "access_token"),
                      check=valid_token(provider))
    try:
        # A broken binary: replaced as a package upgrade does (rename).
        broken = str(tmp_path / "broken")
        with open(broken, "w") as f:
            f.write("#!/bin/sh\necho 'this credfs is broken' >&2\nexit 3\n")
        os.chmod(broken, stat.S_IRWXU)
        os.rename(exe, exe + ".good")
        os.rename(broken, exe)
        os.kill(m.pid, signal.SIGUSR2)
        wait_for(lambda: "exited with status 3 before serving" in m.log(),
                 30, what="the failed upgrade in the log")
        assert "this process goes on serving" in m.log()
        assert "this credfs is broken" in m.log()
        os.rename(exe + ".good", exe)

        # A configuration that no longer loads.
        good = open(m.config_path).read()
        with open(m.config_path, "w") as f:
            f.write("{ not json")
        os.kill(m.pid, signal.SIGUSR2)
        wait_for(lambda: m.log().count("this process goes on serving") == 2,
                 30, what="the second failed upgrade")

        with open(m.config_path, "w") as f:
            f.write(good)

        assert m.pid == first and int(open(m.pid_file).read()) == first
        assert m.token("acme", "idp") == token
        m.write_config(simple_config(m, tenants=("acme", "beta")))
        time.sleep(0.3)
        upgrade(m)
        time.sleep(0.3)
    finally:
        readers.stop()
    assert readers.errors == {}, readers.errors
    assert not readers.bad
    assert m.pid != first
    assert m.token("acme", "idp") == token
    assert provider.issued(m.token("beta", "idp"))


def test_sigkill_with_the_provider_refusing_everything(mount, provider):
    """The provider answers 503 to every request from the first kill on:
    20 SIGKILLs, and readers still see the valid token throughout (a
    restart without the state image would have nothing to serve)."""
    m, sd = under_systemd(mount)
    try:
        sd.start()
        token = m.token("acme", "idp")
        provider.inject("status", count=-1, status=503)
        readers = Readers(m.path("tenants", "acme", "idp", "access_token"),
                          check=valid_token(provider))
        try:
            for _ in range(20):
                time.sleep(0.15)
                sd.restart_after_crash()
        finally:
            readers.stop()
        assert readers.errors == {}, readers.errors
        assert not readers.bad
        assert m.token("acme", "idp") == token
    finally:
        sd.stop()


def test_a_clean_restart_with_the_provider_down_keeps_the_tokens(
        mount, provider, tmp_path):
    """A clean stop leaves the client-credentials tokens, sealed, beside
    the store; a cold start with the provider refusing everything serves
    the still-valid one (refresh-token credentials have theirs in their
    records), after a rekey too. One start takes the file; an altered one
    is not used."""
    store = tmp_path / "store"
    saved = store / "state.sealed"
    m = mount()
    c = simple_config(m, tenants=("acme", "beta"), open_wait_s=1)
    c["store"] = {"dir": str(store), "key_file": str(m.tmp / "master.key")}
    setup_store(m, c)
    m.start()
    tok = {t: m.token(t, "idp") for t in ("acme", "beta")}
    m.stop()
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    data = saved.read_bytes()
    assert not any(t.encode() in data for t in tok.values())  # sealed
    # credfsctl rekey seals it again under the new key.
    r = ctl(m, "rekey", "--new-key-file", str(m.tmp / "new.key"))
    assert r.returncode == 0 and "was not sealed again" not in r.stderr, \
        r.stderr
    assert saved.read_bytes() != data
    c["store"]["key_file"] = str(m.tmp / "new.key")
    m.write_config(c)

    provider.inject("status", count=-1, status=503)
    asked = token_requests(provider)
    m.start()
    assert "2 client-credentials tokens kept from the last stop" in m.log()
    assert not saved.exists()  # taken
    assert {t: m.token(t, "idp") for t in tok} == tok
    assert token_requests(provider) == asked  # nothing asked for them
    m.stop()  # and left again for the next start

    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 1
    saved.write_bytes(bytes(data))
    provider.clear_faults()
    m.start()
    assert "%s: not authentic (altered, or sealed under another master " \
        "key): the tokens of the last stop are not used" % saved in m.log()
    fresh = m.token("acme", "idp")
    assert fresh != tok["acme"] and provider.issued(fresh)
    m.stop()
    m.check_log_clean()


def test_a_crash_with_another_tree_in_the_config_keeps_the_mount(
        mount, provider):
    """A crash after the configuration gained a tenant and lost one: the
    restarted daemon resumes the same mount (node ids go by name, not
    position: a file held open on the kept tenant reads on), serves the
    new tenant, and the removed one is gone."""
    m = mount()
    m.write_config(simple_config(m, tenants=("acme", "zulu")))
    sd = FakeSystemd(m)
    try:
        sd.start()
        token = m.token("zulu", "idp")
        held = open(m.path("tenants", "zulu", "idp", "access_token"), "rb")
        m.write_config(simple_config(m, tenants=("beta", "zulu")))
        sd.restart_after_crash()
        assert "does not match" not in m.log()
        assert held.read().decode() == token
        held.close()
        assert m.token("zulu", "idp") == token
        assert provider.issued(m.token("beta", "idp"))
        assert sorted(os.listdir(m.path("tenants"))) == ["beta", "zulu"]
        assert sd.stored().count("fuse") == 1
    finally:
        sd.stop()


def test_a_mount_taken_away_while_down_is_mounted_afresh(mount, provider):
    """Unmounted while no daemon served it (the fd store still holding
    the connection): the next start sees the connection is dead, says so
    and mounts afresh, serving the token the image kept."""
    m, sd = under_systemd(mount)
    try:
        sd.start()
        token = m.token("acme", "idp")
        sd.kill()
        subprocess.run(["fusermount3", "-u", m.mnt], check=True, timeout=10)
        assert not is_mounted(m.mnt)
        sd.start()
        assert "was taken away while no daemon served it" in m.log()
        assert is_mounted(m.mnt)
        assert m.token("acme", "idp") == token
    finally:
        sd.stop()


def scrape(addr, request="GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"):
    """The whole answer of an HTTP request to @addr (a Unix socket path,
    or a (host, port) pair): (status line, headers, body)."""
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(addr)
        s.sendall(request.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return lines[0], lines[1:], body.decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_listen_serves_the_metrics_over_http(mount, provider,
                                                     tmp_path):
    """metrics_listen: GET /metrics on a Unix socket or a loopback port,
    the same series as the file; kept across an upgrade; a non-loopback
    address is refused."""
    sock = str(tmp_path / "metrics.sock")
    m = mount(lambda m: dict(simple_config(m), metrics_listen=sock))
    assert m.token("acme", "idp")
    status, headers, body = scrape(sock)
    assert status == "HTTP/1.1 200 OK"
    assert "Content-Type: text/plain; version=0.0.4; charset=utf-8" in \
        headers
    assert "Content-Length: %d" % len(body.encode()) in headers
    names = sorted({l.split("{")[0].split()[0] for l in body.splitlines()
                    if not l.startswith("#")})
    assert names == sorted({l.split("{")[0].split()[0] for l in
                            m.read("metrics").splitlines()
                            if not l.startswith("#")})
    assert 'credfs_info{version="' in body and 'pid="%d"' % m.pid in body
    assert 'credfs_credentials{state="valid"} 1' in body
    assert scrape(sock, "GET /other HTTP/1.0\r\n\r\n")[0] == \
        "HTTP/1.1 404 Not Found"
    assert scrape(sock, "POST /metrics HTTP/1.0\r\n\r\n")[0] == \
        "HTTP/1.1 405 Method Not Allowed"
    status, headers, body = scrape(sock, "HEAD /metrics HTTP/1.0\r\n\r\n")
    assert status == "HTTP/1.1 200 OK" and body == ""
    # A client that never finishes its request holds the thread 2 s at
    # most: a scrape behind it is answered.
    with socket.socket(socket.AF_UNIX) as stall:
        stall.connect(sock)
        stall.sendall(b"GET /met")
        assert scrape(sock)[0] == "HTTP/1.1 200 OK"

    new = upgrade(m)
    wait_for(lambda: os.path.exists(sock), 10, what="the new listener")
    status, _, body = scrape(sock)
    assert status == "HTTP/1.1 200 OK" and 'pid="%d"' % new in body
    m.stop()
    assert not os.path.exists(sock)

    port = free_port()
    m.start(dict(simple_config(m), metrics_listen="127.0.0.1:%d" % port))
    status, _, body = scrape(("127.0.0.1", port))
    assert status == "HTTP/1.1 200 OK" and "credfs_info" in body
    m.stop()
    for bad, why in (("0.0.0.0:9464", "0.0.0.0 is not a loopback address"),
                     ("localhost:9464", "'localhost' is not an IP address"),
                     ("127.0.0.1:0", "port '0': use 1 to 65535"),
                     ("metrics.sock", "use 127.0.0.1:PORT")):
        m.write_config(dict(simple_config(m), metrics_listen=bad))
        r = subprocess.run([CREDFSCTL, "check", "--syntax", "--config",
                            m.config_path], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 1 and "metrics_listen: " in r.stderr and \
            why in r.stderr, r.stderr
