"""Containers: a reader in its own mount namespace (unshare, slave
propagation) keeps working across a daemon restart when the mount's
parent is shared (--shared-parent); a bind mount of a single file does
not, which is why the docs say to bind the parent."""

import errno
import json
import os
import signal
import subprocess

import yaml

from harness import CREDFSCTL, ROOT, reap, simple_config, wait_for


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


def k8s(name):
    with open(os.path.join(ROOT, "examples", "kubernetes", name)) as f:
        return list(yaml.safe_load_all(f))


def test_kubernetes_manifests_and_dockerfile_agree(tmp_path):
    """No cluster and no container runtime here: the manifests are parsed
    and the fields that decide whether it works are checked against each
    other, the Dockerfile and credfsctl check (docs/containers.md)."""
    docs = {d["kind"]: d for d in k8s("credfs.yaml")}
    assert sorted(docs) == ["ConfigMap", "DaemonSet", "Namespace", "Secret"]
    assert docs["DaemonSet"]["apiVersion"] == "apps/v1"
    ns = docs["Namespace"]["metadata"]["name"]
    for d in docs.values():
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == ns, d["kind"]

    # The configuration passes check, and each secret file it names is a
    # key of the Secret, mounted where the config looks.
    config = json.loads(docs["ConfigMap"]["data"]["config.json"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    r = subprocess.run([CREDFSCTL, "check", "--syntax", "--config",
                        str(tmp_path / "config.json")], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    spec = docs["DaemonSet"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    by_path = {m["mountPath"]: volumes[m["name"]] for m in mounts.values()}
    for p in config["providers"].values():
        d, key = os.path.split(p["client_secret_file"])
        secret = by_path[d]["secret"]
        assert secret["secretName"] == docs["Secret"]["metadata"]["name"]
        assert key in docs["Secret"]["stringData"]
        assert secret["defaultMode"] & 0o077 == 0  # credfs refuses others'
    cm = [m for m in mounts.values() if m["mountPath"] ==
          "/etc/credfs/config.json"][0]
    assert volumes[cm["name"]]["configMap"]["name"] == \
        docs["ConfigMap"]["metadata"]["name"]
    assert cm["subPath"] == "config.json"
    assert c["args"] == ["--config", "/etc/credfs/config.json"]
    audit_dir = os.path.dirname(config["audit_log"])
    assert "hostPath" in by_path[audit_dir]

    # The mount: below a hostPath shared back to the node; privileged, as
    # Kubernetes requires for Bidirectional; no surge (a second daemon on
    # a served mount point is refused).
    run = [m for m in mounts.values() if m["mountPath"] == "/run/credfs"][0]
    assert run["mountPropagation"] == "Bidirectional"
    assert volumes[run["name"]]["hostPath"]["path"] == "/run/credfs"
    assert c["securityContext"]["privileged"] is True
    roll = docs["DaemonSet"]["spec"]["updateStrategy"]["rollingUpdate"]
    assert roll == {"maxUnavailable": 1, "maxSurge": 0}
    with open(os.path.join(ROOT, "examples", "containers",
                           "Dockerfile")) as f:
        dockerfile = f.read()
    entry = [l for l in dockerfile.splitlines()
             if l.startswith("ENTRYPOINT ")][0]
    entry = json.loads(entry[len("ENTRYPOINT "):])
    assert "exec /usr/bin/credfs -f --shared-parent" in entry[2]
    assert entry[2].rstrip().endswith(" /run/credfs/mnt")
    assert "mkdir -p /run/credfs/mnt" in entry[2]
    froms = [l.split()[1] for l in dockerfile.splitlines()
             if l.startswith("FROM ")]
    assert froms == ["debian:12", "debian:12-slim"]
    assert "dpkg-buildpackage -us -uc -b" in dockerfile
    assert "/tmp/credfs_*_amd64.deb" in dockerfile
    for probe in ("readinessProbe", "livenessProbe"):
        assert "/run/credfs/mnt" in " ".join(c[probe]["exec"]["command"])

    # The workload: the same hostPath, HostToContainer, read-only; it
    # reads a credential the config declares, as a uid its tenant lets in.
    (pod,) = k8s("workload.yaml")
    assert pod["kind"] == "Pod"
    (w,) = pod["spec"]["containers"]
    (wm,) = w["volumeMounts"]
    (wv,) = pod["spec"]["volumes"]
    assert wm["mountPropagation"] == "HostToContainer" and wm["readOnly"]
    assert wm["mountPath"] == "/run/credfs"
    assert wv["hostPath"]["path"] == "/run/credfs"
    script = w["command"][-1]
    tenant, provider = script.split("/run/credfs/mnt/tenants/")[1].split(
        "/access_token")[0].split("/")
    assert provider in config["tenants"][tenant]["credentials"]
    assert pod["spec"]["securityContext"]["runAsUser"] in \
        config["tenants"][tenant]["readers"]["uids"]
