"""Containers: a reader in its own mount namespace (unshare, slave
propagation) keeps working across a daemon restart when the mount's
parent is shared (--shared-parent); a bind mount of a single file does
not, which is why the docs say to bind the parent."""

import errno
import os
import signal
import subprocess

from harness import reap, simple_config, wait_for


def test_reader_in_a_namespace_survives_a_restart(mount, provider,
                                                   public_dir, tmp_path):
    provider.lifetime = 2  # rotating about every second
    parent = os.path.join(public_dir, "run")
    os.makedirs(os.path.join(parent, "fs"))
    m = mount(name="c", mnt=os.path.join(parent, "fs"))
    path = m.path("tenants", "acme", "idp", "access_token")
    out = tmp_path / "reader.out"
    reader = None
    try:
        m.start(simple_config(m), args=["--shared-parent"])
        with open(out, "w") as f:
            reader = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "slave", "sh", "-c",
                 "while :; do cat %s 2>/dev/null || printf ERR; echo; "
                 "sleep 0.1; done" % path], stdout=f)

        def seen():
            return [l for l in out.read_text().splitlines()
                    if l and l != "ERR"]
        wait_for(lambda: len(set(seen())) >= 2, 10,
                 what="rotations seen inside the namespace")
        assert all(provider.issued(t) for t in set(seen()))
        os.kill(m.pid, signal.SIGKILL)
        assert reap(m.pid, 10) is not None
        m.pid = None
        wait_for(lambda: out.read_text().splitlines()[-1:] == ["ERR"], 5,
                 what="the reader to notice the dead mount")
        m.start(args=["--shared-parent"])
        new = m.token("acme", "idp")
        wait_for(lambda: new in out.read_text(), 5,
                 what="the new mount inside the untouched namespace")
    finally:
        if reader:
            reader.kill()
            reader.wait(timeout=10)
        m.stop()
        subprocess.run(["umount", "-l", parent], timeout=10)


def test_a_bind_mount_of_one_file_goes_stale(mount, provider, tmp_path):
    provider.lifetime = 2
    m = mount(simple_config)
    target = tmp_path / "token"
    target.write_text("")
    subprocess.run(["mount", "--bind", m.path("tenants", "acme", "idp",
                                              "access_token"), str(target)],
                   check=True, timeout=10)
    try:
        first = target.read_text()
        assert provider.issued(first)
        # Two rotations later the bound file still names the first token's
        # inode, which is no longer served.
        wait_for(lambda: len({first, m.token("acme", "idp")}) == 2, 10,
                 what="a rotation")
        second = m.token("acme", "idp")
        wait_for(lambda: m.token("acme", "idp") not in (first, second), 10,
                 what="another rotation")

        def stale():
            try:
                return target.read_text() == first and None
            except OSError as e:
                return e.errno
        assert wait_for(stale, 5, what="ESTALE") == errno.ESTALE
    finally:
        subprocess.run(["umount", "-l", str(target)], timeout=10)
