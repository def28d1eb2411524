"""The store as far as it exists: credfsctl init, the master key checks,
and one daemon per store."""

import os
import stat
import subprocess

from harness import CREDFS, CREDFSCTL, is_mounted, simple_config


def store_config(m, tmp_path, key_file=True):
    c = simple_config(m)
    c["store"] = {"dir": str(tmp_path / "store")}
    if key_file:
        c["store"]["key_file"] = str(tmp_path / "master.key")
    return c


def ctl(*args, env=None):
    return subprocess.run([CREDFSCTL] + list(args), capture_output=True,
                          text=True, timeout=20, env=env)


def test_init_creates_store_and_key_once(mount, tmp_path):
    m = mount()
    m.write_config(store_config(m, tmp_path))
    r = ctl("init", "--config", m.config_path)
    assert r.returncode == 0, r.stderr
    assert "created master key" in r.stdout and "is ready" in r.stdout
    key = tmp_path / "master.key"
    st = os.stat(key)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_size == 32
    secret = key.read_bytes()
    assert secret.hex() not in r.stdout + r.stderr
    d = tmp_path / "store"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for name in os.listdir(d):
        assert stat.S_IMODE(os.stat(d / name).st_mode) == 0o600, name
    # Again: nothing changes.
    r = ctl("init", "--config", m.config_path)
    assert r.returncode == 0 and "created" not in r.stdout
    assert key.read_bytes() == secret
    r = ctl("init", "--help")
    assert r.returncode == 0 and "store.dir" in r.stdout


def test_one_daemon_per_store(mount, tmp_path):
    a = mount(name="a")
    config = store_config(a, tmp_path)
    a.write_config(config)
    assert ctl("init", "--config", a.config_path).returncode == 0
    a.start(config)
    assert a.token("acme", "idp")
    b = mount(name="b")
    b.write_config(config)
    r = subprocess.run([CREDFS, "--config", b.config_path, b.mnt],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "is in use by another credfs (pid %d)" % a.pid in r.stderr
    assert not is_mounted(b.mnt)
    assert a.token("acme", "idp")  # the first keeps serving


def test_key_checks(mount, tmp_path):
    m = mount()
    config = store_config(m, tmp_path)
    m.write_config(config)
    assert ctl("init", "--config", m.config_path).returncode == 0
    key = tmp_path / "master.key"

    os.chmod(key, 0o644)
    for cmd in ([CREDFS, "--config", m.config_path, m.mnt],
                [CREDFSCTL, "init", "--config", m.config_path]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        assert r.returncode != 0
        assert "mode 0644 lets group or others in; chmod 600 it" in r.stderr
    assert not is_mounted(m.mnt)
    os.chmod(key, 0o600)

    # Another key does not open this store, and says so.
    config["store"]["key_file"] = str(tmp_path / "other.key")
    m.write_config(config)
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    os.chmod(other, 0o600)
    r = subprocess.run([CREDFS, "--config", m.config_path, m.mnt],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode != 0
    assert "the master key does not open this store" in r.stderr
    assert not is_mounted(m.mnt)


def test_systemd_credential_is_used(mount, tmp_path):
    m = mount()
    m.write_config(store_config(m, tmp_path, key_file=False))
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    key = creds / "credfs.key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o600)
    env = dict(os.environ, CREDENTIALS_DIRECTORY=str(creds))
    r = ctl("init", "--config", m.config_path, env=env)
    assert r.returncode == 0, r.stderr
    # Without the credential there is no key at all.
    env.pop("CREDENTIALS_DIRECTORY")
    r = ctl("init", "--config", m.config_path, env=env)
    assert r.returncode != 0 and "no master key" in r.stderr
