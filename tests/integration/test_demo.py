"""make demo's script runs end to end and leaves nothing behind."""

import os
import subprocess

from harness import BUILD, ROOT, is_mounted


def test_demo_runs_and_cleans_up(public_dir):
    mnt = os.path.join(public_dir, "demo")
    # Its own TMPDIR: processes of another suite's demo running beside
    # this one (make check runs two) are not this one's.
    env = dict(os.environ, CREDFS_BUILD=BUILD, DEMO_MNT=mnt,
               TMPDIR=public_dir)
    r = subprocess.run(["bash", os.path.join(ROOT, "examples", "demo.sh")],
                       capture_output=True, text=True, env=env, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "token changed across the refresh" in r.stdout
    assert "acme/google state=valid" in r.stdout
    assert "access_token" in r.stdout and "status.json" in r.stdout
    # The refresh-token credential appears once added, and is served.
    assert "acme/slack: valid, expires in" in r.stdout
    assert "grant: refresh_token" in r.stdout
    assert not is_mounted(mnt)
    # No daemon or provider left running from this demo.
    ps = subprocess.run(["pgrep", "-af", public_dir + "/credfs-demo"],
                        capture_output=True, text=True).stdout
    assert "fake_provider" not in ps and "credfs --config" not in ps, ps
