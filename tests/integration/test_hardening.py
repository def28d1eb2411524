"""Findings of the attack-and-fault review: a clean stop loses no grant,
one tenant cannot stall another, metadata obeys the reader policy, a
frozen daemon is named as such, and the smaller input checks.

Each test asserts what a user would notice: the provider's view of the
grant, the latency another tenant's reader sees, what a non-reader can
open, what credfsctl prints.
"""

import errno
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from harness import CLIENT_ID, CREDFSCTL, reap, wait_for
from test_refresh import add, ctl, rt_config, setup_store

N_STOP = 20


def test_sigterm_waits_for_refreshes_in_flight_and_stores_them(
        mount, provider, tmp_path):
    """20 rotating refreshes held in flight by a slow provider when
    SIGTERM comes: the daemon waits for the answers and stores the rotated
    refresh tokens, so the next daemon presents the new ones: no reuse,
    no revoked grant."""
    tenants = ["t%02d" % i for i in range(N_STOP)]
    m = mount()
    store = tmp_path / "store"
    setup_store(m, rt_config(m, store, tenants=tenants, max_concurrency=32,
                             open_wait_s=1, timeout_s=10))
    for t in tenants:
        add(m, provider, t)  # no daemon yet: straight into the store
    provider.inject("delay", count=-1, seconds=3)
    m.start()
    wait_for(lambda: provider.arrivals >= N_STOP, 20,
             what="20 token requests in flight")
    assert provider.stats()["ok"] == 0, "answered before the stop"
    t0 = time.monotonic()
    status = m.stop(signal.SIGTERM)
    took = time.monotonic() - t0
    assert status == 0, m.log()
    # Every delayed request was answered (the provider rotated each
    # refresh token) before the daemon let go.
    assert provider.stats()["ok"] == N_STOP, m.log()
    assert "every answer in flight is in" in m.log()
    assert took < 10, "the stop took %.1fs" % took

    provider.clear_faults()
    m.start()
    for t in tenants:
        wait_for(lambda: m.status(t, "idp")["state"] == "valid", 20,
                 what="%s valid after the restart" % t)
        assert m.token(t, "idp")
    assert provider.stats()["reused_refresh_tokens"] == 0
    assert not provider.revoked_families
    m.stop()
    m.check_log_clean()
