"""credfsctl token: the shapes credential helpers expect, checked against
what their consumers parse (the real git for the git helper)."""

import json
import os
import subprocess
import time

from harness import CREDFSCTL, simple_config


def token(m, *args, input=None):
    return subprocess.run([CREDFSCTL, "token", "acme", "idp", "--mount",
                           m.mnt] + list(args), input=input,
                          capture_output=True, text=True, timeout=20)


def test_formats(mount, provider):
    m = mount(simple_config)
    tok = m.token("acme", "idp")
    st = m.status("acme", "idp")
    r = token(m)
    assert r.returncode == 0 and r.stdout == tok + "\n"
    r = token(m, "--format", "header")
    assert r.stdout == "Authorization: Bearer %s\n" % tok
    j = json.loads(token(m, "--format", "json").stdout)
    assert j["access_token"] == tok and j["token_type"] == "Bearer"
    assert j["expires_at"] == st["expires_at"]
    assert j["scopes"] == ["read"] and 3500 < j["expires_in"] <= 3600
    # What a kubeconfig exec plugin must print (client.authentication
    # .k8s.io/v1): kind, apiVersion, status.token, an RFC 3339 expiry.
    ec = json.loads(token(m, "--format", "exec-credential").stdout)
    assert ec == {"apiVersion": "client.authentication.k8s.io/v1",
                  "kind": "ExecCredential",
                  "status": {"token": tok,
                             "expirationTimestamp": st["expires_at"]}}
    assert time.strptime(ec["status"]["expirationTimestamp"],
                         "%Y-%m-%dT%H:%M:%SZ")
    r = token(m, "--format", "aws")
    assert r.returncode == 2 and "not an AWS key" in r.stderr


def test_git_credential_helper(mount, provider, tmp_path):
    m = mount(simple_config)
    tok = m.token("acme", "idp")
    helper = "!%s token acme idp --mount %s --format git" % (CREDFSCTL,
                                                              m.mnt)
    env = dict(os.environ, HOME=str(tmp_path), GIT_TERMINAL_PROMPT="0")
    r = subprocess.run(["git", "-c", "credential.helper=", "-c",
                        "credential.helper=" + helper, "credential", "fill"],
                       input="protocol=https\nhost=git.example.com\n\n",
                       capture_output=True, text=True, timeout=20, env=env)
    assert r.returncode == 0, r.stderr
    got = dict(l.split("=", 1) for l in r.stdout.splitlines())
    assert got["password"] == tok
    assert got["username"] == "x-access-token"
    assert got["host"] == "git.example.com"
    # store and erase are accepted and change nothing.
    for op in ("approve", "reject"):
        r = subprocess.run(["git", "-c", "credential.helper=", "-c",
                            "credential.helper=" + helper, "credential", op],
                           input="protocol=https\nhost=git.example.com\n"
                           "username=x-access-token\npassword=%s\n\n" % tok,
                           capture_output=True, text=True, timeout=20,
                           env=env)
        assert r.returncode == 0, r.stderr
    assert m.token("acme", "idp") == tok


def test_errors_say_why(mount, provider):
    m = mount(simple_config)
    r = subprocess.run([CREDFSCTL, "token", "acme", "nope", "--mount",
                        m.mnt], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1
    assert "acme/nope: no such credential here" in r.stderr
    r = token(m, "--format", "raw", "get")
    assert r.returncode == 2 and "'get' is for --format git" in r.stderr
    r = subprocess.run([CREDFSCTL, "token", "acme", "idp", "--mount",
                        "/nonexistent"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 1 and "no such credential" in r.stderr
