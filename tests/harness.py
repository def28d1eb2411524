"""Test harness: real mounts of build/credfs against the fake provider, for
the integration tests and the soak test (each directory's conftest.py
makes these fixtures its own).

Every mount is torn down by its fixture even when a test fails: unmount,
then SIGTERM and SIGKILL by PID, each bounded in time. pytest makes itself a
child subreaper so that the backgrounded daemon is reparented to it and can
be reaped, with its exit status checked. After each mount the daemon's log
is searched for sanitizer reports and for any token the provider issued.

In the ASan+UBSan build every process the tests start (daemons, credfsctl,
helpers) writes its sanitizer reports, leaks included, to files in one
directory; a test after which a new report appears fails with it.
"""

import array
import contextlib
import ctypes
import errno
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from fake_provider import FakeProvider  # noqa: E402

BUILD = os.environ.get("CREDFS_BUILD", os.path.join(ROOT, "build"))
CREDFS = os.path.join(BUILD, "credfs")
CREDFSCTL = os.path.join(BUILD, "credfsctl")
# The ASan+UBSan build, whose allocator keeps freed memory: RSS tells
# nothing about leaks there (LeakSanitizer at exit does).
ASAN_BUILD = os.path.exists(CREDFS) and "libasan" in subprocess.run(
    ["ldd", CREDFS], capture_output=True, text=True).stdout
CLIENT_ID = "credfs-test"
CLIENT_SECRET = "s3cret-client"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "AddressSanitizer:")

# Reports of any instrumented process to files, so that none goes unseen
# in a captured stderr or behind an expected non-zero exit status.
SANITIZER_DIR = tempfile.mkdtemp(prefix="credfs-sanitizer-")
os.environ["ASAN_OPTIONS"] = "detect_leaks=1:log_path=" + \
    os.path.join(SANITIZER_DIR, "asan")
os.environ["UBSAN_OPTIONS"] = "print_stacktrace=1:log_path=" + \
    os.path.join(SANITIZER_DIR, "ubsan")
# One allocation by design: a daemon that handed its mount to an upgrade
# must not unmount it, and only fuse_session_unmount() frees the mount
# point's name that fuse_session_mount() kept.
os.environ["LSAN_OPTIONS"] = "print_suppressions=0:suppressions=" + \
    os.path.join(HERE, "lsan.supp")

PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == path for line in f)


def note_mount(path):
    """Add @path to the list of mount points in $CREDFS_MOUNT_LOG, if set:
    .ci/run unmounts those still mounted when it exits (a run killed
    mid-test), and no other run's."""
    log = os.environ.get("CREDFS_MOUNT_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (os.path.realpath(path) + "\n").encode())
        finally:
            os.close(fd)


def processes(cmd):
    """The PIDs of the processes running exactly the argument list @cmd."""
    want = ("\0".join(cmd) + "\0").encode()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    if f.read() == want:
                        yield int(name)
            except OSError:
                pass  # gone meanwhile


def thread_stacks(pid):
    """Where each thread of @pid is: its kernel stack, and gdb's
    backtrace where gdb is installed (make deps installs it). For a
    failure that a test cannot explain otherwise, such as a daemon that
    never becomes ready."""
    out = []
    for tid in sorted(os.listdir("/proc/%d/task" % pid), key=int):
        d = "/proc/%d/task/%s/" % (pid, tid)
        try:
            with open(d + "comm") as f:
                comm = f.read().strip()
            with open(d + "stack") as f:
                stack = f.read()
        except OSError as e:
            comm, stack = "?", str(e)
        out.append("--- thread %s (%s), kernel stack:\n%s" % (tid, comm,
                                                             stack))
    if shutil.which("gdb"):
        try:
            r = subprocess.run(["gdb", "-batch", "-nx", "-p", str(pid),
                                "-ex", "thread apply all bt"],
                               capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL)
            out.append("--- gdb:\n" + r.stdout + r.stderr)
        except subprocess.TimeoutExpired:
            out.append("--- gdb: no answer in 60 s")
    return "\n".join(out)


def wait_for(pred, timeout, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


def audit_lines(path):
    """The audit log at @path, a dict a line."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_audit(path, pred, n=1, since=0, timeout=10):
    """The audit lines of @path after the first @since, once @n of them
    satisfy @pred: the daemon's writer appends them a moment after the
    event (src/audit.c)."""
    def enough():
        lines = audit_lines(path)[since:]
        return lines if sum(1 for a in lines if pred(a)) >= n else None
    return wait_for(enough, timeout, what="%d audit lines in %s" % (n, path))


def reap(pid, timeout):
    """Wait for @pid (our child or orphan) to exit; its status or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0 if not os.path.exists("/proc/%d" % pid) else None
        if got == pid:
            return status
        time.sleep(0.05)
    return None


class Mount:
    """One credfs daemon on a temporary mount point."""

    def __init__(self, tmp_path, provider, name="mnt", mnt=None):
        self.tmp = tmp_path
        self.provider = provider
        self.mnt = mnt or str(tmp_path / name)
        self.log_path = str(tmp_path / (name + ".log"))
        self.pid_file = str(tmp_path / (name + ".pid"))
        self.config_path = str(tmp_path / (name + ".json"))
        self.pid = None
        self.exit_status = None
        self.exe = CREDFS  # the binary start() runs
        os.makedirs(self.mnt, exist_ok=True)

    # -- config ------------------------------------------------------------
    def secret_file(self, secret=CLIENT_SECRET, mode=0o600, name="secret"):
        path = str(self.tmp / name)
        with open(path, "w") as f:
            f.write(secret + "\n")
        os.chmod(path, mode)
        return path

    def provider_conf(self, **kw):
        # The tests' tokens live 1 to 6 s: under the 10 s default floor.
        conf = {"token_url": self.provider.url + "/token",
                "client_id": CLIENT_ID,
                "client_secret_file": self.secret_file(),
                "min_lifetime_s": 1}
        conf.update(kw)
        return conf

    def write_config(self, config):
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=1)

    # -- lifecycle ---------------------------------------------------------
    def start(self, config=None, args=(), check=True, timeout=20, env=None,
              output=None):
        """Start the daemon; its stdout and stderr go to the log file, or
        to the file descriptor @output."""
        if config is not None:
            self.write_config(config)
        cmd = [self.exe, "--config", self.config_path, "--pid-file",
               self.pid_file] + list(args) + [self.mnt]
        note_mount(self.mnt)
        with open(self.log_path, "ab") as log:
            out = log if output is None else output
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL,
                                      stdout=out, stderr=out,
                                      timeout=timeout, env=env)
            except subprocess.TimeoutExpired:
                self.not_ready(cmd, timeout)
        if check:
            assert proc.returncode == 0, "credfs failed:\n" + self.log()
            # It returns only once mounted: no waiting here on purpose.
            assert is_mounted(self.mnt), "returned before the mount was up"
            with open(self.pid_file) as f:
                self.pid = int(f.read())
        return proc

    def not_ready(self, cmd, timeout):
        """The parent of @cmd, waiting for the mount to be ready, was
        killed after @timeout s: stop its forked daemon too (stop() by
        PID) and fail with where each of the daemon's threads was."""
        self.pid = next((pid for pid in processes(cmd)), None)
        where = "no daemon left" if self.pid is None else \
            thread_stacks(self.pid)
        raise AssertionError("credfs was not ready after %d s:\n%s\n%s"
                             % (timeout, self.log(), where))

    def stop(self, sig=None):
        """Unmount and stop the daemon; returns its exit status."""
        if self.pid is None:
            return self.exit_status
        if sig is None and is_mounted(self.mnt):
            try:
                subprocess.run(["fusermount3", "-u", self.mnt],
                               stderr=subprocess.DEVNULL, timeout=10)
            except subprocess.TimeoutExpired:
                pass  # then stopped by signal, and unmounted lazily
        if sig is not None:
            os.kill(self.pid, sig)
        status = reap(self.pid, 10)
        if status is None:
            os.kill(self.pid, signal.SIGTERM)
            status = reap(self.pid, 5)
        if status is None:
            os.kill(self.pid, signal.SIGKILL)
            status = reap(self.pid, 5)
        if is_mounted(self.mnt):
            subprocess.run(["fusermount3", "-uz", self.mnt],
                           stderr=subprocess.DEVNULL, timeout=10)
        self.pid = None
        self.exit_status = status
        return status

    def reload(self, config=None, timeout=30):
        """SIGHUP, after writing @config if given, and wait until that
        reload is done, applied or refused (the log's "SIGHUP: " line)."""
        if config is not None:
            self.write_config(config)
        n = self.log().count("SIGHUP: ")
        os.kill(self.pid, signal.SIGHUP)
        wait_for(lambda: self.log().count("SIGHUP: ") > n, timeout,
                 what="the reload")

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def check_log_clean(self):
        text = self.log()
        for marker in SANITIZER_MARKERS:
            assert marker not in text, "sanitizer report:\n" + text
        with self.provider.lock:
            issued = list(self.provider.tokens) + list(self.provider.refresh)
        leaked = [t for t in issued if t in text]
        assert not leaked, "a token appears in the daemon log"
        assert CLIENT_SECRET not in text, "the client secret is in the log"

    # -- reading -----------------------------------------------------------
    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def read(self, *parts, mode="r"):
        with open(self.path(*parts), mode) as f:
            return f.read()

    def token(self, tenant, provider):
        return self.read("tenants", tenant, provider, "access_token")

    def metrics(self, name):
        """The values of the series @name (any labels), in file order."""
        return [float(line.rsplit(" ", 1)[1])
                for line in self.read("metrics").splitlines()
                if re.match(re.escape(name) + r"[ {]", line)]

    def status(self, tenant, provider):
        return json.loads(self.read("tenants", tenant, provider,
                                    "status.json"))


@pytest.fixture(autouse=True)
def sanitizer_reports():
    """Set up before, so torn down after, every other fixture of a test:
    the daemons it mounted have exited (and LeakSanitizer has run)."""
    before = set(os.listdir(SANITIZER_DIR))
    yield
    new = sorted(set(os.listdir(SANITIZER_DIR)) - before)
    text = ""
    for name in new:
        with open(os.path.join(SANITIZER_DIR, name), errors="replace") as f:
            text += "--- %s\n%s" % (name, f.read())
    assert not new, "sanitizer report:\n" + text


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SANITIZER_DIR, ignore_errors=True)


@pytest.fixture
def provider():
    p = FakeProvider(lifetime=3600,
                     clients={CLIENT_ID: CLIENT_SECRET}).start()
    yield p
    p.stop()


@pytest.fixture
def public_dir():
    """A directory every user can traverse (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="credfs-it-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def mount(tmp_path, provider, public_dir):
    """A factory: mount(config_dict) -> Mount; all torn down at the end.
    It depends on public_dir so that mounts made there are unmounted
    before that directory is removed (fixtures end in reverse order)."""
    mounts = []

    def make(config=None, name="mnt", args=(), check=True, mnt=None):
        m = Mount(tmp_path, provider, name, mnt)
        mounts.append(m)
        if config is not None:
            m.start(config(m) if callable(config) else config, args=args,
                    check=check)
        return m

    yield make
    failures = []
    for m in mounts:
        status = m.stop()
        try:
            m.check_log_clean()
            if status is not None and m.exit_status is not None:
                assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, \
                    "daemon exit status %r:\n%s" % (status, m.log())
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


@contextlib.contextmanager
def tmpfs(path, size):
    """A tmpfs of @size (as mount -o size= takes it) on the new directory
    @path, unmounted afterwards: a file system to fill up."""
    os.mkdir(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size,
                    "tmpfs", str(path)], check=True, timeout=10)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], timeout=10)


def fill(path):
    """Write the file @path until its file system is full (4 KiB at a
    time, so that nothing is left); returns the path, to unlink."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return path


# Runs that share the machine at once (the plain and the ASan suite in
# make check) name their users and groups apart.
TEST_TAG = os.environ.get("CREDFS_TEST_TAG", "")


def tagged(name):
    """@name as this run's own: "credfs-alice" -> "credfs-alice-a"."""
    return name + ("-" + TEST_TAG if TEST_TAG else "")


@contextlib.contextmanager
def system_users(names):
    """Users (each with its own group) that do not exist yet, made with
    useradd and removed afterwards; their pwd entries."""
    made = []
    try:
        for u in names:
            if subprocess.run(["getent", "passwd", u],
                              capture_output=True).returncode:
                subprocess.run(["useradd", "-M", "-U", "-s", "/bin/sh", u],
                               check=True, timeout=30)
                made.append(u)
        yield [pwd.getpwnam(u) for u in names]
    finally:
        for u in made:
            subprocess.run(["userdel", u], capture_output=True, timeout=30)


def simple_config(m, tenants=("acme",), scopes=("read",), **provider_kw):
    """One provider "idp", each tenant with one credential for it."""
    return {
        "providers": {"idp": m.provider_conf(**provider_kw)},
        "tenants": {t: {"credentials": {"idp": {"scopes": list(scopes)}}}
                    for t in tenants},
    }


def open_errno(path):
    try:
        with open(path, "rb") as f:
            f.read()
    except OSError as e:
        return e.errno
    return 0


PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


class Postgres:
    """A PostgreSQL server of its own: initdb in a temporary directory,
    password authentication (scram), a Unix socket only, run as the
    postgres user; stopped by its postmaster PID."""

    PASSWORD = "pg-test-" + secrets.token_hex(8)

    def __init__(self):
        self.bin = os.path.dirname(PG_BINS[-1])
        self.dir = tempfile.mkdtemp(prefix="credfs-pg-")
        os.chmod(self.dir, 0o755)
        pw = pwd.getpwnam("postgres")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.data = os.path.join(self.dir, "data")
        self.passfile = os.path.join(self.dir, "pgpass")
        with open(self.passfile, "w") as f:  # read by credfs (root)
            f.write("*:*:*:postgres:%s\n" % self.PASSWORD)
        os.chmod(self.passfile, 0o600)
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.PASSWORD + "\n")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._as_postgres("initdb", "-D", self.data, "-U", "postgres",
                          "--auth=scram-sha-256", "--pwfile=" + pwfile,
                          "-E", "UTF8", "--no-sync")
        os.unlink(pwfile)
        self.pid = None
        self.start()
        self.psql("CREATE DATABASE credfs")

    @property
    def dsn(self):
        return "host=%s dbname=credfs user=postgres passfile=%s " \
               "connect_timeout=2" % (self.dir, self.passfile)

    def _as_postgres(self, prog, *args, timeout=60):
        r = subprocess.run(["runuser", "-u", "postgres", "--",
                            os.path.join(self.bin, prog)] + list(args),
                           capture_output=True, text=True, timeout=timeout,
                           cwd=self.dir,
                           env=dict(os.environ, PGPASSWORD=self.PASSWORD))
        assert r.returncode == 0, "%s: %s%s" % (prog, r.stdout, r.stderr)
        return r.stdout

    def start(self):
        self._as_postgres("pg_ctl", "-D", self.data, "-l",
                          os.path.join(self.dir, "log"), "-w", "-o",
                          "-k %s -c listen_addresses='' -c fsync=off" %
                          self.dir, "start")
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def stop(self):
        """Stop the server (fast shutdown), by its PID."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self._alive():
            time.sleep(0.05)
        if self._alive():
            os.kill(self.pid, signal.SIGKILL)
        self.pid = None

    def _alive(self):
        """Whether the postmaster runs (a zombie nobody reaped has
        stopped: pg_ctl's daemon is not our child)."""
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    def psql(self, sql):
        """@sql's rows, "|"-separated, as lines."""
        return self._as_postgres("psql", "-h", self.dir, "-d",
                                 "postgres" if "DATABASE" in sql else
                                 "credfs", "-At", "-c", sql).splitlines()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    if not PG_BINS:
        pytest.skip("PostgreSQL server binaries are not installed "
                    "(make deps installs the postgresql package)")
    pg = Postgres()
    try:
        yield pg
    finally:
        pg.cleanup()


class FakeSystemd:
    """systemd's side of what credfs uses of it, as sd_notify(3) and
    sd_listen_fds(3) document it (no real systemd runs here: as PID 1 in
    a namespace that shares this file system, its boot would clean /tmp):
    a NOTIFY_SOCKET that takes READY=1, MAINPID=, FDSTORE=1 with FDNAME=
    (a file already stored is not stored twice), FDSTOREREMOVE=1; and a
    service it starts (-f, as the unit does) and restarts after it died,
    handing the stored fds back under LISTEN_FDS, LISTEN_FDNAMES and
    LISTEN_PID, as Restart= with FileDescriptorStoreMax= does."""

    def __init__(self, m, args=()):
        self.m = m
        self.args = list(args)
        self.path = str(m.tmp / (os.path.basename(m.mnt) + ".notify"))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.lock = threading.Lock()
        self.fds = []          # (name, fd), in the order stored
        self.messages = []     # (sender pid, [lines])
        self.main_pid = None
        self.proc = None
        self.ready = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self):
        while not self.stopped:
            try:
                msg, anc, _, _ = self.sock.recvmsg(
                    4096, socket.CMSG_SPACE(64 * 4) + socket.CMSG_SPACE(12))
            except OSError:
                return
            fds, pid = [], None
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(data[:len(data) - len(data) % a.itemsize])
                    fds.extend(a)
                elif level == socket.SOL_SOCKET and \
                        kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", data[:12])[0]
            lines = msg.decode(errors="replace").split("\n")
            fields = dict(x.split("=", 1) for x in lines if "=" in x)
            with self.lock:
                self.messages.append((pid, lines))
                if "MAINPID" in fields:
                    self.main_pid = int(fields["MAINPID"])
                if fields.get("FDSTOREREMOVE") == "1":
                    keep = []
                    for name, fd in self.fds:
                        if name == fields.get("FDNAME"):
                            os.close(fd)
                        else:
                            keep.append((name, fd))
                    self.fds = keep
                if fields.get("FDSTORE") == "1":
                    name = fields.get("FDNAME", "stored")
                    for fd in fds:
                        st = os.fstat(fd)
                        if any((os.fstat(f).st_dev, os.fstat(f).st_ino) ==
                               (st.st_dev, st.st_ino) for _, f in self.fds):
                            os.close(fd)  # the same file: once
                        else:
                            self.fds.append((name, fd))
                    fds = []
                if fields.get("READY") == "1":
                    self.ready.set()
            for fd in fds:
                os.close(fd)

    def stored(self):
        with self.lock:
            return [name for name, _ in self.fds]

    def start(self, timeout=30):
        """Start the service (again): with the stored fds, if any."""
        self.ready.clear()
        with self.lock:
            held = [(name, os.dup(fd)) for name, fd in self.fds]
        # bash, not sh: redirections of fds above 9. LISTEN_PID is the
        # daemon's own pid, which exec keeps.
        redir = " ".join("%d<&%d %d<&-" % (3 + i, fd, fd)
                         for i, (_, fd) in enumerate(held))
        env = dict(os.environ, NOTIFY_SOCKET=self.path)
        for k in ("LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"):
            env.pop(k, None)
        if held:
            env["LISTEN_FDS"] = str(len(held))
            env["LISTEN_FDNAMES"] = ":".join(name for name, _ in held)
        cmd = [CREDFS, "-f", "--config", self.m.config_path, "--pid-file",
               self.m.pid_file] + self.args + [self.m.mnt]
        script = 'export LISTEN_PID=$$; exec "$0" "$@" ' + redir
        log = open(self.m.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                ["bash", "-c", script] + cmd, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, env=env,
                pass_fds=[fd for _, fd in held])
        finally:
            log.close()
            for _, fd in held:
                os.close(fd)
        with self.lock:
            self.main_pid = self.proc.pid
        self.m.pid = self.proc.pid
        assert self.ready.wait(timeout), \
            "no READY=1 in %ds:\n%s" % (timeout, self.m.log())
        return self.proc.pid

    def kill(self):
        """SIGKILL the main process and reap it, as a crash."""
        pid = self.main_pid
        os.kill(pid, signal.SIGKILL)
        assert reap(pid, 10) is not None, "pid %d did not die" % pid
        if self.proc and self.proc.pid == pid:
            self.proc.wait(timeout=10)

    def upgrade(self, timeout=30):
        """SIGUSR2 (systemctl kill -s USR2): the new process announces
        itself with MAINPID=, and the old one exits cleanly."""
        old = self.main_pid
        os.kill(old, signal.SIGUSR2)
        wait_for(lambda: self.main_pid != old, timeout,
                 what="MAINPID= of the new daemon")
        status = reap(old, timeout)
        assert status is not None and os.WIFEXITED(status) and \
            os.WEXITSTATUS(status) == 0, \
            "old daemon: %r\n%s" % (status, self.m.log())
        if self.proc and self.proc.pid == old:
            self.proc.wait(timeout=10)
        self.m.pid = self.main_pid
        return self.main_pid

    def restart_after_crash(self, timeout=30):
        self.kill()
        time.sleep(0.1)  # RestartSec's default
        return self.start(timeout)

    def stop(self):
        """systemctl stop: SIGTERM to the main process, then the fd store
        goes; everything reaped and unmounted, whatever happened."""
        pid = self.main_pid
        status = None
        if pid and os.path.exists("/proc/%d" % pid):
            os.kill(pid, signal.SIGTERM)
            status = reap(pid, 15)
            if status is None:
                os.kill(pid, signal.SIGKILL)
                reap(pid, 5)
        if self.proc:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.stopped = True
        self.sock.close()
        with self.lock:
            for _, fd in self.fds:
                os.close(fd)
            self.fds = []
        if is_mounted(self.m.mnt):
            subprocess.run(["fusermount3", "-uz", self.m.mnt],
                           stderr=subprocess.DEVNULL, timeout=10)
        os.unlink(self.path)
        self.m.pid = None
        return status


class Readers:
    """Threads that open a file, read it to the end and close it, every
    @every seconds, until stopped: every error by errno, every read's
    bytes checked by @check, and the longest open-to-EOF stall."""

    def __init__(self, path, n=2, every=0.002, check=None):
        self.path = path
        self.every = every
        self.check = check
        self.errors = {}
        self.bad = []
        self.reads = 0
        self.worst = 0.0
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self):
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            try:
                with open(self.path, "rb") as f:
                    data = f.read()
                ok = self.check is None or self.check(data)
                err = None
            except OSError as e:
                err, ok = errno.errorcode.get(e.errno, str(e.errno)), True
            took = time.monotonic() - t0
            with self.lock:
                self.reads += 1
                self.worst = max(self.worst, took)
                if err:
                    self.errors[err] = self.errors.get(err, 0) + 1
                if not ok:
                    self.bad.append(data[:40])
            time.sleep(self.every)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=30)
        return self


__all__ = ["Mount", "simple_config", "open_errno", "wait_for", "is_mounted",
           "CREDFS", "CREDFSCTL", "errno"]
