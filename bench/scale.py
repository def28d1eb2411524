#!/usr/bin/env python3
"""make bench-scale: refresh at scale.

BENCH_TENANTS x 10 refresh-token credentials (default 1000 x 10; 10000
for 100,000) in an encrypted store, tokens living BENCH_LIFETIME s
(default 60) and refreshed at 70% of their lifetime before expiry (a
refresh period of 0.3 x lifetime: about 555 refreshes a second for
10,000), against bench/tokend (a C token endpoint). The store is on disk
(under /tmp), on tmpfs (BENCH_STORE=tmpfs), or in a PostgreSQL server of
the bench's own, with fsync on, shared by BENCH_DAEMONS daemons (default
3; BENCH_STORE=postgres). BENCH_TENANTS_DIR=1 configures the tenants as
a directory of files, one per tenant (tenants_dir), instead of in the
config file. BENCH_WORK_BASE names the directory its work directory
(store, PostgreSQL's data, mounts) goes in.

Reports: seeding; ready time and resident memory at start; random
lookups and directory listings; a steady window of BENCH_SCALE_SECONDS
(default 60): refreshes per second (mean, busiest, quietest), daemon
CPU, peak memory, and on PostgreSQL the refreshes each daemon did and
lease queries per refresh; how long a reload (SIGHUP) takes; the size
of the root status and metrics;
then a downtime of BENCH_DOWNTIME s (default one refresh period, so that
every credential is overdue at the restart): the ready time again and
the busiest second in the first and in the second refresh period after
it (the burst and its echo; BENCH_SERIES=1 prints every second). A sampler reads about 1,000 random tokens a
second throughout and checks each one's own expiry: the run fails (exit
1) if any was expired or damaged.
"""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("CREDFS_BUILD", os.path.join(HERE, "build"))
TENANTS = int(os.environ.get("BENCH_TENANTS", 1000))
PROVIDERS = 10
N = TENANTS * PROVIDERS
LIFETIME = float(os.environ.get("BENCH_LIFETIME", 60))
FRACTION = 0.7
PERIOD = LIFETIME * (1 - FRACTION)
WINDOW = float(os.environ.get("BENCH_SCALE_SECONDS", 60))
STORE = os.environ.get("BENCH_STORE", "disk")
DAEMONS = int(os.environ.get("BENCH_DAEMONS",
                             3 if STORE == "postgres" else 1))
DOWNTIME = float(os.environ.get("BENCH_DOWNTIME", PERIOD))
TENANTS_DIR = bool(os.environ.get("BENCH_TENANTS_DIR"))
TICK = os.sysconf("SC_CLK_TCK")
PG_BINS = sorted(d for d in
                 (os.path.join("/usr/lib/postgresql", v, "bin")
                  for v in (os.listdir("/usr/lib/postgresql")
                            if os.path.isdir("/usr/lib/postgresql")
                            else []))
                 if os.path.exists(os.path.join(d, "initdb")))


def fnv64(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return h


def check(tok):
    """0 valid, 1 expired, 2 damaged."""
    try:
        body, mac = tok.rsplit(".", 1)
        _, exp, _ = body.split(".")
        if fnv64(body) != int(mac, 16):
            return 2
        return 1 if int(exp) <= time.time() * 1000 else 0
    except ValueError:
        return 2


def alive(pid):
    """Whether @pid runs: a zombie has stopped (the daemon is no child of
    ours, and whoever it was handed to may reap it late)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class Bench:
    def __init__(self):
        base = os.environ.get("BENCH_WORK_BASE") or (
            "/dev/shm" if STORE == "tmpfs" else "/tmp")
        self.work = tempfile.mkdtemp(prefix="credfs-scale.", dir=base)
        os.chmod(self.work, 0o755)
        self.tokend = None
        self.pg_pid = None
        self.daemons = []  # pids
        self.mounts = [os.path.join(self.work, "mnt%d" % i)
                       for i in range(DAEMONS)]
        self.bad = [0, 0, 0]
        self.errors = {}  # errno -> failed opens
        self.reads = 0

    # The pieces, started and stopped by pid.

    def start_tokend(self):
        port = os.path.join(self.work, "port")
        self.stats = os.path.join(self.work, "stats")
        self.tokend = subprocess.Popen(
            [os.path.join(BUILD, "bench-tokend"), "%g" % LIFETIME, port,
             self.stats], stdout=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(port) and open(port).read().strip():
                break
            time.sleep(0.1)
        self.port = int(open(port).read())

    def start_postgres(self):
        """A server of our own: trust on a Unix socket only, fsync on."""
        pgdir = os.path.join(self.work, "pg")
        os.mkdir(pgdir)
        shutil.chown(pgdir, "postgres", "postgres")
        self.pg_as("initdb", "-D", pgdir + "/data", "-U", "postgres",
                   "-A", "trust", "-E", "UTF8")
        self.pg_as("pg_ctl", "-D", pgdir + "/data", "-l", pgdir + "/log",
                   "-w", "-o", "-k %s -c listen_addresses=''" % pgdir,
                   "start")
        with open(pgdir + "/data/postmaster.pid") as f:
            self.pg_pid = int(f.readline())
        self.dsn = "host=%s dbname=postgres user=postgres" % pgdir
        self.pgdir = pgdir

    def pg_as(self, prog, *args):
        subprocess.run(["runuser", "-u", "postgres", "--",
                        os.path.join(PG_BINS[-1], prog)] + list(args),
                       check=True, capture_output=True, cwd="/tmp")

    def write_configs(self):
        secret = os.path.join(self.work, "secret")
        with open(secret, "w") as f:
            f.write("secret\n")
        os.chmod(secret, 0o600)
        prov = {"token_url": "http://127.0.0.1:%d/token" % self.port,
                "client_id": "bench", "client_secret_file": secret,
                "grant": "refresh_token", "refresh_fraction": FRACTION,
                "max_concurrency": 8,
                # Under the 10 s floor (BENCH_LIFETIME), the provider's
                # word.
                "min_lifetime_s": 1}
        names = ["p%d" % j for j in range(PROVIDERS)]
        self.configs = []
        for i in range(DAEMONS):
            store = {"dir": os.path.join(self.work, "store%d" % i
                                         if STORE == "postgres"
                                         else "store"),
                     "key_file": os.path.join(self.work, "master.key")}
            if STORE == "postgres":
                store.update(backend="postgres", dsn=self.dsn)
            path = os.path.join(self.work, "config%d.json" % i)
            tenant = {"credentials": {p: {"scopes": ["read"]}
                                      for p in names}}
            config = {"log_level": os.environ.get("BENCH_LOG_LEVEL",
                                                  "warning"),
                      "providers": {p: prov for p in names},
                      "store": store}
            if TENANTS_DIR:  # a file per tenant
                tdir = os.path.join(self.work, "tenants.d")
                os.makedirs(tdir, exist_ok=True)
                for t in range(TENANTS if i == 0 else 0):
                    with open(os.path.join(tdir, "t%04d.json" % t),
                              "w") as f:
                        json.dump(tenant, f)
                config["tenants_dir"] = tdir
            else:
                config["tenants"] = {"t%04d" % t: tenant
                                     for t in range(TENANTS)}
            with open(path, "w") as f:
                json.dump(config, f)
            self.configs.append(path)
            os.mkdir(self.mounts[i])

    def seed(self):
        subprocess.run([os.path.join(BUILD, "credfsctl"), "init",
                        "--config", self.configs[0]], check=True,
                       capture_output=True)
        # The plan starts after seeding (at most 0.5 ms a record here)
        # and the start, so that nothing is overdue then.
        start_in = 3 + N * 0.0005 + (N / 20000 if STORE == "postgres"
                                     else 0)
        self.t0 = time.time() + start_in
        t = time.monotonic()
        target = self.dsn if STORE == "postgres" else \
            os.path.join(self.work, "store")
        subprocess.run([os.path.join(BUILD, "bench-seed"), target,
                        os.path.join(self.work, "master.key"),
                        str(TENANTS), str(PROVIDERS), "%g" % LIFETIME,
                        str(FRACTION), "%g" % start_in],
                       check=True, capture_output=True)
        took = time.monotonic() - t
        print("seeded %d records in %.1f s (grouped durable writes)%s"
              % (N, took, "" if time.time() < self.t0 else
                 "; seeding overran the plan: a burst at the start"))

    def start_daemons(self):
        took = []
        self.daemons = []
        for i in range(DAEMONS):
            pidf = os.path.join(self.work, "pid%d" % i)
            t = time.monotonic()
            subprocess.run([os.path.join(BUILD, "credfs"), "--config",
                            self.configs[i], "--pid-file", pidf,
                            self.mounts[i]], check=True,
                           stdout=subprocess.DEVNULL,
                           stderr=open(os.path.join(self.work,
                                                    "log%d" % i), "a"))
            took.append(time.monotonic() - t)
            self.daemons.append(int(open(pidf).read()))
        return took

    def stop_daemons(self):
        for pid in self.daemons:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in self.daemons:
            for _ in range(300):
                if not alive(pid):
                    break
                time.sleep(0.1)
        self.daemons = []

    def cleanup(self):
        for m in self.mounts:
            if (" %s fuse" % m) in open("/proc/mounts").read():
                if subprocess.run(["fusermount3", "-u", m]).returncode:
                    subprocess.run(["fusermount3", "-uz", m])
        self.stop_daemons()
        if self.tokend:
            self.tokend.terminate()
            self.tokend.wait()
        if self.pg_pid:
            try:
                os.kill(self.pg_pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            for _ in range(200):
                if not alive(self.pg_pid):
                    break
                time.sleep(0.1)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            print("kept", self.work)

    # Measures.

    def path(self, d, t, p):
        return "%s/tenants/t%04d/p%d/access_token" % (self.mounts[d], t, p)

    def read_one(self):
        d = random.randrange(DAEMONS)
        try:
            with open(self.path(d, random.randrange(TENANTS),
                                random.randrange(PROVIDERS))) as f:
                self.bad[check(f.read())] += 1
        except OSError as e:  # no token to serve: counted as expired
            self.bad[1] += 1
            self.errors[e.errno] = self.errors.get(e.errno, 0) + 1
        self.reads += 1

    def sample(self, secs):
        """About 1,000 reads a second for @secs: a check on every token
        served, not a load test of the read path (that is make bench)."""
        end = time.monotonic() + secs
        while time.monotonic() < end:
            self.read_one()
            time.sleep(0.001)

    def proc(self, key):
        for line in open("/proc/%d/status" % self.daemons[0]):
            if line.startswith(key):
                return int(line.split()[1]) / 1024

    def cpu(self):
        total = 0
        for pid in self.daemons:
            f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        return total / TICK

    def refreshes(self):
        """Unix second -> refreshes answered, so far."""
        # Gone first, so that an answer that comes late is not taken for
        # a stale one (tokend writes it whole, by rename).
        if os.path.exists(self.stats):
            os.unlink(self.stats)
        self.tokend.send_signal(signal.SIGUSR1)
        for _ in range(600):
            if os.path.exists(self.stats):
                break
            time.sleep(0.05)
        return dict((int(a), int(b)) for a, b in
                    (line.split() for line in open(self.stats)))

    def metric(self, d, name):
        total = 0
        with open(os.path.join(self.mounts[d], "metrics")) as f:
            for line in f:
                if line.startswith(name + " ") or \
                        line.startswith(name + "{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def lookups(self):
        k = min(2000, N)
        picks = [(random.randrange(TENANTS), random.randrange(PROVIDERS))
                 for _ in range(k)]
        t = time.monotonic()
        for ti, p in picks:
            os.stat(self.path(0, ti, p))
        stat_us = (time.monotonic() - t) / k * 1e6
        t = time.monotonic()
        for ti, p in picks:
            with open(self.path(0, ti, p)) as f:
                self.bad[check(f.read())] += 1
        open_us = (time.monotonic() - t) / k * 1e6
        t = time.monotonic()
        n_t = len(os.listdir(os.path.join(self.mounts[0], "tenants")))
        ls_ms = (time.monotonic() - t) * 1000
        t = time.monotonic()
        for ti, _ in picks[:200]:
            os.listdir(os.path.join(self.mounts[0], "tenants",
                                    "t%04d" % ti))
        ls_t_us = (time.monotonic() - t) / min(200, k) * 1e6
        print("lookups: stat of a random token file %.0f us, open + read "
              "+ close %.0f us; ls tenants/ (%d) %.0f ms; ls of a tenant "
              "%.0f us" % (stat_us, open_us, n_t, ls_ms, ls_t_us))

    def reload(self):
        """A reload (as SIGHUP does: the config and every record reread),
        asked on daemon 0's control socket; the reply comes when done."""
        import socket
        store = json.load(open(self.configs[0]))["store"]["dir"]
        t = time.monotonic()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(os.path.join(store, "control.sock"))
            s.sendall(b"reload\n")
            while s.recv(65536):
                pass
        print("reload (SIGHUP): %.2f s" % (time.monotonic() - t))

    def window(self, secs, what):
        start = time.time()
        c0, m0 = self.cpu(), time.monotonic()
        self.sample(secs)
        cpu = (self.cpu() - c0) / (time.monotonic() - m0)
        counts = self.refreshes()
        sec = [counts.get(s, 0) for s in range(int(start) + 1,
                                              int(time.time()))] or [0]
        print("%s: %.0f refreshes a second over %d s (busiest second %d, "
              "quietest %d); daemon CPU %.2f cores" %
              (what, sum(sec) / len(sec), len(sec), max(sec), min(sec),
               cpu))
        return start

    def after_downtime(self, restart):
        counts = self.refreshes()
        if os.environ.get("BENCH_SERIES"):
            print("  refreshes each second from the restart: %s" % " ".join(
                str(counts.get(s, 0)) for s in
                range(int(restart), int(restart + 2 * PERIOD) + 1)))
        for k in (0, 1):
            lo = restart + k * PERIOD
            sec = [counts.get(s, 0) for s in range(int(lo),
                                                  int(lo + PERIOD))] or [0]
            print("  refresh period %d after the restart: busiest second "
                  "%d, mean %.0f a second" % (k + 1, max(sec),
                                              sum(sec) / len(sec)))

    def run(self):
        self.start_tokend()
        if STORE == "postgres":
            self.start_postgres()
        self.write_configs()
        self.seed()
        took = self.start_daemons()
        print("ready (credfs returned, every stored token served) after "
              "%s s" % "/".join("%.2f" % t for t in took))
        print("resident memory after start: %.1f MiB" % self.proc("VmRSS"))
        while time.time() < self.t0:
            time.sleep(0.05)
        self.lookups()
        self.window(WINDOW, "steady window")
        print("peak resident memory: %.1f MiB" % self.proc("VmHWM"))
        done = [self.metric(d, "credfs_provider_refresh_success_total")
                for d in range(DAEMONS)]
        if STORE == "postgres":
            leases = sum(self.metric(d, "credfs_store_lease_queries_total")
                         for d in range(DAEMONS))
            print("refreshes by daemon: %s; lease queries per refresh "
                  "%.2f" % ("/".join("%d" % x for x in done),
                            leases / max(sum(done), 1)))
        self.reload()
        for f in ("status", "metrics"):
            print("%s: %d bytes" % (f, os.path.getsize(os.path.join(
                self.mounts[0], f)) or len(open(os.path.join(
                    self.mounts[0], f)).read())))
        t = time.monotonic()
        self.stop_daemons()
        print("stopped in %.1f s; downtime: %.0f s (every credential "
              "overdue after it)" % (time.monotonic() - t, DOWNTIME))
        time.sleep(DOWNTIME)
        restart = time.time()
        took = self.start_daemons()
        print("ready again after %s s" % "/".join("%.2f" % t for t in took))
        self.sample(2 * PERIOD + 1)
        self.after_downtime(restart)
        print("sampler: %d reads, %d expired, %d damaged%s"
              % (self.reads, self.bad[1], self.bad[2], "".join(
                  " (%d failed with %s)" % (n, errno.errorcode[e])
                  for e, n in self.errors.items())))
        return 1 if self.bad[1] or self.bad[2] else 0


def main():
    # Stopped by a signal, it still cleans up (finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(1))
    b = Bench()
    try:
        return b.run()
    finally:
        b.cleanup()


if __name__ == "__main__":
    sys.exit(main())
