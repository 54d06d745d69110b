"""Serve a Toolbox as an MCP server (the official SDK's low-level ``Server``).

    python -m toolkit.mcp serve                                     # the built-in tools, over stdio
    python -m toolkit.mcp serve --tools my_tools.py:TOOLS --tools builtin
    python -m toolkit.mcp serve --http 127.0.0.1:8765               # Streamable HTTP at /mcp
    python -m toolkit.mcp serve --http 0.0.0.0:8765 --api-key KEY   # beyond loopback a key is required

Every tool is listed with its name, description and ``parameters_schema()``; a call runs the
same Tool instance in a worker thread, so each tool keeps its own guards (``python_interpreter``
its OS-isolated sandbox, ``save_file`` its workspace, ``query_sql`` its read-only default, all
from ``ToolkitConfig`` / ``REWOO_*``). A tool that fails answers ``isError`` with the ToolError's
message (arguments that do not fit the schema included); an unknown tool is a JSON-RPC error.

Over HTTP, a host other than loopback needs ``--api-key`` (or ``REWOO_API_KEY``), checked on
every request (``Authorization: Bearer KEY`` or ``x-api-key: KEY``) as the REST server does; on
loopback the SDK's DNS-rebinding protection (Host and Origin checks) is on.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from typing import Any

from toolkit.tool import tool_output_text
from toolkit.toolbox import Toolbox

__all__ = ["build_server", "serve_stdio", "http_app", "serve_http", "is_loopback", "tool_output_text"]

log = logging.getLogger(__name__)

SERVER_NAME = "rewoo-toolkit"


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def build_server(toolbox: Toolbox, name: str = SERVER_NAME):
    """An ``mcp.server.Server`` that lists and calls the tools of ``toolbox``."""
    import anyio.to_thread
    import mcp_types as types
    from mcp.server import Server
    from mcp.shared.exceptions import MCPError

    from toolkit.tool import ToolError

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[
            types.Tool(name=t.name, description=t.description, input_schema=t.parameters_schema())
            for t in toolbox.values()])

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name not in toolbox:
            raise MCPError(types.INVALID_PARAMS, f"unknown tool {params.name!r}; this server has "
                                                 f"{', '.join(toolbox) or 'no tools'}")
        tool = toolbox[params.name]
        arguments = params.arguments or {}

        def run() -> Any:
            return tool(**arguments)

        try:
            out = await anyio.to_thread.run_sync(run)
        except ToolError as e:
            return types.CallToolResult(content=[types.TextContent(text=str(e))], is_error=True)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - a tool's failure is the caller's evidence
            return types.CallToolResult(content=[types.TextContent(text=f"{type(e).__name__}: {e}")],
                                        is_error=True)
        return types.CallToolResult(content=[types.TextContent(text=tool_output_text(out))])

    return Server(name, instructions="Tools of a rewoo-stack toolbox.", on_list_tools=list_tools,
                  on_call_tool=call_tool)


async def serve_stdio(toolbox: Toolbox) -> None:
    """Serve over this process's stdin/stdout until stdin closes. While serving, the SDK points
    fd 1 at stderr, so a tool's stray output (or a child's) cannot corrupt the protocol."""
    from mcp.server.stdio import stdio_server

    server = build_server(toolbox)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


class RequireKey:
    """ASGI middleware: 401 unless the request carries the key (``Authorization: Bearer KEY`` or
    ``x-api-key: KEY``), compared in constant time."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            given = headers.get(b"x-api-key")
            auth = headers.get(b"authorization", b"")
            if given is None and auth[:7].lower() == b"bearer ":
                given = auth[7:].strip()
            if given is None or not hmac.compare_digest(given, self.key):
                body = json.dumps({"error": {"message": "missing or wrong API key: send 'Authorization: Bearer "
                                                        "KEY' or 'x-api-key: KEY'", "code": "invalid_api_key"}}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def check_http_settings(host: str, port: int, api_key: str | None) -> None:
    """ValueError (naming the option) for settings that must not serve."""
    problems = []
    if not (0 < port < 65536):
        problems.append(f"--http port must be 1..65535, not {port}")
    if api_key is not None and not api_key.strip():
        problems.append("--api-key is empty; give a real key or leave it out on loopback")
    if not is_loopback(host) and not api_key:
        problems.append(f"--http {host}:{port} listens beyond this machine: an API key is required. "
                        "Pass --api-key KEY (or set REWOO_API_KEY), or listen on 127.0.0.1.")
    if problems:
        raise ValueError("; ".join(problems))


def http_app(toolbox: Toolbox, host: str = "127.0.0.1", api_key: str | None = None, path: str = "/mcp"):
    """The Streamable HTTP ASGI app (endpoint ``path``), behind the key when one is given."""
    if not is_loopback(host) and not api_key:
        raise ValueError(f"serving MCP on {host} needs an API key; pass api_key=... or listen on 127.0.0.1")
    server = build_server(toolbox)
    app = server.streamable_http_app(streamable_http_path=path, host=host)
    return RequireKey(app, api_key) if api_key else app


def serve_http(toolbox: Toolbox, host: str, port: int, api_key: str | None = None, log_level: str = "warning") -> None:
    """Serve over Streamable HTTP at ``http://host:port/mcp`` until interrupted."""
    import uvicorn

    check_http_settings(host, port, api_key)
    app = http_app(toolbox, host, api_key)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
