"""MCP servers as credentials (docs/mcp.md), against the real parts: the
official MCP TypeScript SDK (npm, pinned by tests/mcp/package-lock.json
and installed by make deps) as the remote server, with its bearer-auth
middleware and protected resource metadata, and as the stdio client that
launches credfsctl mcp-bridge; the fake provider as the authorization
server, with RFC 8414 metadata, dynamic client registration and resource
indicators. The test plays the browser with plain HTTP requests."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request

import pytest

from harness import CREDFSCTL, reap, wait_for
from test_onboard import browse, finish
from test_refresh import OUTPUTS, ctl, no_secrets_in_outputs, setup_store

HERE = os.path.dirname(os.path.abspath(__file__))
MCP_DIR = os.path.join(os.path.dirname(HERE), "mcp")
NODE = shutil.which("node")
RS_CLIENT = ("mcp-resource-server", "rs-secret")


def node_ready():
    assert NODE, "node is not installed: run make deps"
    assert os.path.isdir(os.path.join(
        MCP_DIR, "node_modules", "@modelcontextprotocol", "sdk")), \
        "the MCP SDK is not installed in tests/mcp: run make deps"


@pytest.fixture
def mcp_server(provider, tmp_path):
    """The SDK's server on 127.0.0.1, its tokens checked at @provider;
    stopped by pid at the end. Yields (url, Popen)."""
    node_ready()
    provider.clients[RS_CLIENT[0]] = RS_CLIENT[1]
    # An MCP authorization server takes public clients (PKCE, no secret).
    provider.discovery_auth_methods = ["none", "client_secret_post"]
    port_file = tmp_path / "mcp-url"
    log = open(tmp_path / "mcp-server.log", "wb")
    proc = subprocess.Popen(
        [NODE, os.path.join(MCP_DIR, "server.mjs"), "--as", provider.url,
         "--client", ":".join(RS_CLIENT), "--port-file", str(port_file)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        wait_for(lambda: port_file.exists() or proc.poll() is not None, 30,
                 what="the MCP server to listen")
        assert proc.poll() is None, (tmp_path / "mcp-server.log").read_text()
        yield port_file.read_text(), proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        if reap(proc.pid, 10) is None:
            proc.kill()
        proc.wait()
        log.close()


def mcp_config(m, store, resource, **kw):
    prov = dict({"preset": "mcp", "resource": resource,
                 "min_lifetime_s": 1}, **kw)
    return {
        "providers": {"mcp": prov},
        "tenants": {"acme": {"credentials": {"mcp": {"scopes": ["read"]}}}},
        "store": {"dir": str(store), "key_file": str(m.tmp / "master.key")},
    }


def connect(m):
    """credfsctl connect acme mcp, the browser part played over HTTP:
    the authorization request's parameters."""
    proc = subprocess.Popen(
        [CREDFSCTL, "connect", "acme", "mcp", "--config", m.config_path,
         "--timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    status, location = browse(url)
    assert status == 302, location
    status, page = browse(location)
    assert status == 200, page
    rc, out, err = finish(proc, url + "\n", 30)
    assert rc == 0, out + err
    return url, params


class Client:
    """The SDK's stdio client running credfsctl mcp-bridge."""

    def __init__(self, m, tmp_path):
        node_ready()
        self.err_path = tmp_path / "mcp-client.err"
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [NODE, os.path.join(MCP_DIR, "client.mjs"), "--", CREDFSCTL,
             "mcp-bridge", "acme", "mcp", "--mount", m.mnt],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
            text=True)
        self.lines = []
        self.first = self.line()

    def line(self):
        text = self.proc.stdout.readline()
        assert text, "the client ended:\n" + self.err_path.read_text()
        self.lines.append(text)
        return json.loads(text)

    def call(self, tool, **args):
        self.proc.stdin.write(json.dumps({"tool": tool, "args": args}) +
                              "\n")
        self.proc.stdin.flush()
        return self.line()

    def close(self):
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.err.close()
        text = "".join(self.lines) + self.err_path.read_text()
        OUTPUTS.append(text)
        return self.proc.returncode


@pytest.fixture
def client_factory(tmp_path):
    made = []

    def make(m):
        c = Client(m, tmp_path)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.proc.poll() is None:
            c.close()


def control(url, what, body=None):
    """The test server's control endpoint (POST with @body, else GET)."""
    u = url.rsplit("/", 1)[0] + "/_control/" + what
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(u, data=data, headers={
        "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def whoami(result):
    return json.loads(result["result"]["content"][0]["text"])


def fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def test_discover_register_connect_and_bridge(mount, provider, mcp_server,
                                              client_factory, tmp_path):
    url, server = mcp_server
    provider.jwt_access_tokens = True
    m = mount()
    setup_store(m, mcp_config(m, tmp_path / "store", url))
    m.start()

    # Registration (RFC 7591) once, kept in the store.
    r = ctl(m, "register", "acme", "mcp")
    assert r.returncode == 0, r.stderr
    assert len(provider.registrations) == 1
    reg = provider.registrations[0]
    assert reg["token_endpoint_auth_method"] == "none"
    # The device grant too, as the metadata offers it.
    assert reg["grant_types"] == [
        "authorization_code", "refresh_token",
        "urn:ietf:params:oauth:grant-type:device_code"]
    assert reg["scope"] == "read"
    (redirect,) = reg["redirect_uris"]
    assert redirect.startswith("http://127.0.0.1:")
    assert redirect.endswith("/callback")
    (client_id,) = [c for c in provider.public_clients
                    if c.startswith("dyn-")]
    assert "registered client " + client_id in r.stderr
    r = ctl(m, "register", "acme", "mcp")
    assert r.returncode == 0 and "already registered" in r.stdout
    # Nothing to serve before a grant: no directory, and list says so.
    assert not os.path.exists(m.path("tenants", "acme", "mcp"))
    r = ctl(m, "list", "--json")
    assert json.loads(r.stdout)[0]["state"] == "registered", r.stdout
    assert len(provider.registrations) == 1
    with open(m.config_path) as f:
        assert client_id not in f.read()  # the store has it, not the config

    # connect: PKCE S256, the registered client and redirect, the
    # resource (RFC 8707) on the authorization request ...
    auth_url, p = connect(m)
    assert auth_url.startswith(provider.url + "/authorize?")
    assert p["client_id"] == client_id and p["redirect_uri"] == redirect
    assert p["code_challenge_method"] == "S256"
    assert p["resource"] == url
    wait_for(lambda: m.status("acme", "mcp")["state"] == "valid", 10)
    st = m.status("acme", "mcp")
    assert st["resource"] == url and st["audience"] == "resource"
    token = m.token("acme", "mcp")
    assert provider.issued(token)["resource"] == url

    # ... and on every token request, the daemon's refreshes included.
    r = ctl(m, "refresh", "acme", "mcp")
    assert r.returncode == 0, r.stdout + r.stderr
    grants = [g for g, _ in provider.resources_sent]
    assert grants[:1] == ["authorization_code"] and "refresh_token" in grants
    assert all(res == url for _, res in provider.resources_sent), \
        provider.resources_sent

    # A tool call from the SDK's stdio client through the bridge; its
    # answer came on an SSE stream with a log notification before it.
    c = client_factory(m)
    assert c.first["connected"]["name"] == "credfs-test-server"
    out = c.call("whoami")
    me = whoami(out)
    token = m.token("acme", "mcp")
    assert me["client_id"] == client_id and me["audience"] == url
    assert me["fingerprint"] == fingerprint(token)
    assert out["logs"] >= 1
    session = me["session"]

    # The token rotates mid-session, and the old one stops working at
    # the server: the bridge reads the new one, in the same session.
    r = ctl(m, "refresh", "acme", "mcp")
    assert r.returncode == 0, r.stdout + r.stderr
    new = m.token("acme", "mcp")
    assert new != token
    with provider.lock:
        provider.tokens[token]["active"] = False
    me = whoami(c.call("whoami"))
    assert me["fingerprint"] == fingerprint(new)
    assert me["session"] == session
    assert c.call("echo", text="hi")["result"]["content"][0]["text"] == "hi"

    # A 401 (a token gone stale between read and use): read again, sent
    # again, once.
    control(url, "refuse", {"count": 1})
    assert c.call("echo", text="again")["result"]["content"][0]["text"] \
        == "again"
    control(url, "refuse", {"count": 2})
    err = c.call("echo", text="twice")["error"]
    assert err["code"] == -32001 and "stale token" in err["message"], err
    assert control(url, "stats")["refused"] == 3

    # Revoked at the authorization server ("disconnect this app"): a
    # JSON-RPC error that names it, and the bridge goes on.
    rt_family = provider.issued(new)["family"]
    provider.revoke_family(rt_family)
    err = c.call("whoami")["error"]
    assert err["code"] == -32001, err
    assert "refused the token of acme/mcp" in err["message"]
    assert "HTTP 401" in err["message"] and "revoked" in err["message"]
    assert err["data"]["http_status"] == 401

    # The server gone: an error naming that, not a crash.
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)
    err = c.call("echo", text="anyone?")["error"]
    assert err["code"] == -32000 and "cannot reach the MCP server" in \
        err["message"], err
    assert c.close() == 0
    for t in (token, new):
        assert t not in "".join(c.lines) + c.err_path.read_text()
    no_secrets_in_outputs(provider, m)


def test_resource_ignored_is_said(mount, provider, mcp_server, tmp_path):
    """An authorization server that ignores resource: the token is served
    (the server decides), and status says whose audience it has."""
    url, _ = mcp_server
    provider.jwt_access_tokens = True
    provider.ignore_resource = True
    m = mount()
    setup_store(m, mcp_config(m, tmp_path / "store", url))
    m.start()
    assert ctl(m, "register", "acme", "mcp").returncode == 0
    (cid,) = [c for c in provider.public_clients if c.startswith("dyn-")]
    # add keeps the registered client: the refresh is made as it.
    rt = provider.mint_refresh_token(cid, "read")
    r = ctl(m, "add", "acme", "mcp", input=rt + "\n")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: m.status("acme", "mcp")["state"] == "valid", 10)
    assert provider.token_requests("refresh_token")[-1][3] == cid
    assert m.status("acme", "mcp")["audience"] == \
        provider.url + ": the authorization server ignored resource"
    assert "ignored resource" in m.read("tenants", "acme", "mcp", "status")


@pytest.mark.parametrize("fault,reason", [
    ("foreign_issuer", "names another issuer"),
    ("http_endpoint", "http:// is allowed only for loopback hosts"),
    ("no_pkce", "does not list S256 in code_challenge_methods_supported"),
    ("no_registration", "offers no dynamic client registration"),
])
def test_bad_metadata_is_refused(mount, provider, mcp_server, tmp_path,
                                 fault, reason):
    url, _ = mcp_server
    if fault == "foreign_issuer":
        provider.discovery_issuer = "https://as.example"
    elif fault == "http_endpoint":
        provider.discovery_extra = {"token_endpoint":
                                    "http://as.example/token"}
    elif fault == "no_pkce":
        provider.discovery_drop = {"code_challenge_methods_supported"}
    else:
        provider.registration = False
    m = mount()
    setup_store(m, mcp_config(m, tmp_path / "store", url))
    r = ctl(m, "register", "acme", "mcp")
    assert r.returncode != 0
    assert reason in r.stderr, r.stderr
    if fault != "no_registration":
        r = ctl(m, "check")
        assert r.returncode != 0 and reason in r.stdout + r.stderr
        assert "providers.mcp.resource" in r.stdout + r.stderr
    assert provider.registrations == []


def test_client_id_metadata_document(mount, provider, mcp_server, tmp_path):
    """A client_id that is an https URL: the document to host, and used as
    is where the authorization server takes such documents."""
    url, _ = mcp_server
    doc_url = "https://agents.example/credfs-client.json"
    m = mount()
    setup_store(m, mcp_config(m, tmp_path / "store", url,
                              client_id=doc_url))
    r = ctl(m, "client-metadata", "mcp")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["client_id"] == doc_url
    assert doc["redirect_uris"] == ["http://127.0.0.1/callback"]
    assert doc["token_endpoint_auth_method"] == "none"
    # Not offered by the authorization server: connect says so.
    r = ctl(m, "connect", "acme", "mcp", "--timeout", "1")
    assert r.returncode != 0
    assert "client_id_metadata_document_supported" in r.stderr
    # Offered: the URL is the client id, nothing is registered.
    provider.discovery_extra = {"client_id_metadata_document_supported":
                                True}
    provider.public_clients.add(doc_url)
    provider.redirect_uris[doc_url] = doc["redirect_uris"]
    m.start()
    _, p = connect(m)
    assert p["client_id"] == doc_url and p["resource"] == url
    assert provider.registrations == []
    wait_for(lambda: m.status("acme", "mcp")["state"] == "valid", 10)


def test_device_flow_with_resource(mount, provider, mcp_server, tmp_path):
    """credfsctl device for an MCP server: registers first, and names the
    resource on the device authorization and the token requests."""
    url, _ = mcp_server
    m = mount()
    setup_store(m, mcp_config(m, tmp_path / "store", url,
                              device_min_interval_s=1))
    m.start()
    proc = subprocess.Popen(
        [CREDFSCTL, "device", "acme", "mcp", "--config", m.config_path,
         "--timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    assert "enter the code: " in first, first + proc.stderr.read()
    code = first.rsplit(" ", 1)[1].strip()
    assert provider.device_decide(code)
    rc, out, err = finish(proc, first, 40)
    assert rc == 0, out + err
    assert len(provider.registrations) == 1
    (d,) = provider.devices.values()
    assert d["resource"] == url and d["client_id"].startswith("dyn-")
    assert ("urn:ietf:params:oauth:grant-type:device_code", url) in \
        provider.resources_sent
    wait_for(lambda: m.status("acme", "mcp")["state"] == "valid", 10)
    assert provider.issued(m.token("acme", "mcp"))["resource"] == url


def test_connect_registers_first(mount, provider, mcp_server, tmp_path):
    """connect with nothing registered: registers, says so on stderr (its
    stdout starts with the URL to open), then connects as that client."""
    url, _ = mcp_server
    m = mount()
    setup_store(m, mcp_config(m, tmp_path / "store", url))
    m.start()
    auth_url, p = connect(m)
    assert auth_url.startswith(provider.url + "/authorize?")
    (reg,) = provider.registrations
    assert p["client_id"].startswith("dyn-")
    assert p["redirect_uri"] == reg["redirect_uris"][0]
    wait_for(lambda: m.status("acme", "mcp")["state"] == "valid", 10)
    assert provider.token_requests("authorization_code")[-1][3] == \
        p["client_id"]


def bridge_once(mnt, line):
    """One line through credfsctl mcp-bridge on its own: what it answers."""
    r = subprocess.run([CREDFSCTL, "mcp-bridge", "acme", "mcp", "--mount",
                        mnt], input=line + "\n", capture_output=True,
                       text=True, timeout=30)
    OUTPUTS.append(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr
    return [json.loads(x) for x in r.stdout.splitlines()]


def test_bridge_names_what_is_missing(mount, provider, tmp_path):
    """No mount, or a credential that is no MCP server: each request gets
    a JSON-RPC error saying which; a line that is not JSON, a parse
    error; nothing crashes."""
    init = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "initialize",
                       "params": {}})
    (ans,) = bridge_once(str(tmp_path / "nowhere"), init)
    assert ans["id"] == 7 and ans["error"]["code"] == -32000
    assert "cannot read" in ans["error"]["message"]
    assert "is credfs mounted on" in ans["error"]["message"]
    m = mount()
    m.start({"providers": {"mcp": m.provider_conf()},
             "tenants": {"acme": {"credentials": {"mcp": {
                 "scopes": ["read"]}}}}})
    (ans,) = bridge_once(m.mnt, init)
    assert "providers.mcp is not an MCP server" in ans["error"]["message"]
    (ans,) = bridge_once(m.mnt, "{not json")
    assert ans["id"] is None and ans["error"]["code"] == -32700


def test_an_upgrade_needs_no_discovery(mount, provider, mcp_server,
                                       tmp_path):
    """The discovery documents go along in the state image: an upgrade
    (SIGUSR2) with the MCP server and its authorization server's metadata
    both down still takes over and serves. So does a cold start, on the
    documents saved beside the store; with none saved it cannot, and says
    which server it could not discover."""
    from test_handoff import upgrade
    url, server = mcp_server
    m = mount()
    setup_store(m, mcp_config(m, tmp_path / "store", url))
    m.start()
    assert ctl(m, "register", "acme", "mcp").returncode == 0
    (cid,) = [c for c in provider.public_clients if c.startswith("dyn-")]
    r = ctl(m, "add", "acme", "mcp",
            input=provider.mint_refresh_token(cid, "read") + "\n")
    assert r.returncode == 0, r.stderr
    token = m.token("acme", "mcp")
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)
    provider.discovery_status = 503
    old = m.pid
    assert upgrade(m) != old
    assert m.token("acme", "mcp") == token
    assert m.status("acme", "mcp")["resource"] == url
    m.stop()
    m.start()
    assert "providers.mcp.resource: %s could not be discovered" % url \
        in m.log()
    assert m.token("acme", "mcp") == token
    assert m.status("acme", "mcp")["resource"] == url
    m.stop()
    os.unlink(tmp_path / "store" / "discovery.sealed")
    r = m.start(check=False)
    assert r.returncode != 0
    assert "providers.mcp.resource: MCP authorization discovery failed" \
        in m.log()


def test_a_reload_adds_an_mcp_server(mount, provider, mcp_server, tmp_path):
    """An MCP server added to the config of a running daemon is
    discovered by the reload (SIGHUP), not refused until a restart. One
    that cannot be discovered refuses that reload, naming it, and the
    running configuration goes on serving."""
    from test_handoff import free_port
    url, _ = mcp_server
    m = mount()
    c = mcp_config(m, tmp_path / "store", url)
    mcp = c["providers"].pop("mcp")
    c["providers"]["idp"] = m.provider_conf()
    c["tenants"]["acme"]["credentials"] = {"idp": {"scopes": ["read"]}}
    setup_store(m, c)
    m.start()
    tok = m.token("acme", "idp")

    c["providers"]["mcp"] = dict(
        mcp, resource="http://127.0.0.1:%d/mcp" % free_port())
    c["tenants"]["acme"]["credentials"]["mcp"] = {"scopes": ["read"]}
    m.reload(c)
    assert m.metrics("credfs_config_last_reload_successful") == [0]
    assert "providers.mcp.resource: MCP authorization discovery failed" \
        in m.log()
    assert m.token("acme", "idp") == tok
    assert not os.path.exists(m.path("tenants", "acme", "mcp"))

    c["providers"]["mcp"] = mcp
    m.reload(c)
    assert m.metrics("credfs_config_last_reload_successful") == [1], m.log()
    assert ctl(m, "register", "acme", "mcp").returncode == 0
    (cid,) = [x for x in provider.public_clients if x.startswith("dyn-")]
    r = ctl(m, "add", "acme", "mcp",
            input=provider.mint_refresh_token(cid, "read") + "\n")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: m.status("acme", "mcp")["state"] == "valid", 10)
    # The daemon's refresh went to the discovered token endpoint, for
    # the server's resource (RFC 8707).
    assert provider.issued(m.token("acme", "mcp"))
    assert provider.token_requests("refresh_token")[-1][3] == cid
    assert provider.resources_sent[-1] == ("refresh_token", url)
    assert m.status("acme", "mcp")["resource"] == url
    assert m.token("acme", "idp") == tok
