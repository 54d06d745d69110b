"""Run a ReWOO agent on one task.

    python -m pipeline.run "Who directed the film 'Killers of the Flower Moon'?"
    python -m pipeline.run "TASK" --planner ./outputs/planner-merged --caller ./outputs/caller-merged
    python -m pipeline.run "TASK" --planner http://127.0.0.1:8000/v1 --json --trace trace.json
    python -m pipeline.run "TASK" --tools my_tools.py:toolbox
    python -m pipeline.run "TASK" --tools builtin --tools "mcp:stdio:python my_mcp_server.py"
    python -m pipeline.run "TASK" --mode react|code     (the ReAct / Code agents instead of ReWOO)

``--planner``, ``--caller``, ``--solver`` take a local model folder, a model name, or an
OpenAI-compatible base URL (``http://host:port/v1``); the solver defaults to the planner's
engine. With no model given, the demo models are used. ``--json`` prints one object: ``task``,
``plan`` (``[{var, tool, input, description}]``), ``evidence`` (``{var: text}``), ``answer``,
``stats``. Without it, a terminal view shows the plan as a table, the evidence as it fills and
the answer.

``stats`` always has ``llm_calls``, ``prompt_tokens``, ``completion_tokens``, ``wall_s``; the rest
depends on ``--mode``:

- ``rewoo``: ``steps`` (plan steps), ``caller_calls`` (function-caller calls), ``tool_errors``
  (steps whose tool failed), ``rounds`` (planner rounds, replanning included), ``streamed``
  (steps dispatched while the plan was written), and ``replan_error`` when a replanning round failed;
- ``react`` and ``code``: ``iterations`` (agent steps), ``tool_calls``, ``errors`` (steps that
  raised an error the agent saw); ``plan`` lists the tool calls the agent made.

Bad input (an empty task, a flag out of range, an unreachable endpoint, a missing model path, a
bad ``--tools`` spec, a plan that does not parse) prints one line and exits with code 2;
``--debug`` shows the traceback as well (the code stays 2).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from pathlib import Path
from typing import Any

from pipeline.usage import EXIT_BAD_INPUT, UsageError


def build_parser() -> argparse.ArgumentParser:
    from toolkit.helpformat import HelpFormatter

    p = argparse.ArgumentParser(
        prog="python -m pipeline.run", formatter_class=HelpFormatter,
        description="Run a ReWOO agent (or, with --mode, a ReAct / Code agent) on one task.",
        epilog="--json stats: llm_calls, prompt_tokens, completion_tokens, wall_s; with --mode rewoo also steps, "
               "caller_calls, tool_errors, rounds, streamed (replan_error when replanning failed); with --mode "
               "react|code also iterations, tool_calls, errors.")
    p.add_argument("task", help="the task, in quotes")
    p.add_argument("--planner", help="planner model: local path, model name or http://host:port/v1")
    p.add_argument("--caller", help="function-caller model (same forms); default: the default caller adapter "
                                    "when the planner is the default, else none")
    p.add_argument("--solver", help="solver model (same forms); default: the planner's engine")
    p.add_argument("--backend", choices=["auto", "transformers", "llamacpp"], default=None,
                   help="what runs the default models: llamacpp (their GGUF files, made once), transformers, or "
                        "auto: llamacpp when installed (make install-llamacpp); default $REWOO_BACKEND or auto. "
                        "A .gguf --planner always runs on llama.cpp")
    p.add_argument("--tools", action="append", metavar="SPEC",
                   help="replace the toolbox: FILE.py:NAME, module:NAME, builtin (the built-in tools) or "
                        "mcp:SERVER (mcp:stdio:COMMAND ARGS or mcp:http://host:port/mcp); repeat to combine")
    p.add_argument("--mode", choices=["rewoo", "react", "code"], default="rewoo",
                   help="rewoo (plan, then work, then solve), or the ReAct / Code agents (their --json stats "
                        "keys differ: see below)")
    p.add_argument("--template", choices=["alpaca", "chat"], default="alpaca",
                   help="prompt template the models were trained on (default alpaca)")
    p.add_argument("--max-new-tokens", type=int, help="planner token budget (default 512; the demo's own "
                                                      "with the demo models)")
    p.add_argument("--no-constrain", action="store_true", help="decode without the plan grammar / call schemas")
    add_tool_prior_arg(p)
    p.add_argument("--tool-timeout", type=float, default=60.0, help="seconds per tool call (default 60)")
    p.add_argument("--replan", type=int, metavar="N",
                   help="rounds of replanning while steps fail: the planner sees their errors, never the "
                        "evidence of steps that worked (default 1; 0 for the default models, which were "
                        "not trained to replan; 0: off)")
    p.add_argument("--load-in-4bit", action="store_true", help="load local models in 4-bit NF4 (bitsandbytes)")
    p.add_argument("--threads", type=int, help="threads for local models (default: torch 1 on machines with at "
                                               "most 2 cores, measured faster there, else torch's own; llama.cpp "
                                               "every core)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the terminal view")
    p.add_argument("--trace", metavar="FILE", help="write every model and tool call to FILE (JSON)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the libraries' progress bars and notes that are hidden by default (toolkit.quiet)")
    return p


def add_tool_prior_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tool-prior", type=float, metavar="LOGITS",
                   help="lean each plan step's tool towards the listed tools whose name and description share "
                        "words with the step's Plan: line, by up to this many logits (in-process models, with "
                        "the plan grammar; 0: off; default: the demo's own setting with the demo models, else 0)")


def check_tool_prior(args) -> None:
    prior = getattr(args, "tool_prior", None)
    if prior is not None and not (math.isfinite(prior) and prior >= 0):
        raise UsageError(f"--tool-prior must be a number of logits >= 0, got {prior:g}")


def check_args(args) -> None:
    """The flags' values, checked before anything loads: :class:`UsageError` naming the flag."""
    if not args.task.strip():
        raise UsageError('the task is empty; give it in quotes, e.g. python -m pipeline.run "Compute 12 + 30."')
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not (math.isfinite(args.tool_timeout) and args.tool_timeout > 0):
        raise UsageError(f"--tool-timeout must be a positive number of seconds, got {args.tool_timeout:g}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    check_tool_prior(args)


def _engine(spec: str | None, args) -> Any:
    from pipeline.engines import load_engine

    if spec is None:
        return None
    kw = {}
    if getattr(args, "load_in_4bit", False) and not spec.startswith(("http://", "https://")):
        kw["load_in_4bit"] = True
    return load_engine(spec, **kw)


def _default_models() -> dict:
    """The default models (``pipeline.defaults``): the base converted on first use, the shipped adapters."""
    from pipeline import defaults

    try:
        return defaults.default_models()
    except defaults.DefaultModelError as e:
        raise UsageError(str(e)) from e


def _toolbox(args, demo: dict | None = None) -> Any:
    """``--tools``, else the default toolbox (the default models' own tool list when running them)."""
    from toolkit import default_toolbox, load_toolbox

    if args.tools:
        try:
            return load_toolbox(args.tools)
        except (ValueError, ImportError, OSError, AttributeError) as e:
            specs = " --tools ".join(args.tools) if isinstance(args.tools, list) else args.tools
            raise UsageError(f"--tools {specs}: {e}") from e
    return default_toolbox(tools=demo["tools"] if demo else None)


def set_threads(threads: int | None) -> None:
    """torch threads for in-process models: ``threads``, else 1 on machines with at most 2 cores
    (there a second thread competes with the tools and the OS: see bench/bench_demo.py --speed).
    Only in a process that has imported torch: :func:`build_engines` calls it again once the
    engines are loaded, and a process whose models all run on llama.cpp never imports torch
    (~2.5 s of a cold start on 2 cores)."""
    import os
    import sys

    if threads:  # llama.cpp models (pipeline.llamacpp) take it too; their own default is every core
        os.environ["REWOO_LLAMACPP_THREADS"] = str(threads)
    threads = threads or (1 if (os.cpu_count() or 1) <= 2 else None)
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def build_engines(args) -> tuple[Any, dict | None, Any, Any, Any]:
    """``(toolbox, demo, planner, caller, solver)`` from the flags. ``--tools`` is checked before
    any model is loaded, so a bad spec fails at once. With no ``--planner`` the default models
    run: one base in memory with the planner and caller adapters (``pipeline.defaults``); the
    solver is the planner's engine unless ``--solver`` names another. The toolbox's ``llm`` tool
    gets the solver's engine when it has none."""
    from pipeline.defaults import DefaultModelError
    from pipeline.engines import EngineError

    toolbox = _toolbox(args) if args.tools else None
    set_threads(getattr(args, "threads", None))
    demo = _default_models() if args.planner is None else None
    if toolbox is None:
        toolbox = _toolbox(args, demo)
    try:
        if demo is not None:
            from pipeline.defaults import default_engines
            planner, default_caller = default_engines(demo, load_in_4bit=getattr(args, "load_in_4bit", False),
                                                      backend=getattr(args, "backend", None))
        else:
            planner, default_caller = _engine(args.planner, args), None
        caller = _engine(args.caller, args) if args.caller else default_caller
        solver = _engine(args.solver, args) if args.solver else planner
    except (EngineError, ValueError, DefaultModelError) as e:
        raise UsageError(str(e)) from e
    set_threads(getattr(args, "threads", None))  # the models loaded may have imported torch
    if "llm" in toolbox and getattr(toolbox["llm"], "engine", "absent") is None:
        toolbox["llm"].engine = solver
    return toolbox, demo, planner, caller, solver


def agent_engine(demo: dict | None, planner):
    """The engine ``--mode react|code`` runs on: with the default models, their agent adapter
    when the manifest ships one (:func:`pipeline.defaults.agent_engine`); else the planner's."""
    if demo is None:
        return planner
    from pipeline.defaults import agent_engine as default_agent_engine
    return default_agent_engine(demo, planner)


class TerminalView:
    """The plan as a table, each step's evidence as it lands, then the answer (rich)."""

    def __init__(self, console):
        self.console = console
        self.streamed = False

    def __call__(self, kind: str, payload: Any) -> None:
        from rich.table import Table

        if kind == "step":  # streamed: a step as soon as the planner has written it
            if not self.streamed:
                self.console.print("[bold]Plan[/bold] [dim](each step starts as soon as it is written and its "
                                   "inputs are ready)[/dim]")
            self.streamed = True
            self.console.print(f"[bold]{payload.var}[/bold] [cyan]planned[/cyan] {payload.tool}[{payload.input}]"
                               f"  [dim]{payload.description}[/dim]", highlight=False)
        elif kind == "start" and self.streamed:
            self.console.print(f"[bold]{payload}[/bold] [cyan]started[/cyan]", highlight=False)
        elif kind == "plan" and self.streamed:
            pass  # its steps were shown as they were written
        elif kind in ("plan", "replan"):
            title = "Plan" if kind == "plan" else "Steps failed: the planner's next round"
            table = Table(title=title, show_lines=False, expand=False)
            for col in ("var", "tool", "input", "plan"):
                table.add_column(col, overflow="fold")
            for s in payload:
                table.add_row(s.var, s.tool, s.input, s.description)
            self.console.print(table)
        elif kind == "calls":
            for call in payload.values():
                if call.via == "caller" and call.error is None:
                    self.console.print(f"[dim]{call.var} {call.tool}({json.dumps(call.arguments, ensure_ascii=False)})"
                                       " by the function caller[/dim]")
        elif kind == "done":
            style = {"ok": "green", "skipped": "yellow"}.get(payload.status, "red")
            text = payload.text if len(payload.text) <= 400 else payload.text[:400] + " ..."
            text = text.replace("\n", "\n  ")  # keep multi-line evidence under its step
            self.console.print(f"[bold]{payload.var}[/bold] [{style}]{payload.status}[/{style}] "
                               f"[dim]{payload.tool} " + (f"same call as {payload.extra['same_as']}" if "same_as" in payload.extra
                                                          else f"{payload.seconds:.2f}s") + f"[/dim]\n  {text}", highlight=False)
        elif kind == "answer":
            from rich.panel import Panel
            self.console.print(Panel(payload or "(empty answer)", title="Answer", expand=False))


def pipeline_settings(args, demo: dict | None) -> dict:
    """Planner budget, step limit and tool prior: the flags, else the demo's own settings, else the defaults."""
    base = dict(demo["pipeline"]) if demo else {"planner_max_new_tokens": 512, "max_steps": 6}
    if args.max_new_tokens is not None:
        base["planner_max_new_tokens"] = args.max_new_tokens
    check_tool_prior(args)
    if getattr(args, "tool_prior", None) is not None:
        base["tool_prior"] = args.tool_prior
    if getattr(args, "replan", None) is not None:
        base["replan"] = args.replan
    return base


def run(args) -> int:
    from rich.console import Console

    check_args(args)
    from toolkit.quiet import quiet_libraries

    quiet_libraries(verbose=args.verbose, progress_bars=args.verbose)
    from pipeline.engines import EngineError
    from pipeline.plan import PlanError

    if args.replan is not None and args.replan < 0:
        raise UsageError(f"--replan must be 0 or more rounds, not {args.replan}")
    if args.mode != "rewoo":
        try:
            from pipeline import agents  # noqa: F401
        except ImportError as e:
            raise UsageError(f"--mode {args.mode} needs pipeline.agents, which this checkout does not have yet; "
                             "use --mode rewoo") from e
    toolbox, demo, planner, caller, solver = build_engines(args)

    if args.mode != "rewoo":
        from pipeline.agents import run_agent_cli
        return run_agent_cli(args, agent_engine(demo, planner), toolbox)

    from pipeline.rewoo import Pipeline

    settings = pipeline_settings(args, demo)
    pipe = Pipeline(planner, caller, solver, toolbox, template=args.template, constrain=not args.no_constrain,
                    tool_timeout=args.tool_timeout, **settings)
    console = Console(stderr=False, highlight=False)
    view = None if args.json else TerminalView(console)
    if view:
        console.print(f"[bold]Task:[/bold] {args.task}")
    try:
        result = pipe.run(args.task, on_event=view)
    except PlanError as e:
        raw = getattr(e, "raw_output", None)
        shown = f"\nthe planner wrote:\n{raw}" if raw is not None else ""
        raise UsageError(f"{e}{shown}") from e
    except EngineError as e:
        raise UsageError(str(e)) from e
    if args.trace:
        Path(args.trace).write_text(json.dumps({"result": result.to_dict(), "calls": {v: c.to_dict() for v, c in
                                                                                        result.calls.items()},
                                                "trace": result.trace}, indent=2, ensure_ascii=False))
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        s = result.stats
        console.print(f"[dim]{s['llm_calls']} model calls, {s['prompt_tokens']} prompt + {s['completion_tokens']} "
                      f"completion tokens, {s['wall_s']:.2f} s[/dim]")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
