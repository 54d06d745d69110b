"""`python -m pipeline.run`: the --json contract, --trace, --tools, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.run import main

TOOLS_FILE = '''
from toolkit import tool, Toolbox

@tool
def lookup(query: str) -> str:
    """Look a film up.

    Args:
        query: the film's title
    """
    return "Killers of the Flower Moon was directed by Martin Scorsese."

toolbox = Toolbox([lookup])
'''


@pytest.fixture
def tools_file(tmp_path):
    p = tmp_path / "my_tools.py"
    p.write_text(TOOLS_FILE)
    return p


def test_cli_json_trace_and_tools_in_a_real_process(tiny_model_dir, tools_file, tmp_path):
    trace = tmp_path / "trace.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.run", "Who directed 'Killers of the Flower Moon'?", "--planner",
         str(tiny_model_dir), "--tools", f"{tools_file}:toolbox", "--json", "--trace", str(trace),
         "--max-new-tokens", "120"],
        capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Loading weights" not in proc.stderr  # quiet by default (-v shows the bars)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"task", "plan", "evidence", "answer", "stats"}
    assert out["plan"] and all(set(s) == {"var", "tool", "input", "description"} for s in out["plan"])
    assert all(s["tool"] == "lookup" for s in out["plan"])  # the toolbox was replaced
    assert set(out["evidence"]) == {s["var"] for s in out["plan"]}
    assert all("Martin Scorsese" in t for t in out["evidence"].values())
    for key in ("llm_calls", "prompt_tokens", "completion_tokens", "wall_s"):
        assert isinstance(out["stats"][key], (int, float))
    assert out["stats"]["llm_calls"] == 2  # planner + solver: lookup takes one string
    saved = json.loads(trace.read_text())
    model_calls = [t for t in saved["trace"] if t["role"] != "tool"]  # streamed: tools may end first
    assert model_calls[0]["role"] == "planner" and saved["trace"][-1]["role"] == "solver"
    assert saved["result"] == out | {"stats": saved["result"]["stats"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, fragment", [
    (["t", "--planner", "./no/such/model"], "model path ./no/such/model does not exist"),
    (["t", "--planner", "/tmp/definitely-missing-model-dir"], "does not exist"),
    (["t", "--planner", "PORT"], "cannot reach http://127.0.0.1:"),
    (["t", "--planner", "TINY", "--tools", "nonexistent_file.py:box"], "--tools nonexistent_file.py:box"),
    (["t", "--planner", "TINY", "--tools", "no_colon_here"], "--tools no_colon_here"),
    (["t", "--planner", "TINY", "--replan", "-1"], "--replan must be 0 or more"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, fragment, tiny_model_dir, capsys, monkeypatch):
    argv = [a.replace("TINY", str(tiny_model_dir)) for a in argv]
    argv = [f"http://127.0.0.1:{_free_port()}/v1" if a == "PORT" else a for a in argv]
    if any(a.startswith("http://") for a in argv):  # no retries with backoff: the port is closed
        from pipeline import engines
        monkeypatch.setattr(engines.OpenAIEngine, "__init__", _fast_openai_init(engines.OpenAIEngine.__init__))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]  # (a model that did load may have drawn its progress bar first)
    assert last.startswith("error: ") and fragment in last
    assert "Traceback" not in err


def _fast_openai_init(init):
    def fast(self, base_url, model=None, api_key=None, max_new_tokens=256, temperature=0.0, timeout=5.0,
             retries=1, backoff=0.01):
        return init(self, base_url, model, api_key, max_new_tokens, temperature, timeout, retries, backoff)
    return fast


def test_cli_unparseable_plan_shows_the_raw_output(tiny_model_dir, capsys):
    assert main(["Who?", "--planner", str(tiny_model_dir), "--no-constrain", "--max-new-tokens", "16"]) == 2
    err = capsys.readouterr().err
    assert "\nerror: the planner's output is not a valid plan" in "\n" + err and "\nthe planner wrote:\n" in err
    assert "Traceback" not in err


def test_cli_debug_shows_the_traceback_and_keeps_exit_2(tiny_model_dir, capsys):
    assert main(["t", "--planner", "./no/such/model", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "does not exist" in err and err.strip().splitlines()[-1].startswith("error: ")


def test_cli_terminal_view(tiny_model_dir, tools_file, capsys):
    assert main(["Who directed it?", "--planner", str(tiny_model_dir), "--tools", f"{tools_file}:toolbox",
                 "--max-new-tokens", "100"]) == 0
    out = capsys.readouterr().out
    assert "Task: Who directed it?" in out and "Plan" in out and "#E1" in out and "Answer" in out
    assert "#E1 planned" in out and "#E1 started" in out  # streamed: steps shown as they are written
    assert "model calls" in out and "completion tokens" in out


@pytest.mark.parametrize("argv, fragment", [
    (["x", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["", "--json"], "the task is empty"),
    (["   "], "the task is empty"),
    (["x", "--tool-timeout", "-1"], "--tool-timeout must be a positive number of seconds, got -1"),
    (["x", "--tool-timeout", "0"], "--tool-timeout must be a positive number of seconds, got 0"),
    (["x", "--tool-timeout", "nan"], "--tool-timeout must be a positive number"),
    (["x", "--threads", "0"], "--threads must be at least 1"),
])
def test_cli_flags_out_of_range_are_one_line_exit_2_before_any_model_loads(argv, fragment, capsys, monkeypatch):
    """Checked before the default models load (a loader that is called fails the test)."""
    from pipeline import defaults

    monkeypatch.setattr(defaults, "default_models", lambda: pytest.fail("a model loaded before the flags were checked"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: ") and fragment in err


def test_cli_debug_keeps_exit_code_2_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", "x", "--max-new-tokens", "0", "--debug"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error: --max-new-tokens")


@pytest.fixture
def server_that_wants_a_key():
    """A real HTTP server on loopback that answers 401 to everything, as ``python -m serve --api-key``."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"error": {"message": "missing or wrong API key", "code": "invalid_api_key"}}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("key", [None, "wrong"])
def test_cli_401_names_rewoo_api_key(server_that_wants_a_key, key, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    if key:
        monkeypatch.setenv("REWOO_API_KEY", key)
    else:
        monkeypatch.delenv("REWOO_API_KEY", raising=False)
    assert main(["t", "--planner", server_that_wants_a_key]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "answered 401" in last and "set $REWOO_API_KEY to the server's" in last
    assert ("was refused" in last) == bool(key)
