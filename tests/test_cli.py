"""The `rewoo` command (pipeline/cli.py, `python -m pipeline`), `rewoo chat`, `rewoo ui`, and the
`--help` of every entry point (each option explained, each default shown)."""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from pipeline import cli
from pipeline.chat import ChatSession, run_session, with_context
from tests.kit import ScriptedEngine
from toolkit import Toolbox, tool

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def all_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command line of the stack, by the command that runs it."""
    import pipeline.chat
    import pipeline.eval
    import pipeline.run
    import serve.__main__
    import serve.quantize
    import train.__main__
    import train.datagen
    import train.demo
    import train.merge

    return {"python -m pipeline.run": pipeline.run.build_parser(),
            "python -m pipeline.eval": pipeline.eval.build_parser(),
            "rewoo chat": pipeline.chat.build_parser(),
            "rewoo": cli.build_parser(),
            "rewoo ui": cli.ui_parser(),
            "python -m train sft": train.__main__.sft_parser(),
            "python -m train.datagen": train.datagen.build_parser(),
            "python -m train.demo": train.demo.build_parser(),
            "python -m train merge": train.merge.build_parser(),
            "python -m serve": serve.__main__._parser(),
            "python -m serve.quantize": serve.quantize.build_parser()}


def test_every_option_has_help_and_shows_its_default(monkeypatch):
    monkeypatch.setenv("REWOO_API_KEY", "key-that-must-not-show")
    problems = []
    for command, parser in all_parsers().items():
        if not (parser.description or "").rstrip().endswith((".", ")")):
            problems.append(f"{command}: the description stops mid-sentence: {parser.description!r}")
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            name = "/".join(action.option_strings) or action.dest
            text = formatter._expand_help(action) if action.help else ""
            if not text.strip():
                problems.append(f"{command} {name}: no help")
            default = action.default
            if default not in (None, False, "", [], argparse.SUPPRESS) and "default" not in text.lower():
                problems.append(f"{command} {name}: the default {default!r} is not shown")
        if "key-that-must-not-show" in parser.format_help():
            problems.append(f"{command}: --help prints the API key from the environment")
    assert not problems, "\n".join(problems)
    serve_help = all_parsers()["python -m serve"].format_help()
    assert "(default: 127.0.0.1)" in serve_help and "(default: 8000)" in serve_help


def test_run_help_documents_mode_and_both_stats_key_sets():
    text = " ".join(all_parsers()["python -m pipeline.run"].format_help().split())
    assert "--mode {rewoo,react,code}" in text
    for key in ("llm_calls", "steps", "caller_calls", "tool_errors", "rounds", "iterations", "tool_calls", "errors"):
        assert key in text, key
    import pipeline.run
    assert "--mode react|code" in pipeline.run.__doc__ and "``iterations``" in pipeline.run.__doc__


def test_rewoo_lists_its_commands_and_refuses_unknown_ones(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("run", "chat", "eval", "serve", "train", "merge", "quantize", "datagen", "demo", "ui"):
        assert f"\n    {name} " in out, name
    assert cli.main(["fly"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "unknown command 'fly'" in err
    assert cli.main([]) == 2


def test_console_script_points_at_the_cli():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["rewoo"].partition(":")
    assert (module, func) == ("pipeline.cli", "main")


def test_commands_forward_arguments_errors_and_exit_codes(tmp_path, capsys):
    from pipeline import run as run_module

    assert run_module.main(["  ", "--json"]) == 2
    direct = capsys.readouterr().err
    assert cli.main(["run", "  ", "--json"]) == 2
    assert capsys.readouterr().err == direct and direct.count("\n") == 1

    assert cli.main(["eval", "--tasks", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "none.jsonl" in err

    # merge.sh's positional form: a folder without an adapter is one line, exit 2, nothing written
    assert cli.main(["merge", str(tmp_path), str(tmp_path / "no-adapter"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and not (tmp_path / "out").exists()

    with pytest.raises(SystemExit) as e:  # argparse's own usage error, as the module gives it
        cli.main(["datagen", "--planner", "many"])
    assert e.value.code == 2


def test_serve_default_is_one_line_when_the_demo_models_are_missing(tmp_path, monkeypatch, capsys):
    from pipeline import defaults

    monkeypatch.setattr(defaults, "DEMO_DIR", tmp_path)
    assert cli.main(["serve", "--model", "default", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "no default models" in err and str(tmp_path) in err


def test_model_default_becomes_the_demo_base_and_planner_adapter(monkeypatch):
    """--model default: the base with the planner adapter, and the agent adapter as the agents' model
    when the manifest has one (before v32 it had none: then the planner's alone)."""
    from pipeline import defaults

    adapters = {"planner": "/demo/planner", "caller": "/demo/caller"}
    settings = {"max_steps": 4}  # a manifest from before the tool prior
    monkeypatch.setattr(defaults, "default_models", lambda: {"base": "/cache/base", "adapters": adapters,
                                                             "pipeline": settings})
    assert cli._with_default_model(["--model", "default", "--port", "9"]) == [
        "--model", "/cache/base", "--adapter", "/demo/planner", "--served-model-name", "rewoo-demo", "--port", "9"]
    assert cli._with_default_model(["--model=default", "--served-model-name", "x"]) == [
        "--model", "/cache/base", "--adapter", "/demo/planner", "--served-model-name", "x"]
    assert cli._with_default_model(["--model", "/my/model"]) == ["--model", "/my/model"]
    adapters["agent"] = "/demo/agent"
    settings["tool_prior"] = 8.0  # the demo's tool prior for /v1/pipeline/run's planner
    assert cli._with_default_model(["--model", "default"]) == [
        "--model", "/cache/base", "--adapter", "/demo/planner", "--agent-adapter", "/demo/agent",
        "--tool-prior", "8.0", "--served-model-name", "rewoo-demo"]
    from serve.__main__ import config_from_args  # the server takes what the command passes
    cfg, _ = config_from_args(cli._with_default_model(["--model", "default"]))
    assert (cfg.adapter, cfg.agent_adapter, cfg.served_model_name, cfg.tool_prior) == (
        "/demo/planner", "/demo/agent", "rewoo-demo", 8.0)


def test_train_checks_before_any_work(tmp_path):
    """`rewoo train planner` runs the recipe's script: with no model it stops at the check (exit 2),
    before generating data; --help answers at once."""
    out = subprocess.run([sys.executable, "-m", "pipeline", "train", "planner", f"output_dir={tmp_path}/o"],
                         capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "model_name_or_path" in out.stderr and not (tmp_path / "o").exists()
    assert "generating" not in out.stdout
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "painter"])
    assert e.value.code == 2


def test_pipeline_imports_neither_train_nor_serve():
    code = ("import sys, pipeline.cli, pipeline.chat; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('train', 'serve')); "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr


def _pipeline_imports() -> dict[str, set[str]]:
    """``{module: pipeline modules it imports}`` for every module of ``pipeline/``, lazy imports
    inside functions included (read from the source, nothing imported)."""
    import ast

    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (REPO / "pipeline").rglob("*.py")}
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def test_nothing_pipeline_run_imports_imports_it_back():
    """STYLE.md's circle: pipeline.agents.cli took UsageError from pipeline.run, which calls it;
    the error lives in pipeline.usage now."""
    graph = _pipeline_imports()
    assert "pipeline.usage" in graph["pipeline.agents.cli"] and "pipeline.agents" in graph["pipeline.run"]
    seen, todo = set(), list(graph["pipeline.run"])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph[m]
    assert "pipeline.run" not in seen, sorted(m for m in seen if "pipeline.run" in graph[m])


# ------------------------------------------------------------------------------------------------
# rewoo chat
# ------------------------------------------------------------------------------------------------

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


@tool
def lookup(query: str) -> str:
    """Look a film up.

    Args:
        query: the film's title
    """
    return "Killers of the Flower Moon was directed by Martin Scorsese."


def planner_prompt(call: dict) -> str:
    return call["messages"][-1]["content"]


def test_chat_gives_earlier_turns_to_the_next_task_and_handles_commands():
    engine = ScriptedEngine([
        "Plan: find the director\n#E1 = lookup[Killers of the Flower Moon]", "Martin Scorsese",
        "Plan: more films\n#E1 = lookup[Scorsese]", "Goodfellas",
        "no plan at all",  # a turn that fails: one error line, left out of the conversation
        "Plan: again\n#E1 = lookup[Scorsese]", "Taxi Driver",
    ])
    buf = io.StringIO()
    session = ChatSession(engine, None, engine, Toolbox([lookup]), Console(file=buf, width=200),
                          settings={"replan": 0, "constrain": False})
    rc = run_session(session, ["Who directed Killers of the Flower Moon?", "/tools", "Name another film by him.",
                               "/mode nonsense", "/bogus", "/reset", "Broken turn", "Fresh question", "/exit",
                               "never asked"])
    out = buf.getvalue()
    assert rc == 0
    assert [c for c in out.splitlines() if c.startswith("lookup")] == ["lookup  Look a film up."]
    second = planner_prompt(engine.calls[2])
    assert ("Conversation so far:\nUser: Who directed Killers of the Flower Moon?\nAssistant: Martin Scorsese\n"
            "Current task: Name another film by him.") in second
    assert "Conversation so far" not in planner_prompt(engine.calls[0])
    assert "Conversation so far" not in planner_prompt(engine.calls[5])  # after /reset
    assert "error: /mode takes one of rewoo, react, code" in out and "error: unknown command /bogus" in out
    assert "error: " in out.split("Goodfellas")[1] and "no plan at all" in out  # the failed turn, shown
    assert [t.answer for t in session.turns] == ["Taxi Driver"]
    assert engine.remaining == 0  # "never asked" was not: /exit ended the session
    for answer in ("Martin Scorsese", "Goodfellas", "Taxi Driver"):
        assert answer in out


def test_chat_context_block_keeps_the_last_turns_only():
    from pipeline.chat import Turn

    turns = [Turn(f"q{i}", "a" * 400 if i == 2 else f"a{i}") for i in range(3)]
    text = with_context("now?", turns, history=2)
    assert "q0" not in text and "User: q1\nAssistant: a1" in text and text.endswith("Current task: now?")
    assert ("a" * 300 + " ...") in text and ("a" * 301) not in text
    assert with_context("now?", turns, history=0) == "now?"


def test_chat_on_a_real_tiny_model_with_piped_lines(tiny_model_dir, tmp_path, capsys):
    """The command as a user pipes it: flags, engines loaded once, one line per task or command,
    exit 0 at the end of input (in this process: the tiny model, one turn, to keep the suite fast)."""
    from pipeline.chat import main

    tools = tmp_path / "my_tools.py"
    tools.write_text(TOOLS_FILE)
    lines = io.StringIO("/tools\n/mode react\n/mode rewoo\nWho directed Killers of the Flower Moon?\n")
    assert main(["--planner", str(tiny_model_dir), "--tools", f"{tools}:toolbox", "--max-new-tokens", "80",
                 "--replan", "0"], stdin=lines) == 0
    out = capsys.readouterr().out
    assert out.count("you> ") == 4 and "lookup  Look a film up." in out
    assert "mode: react" in out and "mode: rewoo" in out
    assert out.count("─ Answer ─") == 1 and "#E1 ok lookup" in out  # the plan, the evidence, the answer
    assert main(["--history", "-1"], stdin=io.StringIO("")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --history must be 0 or more turns, got -1"


# ------------------------------------------------------------------------------------------------
# rewoo ui
# ------------------------------------------------------------------------------------------------

def test_ui_starts_the_server_prints_the_playground_and_stops_it(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "ui", "--model", str(tiny_model_dir), "--port",
                             str(port), "--log-level", "warning"], env=ENV, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "[rewoo ui] playground:" in line:
                break
        assert seen and f"http://127.0.0.1:{port}/ui" in seen[-1], "".join(seen)[-3000:]
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
        assert models
        assert json.dumps(httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=10).json()).count(
            "/v1/pipeline/run") >= 1  # the pipeline route is there for the playground
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0
    deadline = time.monotonic() + 30
    while True:  # rewoo ui took its server down with it
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
        except httpx.TransportError:
            break
        assert time.monotonic() < deadline, "the server outlived rewoo ui"
        time.sleep(0.2)
