"""make bench-scale in small, as part of the suite: 300 refresh-token
credentials with 10 s tokens (a refresh period of 3 s), a steady window,
a downtime that leaves every credential overdue and the restart after
it; on the file store and on PostgreSQL with three daemons. Every token
the sampler read must have been valid (the benchmark exits 1 otherwise).
The figures at 100,000 are in docs/performance.md.

The file store here is on tmpfs: beside the other suites of make check,
whose writes share /tmp's file system, the group's syncfs(2) waits for
their writeback too (the trade-off docs/performance.md states), and a
loaded ASan run stalled this run's refreshes for about 9 s, longer than
its 10 s tokens allow. PostgreSQL's data is on tmpfs too, for the same
reason: its commit fsync stalled as long in a loaded make check
(2026-12-01: the sampler managed a quarter of its reads, refreshes fell
to 1 a second, and one token expired). The disk is measured by make
bench-scale."""

import os
import re
import subprocess
import sys

import pytest

from harness import BUILD, PG_BINS, ROOT


@pytest.mark.parametrize("store", ["tmpfs", "postgres"])
def test_bench_scale_in_small(store):
    if store == "postgres" and not PG_BINS:
        pytest.fail("PostgreSQL is not installed: make deps")
    env = dict(os.environ, CREDFS_BUILD=BUILD, BENCH_TENANTS="30",
               BENCH_LIFETIME="10", BENCH_SCALE_SECONDS="6",
               BENCH_STORE=store, BENCH_WORK_BASE="/dev/shm")
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench",
                                                       "scale.py")],
                         env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=150)
    finally:
        if p.poll() is None:  # stopped, it unmounts and stops its own
            p.terminate()
            out, _ = p.communicate(timeout=60)
    print(out)
    assert p.returncode == 0, out
    assert re.search(r"sampler: [1-9]\d* reads, 0 expired, 0 damaged",
                     out), out
    assert "ready again after" in out
    if store == "postgres":
        m = re.search(r"refreshes by daemon: (\d+)/(\d+)/(\d+)", out)
        assert m and sum(map(int, m.groups())) > 0, out
