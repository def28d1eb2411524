#!/usr/bin/env python3
"""A fake OAuth 2.0 provider on 127.0.0.1, for tests and the demo.

Endpoints (RFC 6749, 7009, 7662):
  POST /token       client_credentials and refresh_token grants; refresh
                    tokens rotate, and reusing an old one revokes the whole
                    token family, as real providers do
  POST /revoke      RFC 7009 revocation
  POST /introspect  RFC 7662 introspection
  GET  /authorize   RFC 6749 4.1 with PKCE (S256 only); a test drives it
                    with HTTP and reads the redirect from Location;
                    "_action=deny" plays a user who refuses
  POST /device_authorization  RFC 8628; approve or deny with
                    device_decide(user_code, approve)
  GET  /.well-known/oauth-authorization-server  RFC 8414 metadata (the
                    same document as OpenID Connect discovery's)
  POST /register    RFC 7591 dynamic registration of public clients
  RFC 8707 resource indicators: a code's resource must come back with its
  token request, a refresh may only name the family's, and tokens carry
  it as their audience (introspection "aud"; with jwt_access_tokens, the
  JWT's "aud"), unless ignore_resource plays a server that drops it.
  Token grants: client_credentials, refresh_token, authorization_code
  (single-use codes, verifier checked), device_code (pending, slow_down,
  access_denied, expired_token). Client authentication: Basic, post,
  none (public clients) and private_key_jwt (RS256/ES256, checked with
  the registered public key).

Control interface (JSON), also available as methods for in-process use:
  POST /_control/fault   {"kind": ..., "count": N, ...}  queue a fault
  POST /_control/clear   drop queued faults
  POST /_control/config  {"lifetime": seconds, "grant_scope": "..."}
  POST /_control/refresh_token {"client_id": ..., "scope": ...} -> {"refresh_token": ...}
  GET  /_control/stats   request counters

Fault kinds: status (any HTTP status and body), rate_limit (429 with
Retry-After), delay (sleep, then answer normally), html, truncated,
no_access_token, huge (a 10 MB body), invalid_client, invalid_grant,
close (drop the connection without an answer), partial (promise 4 KiB,
send 100 bytes, hang up), slowloris (promise 4 KiB, send one byte every
"interval" seconds for up to "seconds"), redirect (307 to "location").
Any fault but delay takes "after" seconds first (a slow failure).
A count of -1 means until cleared.

With tls=(certfile, keyfile) it speaks HTTPS (url starts with https://).

Run standalone: fake_provider.py --port-file F [--lifetime S] [--client ID:SECRET]
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def fnv64(text):
    """FNV-1a, 64 bits: the check value of bench tokens (bench/reader.c)."""
    h = 0xcbf29ce484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


class Fault:
    def __init__(self, kind, count=1, **kw):
        self.kind = kind
        self.count = count
        self.kw = kw


class FakeProvider:
    def __init__(self, lifetime=3600, clients=None, host="127.0.0.1", port=0,
                 tls=None):
        self.lock = threading.Lock()
        self.lifetime = lifetime
        self.clients = clients or {"credfs-test": "s3cret-client"}
        self.grant_scope = None      # answer with this scope instead
        self.rotate = True
        self.faults = []
        self.tokens = {}             # access token -> record
        self.refresh = {}            # refresh token -> record
        self.revoked_families = set()
        self.requests = []           # (time, path, grant, client, outcome)
        self.arrivals = 0            # token requests received, answered
                                     # or not (a delay fault holds them)
        self.reused_refresh = 0
        # Seconds in which a rotated refresh token may be presented again
        # while its successor is unused, as Okta's "grace period for token
        # rotation" and Auth0's "reuse interval" allow; 0 is strict.
        self.reuse_grace = 0
        self.grace_replays = []      # {"rotated_at", "asked_at",
                                     # "client_gone", "replayed_at"}
        self.bench_tokens = False
        self.public_clients = set()  # client ids with no secret (none)
        self.jwt_keys = {}           # client id -> PEM public key
        self.jwt_seen = set()        # assertion jti values, single use
        self.redirect_uris = {}      # client id -> exact redirect URIs
        self.codes = {}              # authorization code -> record
        self.devices = {}            # device code -> record
        self.device_interval = 1
        self.verification_uri = None  # where users go; None: /device
        self.device_lifetime = 60
        self.device_slow_down_first = False  # answer the first poll so
        self.introspect_status = 200 # anything else: the endpoint fails
        self.revocations = []        # (token kind, client) per /revoke
        # Answer token requests in the shapes a real provider uses (see
        # DIALECTS below and docs/providers.md); None is RFC 6749 JSON.
        self.dialect = None
        self.instance_url = "https://acme.my.salesforce.example"
        # OpenID Connect discovery: the status to answer with, the issuer
        # the document names (None: this server) and the auth methods.
        self.discovery_status = 200
        self.discovery_issuer = None
        self.discovery_auth_methods = ["client_secret_post",
                                       "private_key_jwt"]
        self.discovery_requests = 0
        self.discovery_extra = {}    # fields to add or replace
        self.discovery_drop = set()  # fields to leave out
        self.registration = True     # offer RFC 7591 registration
        self.registrations = []      # each registration request's body
        self.family_resource = {}    # token family -> RFC 8707 resource
        self.resources_sent = []     # (grant, resource or None) per token
                                     # request
        self.ignore_resource = False
        self.jwt_access_tokens = False
        # RFC 9207: authorization responses carry iss (and the metadata
        # says so).
        self.iss_param = True
        self.serial = 0
        self.host = host
        self.server = ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self.tls = tls
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            # A client that refuses the certificate fails the handshake in
            # accept(); socketserver drops that connection and goes on.
            self.server.socket = ctx.wrap_socket(self.server.socket,
                                                 server_side=True)
        self.thread = None

    # -- lifecycle -------------------------------------------------------
    @property
    def port(self):
        return self.server.server_address[1]

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host,
                               self.port)

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        if self.thread:
            self.thread.join(timeout=5)

    # -- control ---------------------------------------------------------
    def inject(self, kind, count=1, **kw):
        with self.lock:
            self.faults.append(Fault(kind, count, **kw))

    def clear_faults(self):
        with self.lock:
            self.faults.clear()

    def mint_refresh_token(self, client_id, scope=""):
        with self.lock:
            return self._new_refresh(client_id, scope, secrets.token_hex(8))

    def family_of(self, refresh_token):
        with self.lock:
            return self.refresh[refresh_token]["family"]

    def revoke_family(self, family):
        """What a user's "disconnect this app" does: every refresh and
        access token of the family stops working."""
        with self.lock:
            self.revoked_families.add(family)
            for t in self.tokens.values():
                if t["family"] == family:
                    t["active"] = False

    def device_decide(self, user_code, approve=True):
        with self.lock:
            for d in self.devices.values():
                if d["user_code"] == user_code:
                    d["status"] = "approved" if approve else "denied"
                    return True
        return False

    def token_requests(self, grant=None):
        with self.lock:
            return [r for r in self.requests
                    if r[1] == "/token" and (grant is None or r[2] == grant)]

    def issued(self, token):
        """The record of an access token this provider issued, or None."""
        with self.lock:
            return self.tokens.get(token)

    def stats(self):
        with self.lock:
            ok = sum(1 for r in self.requests if r[4] == "ok")
            return {
                "requests": len(self.requests),
                "token_requests": sum(1 for r in self.requests
                                      if r[1] == "/token"),
                "tokens_issued": len(self.tokens),
                "ok": ok,
                "reused_refresh_tokens": self.reused_refresh,
                "grace_replays": len(self.grace_replays),
                "faults_queued": len(self.faults),
            }

    # -- internals -------------------------------------------------------
    def _take_fault(self):
        with self.lock:
            if not self.faults:
                return None
            f = self.faults[0]
            if f.count > 0:
                f.count -= 1
                if f.count == 0:
                    self.faults.pop(0)
            return f

    def _new_access(self, client_id, scope, family=None):
        now = time.time()
        if self.bench_tokens:
            # Self-checking: "bench.<expires_ms>.<serial>.<fnv64 of both>",
            # so a reader can tell a torn or expired token on its own.
            self.serial += 1
            body = "bench.%d.%d" % (int((now + self.lifetime) * 1000),
                                    self.serial)
            tok = "%s.%016x" % (body, fnv64(body))
        elif self.jwt_access_tokens:
            claims = {"jti": secrets.token_urlsafe(12),
                      "client_id": client_id,
                      "exp": int(now + self.lifetime)}
            if self.family_resource.get(family):
                claims["aud"] = self.family_resource[family]
            elif self.ignore_resource:  # its own default audience
                claims["aud"] = self.url

            def b64(o):
                return base64.urlsafe_b64encode(json.dumps(o).encode()) \
                    .decode().rstrip("=")
            tok = b64({"alg": "none", "typ": "at+jwt"}) + "." + \
                b64(claims) + ".unsigned"
        else:
            tok = "fake-" + secrets.token_urlsafe(24)
        self.tokens[tok] = {"client_id": client_id, "scope": scope,
                            "issued": now, "expires": now + self.lifetime,
                            "family": family, "active": True,
                            "resource": self.family_resource.get(family)}
        return tok

    def _new_refresh(self, client_id, scope, family):
        rt = "fakert-" + secrets.token_urlsafe(24)
        self.refresh[rt] = {"client_id": client_id, "scope": scope,
                            "family": family, "used": False}
        return rt

    def _record(self, path, grant, client, outcome):
        self.requests.append((time.time(), path, grant, client, outcome))

    def _handler(self):
        prov = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without this,
            # Nagle and delayed ACKs add 40 ms to every answer.
            disable_nagle_algorithm = True

            def log_message(self, fmt, *args):
                pass

            def _send(self, status, body, ctype="application/json",
                      headers=None):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body)
                if isinstance(body, str):
                    body = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _form(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n).decode() if n else ""
                return {k: v[0] for k, v in
                        urllib.parse.parse_qs(raw, keep_blank_values=True)
                        .items()}

            def _jwt_client(self, form):
                """private_key_jwt (RFC 7523 2.2): a signed, fresh,
                single-use assertion whose iss and sub are the client and
                whose aud is this token endpoint."""
                from cryptography.hazmat.primitives import hashes, \
                    serialization
                from cryptography.hazmat.primitives.asymmetric import ec, \
                    padding, utils

                def unb64(x):
                    return base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
                try:
                    h64, c64, s64 = form["client_assertion"].split(".")
                    head = json.loads(unb64(h64))
                    claims = json.loads(unb64(c64))
                    sig = unb64(s64)
                    cid = claims["iss"]
                    key = serialization.load_pem_public_key(
                        prov.jwt_keys[cid].encode())
                    data = (h64 + "." + c64).encode()
                    if head["alg"] == "RS256":
                        key.verify(sig, data, padding.PKCS1v15(),
                                   hashes.SHA256())
                    elif head["alg"] == "ES256" and len(sig) == 64:
                        der = utils.encode_dss_signature(
                            int.from_bytes(sig[:32], "big"),
                            int.from_bytes(sig[32:], "big"))
                        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
                    else:
                        return None
                    now = time.time()
                    if claims["sub"] != cid or \
                            claims["aud"] != prov.url + "/token" or \
                            not claims["iat"] - 30 <= now <= claims["exp"] or \
                            form.get("client_id", cid) != cid:
                        return None
                    with prov.lock:
                        if claims["jti"] in prov.jwt_seen:
                            return None
                        prov.jwt_seen.add(claims["jti"])
                    return cid
                except Exception:
                    return None

            def _client(self, form):
                auth = self.headers.get("Authorization", "")
                if form.get("client_assertion_type") == \
                        "urn:ietf:params:oauth:client-assertion-type:" \
                        "jwt-bearer":
                    return self._jwt_client(form)
                if not auth and "client_secret" not in form and \
                        form.get("client_id") in prov.public_clients:
                    return form["client_id"]
                if auth.startswith("Basic "):
                    raw = base64.b64decode(auth[6:]).decode()
                    cid, _, sec = raw.partition(":")
                    cid = urllib.parse.unquote_plus(cid)
                    sec = urllib.parse.unquote_plus(sec)
                else:
                    cid = form.get("client_id", "")
                    sec = form.get("client_secret", "")
                if cid in prov.clients and prov.clients[cid] == sec:
                    return cid
                return None

            def do_GET(self):
                if self.path == "/_control/stats":
                    return self._send(200, prov.stats())
                if self.path in ("/.well-known/openid-configuration",
                                 "/.well-known/oauth-authorization-server"):
                    return self._discovery()
                if self.path.startswith("/authorize?"):
                    return self._authorize()
                self._send(404, {"error": "not_found"})

            def _discovery(self):
                with prov.lock:
                    prov.discovery_requests += 1
                if prov.discovery_status != 200:
                    return self._send(prov.discovery_status,
                                      "<html>unavailable</html>",
                                      ctype="text/html")
                u = prov.url
                doc = dict({
                    "issuer": prov.discovery_issuer or u,
                    "authorization_endpoint": u + "/authorize",
                    "token_endpoint": u + "/token",
                    "revocation_endpoint": u + "/revoke",
                    "introspection_endpoint": u + "/introspect",
                    "device_authorization_endpoint":
                        u + "/device_authorization",
                    "token_endpoint_auth_methods_supported":
                        prov.discovery_auth_methods,
                    "response_types_supported": ["code"],
                    "authorization_response_iss_parameter_supported":
                        prov.iss_param,
                    "scopes_supported": ["openid", "offline_access",
                                         "read", "write"],
                    "code_challenge_methods_supported": ["S256"],
                }, **prov.discovery_extra)
                if prov.registration:
                    doc.setdefault("registration_endpoint", u + "/register")
                for k in prov.discovery_drop:
                    doc.pop(k, None)
                self._send(200, doc)

            def _ok(self, body):
                """A successful token response, in the dialect's shape."""
                d = prov.dialect
                if d == "slack":
                    body = dict(body, ok=True, token_type="bot",
                                app_id="A0001", team={"id": "T0001"},
                                enterprise=None)
                    if "scope" in body:
                        body["scope"] = body["scope"].replace(" ", ",")
                elif d == "github":
                    body = dict(body, token_type="bearer",
                                scope=body.get("scope", "").replace(" ",
                                                                    ","))
                    if "refresh_token" in body:
                        body["refresh_token_expires_in"] = 15811200
                    return self._send(
                        200, urllib.parse.urlencode(body),
                        ctype="application/x-www-form-urlencoded; "
                              "charset=utf-8")
                elif d == "salesforce":
                    body.pop("expires_in", None)
                    body.update(instance_url=prov.instance_url,
                                id="https://login.salesforce.com/id/"
                                   "00Dxx0000001gPL/005xx000001Sv6A",
                                issued_at=str(int(time.time() * 1000)),
                                signature="c2lnbmF0dXJl")
                elif d == "hubspot":
                    body["token_type"] = "bearer"
                elif d == "entra":
                    body["ext_expires_in"] = body.get("expires_in")
                return self._send(200, body)

            def _invalid_grant(self):
                """A dead refresh token, as the dialect says it."""
                d = prov.dialect
                if d == "slack":
                    return self._send(200, {"ok": False,
                                            "error": "invalid_refresh_token"})
                if d == "github":
                    return self._send(
                        200, "error=bad_refresh_token&error_description="
                             "The+refresh+token+passed+is+incorrect+or+"
                             "expired.&error_uri=https%3A%2F%2Fdocs."
                             "github.com",
                        ctype="application/x-www-form-urlencoded")
                if d == "hubspot":
                    return self._send(400, {
                        "status": "BAD_REFRESH_TOKEN",
                        "message": "missing or invalid refresh token",
                        "correlationId": "8c1b5d4e"})
                if d == "entra":
                    return self._send(400, {
                        "error": "invalid_grant",
                        "error_description": "AADSTS70000: The provided "
                                             "grant has expired.",
                        "error_codes": [70000]})
                if d == "atlassian":
                    return self._send(403, {
                        "error": "invalid_grant",
                        "error_description": "Unknown or invalid refresh "
                                             "token."})
                if d in ("google", "salesforce"):
                    return self._send(400, {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or "
                                             "revoked."})
                return self._send(400, {"error": "invalid_grant"})

            def _authorize(self):
                """The user's browser lands here; the answer is the
                redirect back to the client (RFC 6749 4.1.2)."""
                q = {k: v[0] for k, v in urllib.parse.parse_qs(
                    self.path.split("?", 1)[1]).items()}
                cid = q.get("client_id", "")
                uri = q.get("redirect_uri", "")
                allowed = prov.redirect_uris.get(cid, [])
                ok_uri = uri in allowed or any(
                    # RFC 8252 7.3: any port for a loopback redirect
                    urllib.parse.urlsplit(a)._replace(netloc="127.0.0.1")
                    == urllib.parse.urlsplit(uri)._replace(
                        netloc="127.0.0.1")
                    for a in allowed if ":" not in
                    urllib.parse.urlsplit(a).netloc)
                if cid not in prov.clients and cid not in \
                        prov.public_clients and cid not in prov.jwt_keys:
                    return self._send(400, "unknown client",
                                      ctype="text/plain")
                if not ok_uri:  # never redirect to an unknown URI
                    return self._send(400, "redirect_uri not registered",
                                      ctype="text/plain")

                def back(**params):
                    params["state"] = q.get("state", "")
                    if prov.iss_param:  # RFC 9207
                        params["iss"] = prov.discovery_issuer or prov.url
                    sep = "&" if "?" in uri else "?"
                    self.send_response(302)
                    self.send_header("Location", uri + sep +
                                     urllib.parse.urlencode(params))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                if q.get("response_type") != "code":
                    return back(error="unsupported_response_type")
                if q.get("code_challenge_method") != "S256" or \
                        not q.get("code_challenge"):
                    return back(error="invalid_request",
                                error_description="PKCE S256 required")
                if q.get("_action") == "deny":
                    return back(error="access_denied",
                                error_description="the user said no")
                code = secrets.token_urlsafe(24)
                with prov.lock:
                    prov.codes[code] = {
                        "resource": q.get("resource"),
                        "client_id": cid, "redirect_uri": uri,
                        "challenge": q["code_challenge"],
                        "scope": q.get("scope", ""), "used": False,
                        "family": None, "query": q,
                        "expires": time.time() + 60}
                back(code=code)

            def do_POST(self):
                if self.path.startswith("/_control/"):
                    return self._control()
                if self.path == "/register" and prov.registration:
                    return self._register()
                form = self._form()
                if self.path == "/token":
                    return self._token(form)
                if self.path == "/revoke":
                    return self._revoke(form)
                if self.path == "/introspect":
                    return self._introspect(form)
                if self.path == "/device_authorization":
                    return self._device_authorization(form)
                self._send(404, {"error": "not_found"})

            def _register(self):
                """RFC 7591 3: a public client, its redirect URIs kept
                for exact comparison."""
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n))
                except ValueError:
                    body = None
                uris = body.get("redirect_uris") if isinstance(body, dict) \
                    else None
                if not uris or not all(isinstance(u, str) for u in uris):
                    return self._send(400, {
                        "error": "invalid_redirect_uri",
                        "error_description": "redirect_uris is required"})
                cid = "dyn-" + secrets.token_urlsafe(12)
                with prov.lock:
                    prov.registrations.append(body)
                    prov.public_clients.add(cid)
                    prov.redirect_uris[cid] = list(uris)
                self._send(201, dict(body, client_id=cid,
                                     client_id_issued_at=int(time.time()),
                                     token_endpoint_auth_method="none"))

            def _device_authorization(self, form):
                cid = self._client(form)
                if cid is None:
                    return self._send(401, {"error": "invalid_client"})
                dc = secrets.token_urlsafe(24)
                uc = "%04X-%04X" % (secrets.randbelow(65536),
                                    secrets.randbelow(65536))
                with prov.lock:
                    prov.devices[dc] = {
                        "client_id": cid, "user_code": uc,
                        "scope": form.get("scope", ""),
                        "resource": form.get("resource"),
                        "status": "pending", "last_poll": 0,
                        "interval": prov.device_interval, "polls": 0,
                        "slow_downs": 0,
                        "expires": time.time() + prov.device_lifetime}
                    prov._record("/device_authorization", "", cid, "ok")
                page = prov.verification_uri or prov.url + "/device"
                self._send(200, {
                    "device_code": dc, "user_code": uc,
                    "verification_uri": page,
                    "verification_uri_complete":
                        page + "?user_code=" + uc,
                    "expires_in": prov.device_lifetime,
                    "interval": prov.device_interval})

            def _control(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                what = self.path[len("/_control/"):]
                if what == "fault":
                    kind = body.pop("kind")
                    count = body.pop("count", 1)
                    prov.inject(kind, count, **body)
                elif what == "clear":
                    prov.clear_faults()
                elif what == "config":
                    with prov.lock:
                        if "lifetime" in body:
                            prov.lifetime = body["lifetime"]
                        if "grant_scope" in body:
                            prov.grant_scope = body["grant_scope"]
                        if "rotate" in body:
                            prov.rotate = bool(body["rotate"])
                elif what == "refresh_token":
                    rt = prov.mint_refresh_token(body["client_id"],
                                                 body.get("scope", ""))
                    return self._send(200, {"refresh_token": rt})
                else:
                    return self._send(404, {"error": "not_found"})
                self._send(200, {"ok": True})

            def _fault(self, f, grant, cid):
                """Answer with fault @f; True if the request is done."""
                k = f.kind
                if k == "delay":  # then answered (and recorded) as usual
                    time.sleep(f.kw.get("seconds", 1))
                    return False
                time.sleep(f.kw.get("after", 0))  # a slow failure
                with prov.lock:
                    prov._record("/token", grant, cid, "fault:" + k)
                if k == "close":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return True
                if k in ("partial", "slowloris"):
                    self.close_connection = True
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "4096")
                    self.end_headers()
                    try:
                        if k == "partial":
                            self.wfile.write(b'{"access_token": "' +
                                             b"p" * 80 + b'", ')
                            self.wfile.flush()
                            self.connection.shutdown(2)
                            return True
                        end = time.monotonic() + f.kw.get("seconds", 30)
                        while time.monotonic() < end:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(f.kw.get("interval", 0.2))
                    except OSError:
                        pass  # the client gave up, as it should
                    return True
                if k == "redirect":
                    self._send(307, "", ctype="text/plain",
                               headers={"Location": f.kw["location"]})
                    return True
                if k == "status":
                    self._send(f.kw.get("status", 503),
                               f.kw.get("body", {"error": "server_error"}),
                               headers=f.kw.get("headers"))
                elif k == "rate_limit":
                    self._send(429, {"error": "rate_limited"},
                               headers={"Retry-After":
                                        str(f.kw.get("retry_after", 2))})
                elif k == "html":
                    self._send(200, "<html><body>Oops</body></html>",
                               ctype="text/html")
                elif k == "truncated":
                    self._send(200, '{"access_token": "abc", "expi')
                elif k == "no_access_token":
                    self._send(200, {"token_type": "Bearer",
                                     "expires_in": 3600})
                elif k == "huge":
                    try:
                        self._send(200, "x" * (10 * 1024 * 1024),
                                   ctype="text/plain")
                    except OSError:
                        pass  # the client stopped reading at its cap
                elif k == "invalid_client":
                    self._send(401, {"error": "invalid_client",
                                     "error_description":
                                     "Client authentication failed"})
                elif k == "invalid_grant":
                    self._send(400, {"error": "invalid_grant",
                                     "error_description":
                                     "Grant revoked or expired"})
                else:
                    self._send(500, {"error": "server_error",
                                     "error_description":
                                     "unknown fault " + k})
                return True

            def _token(self, form):
                grant = form.get("grant_type", "")
                with prov.lock:
                    prov.arrivals += 1  # before any delay: in flight
                cid = self._client(form)
                f = prov._take_fault()
                if f and self._fault(f, grant, cid):
                    return
                if cid is None:
                    with prov.lock:
                        prov._record("/token", grant, cid, "invalid_client")
                    return self._send(401, {"error": "invalid_client"})
                scope = form.get("scope", "")
                with prov.lock:
                    prov.resources_sent.append((grant,
                                                form.get("resource")))
                    if grant == "client_credentials":
                        tok = prov._new_access(cid, scope)
                        body = {"access_token": tok, "token_type": "Bearer",
                                "expires_in": prov.lifetime}
                    elif grant == "refresh_token":
                        body = self._refresh_locked(form, cid)
                        if body is None:
                            prov._record("/token", grant, cid,
                                         "invalid_grant")
                            return self._invalid_grant()
                    elif grant == "authorization_code":
                        body = self._code_locked(form, cid)
                        if "error" in body:
                            prov._record("/token", grant, cid,
                                         body["error"])
                            return self._send(400, body)
                    elif grant == \
                            "urn:ietf:params:oauth:grant-type:device_code":
                        body = self._device_locked(form, cid)
                        if "error" in body:
                            prov._record("/token", grant, cid,
                                         body["error"])
                            return self._send(400, body)
                    else:
                        prov._record("/token", grant, cid, "unsupported")
                        return self._send(
                            400, {"error": "unsupported_grant_type"})
                    granted = (prov.grant_scope if prov.grant_scope
                               is not None else
                               prov.tokens[body["access_token"]]["scope"])
                    if granted:
                        body["scope"] = granted
                    prov._record("/token", grant, cid, "ok")
                self._ok(body)

            def _issue_locked(self, cid, scope, resource=None):
                """A new token family: access and refresh token, for
                @resource (RFC 8707) unless the server ignores it."""
                family = secrets.token_hex(8)
                if resource and not prov.ignore_resource:
                    prov.family_resource[family] = resource
                tok = prov._new_access(cid, scope, family)
                return {"access_token": tok, "token_type": "Bearer",
                        "expires_in": prov.lifetime,
                        "refresh_token": prov._new_refresh(cid, scope,
                                                           family)}

            def _code_locked(self, form, cid):
                code = form.get("code", "")
                rec = prov.codes.get(code)
                if rec is None or rec["client_id"] != cid or \
                        rec["expires"] < time.time():
                    return {"error": "invalid_grant",
                            "error_description": "unknown code"}
                if rec["used"]:
                    # RFC 6749 4.1.2: a replayed code revokes what the
                    # first exchange issued.
                    if rec["family"]:
                        prov.revoked_families.add(rec["family"])
                    return {"error": "invalid_grant",
                            "error_description": "code already used"}
                rec["used"] = True
                if form.get("redirect_uri") != rec["redirect_uri"]:
                    return {"error": "invalid_grant",
                            "error_description": "redirect_uri differs"}
                verifier = form.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(hashlib.sha256(
                    verifier.encode()).digest()).decode().rstrip("=")
                if not 43 <= len(verifier) <= 128 or \
                        digest != rec["challenge"]:
                    return {"error": "invalid_grant",
                            "error_description": "PKCE verifier mismatch"}
                if rec["resource"] and form.get("resource") not in \
                        (None, rec["resource"]):
                    return {"error": "invalid_target",
                            "error_description": "not the resource the "
                                                 "code was for"}
                body = self._issue_locked(cid, rec["scope"],
                                          rec["resource"])
                rec["family"] = prov.refresh[body["refresh_token"]][
                    "family"]
                return body

            def _device_locked(self, form, cid):
                d = prov.devices.get(form.get("device_code", ""))
                now = time.time()
                if d is None or d["client_id"] != cid:
                    return {"error": "invalid_grant"}
                d["polls"] += 1
                if d["status"] == "used":
                    return {"error": "invalid_grant"}
                if now > d["expires"]:
                    return {"error": "expired_token"}
                if d["status"] == "denied":
                    return {"error": "access_denied"}
                too_soon = now - d["last_poll"] < d["interval"] - 0.05 or \
                    (d["polls"] == 1 and prov.device_slow_down_first)
                d.setdefault("poll_times", []).append(now)
                d["last_poll"] = now
                if too_soon:
                    d["interval"] += 5  # RFC 8628 3.5
                    d["slow_downs"] += 1
                    return {"error": "slow_down"}
                if d["status"] == "pending":
                    return {"error": "authorization_pending"}
                d["status"] = "used"
                return self._issue_locked(cid, d["scope"], d["resource"])

            def _client_gone(self):
                """Whether the client has closed its end (a killed
                daemon): it can no longer get the answer. Plain
                connections only (a peek is no TLS operation)."""
                if isinstance(self.connection, ssl.SSLSocket):
                    return False
                try:
                    return self.connection.recv(
                        1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except BlockingIOError:
                    return False
                except OSError:
                    return True

            def _refresh_locked(self, form, cid):
                # When, and whether, the client could still take the
                # answer (grace_replays says, for the crash test).
                asked_at = time.time()
                gone = self._client_gone()
                rt = form.get("refresh_token", "")
                rec = prov.refresh.get(rt)
                if rec is None or rec["client_id"] != cid or \
                        rec["family"] in prov.revoked_families:
                    return None
                now = time.time()
                if rec["used"] and prov.rotate and prov.reuse_grace and \
                        now - rec["used_at"] <= prov.reuse_grace and \
                        not prov.refresh[rec["successor"]]["used"]:
                    # Within the grace period, before the successor was
                    # used: the client never got it. It is replaced.
                    prov.grace_replays.append({
                        "rotated_at": rec["used_at"],
                        "asked_at": rec.get("asked_at", rec["used_at"]),
                        "client_gone": rec.get("client_gone", False),
                        "replayed_at": now})
                    prov.refresh[rec["successor"]]["used"] = True
                    prov.refresh[rec["successor"]]["used_at"] = 0
                    prov.refresh[rec["successor"]]["successor"] = None
                elif rec["used"] and prov.rotate:
                    # Reuse of a rotated refresh token: revoke the family.
                    prov.reused_refresh += 1
                    prov.revoked_families.add(rec["family"])
                    for t in prov.tokens.values():
                        if t["family"] == rec["family"]:
                            t["active"] = False
                    return None
                scope = form.get("scope") or rec["scope"]
                tok = prov._new_access(cid, scope, rec["family"])
                body = {"access_token": tok, "token_type": "Bearer",
                        "expires_in": prov.lifetime}
                if prov.rotate:
                    rec["used"] = True
                    rec["used_at"] = now
                    rec["asked_at"] = asked_at
                    rec["client_gone"] = gone
                    rec["successor"] = prov._new_refresh(
                        cid, rec["scope"], rec["family"])
                    body["refresh_token"] = rec["successor"]
                return body

            def _revoke(self, form):
                cid = self._client(form)
                if cid is None:
                    return self._send(401, {"error": "invalid_client"})
                tok = form.get("token", "")
                with prov.lock:
                    prov._record("/revoke", "", cid, "ok")
                    prov.revocations.append(
                        (form.get("token_type_hint", ""), cid))
                    if tok in prov.tokens:
                        prov.tokens[tok]["active"] = False
                    elif tok in prov.refresh:
                        # RFC 7009 2.1: the grant's access tokens go too.
                        fam = prov.refresh[tok]["family"]
                        prov.revoked_families.add(fam)
                        for t in prov.tokens.values():
                            if t["family"] == fam:
                                t["active"] = False
                self._send(200, "", ctype="text/plain")

            def _introspect(self, form):
                cid = self._client(form)
                if cid is None:
                    return self._send(401, {"error": "invalid_client"})
                tok = form.get("token", "")
                if prov.introspect_status != 200:
                    return self._send(prov.introspect_status,
                                      {"error": "server_error"})
                with prov.lock:
                    prov._record("/introspect", "", cid, "ok")
                    rec = prov.tokens.get(tok)
                    rrec = prov.refresh.get(tok)
                    if rec and rec["active"] and rec["expires"] > time.time():
                        body = {"active": True, "scope": rec["scope"],
                                "client_id": rec["client_id"],
                                "exp": int(rec["expires"]),
                                "token_type": "Bearer"}
                        if rec.get("resource"):
                            body["aud"] = rec["resource"]
                    elif rrec and rrec["family"] not in \
                            prov.revoked_families:
                        body = {"active": True, "scope": rrec["scope"],
                                "client_id": rrec["client_id"]}
                    else:
                        body = {"active": False}
                self._send(200, body)

        return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True,
                    help="write the chosen port here once listening")
    ap.add_argument("--lifetime", type=float, default=3600)
    ap.add_argument("--client", action="append", default=[],
                    help="ID:SECRET of an accepted client (repeatable)")
    ap.add_argument("--bench-tokens", action="store_true",
                    help="issue self-checking tokens (for bench/reader)")
    args = ap.parse_args()
    clients = dict(c.split(":", 1) for c in args.client) or None
    prov = FakeProvider(lifetime=args.lifetime, clients=clients,
                        port=args.port)
    prov.bench_tokens = args.bench_tokens
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % prov.port)
    os.rename(tmp, args.port_file)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        prov.server.serve_forever(poll_interval=0.1)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        prov.server.server_close()


if __name__ == "__main__":
    main()
