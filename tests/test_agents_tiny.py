"""The agents on the tiny real model (a clean stop at max_iterations), PipelineTool on it, and
``python -m pipeline.run --mode react|code`` / ``pipeline.eval``'s agent runner."""

from __future__ import annotations

import json

import pytest

from pipeline.agents import (AgentMaxIterationsError, CodeAgent, PipelineTool, ReactCodeAgent, ReactJsonAgent,
                             ReWOOAgent, eval_runner, run_agent_cli)
from pipeline.engines import TransformersEngine
from toolkit import Toolbox, ToolDefinitionError, ToolError, tool


@tool
def lookup(query: str) -> str:
    """Look a film up.

    Args:
        query: the film's title
    """
    return "Killers of the Flower Moon was directed by Martin Scorsese."


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    return TransformersEngine(tiny_model_dir, max_new_tokens=8)


@pytest.mark.parametrize("agent_class", [ReactJsonAgent, ReactCodeAgent, CodeAgent])
def test_tiny_model_drives_each_agent_to_a_clean_stop(tiny_engine, agent_class):
    before = tiny_engine.usage.prompt_tokens, tiny_engine.usage.completion_tokens, tiny_engine.usage.calls
    agent = agent_class(tools=[lookup], llm_engine=tiny_engine, max_iterations=2)
    answer = agent.run("Who directed 'Killers of the Flower Moon'?")
    assert isinstance(agent.logs[-1]["error"], AgentMaxIterationsError)
    # after max_iterations the answer is the one extra "final" call's output, as written
    assert agent.trace[-1]["role"] == "final"
    assert answer == agent.trace[-1]["output"].strip() == agent.logs[-1]["final_answer"]
    steps = [log for log in agent.logs if "iteration" in log]
    assert len(steps) == 2 and all("error" in s and "llm_output" in s for s in steps)
    s = agent.stats
    # the same accounting as the pipeline's: every engine call, the engine's own token counts
    assert s["llm_calls"] == 3 == tiny_engine.usage.calls - before[2]
    assert s["prompt_tokens"] == tiny_engine.usage.prompt_tokens - before[0] > 1000
    assert s["completion_tokens"] == tiny_engine.usage.completion_tokens - before[1] > 0
    assert [t["role"] for t in agent.trace] == ["agent", "agent", "final"]


def test_tiny_model_rewoo_agent(tiny_engine):
    agent = ReWOOAgent(tools=[lookup], llm_engine=tiny_engine, planner_max_new_tokens=60, solver_max_new_tokens=8)
    answer = agent.run("Who directed 'Killers of the Flower Moon'?")
    # the constrained planner always writes a plan; the answer is the solver's output
    assert agent.trace[0]["role"] == "planner" and agent.trace[-1]["role"] == "solver"
    assert answer == agent.trace[-1]["output"].strip()
    assert agent.stats["llm_calls"] == 2 and all(a.tool == "lookup" for a in agent.actions)


# ---- PipelineTool ----------------------------------------------------------------------------------

def _next_token_tool_class():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    class NextToken(PipelineTool):
        name = "next_token"
        description = "Predicts the token that follows a text."
        inputs = {"text": {"type": "string", "description": "the text to continue"}}
        output_type = "string"
        model_class = AutoModelForCausalLM
        pre_processor_class = AutoTokenizer

        def encode(self, text):
            return self.pre_processor(text, return_tensors="pt")

        def decode(self, outputs):
            next_id = int(outputs.logits[0, -1].argmax())  # logits: (B, T, V)
            return self.post_processor.decode([next_id])

    return NextToken


def test_pipeline_tool_loads_lazily_and_runs_encode_forward_decode(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    NextToken = _next_token_tool_class()
    t = NextToken(model=str(tiny_model_dir), device="cpu")
    assert isinstance(t.model, str) and not t.is_initialized  # nothing loaded yet
    out = t(text="Martin Scorsese directed")
    assert t.is_initialized and not isinstance(t.model, str)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        ids = model(**tok("Martin Scorsese directed", return_tensors="pt")).logits[0, -1].argmax()
    assert out == tok.decode([int(ids)])
    assert t("Martin Scorsese directed") == out  # one positional value for the one input
    with pytest.raises(ToolError, match="missing required argument 'text'"):
        t(prompt="x")


def test_pipeline_tool_checks_encode_against_inputs():
    from transformers import AutoModelForCausalLM

    with pytest.raises(ToolDefinitionError, match=r"`encode` lacks parameters for inputs \['text'\]"):
        class Broken(PipelineTool):
            name = "broken"
            description = "Broken."
            inputs = {"text": {"type": "string", "description": "the text"}}
            output_type = "string"
            model_class = AutoModelForCausalLM

            def encode(self, prompt):
                return prompt
    with pytest.raises(ValueError, match="needs a model: pass model= or set default_checkpoint"):
        _next_token_tool_class()()


def test_an_agent_calls_a_pipeline_tool(tiny_model_dir, scripted_engine):
    t = _next_token_tool_class()(model=str(tiny_model_dir), device="cpu")
    engine = scripted_engine([
        'Thought: ask the model.\nAction:\n{"action": "next_token", "action_input": {"text": "Hello"}}<end_action>',
        'Thought: done.\nAction:\n{"action": "final_answer", "action_input": {"answer": "ok"}}<end_action>'])
    agent = ReactJsonAgent(tools=[t], llm_engine=engine)
    assert agent.run("Continue 'Hello'.") == "ok"
    assert agent.logs[1]["observation"] == t(text="Hello")
    assert "- next_token: Predicts the token that follows a text." in agent.system_prompt


# ---- the CLI and the eval runner -------------------------------------------------------------------

def test_run_cli_mode_react_prints_the_rewoo_json_shape(tiny_model_dir, tmp_path, capsys):
    from pipeline.run import main

    tools_file = tmp_path / "my_tools.py"
    tools_file.write_text("from tests.test_agents_tiny import lookup\nfrom toolkit import Toolbox\n"
                          "toolbox = Toolbox([lookup])\n")
    trace = tmp_path / "trace.json"
    code = main(["Who directed 'Killers of the Flower Moon'?", "--mode", "react", "--planner", str(tiny_model_dir),
                 "--tools", f"{tools_file}:toolbox", "--json", "--trace", str(trace), "--max-new-tokens", "8"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"task", "plan", "evidence", "answer", "stats"}
    assert all(set(s) == {"var", "tool", "input", "description"} for s in out["plan"])
    assert set(out["evidence"]) == {s["var"] for s in out["plan"]}
    for key in ("llm_calls", "prompt_tokens", "completion_tokens", "wall_s"):
        assert isinstance(out["stats"][key], (int, float))
    assert out["stats"]["llm_calls"] == out["stats"]["iterations"] + 1  # the tiny model never finishes
    saved = json.loads(trace.read_text())
    assert saved["result"]["answer"] == out["answer"] and saved["trace"][-1]["role"] == "final"


def test_run_agent_cli_with_a_scripted_engine(scripted_engine, capsys):
    from pipeline.run import build_parser

    engine = scripted_engine([
        'Thought: look it up.\nCode:\n```py\nprint(lookup(query="Killers of the Flower Moon"))\n```<end_action>',
        'Thought: done.\nCode:\n```py\nfinal_answer("Martin Scorsese")\n```<end_action>'])
    args = build_parser().parse_args(["Who directed 'Killers of the Flower Moon'?", "--mode", "code", "--json"])
    assert run_agent_cli(args, engine, Toolbox([lookup])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == "Martin Scorsese"
    assert out["plan"] == [{"var": "#E1", "tool": "lookup", "input": '{"query": "Killers of the Flower Moon"}',
                            "description": "look it up."}]
    assert out["evidence"] == {"#E1": "Killers of the Flower Moon was directed by Martin Scorsese."}
    assert out["stats"]["llm_calls"] == 2


def test_eval_runner_reports_calls_and_early_stops(scripted_engine):
    engine = scripted_engine([
        'Thought: t\nAction:\n{"action": "lookup", "action_input": {"query": "Killers"}}<end_action>',
        "Scorsese, I think.",  # the stuck agent's answer from memory
        'Thought: t\nAction:\n{"action": "final_answer", "action_input": {"answer": "Scorsese"}}<end_action>'])
    run = eval_runner("react", engine, max_iterations=1)(Toolbox([lookup]))
    stuck = run("Who directed Killers?")
    assert stuck["error"] == "reached max iterations (1) without a final answer"
    assert stuck["calls"] == [{"name": "lookup", "arguments": {"query": "Killers"}}]
    assert stuck["answer"] == "Scorsese, I think." and stuck["stats"]["llm_calls"] == 2
    done = run("Who directed Killers?")
    assert done == {"plan": [], "calls": [], "answer": "Scorsese", "stats": done["stats"], "error": None}


def test_the_agents_run_tasks_that_name_catalog_tools(scripted_engine, tmp_path):
    """A task file naming tools the toolbox lacks (the unseen-tools sets) gets catalog stand-ins;
    ReWOO planned with them, but `bench_demo --modes react` on unseen_tools.jsonl crashed: "a toolbox
    holds Tool instances; got CatalogStandIn". The agents get them as Tools: described as the
    catalog describes them, and a call fails with the stand-in's error as the step's observation."""
    from pipeline.eval import evaluate_tasks, load_tasks

    engine = scripted_engine([
        'Thought: t\nAction:\n{"action": "get_movie_details", "action_input": {"title": "Inception"}}<end_action>',
        'Thought: t\nAction:\n{"action": "final_answer", "action_input": {"answer": "no details"}}<end_action>'])
    task = {"id": "u-1", "task": "Get the details of Inception.", "tools": ["get_movie_details", "lookup"],
            "expect": {"tools": ["get_movie_details"]}}
    path = tmp_path / "unseen.jsonl"
    path.write_text(json.dumps(task) + "\n")
    tasks = load_tasks(path)
    report = evaluate_tasks(tasks, Toolbox([lookup]), eval_runner("react", engine, max_iterations=3), "react",
                            progress=False)
    row = report["per_task"][0]
    assert report["skipped"] == [] and row["error"] is None and row["answer"] == "no details"
    assert row["plan_tools"] == ["get_movie_details"] and row["scores"]["tool_set"] is True
    sent = "\n".join(m["content"] for m in engine.calls[0]["messages"])
    assert "get_movie_details" in sent and "Get the details of a film" in sent  # the catalog's line
    observed = "\n".join(m["content"] for m in engine.calls[1]["messages"])
    assert "catalog tool with no implementation" in observed
    # a parameter the catalog does not require may be left out; one outside its enum is refused
    news = scripted_engine([
        'Thought: t\nAction:\n{"action": "search_news", "action_input": {"query": "Airbus"}}<end_action>',
        'Thought: t\nAction:\n{"action": "get_directions", "action_input": {"origin": "A", "destination": "B", '
        '"mode": "flying"}}<end_action>',
        'Thought: t\nAction:\n{"action": "final_answer", "action_input": {"answer": "none"}}<end_action>'])
    task = {"id": "u-2", "task": "Find news about Airbus.", "tools": ["search_news", "get_directions"]}
    path.write_text(json.dumps(task) + "\n")
    evaluate_tasks(load_tasks(path), Toolbox([lookup]), eval_runner("react", news, max_iterations=3), "react",
                   progress=False)
    first, second = ("\n".join(m["content"] for m in news.calls[i]["messages"][-1:]) for i in (1, 2))
    assert "catalog tool with no implementation" in first
    assert "catalog tool with no implementation" not in second and "flying" in second
