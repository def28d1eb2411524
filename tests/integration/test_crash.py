"""Crash safety of refresh-token rotation: SIGKILL at random moments during
hundreds of rotations, restart each time, and nothing is lost.

One window is beyond any client: the provider has rotated the refresh
token and answered, and the daemon dies before the answer is in the store.
The restarted daemon can only present the old token again. Providers
with a reuse grace period (Okta, Auth0) accept that once; the fake one
here does too, records each such replay, and the test requires every
replay to be explained by a kill inside that window. Any other reuse (a
token the store had already replaced, a rollback, a write in place) revokes
the whole family and fails the test.
"""

import os
import random
import signal
import subprocess
import time

from harness import CLIENT_ID, wait_for
from test_refresh import add, rt_config, setup_store

TENANTS = ["t%02d" % i for i in range(10)]
MIN_ROTATIONS = 200
MIN_KILLS = 100
WINDOW_S = 1.0  # provider's answer to rename in the store, generously


def rotations(provider):
    return sum(1 for r in provider.token_requests("refresh_token")
               if r[4] == "ok")


def test_sigkill_during_rotations_loses_no_refresh_token(
        mount, provider, tmp_path):
    provider.lifetime = 2  # each credential rotates about every second
    provider.reuse_grace = 5
    m = mount()
    store = tmp_path / "store"
    setup_store(m, rt_config(m, store, tenants=TENANTS, open_wait_s=2))
    m.start()
    for t in TENANTS:
        add(m, provider, t, rt=provider.mint_refresh_token(CLIENT_ID, "read"))

    events = tmp_path / "inotify.log"
    with open(events, "w") as out:
        watch = subprocess.Popen(
            ["inotifywait", "-m", "-r", "-q", "--format", "%e %w%f", "-e",
             "modify,close_write,create,moved_to,moved_from,delete,attrib",
             str(store)], stdout=out, stderr=subprocess.DEVNULL)
    try:
        probe = store / "probe"
        wait_for(lambda: (probe.write_text("x"), probe.unlink(),
                          "probe" in events.read_text())[2], 10,
                 what="inotifywait to watch")
        seed = int(time.time())
        rng = random.Random(seed)
        start = rotations(provider)
        kills = []
        deadline = time.monotonic() + 150
        while (rotations(provider) - start < MIN_ROTATIONS or
               len(kills) < MIN_KILLS) and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.02, 0.5))
            signalled = time.time()
            m.stop(signal.SIGKILL)  # returns once it is reaped
            kills.append((signalled, time.time()))
            m.start()
        done = rotations(provider) - start
    finally:
        watch.terminate()
        watch.wait(timeout=10)

    print("seed %d: %d kills during %d rotations, %d grace replays"
          % (seed, len(kills), done, len(provider.grace_replays)))
    assert done >= MIN_ROTATIONS and len(kills) >= MIN_KILLS, \
        "only %d rotations and %d kills in time" % (done, len(kills))
    # No reuse, no revoked family.
    assert provider.stats()["reused_refresh_tokens"] == 0
    assert not provider.revoked_families
    # A replay only where a kill fell between the provider taking the
    # request up and the record's rename: signalled no later than the
    # answer plus WINDOW_S, dead no sooner than the provider looked at the
    # request (a loaded machine's provider can take it up after the daemon
    # that sent it was killed: then its end of the connection was closed,
    # the provider saw so, and the answer never reached it).
    for rep in provider.grace_replays:
        assert rep["client_gone"] or any(
            k <= rep["rotated_at"] + WINDOW_S and dead >= rep["asked_at"]
            for k, dead in kills), "a replay no kill explains: %r" % rep
    # Every credential still refreshes, with a live token.
    for t in TENANTS:
        g = m.status(t, "idp")["generation"]
        wait_for(lambda: m.status(t, "idp")["generation"] > g, 10,
                 what="a rotation of " + t)
        assert provider.issued(m.token(t, "idp"))["active"]
    assert provider.stats()["reused_refresh_tokens"] == 0

    # Records are only ever replaced by rename, never written in place.
    lines = events.read_text().splitlines()
    on_records = [l for l in lines if l.endswith(".rec")]
    assert on_records, "no record events seen"
    kinds = {l.split()[0] for l in on_records}
    assert kinds == {"MOVED_TO"}, kinds
    assert len(on_records) >= done // 2
    temps = [l for l in lines if l.endswith(".tmp")]
    assert any(l.startswith("CLOSE_WRITE") for l in temps)
    assert any(l.startswith("MOVED_FROM") for l in temps)
