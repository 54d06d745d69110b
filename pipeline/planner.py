"""The planner: one model call writes the whole plan, before any tool runs (ReWOO).

    from pipeline.planner import make_plan
    plan, raw = make_plan("Who directed Oppenheimer?", toolbox, engine)

The prompt comes from ``formats`` with the toolbox's ``name[input]: description`` lines. With
``constrain=True`` and an engine that enforces constraints, decoding follows the plan grammar
compiled with the toolbox's tool names and bounded by ``max_new_tokens``, so the output always
parses; otherwise an unparseable output raises ``PlanError`` carrying the raw text
(``err.raw_output``).
"""

from __future__ import annotations

from typing import Any

from pipeline import formats
from pipeline.engines import Constraint, Engine, role
from pipeline.formats import constrain as constrain_mod
from pipeline.plan import Plan, PlanError


def plan_constraint(tool_names: list[str], max_new_tokens: int, max_steps: int = 6) -> Constraint:
    return Constraint("grammar", constrain_mod.plan_grammar(tool_names, max_new_tokens, max_steps))


def make_plan(task: str, toolbox: Any, engine: Engine, *, template: str = "alpaca", constrain: bool = True,
              max_new_tokens: int = 512, max_steps: int = 6, examples: str | None = None) -> tuple[Plan, str]:
    """Plan ``task`` with the tools of ``toolbox``; returns the plan and the model's raw text."""
    specs = formats.tool_specs(toolbox)
    names = [s.name for s in specs]
    constraint = None
    if constrain and engine.supports_constraints:
        constraint = plan_constraint(names, max_new_tokens, max_steps)
    with role("planner"):
        if template == "alpaca":
            out = engine.complete(formats.planner_prompt(task, specs, "alpaca", examples),
                                  stop_sequences=formats.ALPACA_STOP, max_new_tokens=max_new_tokens,
                                  constraint=constraint)
        else:
            out = engine.chat(formats.planner_prompt(task, specs, "chat", examples),
                              max_new_tokens=max_new_tokens, constraint=constraint)
    try:
        return formats.parse_planner_output(out.text, specs), out.text
    except PlanError as e:
        err = PlanError(f"the planner's output is not a valid plan: {e.reason}", e.line)
        err.raw_output = out.text
        raise err from e
