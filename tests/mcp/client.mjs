// An MCP client for credfs's tests: the official TypeScript SDK's client
// over the stdio transport, launching the command after "--" (credfsctl
// mcp-bridge ...) as its local server. It connects (initialize), then
// reads one JSON line per tool call on stdin ({"tool": NAME, "args": {}})
// and answers each on stdout with one JSON line: {"result": ...} or
// {"error": {"code", "message", "data"}}, and the log notifications the
// server sent so far ({"logs": N}).
//
//   node client.mjs -- credfsctl mcp-bridge TENANT PROVIDER --mount DIR
import { createInterface } from 'node:readline';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';

const cmd = process.argv.slice(process.argv.indexOf('--') + 1);
const transport = new StdioClientTransport({ command: cmd[0], args: cmd.slice(1), stderr: 'inherit' });
const client = new Client({ name: 'credfs-test-client', version: '1.0.0' });
let logs = 0;
client.setNotificationHandler(LoggingMessageNotificationSchema, () => { logs++; });

function say(o) {
    process.stdout.write(JSON.stringify(o) + '\n');
}

try {
    await client.connect(transport);
    say({ connected: client.getServerVersion() });
} catch (e) {
    say({ error: { code: e.code ?? null, message: String(e.message ?? e), data: e.data ?? null } });
    process.exit(1);
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
    if (!line.trim())
        continue;
    const { tool, args } = JSON.parse(line);
    try {
        const r = await client.callTool({ name: tool, arguments: args ?? {} });
        say({ result: r, logs });
    } catch (e) {
        say({ error: { code: e.code ?? null, message: String(e.message ?? e), data: e.data ?? null }, logs });
    }
}
await client.close();
