"""ReAct-JSON and code-agent trajectories of the demo's tasks (train.trajectories): each script is
one the real agent finishes with the grounded answer, a replay that leaves its script is dropped,
and a row's prompt is the prompt the engine renders at run time."""

from __future__ import annotations

import random

import pytest

from pipeline.agents.cli import make_agent
from pipeline.engines import Completion, TransformersEngine
from pipeline.formats import agents as fmt
from toolkit import default_toolbox
from train import demo_data, trajectories

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def grounded(tmp_path_factory):
    box = default_toolbox(workspace=str(tmp_path_factory.mktemp("ws")), search_url=None)
    it = demo_data.Intents(demo_data.World.load(), random.Random(3))
    drafts = [it.calc_chain(), it.save_text(), it.web(), it.clock(), it.python(), it.wiki_then_llm(),
              it.director_films(), it.lookup_then_save()]
    return box, {g["draft"].intent: g for g in demo_data.ground(drafts, box, 0)}


@pytest.mark.parametrize("mode", trajectories.MODES)
def test_every_script_is_finished_by_the_real_agent_with_the_grounded_answer(grounded, mode):
    box, tasks = grounded
    for intent, g in tasks.items():
        rows = trajectories.replay(g, box, mode)
        assert rows is not None, f"{mode} replay of {intent} left its script: {trajectories.script(g, mode)}"
        assert len(rows) == len(g["plan"]) + 1  # one tool per step, then final_answer
        first = rows[0]["messages"]
        assert first[0]["role"] == "system" and "<<" not in first[0]["content"]
        assert first[1] == fmt.task_message(g["draft"].text)
        for row in rows:
            out = row["messages"][-1]
            assert out["role"] == "assistant" and out["content"].startswith("Thought: ")
            assert out["content"].endswith(fmt.END_ACTION) and out["content"].count(fmt.END_ACTION) == 1
        assert '"final_answer"' in rows[-1]["messages"][-1]["content"] or "final_answer(" in rows[-1]["messages"][-1]["content"]
        # each later prompt holds what the run showed: the observation, or the tool's error
        for step, row in zip(g["plan"], rows[1:]):
            shown = row["messages"][-2]["content"]
            if g["evidence"][step.var].startswith("Error"):
                assert shown.startswith("Error: ") and step.tool in shown
            elif not (mode == "code" and step.tool == "python_interpreter"):
                assert g["evidence"][step.var].strip().splitlines()[0] in shown


def test_chained_steps_pass_evidence_as_each_mode_does(grounded):
    box, tasks = grounded
    g = tasks["calc_chain"]
    react, code = trajectories.script(g, "react"), trajectories.script(g, "code")
    first = g["evidence"]["#E1"].strip()
    assert f'"expression": "{first} ' in react[1]  # ReAct copies the observation into the next call
    assert 'calculator(expression=f"{e1} ' in code[1]  # code keeps it in a variable
    saved = trajectories.script(tasks["lookup_then_save"], "code")
    assert "content=e1)" in saved[1] or 'content=f"{e1}"' in saved[1]


def test_a_replay_that_leaves_its_script_is_dropped(grounded):
    box, tasks = grounded
    wrong = dict(tasks["calc_chain"], evidence={**tasks["calc_chain"]["evidence"], "#E1": "12"})
    assert trajectories.replay(wrong, box, "react") is None  # the real calculator says otherwise
    rows, dropped = trajectories.agent_rows([wrong, tasks["save_text"]], box, "react", limit=5)
    assert dropped == 1 and len(rows) == 2 and rows[0]["meta"]["intent"] == "save_text"


@pytest.mark.parametrize("mode", trajectories.MODES)
def test_a_rows_prompt_is_what_the_engine_renders_at_run_time(grounded, tiny_model_dir, mode):
    """Run the real agent on a TransformersEngine (a chat template on its tokenizer, as the base
    has) over the toolbox the CLI builds, its model answering the script: the prompts it renders
    are the rows' prompts."""
    box, tasks = grounded
    g = tasks["calc_chain"]
    rows = trajectories.as_prompts(trajectories.replay(g, box, mode), _chat_engine(tiny_model_dir).tokenizer)
    engine = _chat_engine(tiny_model_dir)
    script, seen = trajectories.script(g, mode), []

    def generate(prompts, stop, max_new_tokens, temperature, constraints):
        seen.extend(prompts)
        return [Completion(script[len(seen) - 1], 1, 1)]

    engine._generate = generate
    answer = make_agent(mode, engine, default_toolbox()).run(g["draft"].text)
    assert str(answer) == g["answer"]
    assert seen == [r["prompt"] for r in rows]
    assert rows[0]["prompt"].startswith("<|im_start|>system\n") and rows[-1]["completion"].endswith(fmt.END_ACTION)


def _chat_engine(model_dir):
    engine = TransformersEngine(model_dir, device="cpu")
    engine.tokenizer.chat_template = CHATML
    return engine
