"""The filesystem contract: the tree, each file's content, exact sizes, and
a read-only mount that refuses every change."""

import errno
import json
import os
import re
import shutil
import stat
import subprocess
import time
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import CLIENT_ID, simple_config, wait_for

CRED_FILES = ["access_token", "expires_at", "scopes", "status", "status.json",
              "token_type"]


def two_tenants(m):
    return {
        "providers": {"idp": m.provider_conf(),
                      "other": m.provider_conf(auth_method="client_secret_post")},
        "tenants": {
            "zeta": {"credentials": {"idp": {"scopes": ["write", "read"]}}},
            "acme": {"credentials": {
                "idp": {"scopes": ["read", "admin.view"]},
                "other": {"scopes": []}}},
        },
    }


def test_tree_and_contents(mount, provider):
    m = mount(two_tenants)
    assert sorted(os.listdir(m.mnt)) == ["metrics", "status", "tenants"]
    assert os.listdir(m.path("tenants")) == ["acme", "zeta"]
    assert sorted(os.listdir(m.path("tenants", "acme"))) == ["idp", "other"]
    assert sorted(os.listdir(m.path("tenants", "acme", "idp"))) == CRED_FILES

    token = m.token("acme", "idp")
    rec = provider.issued(token)
    assert rec is not None, "served a token the provider never issued"
    assert rec["client_id"] == CLIENT_ID
    assert rec["scope"] == "read admin.view"
    assert not token.endswith("\n")
    # Each credential has its own token.
    assert m.token("zeta", "idp") != token
    assert provider.issued(m.token("acme", "other"))["scope"] == ""

    assert m.read("tenants", "acme", "idp", "token_type") == "Bearer\n"
    assert m.read("tenants", "acme", "idp", "scopes") == "admin.view\nread\n"
    assert m.read("tenants", "zeta", "idp", "scopes") == "read\nwrite\n"
    exp = m.read("tenants", "acme", "idp", "expires_at")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", exp)
    exp_t = datetime.strptime(exp.strip(), "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc).timestamp()
    assert abs(exp_t - rec["expires"]) < 2

    text = m.read("tenants", "acme", "idp", "status")
    fields = dict(line.split(": ", 1) for line in text.splitlines())
    for key in ("state", "expires_at", "expires_in", "last_refresh",
                "next_refresh", "refresh_count", "consecutive_failures",
                "last_error"):
        assert key in fields, key
    assert fields["state"] == "valid"
    assert fields["health"] == "ok"
    assert fields["refresh_count"] == "1"
    assert fields["last_error"] == "-"
    assert fields["expires_at"] == exp.strip()
    assert 3500 < int(fields["expires_in"]) <= 3600
    # status.json says the same.
    sj = m.status("acme", "idp")
    assert sj["state"] == "valid" and sj["refresh_count"] == 1
    assert sj["expires_at"] == exp.strip()
    assert sj["last_error"] is None
    assert sj["scopes_granted"] == ["admin.view", "read"]
    assert sj["scopes_requested"] == ["read", "admin.view"]
    assert set(fields) == set(sj)

    # No token in any other file.
    tokens = [m.token(t, p) for t, p in (("acme", "idp"), ("acme", "other"),
                                         ("zeta", "idp"))]
    for dirpath, _, files in os.walk(m.mnt):
        for name in files:
            if name != "access_token":
                text = open(os.path.join(dirpath, name)).read()
                assert not any(t in text for t in tokens), name

    root = m.read("status").splitlines()
    assert [line.split()[0] for line in root] == \
        ["acme/idp", "acme/other", "zeta/idp"]
    assert all("state=valid" in line for line in root)


def test_metrics_is_prometheus_text(mount):
    m = mount(two_tenants)
    m.token("acme", "idp")
    # Metrics are rendered at most once a second: until the token shows.
    wait_for(lambda: 'credfs_credentials{state="valid"} 0' not in
             m.read("metrics"), 10, what="metrics with the token")
    families = {f.name: f for f in
                text_string_to_metric_families(m.read("metrics"))}
    assert "credfs_credentials" in families
    states = {s.labels["state"]: s.value
              for s in families["credfs_credentials"].samples}
    assert states["valid"] == 3
    reads = {(s.labels["tenant"], s.labels["provider"]): s.value
             for s in families["credfs_token_reads"].samples}
    assert reads[("acme", "idp")] == 1
    assert reads[("zeta", "idp")] == 0
    assert families["credfs_refresh_success"].type == "counter"


def test_sizes_match_content(mount, provider):
    """fstat() of an open file is the size of what it reads, every time,
    while 1-second tokens keep every file changing underneath."""
    provider.lifetime = 1
    m = mount(two_tenants)
    paths = [m.path("status"), m.path("metrics")] + \
        [m.path("tenants", t, "idp", f) for t in ("acme", "zeta")
         for f in CRED_FILES]
    checked = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        for p in paths:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                data = f.read()
            assert size == len(data), p
            checked += 1
    assert checked > 200
    # The content really changed while we read (tokens rotated).
    assert m.status("acme", "idp")["refresh_count"] >= 3


def test_cp_and_node_read_whole_files(mount, tmp_path):
    m = mount(two_tenants)
    src = m.path("tenants", "acme", "idp", "access_token")
    dst = str(tmp_path / "copy")
    subprocess.run(["cp", src, dst], check=True, timeout=10)
    with open(dst) as f:
        assert f.read() == m.token("acme", "idp")
    node = shutil.which("node")
    if not node:
        pytest.skip("node is not installed; cp was checked")
    js = ("const fs=require('fs');for(const p of process.argv.slice(1))"
          "process.stdout.write(JSON.stringify(fs.readFileSync(p,'utf8'))"
          "+'\\n')")
    sj = m.path("tenants", "acme", "idp", "status.json")
    out = subprocess.run([node, "-e", js, src, sj], check=True,
                         capture_output=True, text=True, timeout=20).stdout
    tok, status = [json.loads(line) for line in out.splitlines()]
    assert tok == m.token("acme", "idp")
    assert json.loads(status)["tenant"] == "acme"


def test_inodes_and_mtime(mount):
    m = mount(simple_config)
    m.token("acme", "idp")  # waits for the first token
    d = m.path("tenants", "acme", "idp")
    ino = os.stat(d).st_ino
    st = os.stat(os.path.join(d, "access_token"))
    # No readers configured: root only.
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o400
    assert st.st_uid == 0 and st.st_gid == 0
    last = m.status("acme", "idp")["last_refresh"]
    last_t = datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=timezone.utc).timestamp()
    assert abs(st.st_mtime - last_t) < 2
    assert os.stat(d).st_ino == ino


def _attempts(target, d):
    """Every way to change the tree; each must fail."""
    f = os.path.join(d, "access_token")
    return {
        "write": lambda: open(f, "w").write("x"),
        "append": lambda: open(f, "a").write("x"),
        "create": lambda: open(os.path.join(d, "new"), "w").write("x"),
        "mkdir": lambda: os.mkdir(os.path.join(d, "sub")),
        "unlink": lambda: os.unlink(f),
        "rmdir": lambda: os.rmdir(d),
        "rename": lambda: os.rename(f, os.path.join(d, "moved")),
        "truncate": lambda: os.truncate(f, 0),
        "chmod": lambda: os.chmod(f, 0o444),
        "chown": lambda: os.chown(f, 1, 1),
        "utime": lambda: os.utime(f, (0, 0)),
        "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
        "symlink": lambda: os.symlink("/etc/passwd", os.path.join(d, "l")),
        "link": lambda: os.link(f, os.path.join(d, "hard")),
        "mknod": lambda: os.mkfifo(os.path.join(d, "fifo")),
        "link_out": lambda: os.link(f, str(target / "stolen")),
    }


def snapshot(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            out[p] = (st.st_mode, st.st_uid, st.st_gid)
        for name in dirs:
            out[os.path.join(dirpath, name)] = "dir"
    return out


def test_every_mutation_refused(mount, tmp_path):
    m = mount(simple_config)
    d = m.path("tenants", "acme", "idp")
    before = snapshot(m.mnt)
    token = m.token("acme", "idp")
    for name, fn in _attempts(tmp_path, d).items():
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM,
                                 errno.EXDEV), (name, e.value)
    assert snapshot(m.mnt) == before
    assert m.token("acme", "idp") == token
    assert not os.path.exists(str(tmp_path / "stolen"))


def test_other_users_see_only_their_tenants(mount, provider, public_dir):
    """Run as root, credfs mounts with allow_other; readers decide."""
    def config(m):
        c = simple_config(m, tenants=("acme", "open"))
        c["tenants"]["open"]["readers"] = {"uids": [65534]}
        return c
    m = mount(config, mnt=os.path.join(public_dir, "mnt"))
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534",
                 "--clear-groups"]

    def run(*cmd):
        return subprocess.run(as_nobody + list(cmd), capture_output=True,
                              text=True, timeout=10)
    r = run("ls", m.path("tenants"))
    assert r.returncode == 0 and r.stdout.split() == ["open"]
    r = run("cat", m.path("tenants", "acme", "idp", "access_token"))
    assert r.returncode != 0 and "No such file or directory" in r.stderr
    r = run("cat", m.path("tenants", "open", "idp", "access_token"))
    assert r.returncode == 0, r.stderr
    assert provider.issued(r.stdout) is not None
