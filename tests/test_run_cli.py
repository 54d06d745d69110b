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
    assert "\nerror: the planner's output is not a valid plan" in err and "\nthe planner wrote:\n" in err
    assert "Traceback" not in err


def test_cli_debug_shows_the_traceback(tiny_model_dir):
    with pytest.raises(Exception, match="does not exist"):
        main(["t", "--planner", "./no/such/model", "--debug"])


def test_cli_terminal_view(tiny_model_dir, tools_file, capsys):
    assert main(["Who directed it?", "--planner", str(tiny_model_dir), "--tools", f"{tools_file}:toolbox",
                 "--max-new-tokens", "100"]) == 0
    out = capsys.readouterr().out
    assert "Task: Who directed it?" in out and "Plan" in out and "#E1" in out and "Answer" in out
    assert "#E1 planned" in out and "#E1 started" in out  # streamed: steps shown as they are written
    assert "model calls" in out and "completion tokens" in out
