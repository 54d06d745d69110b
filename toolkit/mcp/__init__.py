"""MCP both ways: any MCP server's tools in a Toolbox, and a Toolbox served over MCP.

    from toolkit.mcp import load_mcp_tools
    box = load_mcp_tools("stdio:python my_server.py --flag")       # runs the server, speaks over its stdio
    box = load_mcp_tools("http://127.0.0.1:8765/mcp", api_key="K")  # a Streamable HTTP server
    box["add"](a=1, b=2)                                            # -> "3"
    box.close()                                                     # stops the server process

    python -m pipeline.run "TASK" --tools builtin --tools "mcp:stdio:python my_server.py"
    python -m toolkit.mcp serve [--tools SPEC ...] [--http HOST:PORT] [--api-key K]

Loading: every tool the server lists becomes a :class:`~toolkit.Tool` with the server's name,
description and input JSON Schema (``parameters_schema()`` returns the server's schema as is;
``inputs`` carries what the toolkit's types can say). Calls go through the official ``mcp`` SDK
on one background thread (its own event loop) per loaded server; the server process and its
session live as long as the toolbox's tools and stop when ``Toolbox.close()`` is called, when
the tools are garbage-collected, or at interpreter exit.

Failures say why, within the timeout (``timeout=``, default ``ToolkitConfig.mcp_timeout``,
``REWOO_MCP_TIMEOUT``, 30 s): a server that cannot start, exits, never answers or writes
something that is not JSON-RPC is a :class:`MCPLoadError` (a ``ToolboxSpecError``) when loading
and a :class:`~toolkit.ToolError` when a tool is called; the message carries the last lines the
server wrote to stderr. A tool result with ``isError`` is a ToolError with the server's text.

Serving: :mod:`toolkit.mcp.server` (``python -m toolkit.mcp serve``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import keyword
import os
import re
import shlex
import tempfile
import threading
import weakref
from collections.abc import Mapping
from typing import Any

try:
    from builtins import BaseExceptionGroup
except ImportError:  # Python 3.10: anyio's backport
    from exceptiongroup import BaseExceptionGroup

from toolkit.config import ToolkitConfig
from toolkit.tool import Tool, ToolError
from toolkit.toolbox import Toolbox, ToolboxSpecError

__all__ = ["load_mcp_tools", "MCPLoadError", "MCPTool", "MCPConnection", "parse_mcp_spec"]

# Seconds the SDK may take to stop a stdio server (close stdin, 2 s grace, SIGTERM, 2 s, SIGKILL)
# plus a margin; close() never waits longer than this.
_STOP_WAIT_S = 8.0
# Lines of the server's stderr quoted in an error.
_STDERR_TAIL_LINES = 6
_JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object")


class MCPLoadError(ToolboxSpecError):
    """An MCP server whose tools cannot be loaded; the message says why, in one line."""


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------

def parse_mcp_spec(spec: str) -> tuple[str, Any]:
    """``("stdio", [command, *args])`` or ``("http", url)`` from ``stdio:COMMAND ARGS...`` or
    ``http(s)://host:port/path`` (an ``mcp:`` prefix is allowed). The command is split as a POSIX
    shell would split it (quotes, no expansion)."""
    if not isinstance(spec, str):
        raise MCPLoadError(f"an MCP spec is a string, got {type(spec).__name__}")
    body = spec[4:] if spec.startswith("mcp:") else spec
    if body.startswith("stdio:"):
        try:
            argv = shlex.split(body[len("stdio:"):])
        except ValueError as e:
            raise MCPLoadError(f"mcp spec {spec!r}: cannot split the command ({e})") from e
        if not argv:
            raise MCPLoadError(f"mcp spec {spec!r}: no command after 'stdio:'; e.g. 'stdio:python server.py'")
        return "stdio", argv
    if body.startswith(("http://", "https://")):
        return "http", body
    raise MCPLoadError(f"bad MCP spec {spec!r}: expected 'stdio:COMMAND ARGS...' or an "
                       "'http(s)://host:port/mcp' URL (after 'mcp:' in --tools)")


# --------------------------------------------------------------------------------------------
# The connection: one thread, one event loop, one SDK client per server
# --------------------------------------------------------------------------------------------

class _ServerBroke(Exception):
    """The server wrote something that is not JSON-RPC while a request waited."""


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + " ..."


class _Session:
    """Everything that runs on the background thread: the event loop, the SDK client, the
    server's stderr. Kept apart from :class:`MCPConnection` so that neither the lifecycle task
    nor the finalizer keeps the connection (and with it the server) alive."""

    def __init__(self, spec: str, kind: str, target: Any, timeout: float, startup_timeout: float,
                 api_key: str | None, env: dict[str, str], cwd: str | os.PathLike | None):
        self.spec, self.kind, self.target, self.timeout = spec, kind, target, timeout
        self.startup_timeout = startup_timeout
        self.api_key, self.env, self.cwd = api_key, env, cwd
        self.client = None
        self.waiters: set[asyncio.Future] = set()
        self.closed_reason: str | None = None
        self.stop_event: asyncio.Event | None = None
        self.task: asyncio.Task | None = None
        self.stopped = False
        self.lock = threading.Lock()
        # O_APPEND: the server writes at the end even while we seek to read its tail.
        self.stderr = tempfile.TemporaryFile(mode="a+", encoding="utf-8", errors="replace")
        self.loop = asyncio.new_event_loop()
        name = os.path.basename(target[0]) if kind == "stdio" else "http"
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"mcp-{name}", daemon=True)
        self.thread.start()
        self.ready: concurrent.futures.Future = concurrent.futures.Future()
        self.lifecycle = asyncio.run_coroutine_threadsafe(self._lifecycle(), self.loop)

    # -- on the loop thread ---------------------------------------------------------------------

    def _transport(self, stack):
        if self.kind == "stdio":
            from mcp import StdioServerParameters, stdio_client

            params = StdioServerParameters(command=self.target[0], args=self.target[1:], env=self.env, cwd=self.cwd)
            return stdio_client(params, errlog=self.stderr)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(self.timeout, read=max(self.timeout, 300.0)))
        stack.push_async_callback(http.aclose)
        return streamable_http_client(self.target, http_client=http)

    async def _lifecycle(self) -> None:
        """Enter the SDK client, list the tools, hand them to ``ready``, wait for stop, leave."""
        from contextlib import AsyncExitStack

        from mcp import Client

        ready = self.ready
        self.stop_event = asyncio.Event()
        self.task = me = asyncio.current_task()
        if self.stopped:
            ready.set_exception(MCPLoadError(f"{self.spec}: closed before it started"))
            return
        broke = asyncio.get_running_loop().create_future()
        self.waiters.add(broke)
        # The server may write garbage while the handshake waits: stop waiting, say why.
        broke.add_done_callback(lambda f: None if ready.done() or f.cancelled() else me.cancel())
        try:
            async with AsyncExitStack() as stack:
                client = Client(self._transport(stack), read_timeout_seconds=self.startup_timeout,
                                message_handler=self._on_message)
                await stack.enter_async_context(client)
                tools, cursor = [], None
                for _ in range(100):  # pages; a server whose cursor never ends is cut off here
                    page = await client.list_tools(cursor=cursor)
                    tools += page.tools
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self.client = client
                self.waiters.discard(broke)
                ready.set_result(tools)
                await self.stop_event.wait()
                self.closed_reason = "the toolbox was closed"
        except asyncio.CancelledError:
            if not ready.done():
                why = broke.exception() if broke.done() and not broke.cancelled() else None
                ready.set_exception(MCPLoadError(f"{self.spec}: {why or 'loading was cancelled'}"))
        except BaseException as e:  # noqa: BLE001 - every failure goes to the loading thread, in words
            if not ready.done():
                ready.set_exception(MCPLoadError(f"{self.spec}: {self.describe(e)}"))
            else:
                self.closed_reason = self.describe(e)
        finally:
            self.client = None
            self.closed_reason = self.closed_reason or "the connection ended"
            if not broke.done():
                broke.cancel()

    async def _on_message(self, message: Any) -> None:
        """The SDK hands transport-level exceptions (a line that is not JSON-RPC) here."""
        if isinstance(message, Exception):
            err = _ServerBroke("the server wrote something that is not a JSON-RPC message: "
                               + _one_line(str(message), 300))
            for w in list(self.waiters):
                if not w.done():
                    w.set_exception(err)

    async def _call(self, name: str, arguments: dict) -> Any:
        client = self.client
        if client is None:
            raise _ServerBroke(self.closed_reason or "the connection is not open")
        broke = asyncio.get_running_loop().create_future()
        self.waiters.add(broke)
        call = asyncio.ensure_future(client.call_tool(name, arguments, read_timeout_seconds=self.timeout))
        try:
            await asyncio.wait({call, broke}, return_when=asyncio.FIRST_COMPLETED)
            if call.done():
                return call.result()
            call.cancel()
            broke.result()  # raises _ServerBroke
        finally:
            self.waiters.discard(broke)
            if not broke.done():
                broke.cancel()
            if not call.done():
                call.cancel()

    def _request_stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
        if self.task is not None and not self.ready.done():  # still starting: stop waiting for it
            self.task.cancel()

    # -- from any thread ----------------------------------------------------------------------------

    def call(self, name: str, arguments: dict) -> Any:
        if self.stopped:
            raise RuntimeError(f"{self.spec} is closed; load the tools again")
        fut = asyncio.run_coroutine_threadsafe(self._call(name, arguments), self.loop)
        try:
            # The SDK times the request out itself at `timeout`; the margin only covers a loop that
            # cannot even deliver that.
            return fut.result(timeout=self.timeout + 2.0)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise RuntimeError(f"{self.spec}: the server did not answer within {self.timeout:g} s") from None
        except concurrent.futures.CancelledError:
            raise RuntimeError(f"{self.spec}: the call was cancelled ({self.closed_reason or 'closing'})") from None
        except Exception as e:
            raise RuntimeError(f"{self.spec}: {self.describe(e)}") from e

    def describe(self, e: BaseException) -> str:
        """Words for what went wrong, with the server's stderr when it has some."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT
        from pydantic import ValidationError

        while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
            e = e.exceptions[0]
        if isinstance(e, MCPError) and e.code == CONNECTION_CLOSED:
            what = ("the server closed the connection (it exited or closed its stdout)" if self.kind == "stdio"
                    else "the server closed the connection")
        elif isinstance(e, MCPError) and e.code == REQUEST_TIMEOUT:
            what = f"the server did not answer within {self.timeout:g} s"
        elif isinstance(e, MCPError):
            what = f"the server answered with error {e.code}: {_one_line(e.message)}"
        elif isinstance(e, ValidationError):
            what = f"the server's answer does not follow the MCP schema: {_one_line(str(e), 300)}"
        elif isinstance(e, _ServerBroke):
            what = str(e)
        elif isinstance(e, FileNotFoundError) and self.kind == "stdio":
            what = f"cannot start {self.target[0]!r}: no such command"
        elif isinstance(e, OSError) and self.kind == "stdio":
            what = f"cannot start {self.target[0]!r}: {e}"
        else:
            what = f"{type(e).__name__}: {_one_line(str(e))}"
        tail = self.stderr_tail()
        return what + (f"; its stderr: {tail}" if tail else "")

    def stderr_tail(self) -> str:
        """The last lines the server wrote to stderr, on one line ("" when none or closed)."""
        with self.lock:
            try:
                self.stderr.seek(0)
                lines = [ln.strip() for ln in self.stderr.read()[-8000:].splitlines() if ln.strip()]
            except (ValueError, OSError):
                return ""
        return " | ".join(lines[-_STDERR_TAIL_LINES:])

    def stop(self) -> None:
        """Leave the SDK's contexts (which stops a stdio server: stdin closed, then SIGTERM, then
        SIGKILL), wait a bounded time, stop the loop. Idempotent."""
        with self.lock:
            if self.stopped:
                return
            self.stopped = True
        if threading.current_thread() is self.thread:  # never block the loop on itself
            self.loop.call_soon(self._request_stop)
            return
        if not self.lifecycle.done():
            self.loop.call_soon_threadsafe(self._request_stop)
            try:
                self.lifecycle.result(timeout=_STOP_WAIT_S)
            except BaseException:  # noqa: BLE001 - its failure was reported when it happened
                self.lifecycle.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=_STOP_WAIT_S)
        if not self.thread.is_alive():
            self.loop.close()
        with self.lock:
            self.stderr.close()


class MCPConnection:
    """A live connection to one MCP server (see the module docstring). ``tools`` holds the
    server's tool definitions (``mcp.types.Tool``); :meth:`call` runs one tool.

    ``spec``: ``stdio:COMMAND ARGS...`` or an ``http(s)://`` URL. ``timeout``: seconds for each call
    and, unless ``startup_timeout`` is given, for the server to start and list its tools. ``api_key``: sent as ``Authorization: Bearer`` to an
    HTTP server. ``env``: the stdio server's environment (default: this process's, as a shell
    would pass it); ``cwd``: its working folder.
    """

    def __init__(self, spec: str, timeout: float, api_key: str | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
                 startup_timeout: float | None = None):
        kind, target = parse_mcp_spec(spec)
        self.spec = spec if spec.startswith("mcp:") else f"mcp:{spec}"
        startup_timeout = timeout if startup_timeout is None else startup_timeout
        for what, value in (("timeout", timeout), ("startup_timeout", startup_timeout)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise MCPLoadError(f"{self.spec}: {what} must be positive seconds, got {value!r}")
        self.timeout = float(timeout)
        self.startup_timeout = float(startup_timeout)
        self._session = _Session(self.spec, kind, target, self.timeout, self.startup_timeout, api_key,
                                 dict(os.environ if env is None else env), cwd)
        self._finalizer = weakref.finalize(self, self._session.stop)
        try:
            self.tools = self._session.ready.result(timeout=self.startup_timeout)
        except concurrent.futures.TimeoutError:
            tail = self._session.stderr_tail()
            self.close()
            raise MCPLoadError(f"{self.spec}: the server did not finish the MCP handshake and list its tools "
                               f"within {self.startup_timeout:g} s" + (f"; its stderr: {tail}" if tail else "")) from None
        except BaseException:
            self.close()
            raise

    def call(self, name: str, arguments: dict) -> Any:
        """Run the server's tool ``name``; returns the SDK's ``CallToolResult``. Every failure
        (closed, crashed, timed out, garbage, a malformed answer) is a RuntimeError that says why."""
        return self._session.call(name, arguments)

    def stderr_tail(self) -> str:
        """The last lines a stdio server wrote to its stderr."""
        return self._session.stderr_tail()

    def close(self) -> None:
        """Stop the session and the server process (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------

def _identifier(name: str) -> str:
    """``name`` as a Python identifier: other characters become ``_``; a leading digit or a
    keyword gets a ``_``."""
    out = re.sub(r"\W", "_", name, flags=re.ASCII) or "_"
    if out[0].isdigit():
        out = "_" + out
    if keyword.iskeyword(out):
        out += "_"
    return out


def _input_spec(name: str, schema: Any, required: bool) -> tuple[dict, bool]:
    """The toolkit ``inputs`` entry for one JSON Schema property (what its types can say), and
    whether the schema takes ``null`` as a value."""
    schema = schema if isinstance(schema, Mapping) else {}
    types_ = schema.get("type")
    options = schema.get("anyOf") or schema.get("oneOf")
    if types_ is None and isinstance(options, list):  # Optional[X] as pydantic writes it
        types_ = [o.get("type") for o in options if isinstance(o, Mapping)]
        if any(t is None for t in types_):
            types_ = None
    nullable = False
    if isinstance(types_, list):
        nullable = "null" in types_
        rest = [t for t in types_ if t != "null"]
        types_ = rest[0] if len(rest) == 1 else None
    itype = types_ if types_ in _JSON_TYPES else "any"
    description = schema.get("description") or schema.get("title") or f"the {name} argument"
    spec: dict[str, Any] = {"type": itype, "description": " ".join(str(description).split())}
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        spec["enum"] = list(schema["enum"])
    if itype == "array" and isinstance(schema.get("items"), Mapping):
        spec["items"] = dict(schema["items"])
    if "default" in schema:
        spec["default"] = schema["default"]
    if nullable or (not required and "default" not in spec):
        spec["nullable"] = True
    return spec, nullable


class MCPTool(Tool, abstract=True):
    """A tool of an MCP server. Made by :func:`load_mcp_tools`, one subclass per server tool (so
    that the toolkit validates each definition). ``mcp_name`` is the server's name for it (``name``
    is that name as a Python identifier); ``mcp_schema`` the server's input JSON Schema."""

    mcp_name: str = ""
    mcp_schema: dict = {}
    _argument_names: dict[str, str] = {}  # our identifier -> the server's property name
    _may_be_null: frozenset = frozenset()

    def __init__(self, connection: MCPConnection):
        super().__init__()
        self.connection = connection

    def parameters_schema(self) -> dict:
        """The server's input schema, unchanged."""
        return dict(self.mcp_schema)

    def forward(self, **arguments):
        sent = {self._argument_names.get(k, k): v for k, v in arguments.items()
                if v is not None or k in self._may_be_null}  # None: "leave it out", unless null is a value
        try:
            result = self.connection.call(self.mcp_name, sent)
        except RuntimeError as e:
            raise ToolError(self.name, arguments, str(e)) from e
        text = _result_text(result)
        if result.is_error:
            raise ToolError(self.name, arguments, f"the MCP tool reported an error: {text}")
        return text

    def close(self) -> None:
        """Close the connection this tool shares with the other tools of its server."""
        self.connection.close()


def _result_text(result: Any) -> str:
    """A CallToolResult as evidence text: its text blocks, then a line per other block; the
    structured content as JSON when there is no text."""
    parts = []
    for block in result.content or []:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        elif kind == "resource":
            res = block.resource
            parts.append(getattr(res, "text", None) or f"[resource {res.uri}, {getattr(res, 'mime_type', '')}]")
        else:
            parts.append(f"[{kind} content]")
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)


def _make_tool(definition: Any, connection: MCPConnection) -> MCPTool:
    schema = definition.input_schema if isinstance(definition.input_schema, Mapping) else {}
    props = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
    required = set(schema.get("required") or ())
    inputs, names, may_be_null = {}, {}, set()
    for prop, prop_schema in props.items():
        ident = _identifier(prop)
        if ident in inputs:
            raise MCPLoadError(f"{connection.spec}: tool {definition.name!r} has arguments {names[ident]!r} and "
                               f"{prop!r}, which both read {ident!r} as identifiers")
        names[ident] = prop
        inputs[ident], takes_null = _input_spec(prop, prop_schema, prop in required)
        if takes_null:
            may_be_null.add(ident)
    description = " ".join((definition.description or definition.title or "").split()) \
        or f"the MCP tool {definition.name}"
    ident = _identifier(definition.name)

    def forward(self, **kwargs):
        return MCPTool.forward(self, **kwargs)

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    for k, spec in inputs.items():
        optional = spec.get("nullable") or "default" in spec
        params.append(inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY,
                                        default=None if optional else inspect.Parameter.empty))
    forward.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    attrs = {"name": ident, "description": description, "inputs": inputs, "output_type": "string",
             "forward": forward, "mcp_name": definition.name, "mcp_schema": dict(schema),
             "_argument_names": names, "_may_be_null": frozenset(may_be_null), "__module__": __name__}
    try:
        cls = type(f"MCPTool_{ident}", (MCPTool,), attrs)
    except TypeError as e:  # ToolDefinitionError: what the toolkit cannot take from this definition
        raise MCPLoadError(f"{connection.spec}: tool {definition.name!r}: {_one_line(str(e))}") from e
    return cls(connection)


def load_mcp_tools(spec: str, timeout: float | None = None, api_key: str | None = None,
                   env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None,
                   startup_timeout: float | None = None) -> Toolbox:
    """The tools of the MCP server ``spec`` (``stdio:COMMAND ARGS...`` or ``http(s)://...``, with or
    without ``mcp:``) as a Toolbox. See the module docstring and :class:`MCPConnection`; ``timeout``
    defaults to ``REWOO_MCP_TIMEOUT`` (30 s), ``api_key`` to ``REWOO_MCP_API_KEY`` (sent to HTTP
    servers only).
    Close the toolbox (``box.close()`` or ``with``) to stop the server."""
    if timeout is None or api_key is None:
        config = ToolkitConfig.from_env()
        timeout = config.mcp_timeout if timeout is None else timeout
        api_key = config.mcp_api_key if api_key is None else api_key
    connection = MCPConnection(spec, timeout=timeout, api_key=api_key, env=env, cwd=cwd,
                               startup_timeout=startup_timeout)
    try:
        tools = [_make_tool(d, connection) for d in connection.tools]
        names: dict[str, str] = {}
        for t in tools:
            if t.name in names:
                raise MCPLoadError(f"{connection.spec}: tools {names[t.name]!r} and {t.mcp_name!r} both read "
                                   f"{t.name!r} as identifiers")
            names[t.name] = t.mcp_name
        return Toolbox(tools)
    except BaseException:
        connection.close()
        raise
