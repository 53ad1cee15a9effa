"""A stdio MCP server with one tool, `get_env`, that returns the server's whole
environment (like @modelcontextprotocol/server-everything's `get-env`), so tests can
check what lariat lets a child see; `deep`, whose result no client can decode; and
`background_job`, which may only run as an MCP task (lariat must not offer it). Standard library only; it writes a line to
stderr at start so the stderr tail has something to show (`--noisy`: much more)."""

import json
import os
import sys

sys.stderr.write("env server starting\n")
if "--noisy" in sys.argv:
    # Invalid UTF-8, then more than a pipe holds: a reader that stopped at the bad
    # bytes would leave this process blocked on its next write.
    sys.stderr.buffer.write(b"\xff\xfe not utf-8\n" + b"x" * 200_000 + b"\n")
sys.stderr.flush()

TOOLS = [
    {
        "name": "get_env",
        "description": "Return this process's environment variables.",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "deep",
        "description": "Return a result nested 5,000 levels deep (no client can decode it).",
        "inputSchema": {"type": "object", "properties": {}},
    },
    {
        "name": "background_job",
        "description": "Runs only as a task (tools/call with a `task` member).",
        "inputSchema": {"type": "object", "properties": {}},
        "execution": {"taskSupport": "required"},
    },
]


def answer(request_id, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}) + "\n")
    sys.stdout.flush()


for line in sys.stdin:
    message = json.loads(line)
    method = message.get("method")
    if "id" not in message:
        continue
    if method == "initialize":
        answer(message["id"], {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "env", "version": "1"},
        })
    elif method == "tools/list":
        answer(message["id"], {"tools": TOOLS})
    elif method == "tools/call" and message["params"]["name"] == "deep":
        # Written by hand: json.dumps itself gives up long before 5,000 levels.
        nested = "[" * 5000 + "]" * 5000
        sys.stdout.write('{"jsonrpc": "2.0", "id": %s, "result": {"content": [], "structuredContent": {"x": %s}}}\n'
                         % (json.dumps(message["id"]), nested))
        sys.stdout.flush()
    elif method == "tools/call":
        text = json.dumps(dict(os.environ), sort_keys=True)
        answer(message["id"], {"content": [{"type": "text", "text": text}]})
    else:
        answer(message["id"], {})
