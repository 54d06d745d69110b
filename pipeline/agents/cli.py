"""The agents behind ``python -m pipeline.run --mode react|code`` and ``python -m pipeline.eval``.

    python -m pipeline.run "How many more layers has BERT base than the original Transformer?" --mode code
    python -m pipeline.run "TASK" --mode react --planner http://127.0.0.1:8000/v1 --json

``--mode react`` runs :class:`ReactJsonAgent`, ``--mode code`` :class:`ReactCodeAgent`, each
with the planner's engine. ``--json`` prints the object ``--mode rewoo`` prints: ``task``,
``plan`` (the tool calls the agent made, as ``{var, tool, input, description}``), ``evidence``
(``{var: output}``), ``answer``, ``stats`` (``llm_calls``, ``prompt_tokens``,
``completion_tokens``, ``wall_s``, ``iterations``, ``tool_calls``, ``errors``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pipeline.agents.agent import Agent, AgentMaxIterationsError
from pipeline.agents.react import ReactCodeAgent, ReactJsonAgent

__all__ = ["AGENT_MODES", "make_agent", "run_agent_cli", "eval_runner"]

AGENT_MODES = {"react": ReactJsonAgent, "code": ReactCodeAgent}


def make_agent(mode: str, engine: Any, toolbox: Any, **kw) -> Agent:
    """The agent of a CLI ``--mode`` (react or code) over ``toolbox``."""
    if mode not in AGENT_MODES:
        raise ValueError(f"unknown agent mode {mode!r}; use one of {', '.join(AGENT_MODES)}")
    return AGENT_MODES[mode](tools=toolbox, llm_engine=engine, **kw)


def _stopped_early(agent: Agent) -> str | None:
    """Why the run gave no final answer of its own (None when it did)."""
    last = agent.logs[-1] if agent.logs else {}
    error = last.get("error")
    return str(error) if isinstance(error, AgentMaxIterationsError) else None


def run_agent_cli(args, engine: Any, toolbox: Any) -> int:
    """``python -m pipeline.run --mode react|code``: run the agent, print the steps (or, with
    ``--json``, one object), write ``--trace``. Engine failures are one-line usage errors."""
    from pipeline.engines import EngineError
    from pipeline.usage import UsageError

    agent = make_agent(args.mode, engine, toolbox, verbose=0 if args.json else 1,
                       max_new_tokens=args.max_new_tokens)
    try:
        answer = agent.run(args.task)
    except EngineError as e:
        raise UsageError(str(e)) from e
    result = agent.to_dict(answer)
    if args.trace:
        Path(args.trace).write_text(json.dumps({"result": result, "trace": agent.trace}, indent=2,
                                               ensure_ascii=False, default=str))
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        s = agent.stats
        print(f"{s['llm_calls']} model calls, {s['prompt_tokens']} prompt + {s['completion_tokens']} completion "
              f"tokens, {s['iterations']} steps, {s['wall_s']:.2f} s", file=sys.stdout)
    return 0


def eval_runner(mode: str, engine: Any, **agent_kw):
    """An ``agent_factory`` for ``pipeline.eval``: ``factory(toolbox)(task) -> {"plan", "calls",
    "answer", "stats", "error"}``; ``error`` says why a run gave no answer of its own."""
    from toolkit import Tool

    def factory(box):
        if not hasattr(box, "add_tool"):  # a dict with the eval's catalog stand-ins (unseen tools): as Tools
            box = [t if isinstance(t, Tool) or not hasattr(t, "as_tool") else t.as_tool() for t in box.values()]

        def run(task: str) -> dict:
            agent = make_agent(mode, engine, box, **agent_kw)
            answer = agent.run(task)
            out = agent.to_dict(answer)
            calls = [{"name": a.tool, "arguments": a.arguments if isinstance(a.arguments, dict) else {}}
                     for a in agent.actions if a.status == "ok"]
            return {"plan": out["plan"], "calls": calls, "answer": out["answer"], "stats": out["stats"],
                    "error": _stopped_early(agent)}
        return run
    return factory
