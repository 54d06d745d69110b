"""The ReWOO pipeline: planner -> distributor -> workers -> solver.

    from pipeline.rewoo import Pipeline
    pipe = Pipeline(planner="path/to/planner", caller="path/to/caller")   # solver = planner's engine
    result = pipe.run("What movies did the director of 'Killers of the Flower Moon' direct?")
    result.plan, result.evidence, result.answer, result.stats, result.trace
    result.to_dict()   # the object `python -m pipeline.run --json` prints

Model calls per task: one planner call, one function-caller call per step whose tool takes
structured arguments (batched), the ``llm`` tool's calls, one solver call.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.distributor import Call, distribute
from pipeline.engines import Engine, as_engine, recording
from pipeline.formats.toolprior import task_holdings
from pipeline.plan import Plan, PlanError, PlanStream, Step
from pipeline.planner import (RepeatedSteps, ground_file_names, ground_held_values, ground_quoted_content, held_values,
                              make_plan, planner_request)
from pipeline.solver import solve
from pipeline.worker import Evidence, run_steps


@dataclass
class Result:
    """One run. ``trace`` holds every model call (role, engine, prompt, output, prompt_tokens,
    completion_tokens, finish_reason, seconds) and every tool call (role "tool", var, tool,
    arguments, status, output, seconds), in the order they ended (``t_end``: seconds since the
    run began)."""

    task: str
    plan: Plan
    calls: dict[str, Call]
    evidence: dict[str, Evidence]
    answer: str
    stats: dict
    trace: list[dict] = field(default_factory=list)
    raw_plan: str = ""

    def to_dict(self) -> dict:
        """``{"task", "plan": [{var, tool, input, description}], "evidence": {var: text},
        "answer", "stats": {llm_calls, prompt_tokens, completion_tokens, wall_s, ...}}``."""
        return {"task": self.task, "plan": self.plan.to_list(),
                "evidence": {v: e.text for v, e in self.evidence.items()},
                "answer": self.answer, "stats": self.stats}


class _PlanEdits:
    """What one run changed in its plans: the file names (``files``), quoted contents
    (``contents``) and held values (``values``) it grounded, ``{as planned: as written}``, and how
    many repeated steps it dropped (``repeated``); with the task, and the values of the tools' data
    the task names, read at the first step of a tool that holds data (``holds``)."""

    def __init__(self, task: str, toolbox):
        self.task, self.toolbox = task, toolbox
        self.files: dict[str, str] = {}
        self.contents: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self.repeated = 0
        self._holds: tuple[tuple[str, str], ...] | None = None

    def stats(self) -> dict[str, Any]:
        """The result's stats of them, each where there was one."""
        out = {"file_names_grounded": self.files, "values_grounded": self.values,
               "contents_grounded": self.contents, "steps_repeated": self.repeated}
        return {k: v for k, v in out.items() if v}

    def holds(self, tool: str) -> tuple[tuple[str, str], ...]:
        """The task's held values of ``tool`` (none for a tool without ``held_values``)."""
        found = self.toolbox.get(tool) if hasattr(self.toolbox, "get") else None
        if not callable(getattr(found, "held_values", None)):
            return ()
        if self._holds is None:
            self._holds = task_holdings(self.task, held_values(self.toolbox))
        return tuple(h for h in self._holds if h[0] == tool)


class Pipeline:
    """A ReWOO agent over a toolbox.

    ``planner``, ``caller``, ``solver``: engines, callables or specs for
    :func:`pipeline.engines.load_engine` (a path, a model name, an ``http://.../v1`` URL).
    ``solver`` defaults to the planner's engine; ``caller`` may be None (see the distributor).
    ``toolbox``: a Toolbox or mapping name -> tool; default ``toolkit.default_toolbox()``. Its
    ``llm`` tool, when it has no engine yet, gets the solver's.
    ``constrain``: constrained decoding where the engine enforces it (plan grammar, call schemas).
    ``tool_prior``: with the plan grammar, on an in-process engine, each step's tool name leans
    towards the tools whose name and description share words with the step's ``Plan:`` line, by up
    to this many logits, and the first plan follows the goals the task states by as many
    (:mod:`pipeline.formats.toolprior`); 0 (the default): the planner's choice alone.
    ``drop_repeats``: a step that repeats an earlier step of its planning round (the same tool and
    input) is dropped and its variable read as that step's (:class:`pipeline.planner.RepeatedSteps`).
    """

    def __init__(self, planner: Any, caller: Any = None, solver: Any = None, toolbox: Any = None, *,
                 template: str = "alpaca", constrain: bool = True, planner_max_new_tokens: int = 512,
                 max_steps: int = 6, caller_max_new_tokens: int = 256,
                 solver_max_new_tokens: int = 256, tool_timeout: float = 60.0, max_parallel: int = 8,
                 replan: int = 1, stream: bool | None = None, ground_names: bool = True,
                 tool_prior: float = 0.0, drop_repeats: bool = True):
        if template not in ("alpaca", "chat"):
            raise ValueError(f"template must be 'alpaca' or 'chat', not {template!r}")
        self.planner: Engine = as_engine(planner)
        self.caller: Engine | None = None if caller is None else as_engine(caller)
        self.solver: Engine = self.planner if solver is None else as_engine(solver)
        if toolbox is None:
            from toolkit import default_toolbox
            toolbox = default_toolbox(llm_engine=self.solver)
        elif "llm" in toolbox and getattr(toolbox["llm"], "engine", "absent") is None:
            toolbox["llm"].engine = self.solver
        self.toolbox = toolbox
        self.template = template
        self.constrain = constrain
        self.planner_max_new_tokens = planner_max_new_tokens
        self.max_steps = max_steps
        self.caller_max_new_tokens = caller_max_new_tokens
        self.solver_max_new_tokens = solver_max_new_tokens
        self.tool_timeout = tool_timeout
        self.max_parallel = max_parallel
        if replan < 0:
            raise ValueError(f"replan must be >= 0 rounds, not {replan}")
        self.replan = replan
        # Streamed dispatch (LLMCompiler-style): each step starts while the plan is still being
        # written. Default: wherever the planner's engine streams.
        self.stream = self.planner.streams if stream is None else (stream and self.planner.streams)
        # a file name the plan misspells is written as the task has it (planner.ground_file_names),
        # and a value of the database the task names as the data has it in a SQL step's literals
        # (planner.ground_held_values), and the content a step writes as the task quotes it
        # (planner.ground_quoted_content); what was changed is in the result's stats
        # ("file_names_grounded", "values_grounded", "contents_grounded")
        self.ground_names = ground_names
        # with the plan grammar, each step's tool leans towards the tools its Plan: line describes,
        # by up to this many logits (pipeline.formats.toolprior); 0: the planner's choice alone
        if not tool_prior >= 0:
            raise ValueError(f"tool_prior must be >= 0 logits, not {tool_prior!r}")
        self.tool_prior = float(tool_prior)
        # a step that repeats an earlier step of its round (tool and input) is not run again
        # (planner.RepeatedSteps); how many were dropped is in the result's stats ("steps_repeated")
        self.drop_repeats = drop_repeats

    def run(self, task: str, on_event: Callable[[str, Any], None] | None = None) -> Result:
        """Plan, distribute, work, (replan while steps failed, up to ``replan`` rounds), solve.
        ``on_event(kind, payload)`` hears ``("plan", Plan)``, ``("calls", {var: Call})``,
        ``("start", var)``, ``("done", Evidence)``, ``("replan", Plan of the new steps)``, ``("answer", str)``.
        Raises ``PlanError`` (with ``raw_output``) when an unconstrained planner writes no valid plan."""
        notify = on_event or (lambda kind, payload: None)
        t0 = time.perf_counter()
        with recording() as model_calls:
            tool_trace: list[dict] = []
            started: dict[str, float] = {}

            def on_step(kind, payload):
                if kind == "start":
                    started[payload] = time.perf_counter()
                if kind == "done":
                    tool_trace.append({"role": "tool", "var": payload.var, "tool": payload.tool,
                                       "arguments": payload.arguments, "status": payload.status,
                                       "output": payload.text, "seconds": round(payload.seconds, 4),
                                       "t_start": started.get(payload.var), "t_end": time.perf_counter()})
                notify(kind, payload)

            edits = _PlanEdits(task, self.toolbox)
            if self.stream:
                plan, raw, calls, evidence = self._streamed_round(task, notify, on_step, edits)
            else:
                plan, raw = make_plan(task, self.toolbox, self.planner, template=self.template,
                                      constrain=self.constrain, max_new_tokens=self.planner_max_new_tokens,
                                      max_steps=self.max_steps, tool_prior=self.tool_prior)
                plan = self._ground(self._unrepeated(plan, 1, edits), edits)
                notify("plan", plan)
                calls = distribute(plan, self.toolbox, self.caller, template=self.template, constrain=self.constrain,
                                   max_new_tokens=self.caller_max_new_tokens)
                notify("calls", calls)
                evidence = run_steps(plan, calls, self.toolbox, timeout=self.tool_timeout,
                                     max_parallel=self.max_parallel, on_event=on_step)
            plan, calls, evidence, rounds, replan_error = self._replan(task, plan, calls, evidence, notify, on_step,
                                                                       edits)
            answer = solve(task, plan, {v: e.text for v, e in evidence.items()}, self.solver,
                           template=self.template, max_new_tokens=self.solver_max_new_tokens)
            notify("answer", answer)
        wall = time.perf_counter() - t0
        stats = {
            "llm_calls": len(model_calls),
            "prompt_tokens": sum(c["prompt_tokens"] or 0 for c in model_calls),
            "completion_tokens": sum(c["completion_tokens"] or 0 for c in model_calls),
            "wall_s": round(wall, 3),
            "steps": len(plan),
            "caller_calls": sum(1 for c in model_calls if c["role"] == "caller"),
            "tool_errors": sum(1 for e in evidence.values() if not e.ok),
            "rounds": rounds,
            "streamed": bool(self.stream),
        }
        if replan_error:
            stats["replan_error"] = replan_error
        stats.update(edits.stats())
        # copies: an enclosing recording() holds the same model-call entries with their own clock
        trace = [{**entry, "t_end": round(entry["t_end"] - t0, 4),
                  **({"t_start": round(entry["t_start"] - t0, 4)} if entry.get("t_start") else {})}
                 for entry in sorted(model_calls + tool_trace, key=lambda c: c["t_end"])]
        return Result(task, plan, calls, evidence, answer, stats, trace, raw)

    def _ground_step(self, step: Step, edits: _PlanEdits) -> Step:
        """``step`` with its misspelt file names and its content as the task writes them and its SQL
        literals' held values as the data writes them; the changes go into ``edits``."""
        if not self.ground_names:
            return step
        step, fixed = ground_file_names(step, edits.task)
        edits.files.update(fixed)
        step, fixed = ground_quoted_content(step, edits.task)
        edits.contents.update(fixed)
        step, fixed = ground_held_values(step, edits.holds(step.tool))
        edits.values.update(fixed)
        return step

    def _ground(self, plan: Plan, edits: _PlanEdits) -> Plan:
        steps = tuple(self._ground_step(s, edits) for s in plan.steps)
        return plan if steps == plan.steps else Plan(steps)

    def _repeats(self, first: int) -> RepeatedSteps | None:
        return RepeatedSteps(first) if self.drop_repeats else None

    def _unrepeated(self, plan: Plan, first: int, edits: _PlanEdits) -> Plan:
        """One planning round's ``plan`` without the steps that repeat an earlier one (counted in ``edits``)."""
        repeats = self._repeats(first)
        if repeats is None:
            return plan
        plan = repeats.plan(plan)
        edits.repeated += len(repeats.dropped)
        return plan

    def _streamed_round(self, task, notify, on_step, edits):
        """The first round with streamed dispatch: the planner's text is parsed as it arrives
        (:class:`PlanStream`), each complete step is distributed at once and handed to the
        workers, which start it as soon as its dependencies are filled. Events: ``("step",
        Step)`` per step as planned, ``("calls", {var: Call})`` per step, then ``("plan", Plan)``
        as soon as the plan is written (from the planner's thread, while steps may still run)."""
        req = planner_request(task, self.toolbox, self.planner, template=self.template, constrain=self.constrain,
                              max_new_tokens=self.planner_max_new_tokens, max_steps=self.max_steps,
                              tool_prior=self.tool_prior)
        incoming: queue.Queue = queue.Queue()
        stream = PlanStream(list(req.specs))
        box: dict = {}
        calls: dict[str, Call] = {}

        sent: list[Step] = []  # the steps as dispatched: renumbered without repeats, grounded
        repeats = self._repeats(1)

        def dispatch(step):
            if repeats is not None:
                step = repeats.take(step)
                if step is None:  # the same tool on the same input as a step already sent
                    return
            step = self._ground_step(step, edits)
            sent.append(step)
            notify("step", step)
            call = distribute(Plan((step,)), self.toolbox, self.caller, template=self.template,
                              constrain=self.constrain, max_new_tokens=self.caller_max_new_tokens)
            calls.update(call)
            notify("calls", call)
            incoming.put(("+step", step, call[step.var], None))

        def produce():
            try:
                for piece in req.stream(self.planner):
                    for step in stream.feed(piece):
                        dispatch(step)
                plan = stream.close()
                for step in plan.steps[len(stream.steps):]:  # the last line had no newline after it
                    dispatch(step)
                plan = Plan(tuple(sent))  # the steps as dispatched
                if repeats is not None:
                    edits.repeated += len(repeats.dropped)
                box["plan"] = plan
                notify("plan", plan)  # the plan is written (some of its steps may still run)
            except BaseException as e:  # noqa: BLE001 - raised in the pipeline's thread below
                box["error"] = e
            finally:
                incoming.put(("+end", None, None, None))

        thread = threading.Thread(target=contextvars.copy_context().run, args=(produce,), daemon=True,
                                  name="rewoo-planner")
        thread.start()
        evidence = run_steps(Plan(()), {}, self.toolbox, timeout=self.tool_timeout, max_parallel=self.max_parallel,
                             on_event=on_step, incoming=incoming)
        thread.join()
        if "error" in box:
            e = box["error"]
            if isinstance(e, PlanError):
                err = PlanError(f"the planner's output is not a valid plan: {e.reason}", e.line)
                err.raw_output = stream.text
                raise err from e
            raise e
        plan = box["plan"]
        return plan, stream.text, {st.var: calls[st.var] for st in plan}, evidence

    def _replan(self, task, plan, calls, evidence, notify, on_step, edits):
        """Up to ``self.replan`` more rounds while a step failed (error or timeout): the planner
        sees each step's status and error, never a successful step's evidence; the new steps
        continue the numbering and may use earlier variables. Returns the whole plan, calls and
        evidence, the number of rounds run (1 = no replanning) and the error that stopped
        replanning early (a round whose output is not a valid plan: the run answers with what it has)."""
        rounds = 1
        while rounds <= self.replan and any(e.status in ("error", "timeout") for e in evidence.values()):
            status = {v: ("done" if e.ok else f"{'skipped' if e.status == 'skipped' else 'failed'}: "
                          f"{e.error or e.text}") for v, e in evidence.items()}
            try:
                more, _ = make_plan(task, self.toolbox, self.planner, template=self.template,
                                    constrain=self.constrain, max_new_tokens=self.planner_max_new_tokens,
                                    max_steps=self.max_steps, history=(plan, status),
                                    tool_prior=self.tool_prior)
                more = self._ground(self._unrepeated(more, len(plan) + 1, edits), edits)
            except PlanError as e:
                return plan, calls, evidence, rounds, str(e)
            rounds += 1
            notify("replan", more)
            new_calls = distribute(more, self.toolbox, self.caller, template=self.template, constrain=self.constrain,
                                   max_new_tokens=self.caller_max_new_tokens)
            notify("calls", new_calls)
            found = run_steps(more, new_calls, self.toolbox, timeout=self.tool_timeout, max_parallel=self.max_parallel,
                              on_event=on_step, prior=evidence)
            plan = Plan(plan.steps + more.steps)
            calls = {**calls, **new_calls}
            evidence = {**evidence, **found}
        return plan, calls, evidence, rounds, None
