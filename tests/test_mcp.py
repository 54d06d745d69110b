"""MCP both ways, with the official ``mcp`` SDK on both sides.

    python -m pytest -q tests/test_mcp.py

- our tools served (``python -m toolkit.mcp serve``) and listed / called by an SDK client, over
  stdio and over Streamable HTTP (key required beyond loopback, checked on every request);
- an SDK ``MCPServer`` (v2's name for FastMCP) written here, on a real uvicorn on 127.0.0.1, loaded
  into a Toolbox with ``load_mcp_tools`` and used by a ``Pipeline`` run with scripted engines;
- servers that crash, hang or write garbage, at start-up and during a call: each one a clear
  error (``MCPLoadError`` / ``ToolError``) naming the reason, within the timeout;
- the server process stops when the toolbox is closed or garbage-collected.

The misbehaving servers are small scripts speaking raw JSON-RPC (the SDK's own servers do not
misbehave on purpose); the well-behaved ones are the SDK's.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from pipeline.rewoo import Pipeline
from toolkit import ToolboxSpecError, ToolError, default_toolbox, load_toolbox
from toolkit.mcp import MCPLoadError, load_mcp_tools, parse_mcp_spec
from toolkit.mcp.server import http_app

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-mcp-test"
# Starting a Python process that imports the SDK takes seconds on a busy 2-core machine.
START_S = 60.0


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------

class Uvicorn:
    """An ASGI app on an ephemeral loopback port, in a thread."""

    def __init__(self, app):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _fastmcp_app():
    """A server written with the SDK's MCPServer (FastMCP in mcp 1.x)."""
    from mcp.server.mcpserver import MCPServer

    app = MCPServer("test-tools")

    @app.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @app.tool(name="shout-it")
    def shout(text: str, times: int = 1) -> str:
        """Repeat a text in capitals."""
        return text.upper() * times

    @app.tool()
    def reverse(text: str) -> str:
        """Reverse a text."""
        return text[::-1]

    @app.tool()
    def refuse(why: str) -> str:
        """Always fails."""
        raise ValueError(why)

    return app.streamable_http_app(host="127.0.0.1")


@pytest.fixture(scope="module")
def fastmcp_url():
    with Uvicorn(_fastmcp_app()) as server:
        yield f"http://127.0.0.1:{server.port}/mcp"


@pytest.fixture()
def fastmcp_box(fastmcp_url):
    box = load_mcp_tools(fastmcp_url, timeout=20)
    yield box
    box.close()


FAKE_SERVER = textwrap.dedent('''
    """A stdio MCP server in raw JSON-RPC that misbehaves as told: MODE PIDFILE."""
    import json, os, sys, time
    mode, pidfile = sys.argv[1], sys.argv[2]
    open(pidfile, "w").write(str(os.getpid()))
    if mode == "crash_at_start":
        sys.stderr.write("fake server: cannot open its database\\n"); sys.stderr.flush(); sys.exit(3)
    def send(obj):
        sys.stdout.write(json.dumps(obj) + "\\n"); sys.stdout.flush()
    TOOL = {"name": "echo", "description": "Echo a text.",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}
    for line in sys.stdin:
        msg = json.loads(line)
        method, mid = msg.get("method"), msg.get("id")
        if mid is None:
            continue  # a notification
        if mode == "hang_at_start":
            continue
        if mode == "garbage_at_start":
            sys.stdout.write("Server ready! Listening...\\n"); sys.stdout.flush(); continue
        if method == "initialize":
            send({"jsonrpc": "2.0", "id": mid, "result": {"protocolVersion": msg["params"]["protocolVersion"],
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "fake", "version": "0"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": mid, "result": {"tools": [TOOL]}})
        elif method == "tools/call" and mode == "ok":
            text = msg["params"]["arguments"]["text"]
            send({"jsonrpc": "2.0", "id": mid, "result": {"content": [{"type": "text", "text": text}]}})
        elif method == "tools/call" and mode == "crash_on_call":
            sys.stderr.write("fake server: segfault in echo\\n"); sys.stderr.flush(); os._exit(7)
        elif method == "tools/call" and mode == "hang_on_call":
            time.sleep(3600)
        elif method == "tools/call" and mode == "garbage_on_call":
            sys.stdout.write("<html>500 Internal Server Error</html>\\n"); sys.stdout.flush()
        elif method == "tools/call" and mode == "bad_result":
            send({"jsonrpc": "2.0", "id": mid, "result": {"content": "not a list"}})
        else:
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})
''')


@pytest.fixture()
def fake(tmp_path):
    """``fake(mode) -> (spec, pidfile)`` for the raw JSON-RPC server above."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)

    def make(mode: str) -> tuple[str, Path]:
        pidfile = tmp_path / f"{mode}.pid"
        return f"stdio:{sys.executable} {script} {mode} {pidfile}", pidfile
    return make


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------
# Our tools, served
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_sdk_client_lists_and_calls_our_tools_over_stdio(tmp_path):
    from mcp import Client, MCPError, StdioServerParameters

    workspace = tmp_path / "ws"
    env = {**os.environ, "REWOO_WORKSPACE": str(workspace)}
    params = StdioServerParameters(command=sys.executable, args=["-m", "toolkit.mcp", "serve"], env=env, cwd=str(ROOT))
    expected = default_toolbox()

    async def session():
        out = {}
        async with Client(params, read_timeout_seconds=START_S) as client:
            out["tools"] = (await client.list_tools()).tools
            for key, name, args in [
                ("calc", "calculator", {"expression": "1/3 + 1/6"}),
                ("escape", "save_file", {"path": "../outside.txt", "content": "x"}),
                ("save", "save_file", {"path": "notes/a.txt", "content": "hello"}),
                ("drop", "query_sql", {"sql": "DROP TABLE films"}),
                ("select", "query_sql", {"sql": "SELECT 1 + 1 AS two"}),
                ("os", "python_interpreter", {"code": "import os\nos.listdir('/')"}),
                ("py", "python_interpreter", {"code": "print(6 * 7)"}),
                ("badargs", "calculator", {"expr": "1"}),
            ]:
                out[key] = await client.call_tool(name, args)
            with pytest.raises(MCPError, match="unknown tool 'nosuch'"):
                await client.call_tool("nosuch", {})
        return out

    out = asyncio.run(session())
    listed = {t.name: t for t in out["tools"]}
    assert set(listed) == set(expected) - {"llm"}  # llm has no engine outside a pipeline
    for name, t in listed.items():
        assert t.description == expected[name].description
        assert t.input_schema == expected[name].parameters_schema()
    text = lambda r: r.content[0].text  # noqa: E731
    assert not out["calc"].is_error and text(out["calc"]) == "0.5"
    # save_file keeps its workspace
    assert out["escape"].is_error and "WorkspaceError" in text(out["escape"])
    assert not (tmp_path / "outside.txt").exists()
    assert not out["save"].is_error and (workspace / "notes" / "a.txt").read_text() == "hello"
    # query_sql keeps its read-only default
    assert out["drop"].is_error and "read-only" in text(out["drop"])
    assert not out["select"].is_error and "2" in text(out["select"])
    # python_interpreter keeps its sandbox
    assert out["os"].is_error and "import of 'os' is not allowed" in text(out["os"])
    assert not out["py"].is_error and text(out["py"]) == "42"
    # arguments that do not fit: the schema comes back as the tool's error, for the model to fix
    assert out["badargs"].is_error and "missing required argument 'expression'" in text(out["badargs"])


def test_http_serving_wants_the_key_on_every_request():
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    box = default_toolbox(tools=["calculator", "get_current_time"])
    with Uvicorn(http_app(box, host="127.0.0.1", api_key=KEY)) as server:
        url = f"http://127.0.0.1:{server.port}/mcp"
        # no key, a wrong key: 401 before the MCP layer sees anything
        hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"x-api-key": KEY + "x"}):
            r = httpx.post(url, json=hello, headers=headers)
            assert r.status_code == 401 and "API key" in r.json()["error"]["message"]

        async def with_key():
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
                async with Client(streamable_http_client(url, http_client=http), read_timeout_seconds=20) as client:
                    names = [t.name for t in (await client.list_tools()).tools]
                    result = await client.call_tool("calculator", {"expression": "2**10"})
            return names, result

        names, result = asyncio.run(with_key())
        assert names == ["calculator", "get_current_time"] and result.content[0].text == "1024"

        async def without_key():
            async with Client(url, read_timeout_seconds=20) as client:
                await client.list_tools()

        with pytest.raises(Exception) as err:  # the SDK's own error for a 401; what matters is that it fails
            asyncio.run(without_key())
        assert not isinstance(err.value, AssertionError)

        # our loader sends the key too, and gets nothing without it
        with load_mcp_tools(url, timeout=20, api_key=KEY) as loaded:
            assert loaded["calculator"](expression="3*3") == "9"
        with pytest.raises(MCPLoadError):
            load_mcp_tools(url, timeout=20, api_key="wrong")


@pytest.mark.parametrize("argv, fragment", [
    (["serve", "--http", "0.0.0.0:8765"], "an API key is required"),
    (["serve", "--http", "0.0.0.0:8765", "--api-key", " "], "--api-key is empty"),
    (["serve", "--http", "localhost"], "expected HOST:PORT"),
    (["serve", "--tools", "no_such_file.py:TOOLS"], "no such file"),
    (["serve", "--tools", "mcp:ftp://example.com"], "expected 'stdio:COMMAND"),
])
def test_serve_refuses_bad_settings_in_one_line(argv, fragment, capsys, monkeypatch):
    from toolkit.mcp.__main__ import main

    monkeypatch.delenv("REWOO_API_KEY", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_http_app_refuses_a_public_host_without_a_key():
    with pytest.raises(ValueError, match="needs an API key"):
        http_app(default_toolbox(tools=["calculator"]), host="0.0.0.0")


# --------------------------------------------------------------------------------------------
# An SDK server's tools, loaded
# --------------------------------------------------------------------------------------------

def test_a_fastmcp_servers_tools_keep_names_descriptions_and_schemas(fastmcp_box):
    box = fastmcp_box
    assert list(box) == ["add", "shout_it", "reverse", "refuse"]
    shout = box["shout_it"]
    assert shout.mcp_name == "shout-it"  # the server's name, read as an identifier here
    assert shout.description == "Repeat a text in capitals."
    schema = shout.parameters_schema()
    assert schema["required"] == ["text"] and schema["properties"]["times"]["default"] == 1
    assert shout.inputs["text"]["type"] == "string" and shout.inputs["times"]["type"] == "integer"
    assert box["add"].to_openai_schema()["function"]["parameters"] == box["add"].mcp_schema
    # calls go to the server; an optional argument left out takes the server's default
    assert box["add"](a=2, b=40) == "42"
    assert shout(text="hi") == "HI" and shout(text="hi", times=3) == "HIHIHI"
    assert box["reverse"]("abc") == "cba"
    # arguments are checked against the schema before anything is sent
    with pytest.raises(ToolError, match="must be integer"):
        box["add"](a="2", b=1)
    # a tool that fails on the server: a ToolError that says so
    with pytest.raises(ToolError, match="the MCP tool reported an error"):
        box["refuse"](why="no")


def test_a_pipeline_run_uses_mcp_tools_beside_the_built_ins(fastmcp_url, scripted_engine):
    box = load_toolbox([f"mcp:{fastmcp_url}", "toolkit.toolbox:default_toolbox"])
    try:
        assert {"add", "reverse", "calculator", "search_wiki"} <= set(box)
        plan = ("Plan: Add the two numbers.\n#E1 = add[2 and 3]\n"
                "Plan: Scale it.\n#E2 = calculator[#E1 * 10]\n"
                "Plan: Reverse the words.\n#E3 = reverse[#E2 apples]\n")
        planner = scripted_engine([plan, "50 apples, reversed: selppa 05"])
        caller = scripted_engine(['{"name": "add", "arguments": {"a": 2, "b": 3}}'])
        result = Pipeline(planner, caller, toolbox=box, constrain=False).run("Add 2 and 3, times ten, reversed.")
        assert {v: e.text for v, e in result.evidence.items()} == {"#E1": "5", "#E2": "50", "#E3": "selppa 05"}
        assert result.calls["#E1"].via == "caller" and result.calls["#E3"].via == "direct"
        assert result.answer == "50 apples, reversed: selppa 05"
    finally:
        box.close()


def test_the_cli_tools_flag_combines_builtin_and_mcp(fastmcp_url):
    from pipeline import eval as eval_cli
    from pipeline import run as run_cli

    args = run_cli.build_parser().parse_args(["t", "--tools", "builtin", "--tools", f"mcp:{fastmcp_url}"])
    box = run_cli._toolbox(args)
    try:
        assert set(default_toolbox()) | {"add", "shout_it", "reverse", "refuse"} == set(box)
        assert box["add"](a=1, b=1) == "2"
    finally:
        box.close()
    assert eval_cli.build_parser().parse_args(["--tasks", "x", "--tools", "builtin", "--tools", "mcp:stdio:x"]).tools \
        == ["builtin", "mcp:stdio:x"]
    bad = run_cli.build_parser().parse_args(["t", "--tools", "builtin", "--tools", "mcp:stdio:"])
    with pytest.raises(run_cli.UsageError, match="--tools builtin --tools mcp:stdio:: .*no command"):
        run_cli._toolbox(bad)


def test_serve_takes_tools_for_its_pipeline_route(fastmcp_url):
    from serve.__main__ import config_from_args

    cfg, _ = config_from_args(["--model", "m", "--tools", "builtin", "--tools", f"mcp:{fastmcp_url}"])
    assert cfg.tools == ["builtin", f"mcp:{fastmcp_url}"]
    assert config_from_args(["--model", "m"])[0].tools is None


def test_our_server_loaded_by_our_client_over_stdio(tmp_path):
    """Both halves at once: ``python -m toolkit.mcp serve`` with a user's tools file, loaded back."""
    tools_file = tmp_path / "my_tools.py"
    tools_file.write_text(textwrap.dedent('''
        from toolkit import tool

        @tool
        def word_count(text: str, unique: bool = False) -> int:
            """Count the words of a text.

            Args:
                text: the text
                unique: count each distinct word once
            """
            words = text.split()
            return len(set(words)) if unique else len(words)

        TOOLS = [word_count]
    '''))
    spec = f"mcp:stdio:{sys.executable} -m toolkit.mcp serve --tools {tools_file}:TOOLS"
    with load_mcp_tools(spec, timeout=20, startup_timeout=START_S, cwd=ROOT) as box:
        wc = box["word_count"]
        assert wc.description == "Count the words of a text."
        assert wc.inputs["unique"] == {"type": "boolean", "description": "count each distinct word once",
                                       "nullable": True}
        assert wc(text="a b a") == "3" and wc(text="a b a", unique=True) == "2"
        with pytest.raises(ToolError, match="must be boolean"):
            wc(text="a", unique="yes")


# --------------------------------------------------------------------------------------------
# Servers that misbehave
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, fragment", [
    ("crash_at_start", "closed the connection .*its stderr: fake server: cannot open its database"),
    ("hang_at_start", "did not finish the MCP handshake and list its tools within 2 s"),
    ("garbage_at_start", "not a JSON-RPC message: .*Server ready! Listening"),
])
def test_a_server_that_fails_to_start_is_a_clear_load_error(fake, mode, fragment):
    spec, pidfile = fake(mode)
    with pytest.raises(MCPLoadError, match=fragment) as err:
        load_mcp_tools(spec, timeout=2, startup_timeout=2 if mode == "hang_at_start" else START_S)
    assert str(err.value).startswith(f"mcp:{spec}: ") and "\n" not in str(err.value)
    assert isinstance(err.value, ToolboxSpecError)  # the CLIs turn it into one line and exit 2
    assert _wait_gone(int(pidfile.read_text()))  # nothing left running


@pytest.mark.parametrize("mode, fragment", [
    ("crash_on_call", "closed the connection .*its stderr: fake server: segfault in echo"),
    ("hang_on_call", "did not answer within 1.5 s"),
    ("garbage_on_call", r"not a JSON-RPC message: .*<html>500 Internal Server Error</html>"),
    ("bad_result", "does not follow the MCP schema"),
])
def test_a_server_that_fails_during_a_call_is_a_clear_tool_error(fake, mode, fragment):
    spec, pidfile = fake(mode)
    box = load_mcp_tools(spec, timeout=1.5, startup_timeout=START_S)
    try:
        with pytest.raises(ToolError, match=fragment) as err:
            box["echo"](text="hi")
        assert err.value.tool == "echo" and err.value.arguments == {"text": "hi"}
    finally:
        box.close()
    assert _wait_gone(int(pidfile.read_text()))


def test_the_server_lives_as_long_as_the_toolbox(fake):
    spec, pidfile = fake("ok")
    box = load_mcp_tools(spec, timeout=10, startup_timeout=START_S)
    pid = int(pidfile.read_text())
    assert box["echo"](text="still here") == "still here" and _alive(pid)
    echo = box["echo"]
    box.close()
    assert _wait_gone(pid)
    with pytest.raises(ToolError, match="is closed"):
        echo(text="x")
    box.close()  # idempotent

    # no close(): dropping the last reference to the tools stops the server as well
    spec, pidfile = fake("ok")
    box = load_mcp_tools(spec, timeout=10, startup_timeout=START_S)
    pid = int(pidfile.read_text())
    sub = box.subset(["echo"])
    del box
    gc.collect()
    assert _alive(pid) and sub["echo"](text="a") == "a"  # the subset still holds the tool
    del sub
    gc.collect()
    assert _wait_gone(pid)


def test_a_failed_combined_load_stops_the_servers_it_started(fake):
    spec, pidfile = fake("ok")
    with pytest.raises(ToolboxSpecError, match="defines 'echo', which .* already defines"):
        load_toolbox([f"mcp:{spec}", f"mcp:{spec}"])
    assert _wait_gone(int(pidfile.read_text()))


@pytest.mark.parametrize("spec, fragment", [
    ("stdio:", "no command after 'stdio:'"),
    ("stdio:python 'unclosed", "cannot split the command"),
    ("ftp://host/mcp", "expected 'stdio:COMMAND ARGS...'"),
])
def test_bad_mcp_specs(spec, fragment):
    with pytest.raises(MCPLoadError, match=fragment):
        parse_mcp_spec(spec)
    with pytest.raises(ToolboxSpecError, match=fragment):
        load_toolbox("mcp:" + spec)


def test_a_command_that_does_not_exist():
    with pytest.raises(MCPLoadError, match="cannot start 'no-such-mcp-server-xyz': no such command"):
        load_mcp_tools("stdio:no-such-mcp-server-xyz --flag", timeout=5)


def test_builtin_spec_and_a_list_of_specs():
    assert list(load_toolbox("builtin")) == list(default_toolbox())
    assert list(load_toolbox(["builtin"])) == list(default_toolbox())
    with pytest.raises(ToolboxSpecError, match="no tools spec"):
        load_toolbox([])
