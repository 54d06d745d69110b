"""The workers: run a plan's calls as a DAG, every step whose dependencies are filled at once.

    from pipeline.worker import run_steps
    evidence = run_steps(plan, calls, toolbox, timeout=60)   # {var: Evidence}

- A step starts as soon as every variable its input references has evidence: independent steps
  run together, in threads (tools do I/O: HTTP, SQL, subprocesses).
- Before a call, whole ``#E`` tokens in its arguments are replaced by the evidence text.
- A tool that raises: its evidence records ``error`` (the tool, its arguments and the message)
  and the run goes on. A tool that runs past its timeout (``tool.timeout`` or ``timeout``) is
  recorded as timed out and abandoned: its thread is a daemon and its late result is dropped.
- Dependants of a failed step (error, timeout, or a call the distributor could not make) do not
  run: their evidence says ``skipped`` and names the failed variable, so the solver sees why.
- A step whose call (tool and filled arguments) repeats another step's of the same round makes no
  second call: it waits for that step and gets its evidence, ``extra["same_as"]`` naming it.

``on_event(kind, payload)`` is told ``("start", var)`` and ``("done", Evidence)``.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline import formats
from pipeline.distributor import Call, fill_arguments
from pipeline.engines import role
from pipeline.plan import Plan


@dataclass
class Evidence:
    """What one step produced. ``status``: "ok", "error", "timeout" or "skipped"; ``text`` is
    what the solver and later steps see (the tool's output, or the reason there is none)."""

    var: str
    tool: str
    arguments: dict
    status: str
    text: str
    seconds: float = 0.0
    started: float = 0.0  # seconds after the run began
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return {"var": self.var, "tool": self.tool, "arguments": self.arguments, "status": self.status,
                "text": self.text, "seconds": round(self.seconds, 4), "error": self.error,
                **({"same_as": self.extra["same_as"]} if "same_as" in self.extra else {})}


def as_text(value: Any) -> str:
    """A tool's output as evidence text (the toolkit's one conversion: strings as they are, JSON
    for data, ``str`` otherwise)."""
    from toolkit.tool import tool_output_text
    return tool_output_text(value)


def run_steps(plan: Plan, calls: dict[str, Call], toolbox: Any, *, timeout: float = 60.0, max_parallel: int = 8,
              on_event: Callable[[str, Any], None] | None = None,
              prior: Mapping[str, Evidence] | None = None, incoming: queue.Queue | None = None) -> dict[str, Evidence]:
    """Run every step of ``plan`` with its call; returns evidence for every variable, in plan order.
    ``prior``: evidence of earlier rounds, which the steps may depend on.

    ``incoming`` (streamed dispatch): more steps arrive while these run, as ``("+step", Step,
    Call)`` messages, until ``("+end", None, None)``; each starts as soon as its dependencies are
    filled. (The queue is also where the workers' results arrive, so a new step wakes the loop.)
    """
    t0 = time.perf_counter()
    notify = on_event or (lambda kind, payload: None)
    results: queue.Queue = incoming if incoming is not None else queue.Queue()
    evidence: dict[str, Evidence] = dict(prior or {})
    before = set(evidence)  # earlier rounds' steps: a repeated call there is tried again
    running: dict[str, tuple[float, float, dict]] = {}  # var -> (start, deadline, filled arguments)
    waiting = list(plan.steps)
    order = list(plan.steps)
    steps = {st.var: st for st in plan.steps}
    calls = dict(calls)
    open_ = incoming is not None

    def finish(ev: Evidence) -> None:
        evidence[ev.var] = ev
        running.pop(ev.var, None)
        notify("done", ev)

    def work(var: str, tool: Any, args: dict) -> None:
        start = time.perf_counter()
        try:
            with role(f"tool:{steps[var].tool}"):
                out = tool(**args)
            results.put((var, "ok", as_text(out), time.perf_counter() - start))
        # A tool's failure is evidence, whatever it raised (SystemExit from a tool included);
        # the message keeps the exception's type, and toolkit's ToolError names tool and arguments.
        except BaseException as e:  # noqa: BLE001
            results.put((var, "error", f"{type(e).__name__}: {e}", time.perf_counter() - start))

    while waiting or running or open_:
        for step in list(waiting):
            call = calls[step.var]
            now = time.perf_counter() - t0
            failed = [d for d in step.deps if d in evidence and not evidence[d].ok]
            if failed:
                waiting.remove(step)
                why = f"skipped: depends on {failed[0]}, which failed ({evidence[failed[0]].status})"
                finish(Evidence(step.var, step.tool, call.arguments, "skipped", why, 0.0, now, why))
                continue
            if any(d not in evidence for d in step.deps) or len(running) >= max_parallel:
                continue
            if call.error:
                waiting.remove(step)
                finish(Evidence(step.var, step.tool, call.arguments, "error", f"Error: {call.error}", 0.0, now,
                                call.error))
                continue
            tool = toolbox[step.tool]
            try:
                args = fill_arguments(call.arguments, {v: e.text for v, e in evidence.items()},
                                      formats.tool_spec(tool).parameters)
            except ValueError as e:  # evidence that cannot be bound into code: this step's error
                waiting.remove(step)
                finish(Evidence(step.var, step.tool, call.arguments, "error", f"Error: {e}", 0.0, now, str(e)))
                continue
            twin = next((v for v in running if steps[v].tool == step.tool and running[v][2] == args), None) or next(
                (v for v, e in evidence.items() if v not in before and e.tool == step.tool and e.arguments == args
                 and "same_as" not in e.extra), None)
            if twin in running:
                continue  # the same call is running: its evidence will be this step's too
            waiting.remove(step)
            if twin is not None:  # the same call ran in this round: no second call (no email sent twice)
                ev = evidence[twin]
                notify("start", step.var)  # as every step that is not skipped: start, then done
                finish(Evidence(step.var, step.tool, args, ev.status, ev.text, 0.0, now, ev.error, {"same_as": twin}))
                continue
            limit = getattr(tool, "timeout", None) or timeout
            running[step.var] = (now, now + limit, args)
            notify("start", step.var)
            ctx = contextvars.copy_context()  # engine recordings follow the call into its thread
            threading.Thread(target=ctx.run, args=(work, step.var, tool, args), daemon=True,
                             name=f"rewoo-{step.var}").start()
        if not running and not open_:
            continue
        wait = (min(d for _, d, _ in running.values()) - (time.perf_counter() - t0)) if running else None
        try:
            var, status, text, seconds = results.get(timeout=None if wait is None else max(0.0, wait))
        except queue.Empty:
            now = time.perf_counter() - t0
            for var, (start, deadline, args) in list(running.items()):
                if now >= deadline:
                    msg = f"{steps[var].tool} timed out after {deadline - start:.1f} s"
                    finish(Evidence(var, steps[var].tool, args, "timeout", f"Error: {msg}", now - start, start, msg))
            continue
        if var == "+step":  # streamed dispatch: a new step and its call
            steps[status.var], calls[status.var] = status, text
            waiting.append(status)
            order.append(status)
            continue
        if var == "+end":
            open_ = False
            continue
        if var not in running:
            continue  # a late result from a step that already timed out
        start, _, args = running[var]
        if status == "ok":
            finish(Evidence(var, steps[var].tool, args, "ok", text, seconds, start))
        else:
            finish(Evidence(var, steps[var].tool, args, "error", f"Error: {text}", seconds, start, text))
    return {st.var: evidence[st.var] for st in order}
