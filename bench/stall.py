"""make bench-stall: the longest a reader waits while the daemon changes.

Two reader threads open + read to EOF + close access_token every 2 ms
(tests/harness.py Readers) on a mount served under FakeSystemd (the fd
store), against the suite's fake provider. Four phases of the same
length, each with its own readers: quiet (nothing happens: the baseline
of this run), BENCH_STALL_EVENTS upgrades (SIGUSR2), as many crashes
(SIGKILL, restarted after systemd's default RestartSec=100ms with the
fds it kept) and crashes with the provider answering 503 to everything.
For each: reads, failed reads, p50/p99 and the longest read, and that
longest against the quiet phase's. Exits non-zero if a read failed or a
stall reached a second (the target in docs/performance.md).
"""

import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

from fake_provider import FakeProvider  # noqa: E402
from harness import (CLIENT_ID, CLIENT_SECRET, FakeSystemd, Mount,  # noqa
                     Readers, simple_config)

EVENTS = int(os.environ.get("BENCH_STALL_EVENTS", "10"))
GAP_S = 0.3  # between events


class TimedReaders(Readers):
    """Readers that keep every read's duration."""

    def __init__(self, path):
        self.times = []
        super().__init__(path)

    def _run(self):
        while not self.stop_ev.is_set():
            t0 = time.monotonic()
            try:
                with open(self.path, "rb") as f:
                    f.read()
                err = None
            except OSError as e:
                err = e.errno
            with self.lock:
                self.times.append(time.monotonic() - t0)
                if err:
                    self.errors[err] = self.errors.get(err, 0) + 1
            time.sleep(self.every)


def phase(m, sd, name, event):
    r = TimedReaders(m.path("tenants", "acme", "idp", "access_token"))
    try:
        for _ in range(EVENTS):
            time.sleep(GAP_S)
            event(sd)
        time.sleep(GAP_S)
    finally:
        r.stop()
    t = sorted(r.times)
    return {"name": name, "reads": len(t), "errors": sum(r.errors.values()),
            "p50": statistics.median(t), "p99": t[int(len(t) * 0.99)],
            "max": t[-1]}


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="credfs-bench-stall-"))
    provider = FakeProvider(lifetime=3600,
                            clients={CLIENT_ID: CLIENT_SECRET}).start()
    m = Mount(tmp, provider)
    m.write_config(simple_config(m))
    sd = FakeSystemd(m)
    rows = []
    try:
        sd.start()
        rows.append(phase(m, sd, "quiet", lambda sd: None))
        rows.append(phase(m, sd, "upgrade (SIGUSR2)", FakeSystemd.upgrade))
        rows.append(phase(m, sd, "crash (SIGKILL, 100 ms restart)",
                          FakeSystemd.restart_after_crash))
        provider.inject("status", count=-1, status=503)
        rows.append(phase(m, sd, "crash, provider failing",
                          FakeSystemd.restart_after_crash))
    finally:
        sd.stop()
        provider.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    quiet = rows[0]["max"]
    print("| case | events | reads | failed | p50 ms | p99 ms | longest ms "
          "| longest vs quiet |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print("| %s | %d | %d | %d | %.2f | %.2f | %.1f | %.1fx |" % (
            r["name"], 0 if r is rows[0] else EVENTS, r["reads"],
            r["errors"], r["p50"] * 1e3, r["p99"] * 1e3, r["max"] * 1e3,
            r["max"] / quiet))
    bad = [r for r in rows if r["errors"] or r["max"] >= 1.0]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
