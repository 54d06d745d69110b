"""The ReAct agents: one thought and one action per step, then the observation (Yao et al. 2022).

    from pipeline.agents import ReactJsonAgent, ReactCodeAgent
    agent = ReactJsonAgent(tools=[search], llm_engine=engine)
    agent.run("Which river is longer, the Danube or the Rhine?")

- :class:`ReactJsonAgent` writes ``Action:\\n{"action": <tool>, "action_input": {...}}<end_action>``;
- :class:`ReactCodeAgent` writes ``Code:\\n```py ... ```<end_action>``; the code runs in the
  OS-isolated sandbox with the tools called back here, and its variables (data, modules, its
  own functions) persist between steps in ``agent.state``.
"""

from __future__ import annotations

from typing import Any

from pipeline.agents.agent import Agent, AgentExecutionError, AgentParsingError, observation_text
from pipeline.agents.execution import run_code
from pipeline.formats import agents as fmt
from toolkit import ToolError

__all__ = ["ReactAgent", "ReactJsonAgent", "ReactCodeAgent"]


def _parsed(parse, *args):
    """Run a format parser; its complaint becomes the step's parsing error."""
    try:
        return parse(*args)
    except fmt.AgentParseError as e:
        raise AgentParsingError(str(e)) from e


class ReactAgent(Agent):
    """The ReAct loop: ``run`` steps until ``final_answer`` or ``max_iterations``."""


class ReactJsonAgent(ReactAgent):
    """Thought / Action as JSON / Observation."""

    default_system_prompt = fmt.REACT_JSON_SYSTEM_PROMPT
    stop_sequences = fmt.REACT_STOP_SEQUENCES

    def step(self, log: dict) -> None:
        output = self.generate(log)
        thought, action = _parsed(fmt.split_thought, output, "Action:")
        log["rationale"] = thought
        name, arguments = _parsed(fmt.parse_json_action, action)
        log["tool_call"] = {"tool_name": name, "tool_arguments": arguments}
        self._say(1, f"=== Agent thoughts:\n{thought}\n>>> Calling tool: '{name}' with arguments: {arguments}")
        if isinstance(arguments, dict):
            args, kwargs = (), {k: self._from_state(v) for k, v in arguments.items()}
        else:
            args, kwargs = (self._from_state(arguments),), {}
        try:
            result = self.call_tool(name, args, kwargs, thought)
        except ToolError as e:
            target = self.toolbox.get(name)
            reminder = ("" if target is None else "\nCall it with arguments that fit its description:\n"
                        + self._describe(name))
            raise AgentExecutionError(f"{e}{reminder}") from e
        if name == "final_answer":
            log["final_answer"] = result
            return
        log["observation"] = observation_text(result)
        self._say(1, f"Observation: {log['observation']}")

    def _from_state(self, value: Any) -> Any:
        """A string naming a state variable (a run argument) stands for its value."""
        return self.state[value] if isinstance(value, str) and value in self.state else value

    def _describe(self, name: str) -> str:
        from toolkit import Toolbox
        return Toolbox([self.toolbox[name]]).show_tool_descriptions(self.tool_description_template)


class ReactCodeAgent(ReactAgent):
    """Thought / Code / Observation. ``additional_authorized_imports`` widens the sandbox's
    import allow-list; ``agent.state`` holds the code's variables across steps."""

    default_system_prompt = fmt.REACT_CODE_SYSTEM_PROMPT
    stop_sequences = fmt.REACT_STOP_SEQUENCES
    uses_code = True

    def run_code_action(self, log: dict, thought: str, action: str):
        """Parse the code blob of ``action``, run it in the sandbox, log it; returns the outcome."""
        log["rationale"] = thought
        code = _parsed(fmt.parse_code_blob, action)
        log["code"] = code
        log["tool_call"] = {"tool_name": "code interpreter", "tool_arguments": code}
        self._say(1, f"====Agent is executing the code below:\n{code}\n====")  # the seeds' wording
        outcome = run_code(code, self, thought)
        log["observation"] = outcome.observation()
        if outcome.printed:
            self._say(1, f"Print outputs:\n{outcome.printed.rstrip()}")
        return outcome

    def step(self, log: dict) -> None:
        output = self.generate(log)
        thought, action = _parsed(fmt.split_thought, output, "Code:")
        outcome = self.run_code_action(log, thought, action)
        if outcome.answered:
            log["final_answer"] = outcome.answer
            return
        if outcome.error is not None:
            raise AgentExecutionError(outcome.error_text())
