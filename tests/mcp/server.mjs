// A remote MCP server for credfs's tests: the official TypeScript SDK's
// Streamable HTTP transport behind its bearer-auth middleware, with its
// protected resource metadata (RFC 9728) naming the test's authorization
// server. Tokens are checked by RFC 7662 introspection at that server, and
// a token whose audience is not this server's URL is refused.
//
//   node server.mjs --as URL --client ID:SECRET --port-file FILE
//
// The URL it serves (http://127.0.0.1:PORT/mcp) is written to FILE once it
// listens. Tools: whoami (the caller's client id, audience and token
// fingerprint, after a log notification on the same SSE stream) and echo.
// POST /_control/refuse {"count": N} has it refuse the next N requests with
// a 401; GET /_control/stats says how many it refused.
import { createHash, randomUUID } from 'node:crypto';
import { writeFileSync, renameSync } from 'node:fs';
import express from 'express';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { mcpAuthMetadataRouter, getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { InvalidTokenError } from '@modelcontextprotocol/sdk/server/auth/errors.js';

function arg(name) {
    const i = process.argv.indexOf(name);
    if (i < 0 || i + 1 >= process.argv.length) {
        console.error(`server.mjs: missing ${name}`);
        process.exit(2);
    }
    return process.argv[i + 1];
}

const as = arg('--as');
const [clientId, clientSecret] = arg('--client').split(':');
const portFile = arg('--port-file');

const metaRes = await fetch(`${as}/.well-known/oauth-authorization-server`);
const oauthMetadata = await metaRes.json();

const verifier = {
    async verifyAccessToken(token) {
        const r = await fetch(oauthMetadata.introspection_endpoint, {
            method: 'POST',
            headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
            body: new URLSearchParams({ token, client_id: clientId, client_secret: clientSecret }),
        });
        const info = await r.json();
        if (!info.active)
            throw new InvalidTokenError('the token is not active: revoked or expired');
        return {
            token,
            clientId: info.client_id,
            scopes: info.scope ? info.scope.split(' ') : [],
            expiresAt: info.exp,
            resource: info.aud ? new URL(info.aud) : undefined,
        };
    },
};

const app = express();
app.use(express.json());
// Test control, unauthenticated (the server listens on loopback only):
// answer the next N MCP requests with a 401 as if their token had just
// gone stale, and count the 401s served.
let refuseNext = 0, refused = 0;
app.post('/_control/refuse', (req, res) => {
    refuseNext = req.body.count ?? 1;
    res.json({ ok: true });
});
app.get('/_control/stats', (_req, res) => res.json({ refused }));
function staleOnce(req, res, next) {
    if (refuseNext > 0) {
        refuseNext--;
        refused++;
        res.set('WWW-Authenticate', 'Bearer error="invalid_token", error_description="stale token"');
        res.status(401).json({ error: 'invalid_token' });
        return;
    }
    next();
}
const server = app.listen(0, '127.0.0.1', () => {
    const url = new URL(`http://127.0.0.1:${server.address().port}/mcp`);
    app.use(mcpAuthMetadataRouter({ oauthMetadata, resourceServerUrl: url }));
    const auth = requireBearerAuth({
        verifier,
        expectedResource: url,
        resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(url),
    });
    const sessions = new Map();

    function newServer() {
        const mcp = new McpServer({ name: 'credfs-test-server', version: '1.0.0' },
                                  { capabilities: { logging: {} } });
        mcp.registerTool('whoami', { description: 'who the token says the caller is' },
            async (extra) => {
                await extra.sendNotification({
                    method: 'notifications/message',
                    params: { level: 'info', data: 'looking at the token' },
                });
                const a = extra.authInfo;
                const fp = createHash('sha256').update(a.token).digest('hex').slice(0, 8);
                return {
                    content: [{
                        type: 'text',
                        text: JSON.stringify({
                            client_id: a.clientId,
                            audience: a.resource ? a.resource.href : null,
                            fingerprint: fp,
                            session: extra.sessionId,
                        }),
                    }],
                };
            });
        mcp.registerTool('echo', { description: 'says it back', inputSchema: { text: z.string() } },
            async ({ text }) => ({ content: [{ type: 'text', text }] }));
        return mcp;
    }

    app.all('/mcp', staleOnce, auth, async (req, res) => {
        const id = req.headers['mcp-session-id'];
        let transport = id ? sessions.get(id) : undefined;
        if (id && !transport) {
            res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'no such session' }, id: null });
            return;
        }
        if (!transport) {
            transport = new StreamableHTTPServerTransport({
                sessionIdGenerator: () => randomUUID(),
                onsessioninitialized: (sid) => sessions.set(sid, transport),
            });
            transport.onclose = () => sessions.delete(transport.sessionId);
            await newServer().connect(transport);
        }
        await transport.handleRequest(req, res, req.body);
    });

    writeFileSync(portFile + '.tmp', url.href);
    renameSync(portFile + '.tmp', portFile);
});

for (const sig of ['SIGTERM', 'SIGINT'])
    process.on(sig, () => { server.close(); process.exit(0); });
