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


def plan_constraint(tool_names: list[str], max_new_tokens: int, max_steps: int = 6, first: int = 1) -> Constraint:
    return Constraint("grammar", constrain_mod.plan_grammar(tool_names, max_new_tokens, max_steps, first=first))


def make_plan(task: str, toolbox: Any, engine: Engine, *, template: str = "alpaca", constrain: bool = True,
              max_new_tokens: int = 512, max_steps: int = 6, examples: str | None = None,
              history: tuple[Plan, dict[str, str]] | None = None) -> tuple[Plan, str]:
    """Plan ``task`` with the tools of ``toolbox``; returns the plan and the model's raw text.

    ``history``: ``(plan so far, {var: status})`` for a replanning round; the new steps are
    numbered after it and may use its variables (the prompt is :func:`formats.replan_prompt`).
    """
    specs = formats.tool_specs(toolbox)
    names = [s.name for s in specs]
    done, status = history if history is not None else (Plan(()), {})
    first = len(done) + 1
    constraint = None
    if constrain and engine.supports_constraints:
        constraint = plan_constraint(names, max_new_tokens, max_steps, first)
    if history is not None:
        prompt = formats.replan_prompt(task, specs, done.steps, status, template, examples)
    else:
        prompt = formats.planner_prompt(task, specs, template, examples)
    with role("planner"):
        if template == "alpaca":
            out = engine.complete(prompt, stop_sequences=formats.ALPACA_STOP, max_new_tokens=max_new_tokens,
                                  constraint=constraint)
        else:
            out = engine.chat(prompt, max_new_tokens=max_new_tokens, constraint=constraint)
    try:
        plan = formats.parse_planner_output(out.text, specs, defined=done.vars)
        want = [f"#E{first + i}" for i in range(len(plan))]
        if history is not None and plan.vars != want:  # a round continues the numbering
            raise PlanError(f"steps must be numbered {', '.join(want)} in order, not {', '.join(plan.vars)}")
        return plan, out.text
    except PlanError as e:
        err = PlanError(f"the planner's output is not a valid plan: {e.reason}", e.line)
        err.raw_output = out.text
        raise err from e
