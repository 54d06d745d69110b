"""The solver: one model call turns the task, the plan and its evidence into the answer.

    from pipeline.solver import solve
    answer = solve(task, plan, {"#E1": "Martin Scorsese"}, engine)
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline import formats
from pipeline.engines import Engine, role
from pipeline.plan import Plan


def solve(task: str, plan: Plan, evidence: Mapping[str, str], engine: Engine, *, template: str = "alpaca",
          max_new_tokens: int = 256) -> str:
    """The answer to ``task``; ``evidence`` maps each variable to its text."""
    with role("solver"):
        if template == "alpaca":
            out = engine.complete(formats.solver_prompt(task, plan.steps, evidence), stop_sequences=formats.ALPACA_STOP,
                                  max_new_tokens=max_new_tokens)
        else:
            out = engine.chat(formats.solver_prompt(task, plan.steps, evidence, "chat"), max_new_tokens=max_new_tokens)
    answer = formats.parse_answer(out.text)
    if not answer and plan.steps:  # it wrote only plan steps: the last step's evidence is all there is
        answer = str(evidence.get(plan.steps[-1].var, "")).strip()
    return answer
