"""Install, uninstall, the shipped example config, and the fake provider's
HTTP control interface that the demo relies on."""

import json
import os
import re
import subprocess
import urllib.error
import urllib.request

import pytest

from harness import ASAN_BUILD, BUILD, CREDFSCTL, ROOT


def make(*args):
    extra = ["SANITIZE=1"] if BUILD.rstrip("/").endswith("build-asan") else []
    return subprocess.run(["make", "-C", ROOT, "--no-print-directory",
                           "BUILD=" + BUILD] + extra + list(args),
                          capture_output=True, text=True, timeout=300)


def test_install_and_uninstall(tmp_path):
    dest = str(tmp_path / "root")
    r = make("install", "DESTDIR=" + dest, "PREFIX=/opt/credfs")
    assert r.returncode == 0, r.stdout + r.stderr
    for p in ("opt/credfs/bin/credfs", "opt/credfs/bin/credfsctl"):
        assert os.access(os.path.join(dest, p), os.X_OK), p
    unit = os.path.join(dest, "opt/credfs/lib/systemd/system/credfs.service")
    with open(unit) as f:
        text = f.read()
    assert "ExecStart=/opt/credfs/bin/credfs -f" in text
    assert "@BINDIR@" not in text and "@DOCDIR@" not in text
    assert "Type=notify" in text and "ExecReload=" in text
    assert os.path.exists(os.path.join(dest, "opt/credfs/share/doc/credfs/"
                                       "config.md"))
    installed = sorted(os.path.relpath(os.path.join(d, f), dest)
                       for d, _, fs in os.walk(dest) for f in fs)
    docs = sorted(["README.md"] + [f for f in os.listdir(
        os.path.join(ROOT, "docs")) if f.endswith(".md")])
    assert installed == sorted(
        ["opt/credfs/bin/credfs", "opt/credfs/bin/credfsctl",
         "opt/credfs/lib/systemd/system/credfs.service",
         "opt/credfs/lib/systemd/system/credfs@.service",
         "opt/credfs/share/man/man8/credfs.8",
         "opt/credfs/share/man/man8/credfsctl.8",
         "opt/credfs/share/man/man5/credfs.json.5",
         "opt/credfs/share/bash-completion/completions/credfsctl",
         "opt/credfs/share/doc/credfs/examples/config.json"] +
        ["opt/credfs/share/doc/credfs/" + d for d in docs] +
        ["opt/credfs/share/doc/credfs/examples/providers/" + e
         for e in os.listdir(os.path.join(ROOT, "examples", "providers"))])
    for page in ("man8/credfs.8", "man8/credfsctl.8", "man5/credfs.json.5"):
        man = subprocess.run(["man", "-l", "--warnings", os.path.join(
            dest, "opt/credfs/share/man", page)],
            capture_output=True, text=True, timeout=30,
            env=dict(os.environ, MANWIDTH="80"))
        assert man.returncode == 0 and "credfs" in man.stdout, page
        assert man.stderr == "", (page, man.stderr)
    out = subprocess.run([os.path.join(dest, "opt/credfs/bin/credfs"),
                          "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("credfs ")
    r = make("uninstall", "DESTDIR=" + dest, "PREFIX=/opt/credfs")
    assert r.returncode == 0, r.stderr
    left = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
    assert left == []


def test_every_example_config_passes_check_syntax():
    """As shipped: no secret file, audit directory or network needed."""
    names = ["config.json"] + ["providers/" + f for f in sorted(
        os.listdir(os.path.join(ROOT, "examples", "providers")))]
    for name in names:
        path = os.path.join(ROOT, "examples", name)
        r = subprocess.run([CREDFSCTL, "check", "--syntax", "--json",
                            "--config", path], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 0, (name, r.stdout, r.stderr)
        out = json.loads(r.stdout)
        assert out["ok"] is True and out["checked"] == "syntax", out
        assert out["credentials"] >= 1
    # Everything checked: the secret files are not there.
    r = subprocess.run([CREDFSCTL, "check", "--json", "--config",
                        os.path.join(ROOT, "examples", "config.json")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["checked"] == "everything"
    assert "config.json: " in out["error"]


def test_example_config_is_valid(tmp_path):
    with open(os.path.join(ROOT, "examples", "config.json")) as f:
        config = json.load(f)
    secret = tmp_path / "secret"
    secret.write_text("x\n")
    os.chmod(secret, 0o600)
    for p in config["providers"].values():
        p["client_secret_file"] = str(secret)
    # Its directory is the unit's LogsDirectory=, not there on a test host.
    config["audit_log"] = str(tmp_path / "audit.log")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    r = subprocess.run([CREDFSCTL, "check", "--config", str(path)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert "2 tenants" in r.stdout


def post(url, body=None, headers=None):
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data or b"", method="POST",
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_fake_provider_control_over_http(provider):
    base = provider.url
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    ok = b"grant_type=client_credentials&client_id=credfs-test" \
         b"&client_secret=s3cret-client"
    assert post(base + "/_control/fault",
                {"kind": "status", "status": 502, "count": 2})[0] == 200
    assert post(base + "/token", ok, form)[0] == 502
    assert post(base + "/token", ok, form)[0] == 502
    status, body = post(base + "/token", ok, form)
    assert status == 200
    tok = json.loads(body)["access_token"]
    assert post(base + "/token", b"grant_type=client_credentials"
                b"&client_id=credfs-test&client_secret=wrong", form)[0] == 401
    status, body = post(base + "/introspect", ok + b"&token=" + tok.encode(),
                        form)
    assert json.loads(body)["active"] is True
    assert post(base + "/revoke", ok + b"&token=" + tok.encode(), form)[0] \
        == 200
    status, body = post(base + "/introspect", ok + b"&token=" + tok.encode(),
                        form)
    assert json.loads(body)["active"] is False
    with urllib.request.urlopen(base + "/_control/stats", timeout=10) as r:
        stats = json.loads(r.read())
    assert stats["token_requests"] == 4 and stats["tokens_issued"] == 1


def test_fake_provider_rotation_and_family_revocation(provider):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    auth = b"&client_id=credfs-test&client_secret=s3cret-client"
    rt = provider.mint_refresh_token("credfs-test", "offline")
    status, body = post(provider.url + "/token", b"grant_type=refresh_token"
                        b"&refresh_token=" + rt.encode() + auth, form)
    assert status == 200
    new = json.loads(body)
    assert new["refresh_token"] != rt
    # Reusing the rotated token revokes the whole family, new one included.
    assert post(provider.url + "/token", b"grant_type=refresh_token"
                b"&refresh_token=" + rt.encode() + auth, form)[0] == 400
    assert post(provider.url + "/token", b"grant_type=refresh_token"
                b"&refresh_token=" + new["refresh_token"].encode() + auth,
                form)[0] == 400
    assert provider.stats()["reused_refresh_tokens"] == 1


def test_mount_unit_example_verifies(tmp_path):
    src = os.path.join(ROOT, "examples", "systemd", "run-credfs-mnt.mount")
    unit = tmp_path / "run-credfs-mnt.mount"
    with open(src) as f:
        text = f.read()
    unit.write_text(text)
    assert "Where=/run/credfs/mnt" in text and "Type=fuse.credfs" in text
    r = subprocess.run(["systemd-analyze", "verify", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip() == "", r.stderr


@pytest.mark.parametrize("name", ["credfs.service", "credfs@.service"])
def test_unit_file_verifies(tmp_path, name):
    """systemd-analyze verify on the units, with ExecStart pointing at the
    binary just built (it checks that the command exists)."""
    with open(os.path.join(ROOT, "systemd", name + ".in")) as f:
        text = f.read().replace("@BINDIR@", BUILD).replace(
            "@DOCDIR@", "/usr/share/doc/credfs")
    unit = tmp_path / name.replace("@", "@test")
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip() == "", r.stderr
    # One layout: the mount one level below the shared /run/credfs.
    assert "--shared-parent" in text
    assert ("/run/credfs/mnt\n" if name == "credfs.service"
            else "/run/credfs/%i\n") in text
    # The exposure score docs/systemd.md records: "OK" or better.
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                        str(unit)], capture_output=True, text=True,
                       timeout=60)
    line = [l for l in r.stdout.splitlines() if "Overall exposure" in l][0]
    score = float(line.split(":")[1].split()[0])
    assert score < 5.0, line


def complete(line, config, tmp_path):
    """What bash completes for the words of @line (the last one being
    completed, "" for a new word), with the installed script."""
    words = line.split(" ")
    script = (". %s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_credfsctl\n"
              "printf '%%s\\n' \"${COMPREPLY[@]}\"\n") % (
        os.path.join(ROOT, "src", "completion", "credfsctl.bash"),
        " ".join("'%s'" % w for w in words), len(words) - 1)
    r = subprocess.run(["bash", "--norc", "-c", script], capture_output=True,
                       text=True, timeout=20, cwd=str(tmp_path),
                       env=dict(os.environ, PATH=os.path.dirname(CREDFSCTL)
                                + ":" + os.environ["PATH"]))
    assert r.returncode == 0, r.stderr
    return sorted(w for w in r.stdout.split("\n") if w)


def test_bash_completion(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({
        "providers": {p: {"token_url": "https://idp.example.com/token",
                          "client_id": "x", "client_secret_file": "/nope",
                          "grant": "client_credentials"}
                      for p in ("google", "github")},
        "tenants": {"acme": {"credentials": {"google": {"scopes": []},
                                             "github": {"scopes": []}}},
                    "beta": {"credentials": {"google": {"scopes": []}}}}}))
    c = str(config)
    assert "refresh" in complete("credfsctl re", c, tmp_path)
    assert complete("credfsctl re", c, tmp_path) == [
        "refresh", "register", "rekey", "remove"]
    assert complete("credfsctl mcp-bridge --config %s acme " % c, c,
                    tmp_path) == ["github", "google"]
    assert complete("credfsctl token acme --f", c, tmp_path) == [
        "--format"]
    assert complete("credfsctl token acme google --format e", c,
                    tmp_path) == ["exec-credential"]
    assert complete("credfsctl status --config %s " % c, c, tmp_path) == [
        "acme", "beta"]
    assert complete("credfsctl refresh --config %s acme " % c, c,
                    tmp_path) == ["github", "google"]
    assert complete("credfsctl exec --config=%s beta " % c, c,
                    tmp_path) == ["google"]
    assert complete("credfsctl exec beta google -- l", c, tmp_path) == []
    assert complete("credfsctl watch --s", c, tmp_path) == []


def test_config_man_page_names_every_documented_key(tmp_path):
    """credfs.json(5) lists every key docs/config.md's tables have, and
    its example passes check."""
    keys = set()
    with open(os.path.join(ROOT, "docs", "config.md")) as f:
        for line in f:
            if line.startswith("| `"):
                keys |= set(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    assert len(keys) > 40
    text = subprocess.run(["man", "-l", os.path.join(ROOT, "man",
                                                     "credfs.json.5")],
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, MANWIDTH="200")).stdout
    words = set(re.findall(r"[a-z_]+", text))
    assert sorted(keys - words) == []
    example = text.split("\nEXAMPLE\n")[1].split("\nFILES\n")[0]
    (tmp_path / "ex.json").write_text(example)
    r = subprocess.run([CREDFSCTL, "check", "--syntax", "--config",
                        str(tmp_path / "ex.json")], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(ASAN_BUILD, reason="the package is built without "
                    "sanitizers: the plain suite builds and checks it")
def test_debian_package(tmp_path):
    """dpkg-buildpackage -us -uc -b from a copy of the tree; lintian
    clean at its default level; installed into a scratch root
    (dpkg --root, maintainer scripts run chrootless on $DPKG_ROOT), its
    files where they belong; purged, nothing of it left."""
    src = tmp_path / "credfs"
    src.mkdir()
    tar = subprocess.run(
        "tar --exclude=./build --exclude=./build-asan --exclude=./build-fuzz"
        " --exclude=./.git --exclude=__pycache__ -cf - . | tar -C %s -xf -"
        % src, shell=True, cwd=ROOT, timeout=120)
    assert tar.returncode == 0
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    debs = [f for f in os.listdir(tmp_path) if f.startswith("credfs_")
            and f.endswith("_amd64.deb")]
    assert len(debs) == 1, os.listdir(tmp_path)
    deb = str(tmp_path / debs[0])
    changes = [f for f in os.listdir(tmp_path) if f.endswith(".changes")]
    r = subprocess.run(["lintian", "--fail-on", "error,warning",
                        str(tmp_path / changes[0])], capture_output=True,
                       text=True, timeout=600)
    tags = [l for l in r.stdout.splitlines() if l[:2] in ("E:", "W:")]
    assert r.returncode == 0 and tags == [], r.stdout + r.stderr

    root = tmp_path / "root"
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/updates").mkdir()
    (root / "var/lib/dpkg/status").write_text("")
    dpkg = ["dpkg", "--root=%s" % root, "--force-script-chrootless"]
    r = subprocess.run(dpkg + ["--force-depends", "-i", deb],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for path, mode in (("usr/bin/credfs", 0o755), ("usr/bin/credfsctl", 0o755),
                       ("etc/credfs/config.json.example", 0o644),
                       ("etc/credfs/secrets", 0o700),
                       ("lib/systemd/system/credfs.service", 0o644),
                       ("lib/systemd/system/credfs@.service", 0o644),
                       ("usr/share/man/man8/credfs.8.gz", 0o644),
                       ("usr/share/man/man8/credfsctl.8.gz", 0o644),
                       ("usr/share/man/man5/credfs.json.5.gz", 0o644),
                       ("usr/share/bash-completion/completions/credfsctl",
                        0o644),
                       ("usr/share/doc/credfs/systemd.md", 0o644),
                       ("usr/share/doc/credfs/copyright", 0o644),
                       ("usr/lib/tmpfiles.d/credfs.conf", 0o644),
                       ("etc/logrotate.d/credfs", 0o644),
                       ("var/log/credfs", 0o700), ("run/credfs/mnt", 0o755)):
        st = os.stat(root / path)
        assert st.st_mode & 0o7777 == mode, (path, oct(st.st_mode))
    unit = (root / "lib/systemd/system/credfs.service").read_text()
    assert "ExecStart=/usr/bin/credfs -f --shared-parent --config " \
        "/etc/credfs/config.json /run/credfs/mnt" in unit
    doc = unit.split("Documentation=file://")[1].split()[0]
    assert os.path.exists(str(root) + doc), doc
    fields = subprocess.run(["dpkg-deb", "-f", deb], capture_output=True,
                            text=True, timeout=30).stdout
    assert "Package: credfs\n" in fields and "Depends: fuse3" in fields
    r = subprocess.run([str(root / "usr/bin/credfs"), "--version"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and r.stdout.startswith("credfs 0.")
    r = subprocess.run([str(root / "usr/bin/credfsctl"), "check", "--syntax",
                        "--config", str(root / "etc/credfs/"
                                        "config.json.example")],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr

    r = subprocess.run(dpkg + ["--purge", "credfs"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # Left: dpkg's and systemd's state, and the empty parents tmpfiles.d
    # made (/run, /var/log: every real root has them).
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not str(p.relative_to(root)).startswith(
                      ("var/lib/dpkg", "var/lib/systemd")))
    assert set(left) <= {"run", "var", "var/lib", "var/log"}, left
