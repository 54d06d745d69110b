"""Running the code agents' code: in the OS-isolated sandbox worker, the agent's tools called
back in this process, the agent's state as the code's variables.

    outcome = run_code("x = search(query='BERT')\nprint(x)", agent, thought="look BERT up")
    outcome.printed, outcome.value, outcome.error, outcome.answered, outcome.answer

The code runs in a forked child of an isolated worker (``toolkit.sandbox.Sandbox``: network
namespace, Landlock, rlimits, no_new_privs, an unprivileged uid, killed at the wall clock), under
the AST interpreter's checks. A tool call in the code travels to this process over the worker's
channel, is recorded and run by the agent (``Agent.call_tool``: the tool validates its
arguments), and its result goes back as data. The variables persist between steps by value: the
sandbox sends them back after each run and they live in ``agent.state``; what is not data is
not kept, and the model is told. What the sandbox refuses, and what the code raises, is the
model's to fix: it comes back as ``outcome.error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.agents.agent import Agent

__all__ = ["CodeOutcome", "run_code"]


@dataclass
class CodeOutcome:
    """One run of the model's code. ``value``: its last expression's value (None without one;
    its repr when it is not data); ``printed``: what it printed; ``error``: why it failed (None
    when it ran through); ``answered``: it called ``final_answer``, whose argument is ``answer``;
    ``dropped``: variables not kept for the next step, with why."""

    printed: str
    value: Any = None
    error: str | None = None
    answered: bool = False
    answer: Any = None
    value_repr: str | None = None
    dropped: dict[str, str] = field(default_factory=dict)

    def observation(self) -> str:
        """What the model reads back after a code step."""
        parts = [f"Print outputs:\n{self.printed.rstrip()}" if self.printed.strip() else "Print outputs:\n(none)"]
        if self.value is not None and self.error is None and not self.answered:
            parts.append(f"Last output from code snippet:\n{self.value_repr or repr(self.value)}")
        if self.dropped:
            parts.append("Not kept for the next step: " + "; ".join(f"{k} ({v})" for k, v in self.dropped.items()))
        return "\n".join(parts)

    def error_text(self) -> str:
        shown = f"\nPrinted before the error:\n{self.printed.rstrip()}" if self.printed.strip() else ""
        return f"the code failed: {self.error}{shown}"


def run_code(code: str, agent: "Agent", thought: str = "") -> CodeOutcome:
    """Run the model's ``code`` for ``agent`` in its sandbox: its tools (every call recorded,
    ``thought`` as the call's description), its state, its authorized imports."""
    answer: dict[str, Any] = {}
    tools = agent.callable_tools(lambda: thought)
    recorded_final = tools["final_answer"]

    def final_answer(*args, **kwargs):
        value = recorded_final(*args, **kwargs)
        answer["value"] = value
        return value

    tools["final_answer"] = final_answer
    result = agent.sandbox.run(code, tools=tools, state=agent.state)
    value = None
    if result.value is not None:
        value = result.data if result.data is not None else result.value
    outcome = CodeOutcome(result.output, value, result.error, value_repr=result.value, dropped=result.dropped)
    if "value" in answer:
        outcome.answered, outcome.answer = True, answer["value"]
    return outcome
