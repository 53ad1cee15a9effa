"""A stdio MCP server that can be told to die: `crash` exits the process at once,
so tests can check that lariat notices and restarts it."""

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("crashy")


@server.tool()
def echo(text: str) -> str:
    """Echo the text with this process's id."""
    return f"{text} (pid {os.getpid()})"


@server.tool()
def crash() -> str:
    """Exit the server process immediately."""
    os._exit(3)


server.run()
