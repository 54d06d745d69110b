"""The transformers Agents API on our engines, toolbox and sandbox.

    from pipeline.agents import CodeAgent, ReactCodeAgent, ReactJsonAgent, ReWOOAgent
    agent = ReactCodeAgent(tools=[search], llm_engine=engine, additional_authorized_imports=["numpy"])
    agent.run("How many more blocks has BERT base's encoder than the original Transformer's?")
    agent.logs, agent.write_inner_memory_from_logs(), agent.stats, agent.trace

- ``CodeAgent``: one thought, one code block that does everything;
- ``ReactJsonAgent``: Thought / Action (JSON) / Observation, step by step;
- ``ReactCodeAgent``: Thought / Code / Observation, step by step, variables kept between steps;
- ``ReWOOAgent``: the ReWOO pipeline (plan, work, solve) behind the same interface;
- ``PipelineTool``, ``load_tool``: a transformers model as a tool; a tool from a path or module.

``python -m pipeline.run "TASK" --mode react|code`` runs the ReAct agents (:mod:`pipeline.agents.cli`).
"""

from pipeline.agents.agent import (Action, Agent, AgentError, AgentExecutionError, AgentMaxIterationsError,
                                   AgentParsingError, FinalAnswerTool, ManagedAgent)
from pipeline.agents.cli import AGENT_MODES, eval_runner, make_agent, run_agent_cli
from pipeline.agents.oneshot import CodeAgent, ReWOOAgent
from pipeline.agents.react import ReactAgent, ReactCodeAgent, ReactJsonAgent
from pipeline.agents.tools import PipelineTool, load_tool

__all__ = [
    "Agent", "CodeAgent", "ReactAgent", "ReactJsonAgent", "ReactCodeAgent", "ReWOOAgent",
    "AgentError", "AgentParsingError", "AgentExecutionError", "AgentMaxIterationsError",
    "FinalAnswerTool", "ManagedAgent", "Action", "PipelineTool", "load_tool",
    "AGENT_MODES", "make_agent", "run_agent_cli", "eval_runner",
]
