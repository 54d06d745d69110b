"""Running the code agents' code: the sandbox's AST interpreter, the agent's tools as functions,
the agent's state as the code's variables.

    outcome = run_code("x = search(query='BERT')\\nprint(x)", agent, thought="look BERT up")
    outcome.printed, outcome.value, outcome.error, outcome.answered, outcome.answer

The code runs in this process, in ``toolkit.sandbox``'s interpreter (imports from an allow-list
only, no dunder or private attributes, no ``open``/``eval``/``exec``, operation and size caps):
the tools must run here, with their connections and models, so the OS-isolated worker process,
which cannot call back into this one, is not used for agent code. What the sandbox refuses, and
what the code raises, is the model's to fix: it comes back as ``outcome.error``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.agents.agent import Agent

__all__ = ["CodeOutcome", "run_code", "execute"]


@dataclass
class CodeOutcome:
    """One run of the model's code. ``value``: its last expression's value (None without one);
    ``printed``: what it printed; ``error``: why it failed (None when it ran through);
    ``answered``: it called ``final_answer``, whose argument is ``answer``."""

    printed: str
    value: Any = None
    error: str | None = None
    answered: bool = False
    answer: Any = None

    def observation(self) -> str:
        """What the model reads back after a code step."""
        parts = [f"Print outputs:\n{self.printed.rstrip()}" if self.printed.strip() else "Print outputs:\n(none)"]
        if self.value is not None and self.error is None and not self.answered:
            parts.append(f"Last output from code snippet:\n{self.value!r}")
        return "\n".join(parts)

    def error_text(self) -> str:
        shown = f"\nPrinted before the error:\n{self.printed.rstrip()}" if self.printed.strip() else ""
        return f"the code failed: {self.error}{shown}"


def execute(code: str, tools: dict, state: dict, authorized_imports: list[str]) -> tuple[Any, str]:
    """Run ``code`` with ``tools`` callable by name and ``state`` as its global variables
    (updated in place, so a later run sees them). Returns ``(value, printed)``; raises
    ``toolkit.sandbox.InterpreterError`` (with ``.printed``) for what the code did wrong.

    ``toolkit.sandbox.evaluate_python_code`` starts every run with empty globals, and the ReAct
    code agent needs them kept between steps; until it takes a ``state`` mapping, this drives
    its interpreter with the same checks and the same error mapping.
    """
    from toolkit.sandbox import interpreter as sandbox

    interp = sandbox._Interpreter(tools, tuple(authorized_imports), sandbox.Limits)
    interp.globals = state
    try:
        value = interp.run(code)
    except sandbox._UserException as e:
        exc = e.args[0]
        raise _failed(f"{type(exc).__name__}: {exc}", interp) from None
    except (sandbox._Break, sandbox._Continue):
        raise _failed("'break' or 'continue' outside a loop", interp) from None
    except sandbox._Return:
        raise _failed("'return' outside a function", interp) from None
    except sandbox.InterpreterError as e:
        e.printed = "".join(interp.printed)
        raise
    return value, "".join(interp.printed)


def _failed(message: str, interp) -> Exception:
    from toolkit.sandbox import InterpreterError

    err = InterpreterError(message)
    err.printed = "".join(interp.printed)
    return err


def run_code(code: str, agent: "Agent", thought: str = "") -> CodeOutcome:
    """Run the model's ``code`` for ``agent``: its tools (every call recorded, ``thought`` as the
    call's description), its state, its authorized imports."""
    from toolkit.sandbox import InterpreterError

    answer: dict[str, Any] = {}
    tools = agent.callable_tools(lambda: thought)
    recorded_final = tools["final_answer"]

    def final_answer(*args, **kwargs):
        value = recorded_final(*args, **kwargs)
        answer["value"] = value
        return value

    tools["final_answer"] = final_answer
    try:
        value, printed = execute(code, tools, agent.state, agent.authorized_imports)
        outcome = CodeOutcome(printed, value)
    except InterpreterError as e:
        outcome = CodeOutcome(getattr(e, "printed", ""), error=str(e))
    if "value" in answer:
        outcome.answered, outcome.answer = True, answer["value"]
    return outcome
