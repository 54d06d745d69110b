"""The agents that plan everything before any tool runs: ``CodeAgent`` and ``ReWOOAgent``.

    from pipeline.agents import CodeAgent, ReWOOAgent
    CodeAgent(tools=[translator], llm_engine=engine).run("Translate `sentence`.", sentence="Où est ...?")
    ReWOOAgent(tools=toolbox, llm_engine=planner, caller_engine=caller).run("Who directed ...?")

- :class:`CodeAgent` writes one ``Code:`` block and runs it at once. When the block does not
  parse or fails, the error goes back to the model and it writes the block again, up to
  ``max_iterations`` times; code that runs through ends the run (its ``final_answer``, else its
  last value, else what it printed).
- :class:`ReWOOAgent` wraps :class:`pipeline.rewoo.Pipeline` (planner, distributor, workers,
  solver) behind the same interface as the other agents.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.agents.agent import Action, AgentExecutionError, AgentParsingError, ReportMixin, observation_text
from pipeline.agents.react import ReactCodeAgent
from pipeline.formats import agents as fmt
from toolkit import Tool, Toolbox

__all__ = ["CodeAgent", "ReWOOAgent"]


class CodeAgent(ReactCodeAgent):
    """Thought, then one code block that does everything (``Code:\\n```py ... ```<end_action>``)."""

    default_system_prompt = fmt.CODE_SYSTEM_PROMPT
    stop_sequences = fmt.CODE_STOP_SEQUENCES

    def run(self, task: str, return_generated_code: bool = False, reset: bool = True, **kwargs) -> Any:
        """Solve ``task``; with ``return_generated_code=True`` return the model's output
        without running it."""
        if not return_generated_code:
            return super().run(task, reset=reset, **kwargs)
        self.task = fmt.task_text(task, kwargs)
        self.state = dict(kwargs)
        self.system_prompt = self.render_system_prompt()
        self.logs = [{"system_prompt": self.system_prompt, "task": self.task}, {"iteration": 0}]
        return self.generate(self.logs[-1])

    def step(self, log: dict) -> None:
        output = self.generate(log)
        thought, action = output.rpartition("Code:")[::2] if "Code:" in output else ("", output)
        thought = thought.strip().removeprefix("Thought:").strip()
        outcome = self.run_code_action(log, thought, action)
        if outcome.answered:
            log["final_answer"] = outcome.answer
        elif outcome.error is not None:
            raise AgentExecutionError(outcome.error_text())
        else:  # ran through without final_answer: its last value, else its printed output
            log["final_answer"] = outcome.value if outcome.value is not None else outcome.printed.strip()


class ReWOOAgent(ReportMixin):
    """The ReWOO pipeline with the agents' interface: ``run(task, **kwargs)``, ``logs``,
    ``write_inner_memory_from_logs()``, ``stats``, ``trace``, ``actions``, ``to_dict``.

    ``tools``, ``llm_engine`` (the planner, and the solver unless ``solver_engine``),
    ``caller_engine`` (the function caller, optional); other keyword arguments go to
    :class:`pipeline.rewoo.Pipeline` (``template``, ``constrain``, ``max_steps`` ...). Keyword
    arguments of ``run`` are stated in the task, since the planner reads only text. A plan that
    does not parse ends the run without an answer (``None``), the error in ``logs``: ReWOO plans
    once, by design.
    """

    def __init__(self, tools: Iterable[Tool] | Mapping[str, Tool] = (), llm_engine: Any = None,
                 caller_engine: Any = None, solver_engine: Any = None, add_base_tools: bool = False, verbose: int = 0,
                 log_stream=None, **pipeline_kw):
        from pipeline.rewoo import Pipeline

        if llm_engine is None:
            raise ValueError("give the agent an engine: llm_engine=<an engine, a callable, a model path or an "
                             "http://host:port/v1 URL>")
        if isinstance(tools, Mapping):
            tools = list(tools.values())
        self.toolbox = Toolbox(list(tools), add_base_tools=add_base_tools)
        self.pipeline = Pipeline(llm_engine, caller_engine, solver_engine, self.toolbox, **pipeline_kw)
        self.llm_engine = self.pipeline.planner
        self.verbose, self.log_stream = verbose, log_stream
        self.task, self.state, self.logs, self.stats, self.trace = "", {}, [], {}, []
        self._actions: list[Action] = []
        self.result = None

    def run(self, task: str, **kwargs) -> str | None:
        from pipeline.engines import recording
        from pipeline.plan import PlanError

        self.task = fmt.task_text(task, kwargs)
        self.state = dict(kwargs)
        self.logs = [{"task": self.task}]
        self._actions, self.result = [], None
        self._say(1, f"======== New task ========\n{self.task}")
        t0 = time.perf_counter()
        with recording() as spent:
            try:
                self.result = self.pipeline.run(self.task)
            except PlanError as e:
                self.logs.append({"llm_output": getattr(e, "raw_output", "") or "",
                                  "error": AgentParsingError(f"the plan does not parse: {e}")})
                self._say(1, f"Error: {e}")
        if self.result is None:
            self.stats = {"llm_calls": len(spent), "prompt_tokens": sum(c["prompt_tokens"] or 0 for c in spent),
                          "completion_tokens": sum(c["completion_tokens"] or 0 for c in spent),
                          "wall_s": round(time.perf_counter() - t0, 3)}
            self.trace = [dict(c) for c in spent]
            return None
        r = self.result
        self.logs.append({"llm_output": r.raw_plan, "plan": r.plan.to_list()})
        for step in r.plan:
            ev = r.evidence[step.var]
            self._actions.append(Action(step.var, step.tool, ev.arguments, step.description, ev.status, ev.text,
                                        input=step.input))
            self.logs.append({"tool_call": {"tool_name": step.tool, "tool_arguments": ev.arguments},
                              "observation": ev.text})
            self._say(1, f"{step.var} = {step.tool}[{step.input}] ({ev.status})\n  {ev.text}")
        self.logs.append({"final_answer": r.answer})
        self._say(1, f"Final answer: {r.answer}")
        self.stats, self.trace = dict(r.stats), r.trace
        return r.answer

    def write_inner_memory_from_logs(self) -> list[dict]:
        """The run as chat messages: the task, the plan, each step's evidence, the answer."""
        memory: list[dict] = []
        for log in self.logs:
            if "task" in log:
                memory.append(fmt.task_message(log["task"]))
            if "llm_output" in log:
                memory.append({"role": "assistant", "content": log["llm_output"]})
            if "error" in log:
                memory.append(fmt.error_message(str(log["error"])))
            if "observation" in log:
                memory.append(fmt.observation_message(log["observation"]))
            if "final_answer" in log:
                memory.append({"role": "assistant", "content": observation_text(log["final_answer"])})
        return memory
