"""The solver: one model call turns the task, the plan and its evidence into the answer.

    from pipeline.solver import solve
    answer = solve(task, plan, {"#E1": "Martin Scorsese"}, engine)
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from pipeline import formats
from pipeline.engines import Engine, role
from pipeline.plan import Plan


# A whole answer that is one tool call, maybe after a label or a variable: "Llm[...]",
# "Saved_file: saves_file[...]", "E1 = search_hotels[...]" (seen on the v25 default).
_CALL_RE = re.compile(r"(?:[\w ]{1,30}:\s*)?(?P<var>#?E\d+\s*=\s*)?(?P<name>[A-Za-z_][\w.\-]*)\[[^\n]*\]\.?")
# A whole answer that only names a variable: "#E2", "Same as #E3."
_VAR_RE = re.compile(r"(?:same as\s+)?(?P<var>#E\d+)\.?", re.IGNORECASE)


def _is_tool_call(answer: str, tools: list[str]) -> bool:
    """True when ``answer`` is a call of a tool: ``name[...]`` with ``name`` a plan's tool in any case
    or misspelt a little, or any name after a variable (``E1 = tool[...]``)."""
    m = _CALL_RE.fullmatch(answer)
    if m is None:
        return False
    name = m["name"].lower()
    return m["var"] is not None or any(difflib.SequenceMatcher(None, name, t.lower()).ratio() >= 0.8 for t in tools)


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
    ref = _VAR_RE.fullmatch(answer)
    if ref and ref["var"].upper() in evidence:  # it named a variable: that is its evidence
        return str(evidence[ref["var"].upper()]).strip()
    if _is_tool_call(answer, [s.tool for s in plan.steps]):  # a call is no answer
        answer = ""
    if not answer and plan.steps:  # it wrote only plan steps or a call: the last step's evidence is all there is
        answer = str(evidence.get(plan.steps[-1].var, "")).strip()
    return answer
