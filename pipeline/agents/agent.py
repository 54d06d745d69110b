"""``Agent``: the base of the Code, ReAct and ReWOO agents (the transformers Agents API).

An agent holds an engine, a toolbox (always with ``final_answer``) and a system prompt template.
``run(task, **kwargs)`` starts afresh: the keyword arguments enter ``agent.state`` (code sees
them as variables; JSON actions name them), ``agent.logs`` gets one dict per step, and the run
ends with a final answer, or, after ``max_iterations`` steps without one, with one more model
call that answers from the agent's memory.

Who is at fault decides what happens to an error:

- the model's (output that does not parse, an unknown tool, wrong arguments, code that fails
  or that the sandbox refuses, a tool that fails on what it was given): an :class:`AgentError`
  recorded on the step as ``"error"`` and fed back to the model as ``Error: ...``;
- ours or the machine's (a bug, an engine that cannot answer): raised.

Accounting is the ReWOO pipeline's: every engine call of the run is collected with
``pipeline.engines.recording()``, so ``agent.stats`` (``llm_calls``, ``prompt_tokens``,
``completion_tokens``, ``wall_s``) counts the same things as ``Pipeline.run(...).stats``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from pipeline.engines import Engine, as_engine, recording, role
from pipeline.formats import agents as fmt
from toolkit import Tool, ToolError, Toolbox

__all__ = ["Agent", "AgentError", "AgentParsingError", "AgentExecutionError", "AgentMaxIterationsError",
           "FinalAnswerTool", "ManagedAgent", "Action", "ReportMixin", "observation_text"]


class AgentError(Exception):
    """Something the model did wrong; recorded on its step and shown to the model."""


class AgentParsingError(AgentError):
    """The model's output does not follow the format."""


class AgentExecutionError(AgentError):
    """The model's action could not be carried out (unknown tool, bad arguments, failing code)."""


class AgentMaxIterationsError(AgentError):
    """The agent used all its iterations without a final answer."""


class FinalAnswerTool(Tool):
    name = "final_answer"
    description = "Give the final answer to the task. Call it once you know the answer; it ends the run."
    inputs = {"answer": {"type": "any", "description": "the final answer to the task"}}
    output_type = "any"

    def forward(self, answer):
        return answer


class ManagedAgent:
    """An agent that another agent can call like a tool, by ``name``, with one ``request``."""

    def __init__(self, agent: "Agent", name: str, description: str):
        if not name.isidentifier():
            raise ValueError(f"a managed agent's name must be a Python identifier, got {name!r}")
        self.agent, self.name, self.description = agent, name, description

    def __call__(self, request: str) -> str:
        return str(self.agent.run(request))


@dataclass
class Action:
    """One tool call the agent made (``final_answer`` excluded): the CLI lists these as the plan."""

    var: str
    tool: str
    arguments: Any
    description: str
    status: str = "ok"
    output: str = ""
    input: str | None = None  # the plan step's input text (ReWOO); else the arguments as JSON

    def to_plan_step(self) -> dict:
        shown = self.input
        if shown is None:
            args = self.arguments
            shown = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False, default=str)
        return {"var": self.var, "tool": self.tool, "input": shown, "description": self.description}


def observation_text(value: Any) -> str:
    """A tool's output as the model reads it."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


class ReportMixin:
    """What every agent reports after a run: ``actions`` and the CLI's ``to_dict``."""

    task: str
    stats: dict
    verbose: int
    log_stream: TextIO | None
    _actions: list[Action]

    @property
    def actions(self) -> list[Action]:
        """The tool calls of the last run, in order (``final_answer`` excluded)."""
        return list(self._actions)

    def to_dict(self, answer: Any) -> dict:
        """The ``python -m pipeline.run --json`` object: ``task``, ``plan`` (the tool calls made,
        as ``{var, tool, input, description}``), ``evidence`` (``{var: output}``), ``answer``,
        ``stats`` (``llm_calls``, ``prompt_tokens``, ``completion_tokens``, ``wall_s``, ...)."""
        return {"task": self.task, "plan": [a.to_plan_step() for a in self._actions],
                "evidence": {a.var: a.output for a in self._actions},
                "answer": answer if isinstance(answer, str) or answer is None else observation_text(answer),
                "stats": self.stats}

    def _say(self, level: int, text: str) -> None:
        if self.verbose >= level:
            print(text, file=self.log_stream or sys.stdout, flush=True)


class Agent(ReportMixin):
    """Base of the agents. Subclasses set ``default_system_prompt`` and implement ``step``.

    ``tools``: Tool instances, or a Toolbox/mapping of them (copied: the agent adds
    ``final_answer`` to its own toolbox). ``llm_engine``: an engine, a callable
    ``(messages, stop_sequences=None) -> str``, a model path or an ``http://.../v1`` URL.
    ``system_prompt``: a template with ``<<tool_descriptions>>`` (required), ``<<tool_names>>``,
    ``<<authorized_imports>>`` and ``<<managed_agents_descriptions>>``.
    ``tool_description_template``: how each tool is described (``{name}``, ``{description}``,
    ``{inputs}``, ``{output_type}``). ``add_base_tools``: add the built-in tools.
    ``verbose``: 0 quiet, 1 the steps (as the transformers agents print them), 2 also each
    prompt. ``grammar``: a ``pipeline.engines.Constraint`` passed to the engine as ``constraint``.
    ``managed_agents``: :class:`ManagedAgent` s the model may call by name.
    ``max_new_tokens``: the token budget of each model output (default: the engine's).
    ``sandbox``: the ``toolkit.sandbox.Sandbox`` (a pool of isolated workers) that runs the code
    agents' code; default: one shared per setting, from ``ToolkitConfig.from_env()`` (its
    ``workspace``/python, ``python_timeout``, ``python_memory_mb``) and the authorized imports.
    ``step_callbacks``: functions called with each step's log as soon as the step ends (as the
    transformers agents' ``step_callbacks``; the SSE route streams agent steps with them).
    """

    default_system_prompt = fmt.REACT_CODE_SYSTEM_PROMPT
    stop_sequences: list[str] = fmt.REACT_STOP_SEQUENCES
    uses_code = False  # code agents list the sandbox's authorized imports

    def __init__(self, tools: Iterable[Tool] | Mapping[str, Tool] = (), llm_engine: Any = None,
                 system_prompt: str | None = None, tool_description_template: str | None = None,
                 max_iterations: int = 6, add_base_tools: bool = False, verbose: int = 0, grammar: Any = None,
                 managed_agents: Iterable[ManagedAgent] | None = None,
                 additional_authorized_imports: Iterable[str] | None = None, max_new_tokens: int | None = None,
                 log_stream: TextIO | None = None, sandbox: Any = None,
                 step_callbacks: Iterable[Callable[[dict], None]] | None = None):
        if llm_engine is None:
            raise ValueError("give the agent an engine: llm_engine=<an engine, a callable (messages, "
                             "stop_sequences=None) -> str, a model path or an http://host:port/v1 URL>")
        if not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}")
        self.system_prompt_template = self.default_system_prompt if system_prompt is None else system_prompt
        fmt.check_system_prompt(self.system_prompt_template)
        self.llm_engine: Engine = as_engine(llm_engine)
        self.tool_description_template = tool_description_template or fmt.TOOL_DESCRIPTION_TEMPLATE
        self.max_iterations = max_iterations
        self.verbose = verbose
        self.grammar = grammar
        self.max_new_tokens = max_new_tokens
        self.log_stream = log_stream
        self.step_callbacks = list(step_callbacks or [])
        self.additional_authorized_imports = list(additional_authorized_imports or [])
        self._sandbox = sandbox
        self.toolbox = self._make_toolbox(tools, add_base_tools)
        self.managed_agents: dict[str, ManagedAgent] = {}
        for m in managed_agents or ():
            if m.name in self.toolbox:
                raise ValueError(f"managed agent {m.name!r} has the name of a tool; rename it")
            self.managed_agents[m.name] = m
        self.task = ""
        self.state: dict[str, Any] = {}
        self.logs: list[dict] = []
        self.stats: dict = {}
        self.trace: list[dict] = []
        self._actions: list[Action] = []
        self._tool_trace: list[dict] = []
        self.system_prompt = self.render_system_prompt()

    # -- construction ---------------------------------------------------------------------------

    def _make_toolbox(self, tools, add_base_tools: bool) -> Toolbox:
        if isinstance(tools, Mapping):
            tools = list(tools.values())
        toolbox = Toolbox(list(tools), add_base_tools=add_base_tools)
        if add_base_tools and self.uses_code and "python_interpreter" in toolbox:
            toolbox.remove_tool("python_interpreter")  # code agents run Python themselves
        if "final_answer" not in toolbox:
            toolbox.add_tool(FinalAnswerTool())
        if "llm" in toolbox and getattr(toolbox["llm"], "engine", "absent") is None:
            toolbox["llm"].engine = self.llm_engine
        return toolbox

    @property
    def authorized_imports(self) -> list[str]:
        """Modules the model's code may import (code agents)."""
        from toolkit.sandbox import DEFAULT_AUTHORIZED_IMPORTS
        return sorted(set(DEFAULT_AUTHORIZED_IMPORTS) | set(self.additional_authorized_imports))

    @property
    def sandbox(self):
        """The pool of isolated workers that runs this agent's code (made on first use)."""
        if self._sandbox is None:
            from pathlib import Path

            from toolkit import ToolkitConfig
            from toolkit.sandbox import shared_sandbox

            cfg = ToolkitConfig.from_env()
            self._sandbox = shared_sandbox(workspace=Path(cfg.workspace) / "python", timeout=cfg.python_timeout,
                                           memory_mb=cfg.python_memory_mb,
                                           authorized_imports=tuple(self.authorized_imports))
        return self._sandbox

    def render_system_prompt(self) -> str:
        """The system prompt for the current toolbox (the template with its placeholders filled)."""
        return fmt.render_system_prompt(
            self.system_prompt_template,
            self.toolbox.show_tool_descriptions(self.tool_description_template),
            list(self.toolbox) + list(self.managed_agents),
            self.authorized_imports if self.uses_code else (),
            {name: m.description for name, m in self.managed_agents.items()})

    # -- the run --------------------------------------------------------------------------------

    def run(self, task: str, reset: bool = True, **kwargs) -> Any:
        """Solve ``task``; return the final answer. ``kwargs`` enter ``self.state``; with
        ``reset=False`` the logs (and state) of the previous run are kept and the task is added."""
        self.task = fmt.task_text(task, kwargs)
        if reset or not self.logs:
            self.state = dict(kwargs)
            self.system_prompt = self.render_system_prompt()
            self.logs = [{"system_prompt": self.system_prompt, "task": self.task}]
            self._actions, self._tool_trace = [], []
        else:
            self.state.update(kwargs)
            self.logs.append({"task": self.task})
        self._say(1, f"======== New task ========\n{self.task}")
        t0 = time.perf_counter()
        with recording() as model_calls:
            answer = self._run_steps()
        wall = time.perf_counter() - t0
        iterations = sum(1 for log in self.logs if "iteration" in log)
        self.stats = {
            "llm_calls": len(model_calls),
            "prompt_tokens": sum(c["prompt_tokens"] or 0 for c in model_calls),
            "completion_tokens": sum(c["completion_tokens"] or 0 for c in model_calls),
            "wall_s": round(wall, 3),
            "iterations": iterations,
            "tool_calls": len(self._actions),
            "errors": sum(1 for log in self.logs if "error" in log),
        }
        # copies: an enclosing recording (a managing agent, an eval) holds the same entries
        trace = sorted([dict(c) for c in model_calls] + self._tool_trace, key=lambda c: c["t_end"])
        for entry in trace:
            entry["t_end"] = round(entry["t_end"] - t0, 4)
        self.trace = trace
        return answer

    def _run_steps(self) -> Any:
        for iteration in range(self.max_iterations):
            log: dict[str, Any] = {"iteration": iteration}
            self.logs.append(log)
            try:
                self.step(log)
            except AgentError as e:
                log["error"] = e
                self._say(1, f"Error: {e}")
            for callback in self.step_callbacks:
                callback(log)
            if "final_answer" in log:
                self._say(1, f"Final answer: {log['final_answer']}")
                return log["final_answer"]
        error = AgentMaxIterationsError(f"reached max iterations ({self.max_iterations}) without a final answer")
        log = {"error": error}
        self.logs.append(log)
        self._say(1, f"Error: {error}")
        answer = self.provide_final_answer(self.task)
        log["final_answer"] = answer
        for callback in self.step_callbacks:
            callback(log)
        self._say(1, f"Final answer: {answer}")
        return answer

    def step(self, log: dict) -> None:
        """One step: fill ``log`` (``llm_output``, ``rationale``, ``tool_call``, ``observation``,
        ``final_answer``); raise :class:`AgentError` for what the model did wrong."""
        raise NotImplementedError(f"{type(self).__name__} must implement step")

    def provide_final_answer(self, task: str) -> str:
        """One model call that answers ``task`` from the memory (after max_iterations)."""
        messages = fmt.stuck_messages(self.write_inner_memory_from_logs(), task)
        with role("final"):
            return self.llm_engine(messages).strip()

    # -- memory ---------------------------------------------------------------------------------

    def write_inner_memory_from_logs(self) -> list[dict]:
        """The logs as chat messages for the model: the system prompt, the task, then per step
        the model's output and what came of it (``Observation:`` or ``Error:``)."""
        memory: list[dict] = []
        for log in self.logs:
            if "system_prompt" in log:
                memory.append({"role": "system", "content": log["system_prompt"]})
            if "task" in log:
                memory.append(fmt.task_message(log["task"]))
            if "llm_output" in log:
                memory.append({"role": "assistant", "content": self._as_written(log)})
            if "iteration" in log and "error" in log:
                memory.append(fmt.error_message(str(log["error"])))
            elif "observation" in log:
                memory.append(fmt.observation_message(log["observation"]))
        return memory

    @staticmethod
    def _as_written(log: dict) -> str:
        """The model's output as the format has it: the stop sequence the engine cut is put back."""
        text = log["llm_output"].rstrip()
        if ("tool_call" in log or "code" in log) and not text.endswith(fmt.END_ACTION):
            text += fmt.END_ACTION
        return text

    def generate(self, log: dict, messages: list[dict] | None = None, stop_sequences: list[str] | None = None) -> str:
        """Ask the engine for the next output, with the memory as the prompt; record both."""
        messages = self.write_inner_memory_from_logs() if messages is None else messages
        log["agent_memory"] = messages
        if self.verbose >= 2:
            self._say(2, "===== Prompt =====\n" + "\n".join(f"[{m['role']}] {m['content']}" for m in messages))
        kw: dict[str, Any] = {} if self.grammar is None else {"constraint": self.grammar}
        if self.max_new_tokens is not None:
            kw["max_new_tokens"] = self.max_new_tokens
        with role("agent"):
            output = self.llm_engine(messages, stop_sequences=stop_sequences or self.stop_sequences, **kw)
        log["llm_output"] = output
        return output

    # -- tools ----------------------------------------------------------------------------------

    def callable_tools(self, description: Callable[[], str] = str) -> dict[str, Callable]:
        """Every tool and managed agent as a function that records its calls (for code);
        ``description()`` gives the thought of the step that makes the call."""
        def recorded(name):
            def call(*args, **kwargs):
                return self.call_tool(name, args, kwargs, description())
            call.__name__ = name
            return call
        return {name: recorded(name) for name in [*self.toolbox, *self.managed_agents]}

    def call_tool(self, name: str, args: tuple = (), kwargs: Mapping[str, Any] | None = None,
                  description: str = "") -> Any:
        """Call a tool (or managed agent) as ``tool(*args, **kwargs)`` and record the call.
        An unknown name is an :class:`AgentExecutionError`; a failing call raises the tool's
        :class:`ToolError` (both are the model's to fix)."""
        kwargs = dict(kwargs or {})
        target = self.toolbox.get(name) or self.managed_agents.get(name)
        if target is None:
            known = [*self.toolbox, *self.managed_agents]
            raise AgentExecutionError(f"there is no tool named {name!r}; use one of: {', '.join(known)}")
        if not args:
            shown: Any = kwargs
        elif isinstance(target, Tool) and len(args) <= len(target.inputs):  # name the positional ones
            shown = {**dict(zip(target.inputs, args)), **kwargs}
        else:
            shown = {"args": list(args), **kwargs}
        action = None
        if name != "final_answer":
            action = Action(f"#E{len(self._actions) + 1}", name, shown, description)
            self._actions.append(action)
        t0 = time.perf_counter()
        status, output = "ok", ""
        try:
            with role(f"tool:{name}"):
                if isinstance(target, ManagedAgent):
                    request = args[0] if len(args) == 1 and not kwargs else kwargs.get("request")
                    if not isinstance(request, str) or len(args) + len(kwargs) != 1:
                        raise ToolError(name, kwargs, "a team member takes one argument, request (a string)")
                    result = target(request)
                else:
                    result = target(*args, **kwargs)
            output = observation_text(result)
            return result
        except ToolError as e:
            status, output = "error", str(e)
            raise
        finally:
            if action is not None:
                action.status, action.output = status, output
                self._tool_trace.append({"role": "tool", "var": action.var, "tool": name, "arguments": shown,
                                             "status": status, "output": output,
                                             "seconds": round(time.perf_counter() - t0, 4),
                                             "t_end": time.perf_counter()})
