"""The transformers Agents API with scripted engines: the seeds' trajectories, errors fed back to
the model, the system prompt contract, accounting, ReWOOAgent, load_tool."""

from __future__ import annotations

import io
import json

import pytest

from pipeline.agents import (Agent, AgentExecutionError, AgentMaxIterationsError, AgentParsingError, CodeAgent,
                             ManagedAgent, ReactCodeAgent, ReactJsonAgent, ReWOOAgent, load_tool)
from pipeline.engines import recording
from pipeline.formats import agents as fmt
from toolkit import Tool, tool

BERT_TASK = ("How many more blocks (also denoted as layers) in BERT base encoder than the encoder from the "
             "architecture proposed in Attention is All You Need?")
ATTENTION = ("Encoder: The encoder is composed of a stack of N = 6 identical layers. Each layer has two "
             "sub-layers.")


@tool
def search(query: str) -> str:
    """Search the web.

    Args:
        query: what to look for
    """
    if "BERT" in query:
        return "twelve encoder blocks"
    if "Attention" in query:
        return ATTENTION
    raise LookupError(f"nothing found for {query!r}")


@tool
def translator(text: str, src_lang: str, tgt_lang: str) -> str:
    """Translate a text.

    Args:
        text: the text
        src_lang: its language
        tgt_lang: the language to translate it into
    """
    assert (src_lang, tgt_lang) == ("French", "English")
    return {"Où est la boulangerie la plus proche?": "Where is the nearest bakery?"}[text]


def code_step(thought: str, code: str) -> str:
    return f"Thought: {thought}\nCode:\n```py\n{code}\n```<end_action>"


def json_step(thought: str, action: str, action_input) -> str:
    blob = json.dumps({"action": action, "action_input": action_input}, indent=2)
    return f"Thought: {thought}\nAction:\n{blob}<end_action>"


def last_prompt(engine) -> list[dict]:
    return engine.calls[-1]["messages"]


# ---- the seeds' trajectories ----------------------------------------------------------------------

def test_react_code_agent_answers_the_bert_question_in_three_steps(scripted_engine):
    engine = scripted_engine([
        code_step("I will look up the number of blocks of BERT base.",
                  'bert_blocks = search(query="number of blocks in BERT base encoder")\nprint("BERT blocks:", bert_blocks)'),
        code_step("Now the layers of the encoder in Attention is All You Need.",
                  'attention_layer = search(query="number of layers in Attention is All You Need")\n'
                  'print("Attention layers:", attention_layer)'),
        code_step("BERT base has 12 blocks, the original encoder 6.",
                  'bert_blocks = 12\nattention_layers = 6\ndiff = bert_blocks - attention_layers\n'
                  'print("Difference in blocks:", diff)\nfinal_answer(diff)'),
    ])
    out = io.StringIO()
    agent = ReactCodeAgent(tools=[search], llm_engine=engine, verbose=1, log_stream=out)
    assert agent.run(BERT_TASK) == 6
    assert engine.remaining == 0 and [m["role"] for m in last_prompt(engine)] == [
        "system", "user", "assistant", "user", "assistant", "user"]
    steps = [log for log in agent.logs if "iteration" in log]
    assert len(steps) == 3 and "error" not in str([s.keys() for s in steps])
    assert steps[0]["observation"] == "Print outputs:\nBERT blocks: twelve encoder blocks"
    assert steps[1]["observation"] == f"Print outputs:\nAttention layers: {ATTENTION}"
    assert steps[2]["final_answer"] == 6
    # the second step's prompt shows the first observation; the code's variables persisted
    assert last_prompt(engine)[3] == {"role": "user", "content": "Observation:\nPrint outputs:\nBERT blocks: "
                                                                  "twelve encoder blocks"}
    assert agent.state["attention_layer"] == ATTENTION and agent.state["diff"] == 6
    printed = out.getvalue()
    for line in ("====Agent is executing the code below:", "Print outputs:\nDifference in blocks: 6",
                 "Final answer: 6"):
        assert line in printed
    assert [(a.var, a.tool, a.arguments) for a in agent.actions] == [
        ("#E1", "search", {"query": "number of blocks in BERT base encoder"}),
        ("#E2", "search", {"query": "number of layers in Attention is All You Need"})]
    assert agent.stats["iterations"] == 3 and agent.stats["tool_calls"] == 2 and agent.stats["errors"] == 0


def test_react_json_agent_run(scripted_engine):
    engine = scripted_engine([
        json_step("I will search BERT first.", "search", {"query": "number of blocks in BERT base encoder"}),
        json_step("Now the original Transformer.", "search", {"query": "layers in Attention is All You Need"}),
        json_step("12 - 6 = 6.", "final_answer", {"answer": 6}),
    ])
    agent = ReactJsonAgent(tools=[search], llm_engine=engine)
    assert agent.run(BERT_TASK) == 6
    assert all(c["stop_sequences"] == ["<end_action>", "Observation:"] for c in engine.calls)
    memory = agent.write_inner_memory_from_logs()
    assert memory[0] == {"role": "system", "content": agent.system_prompt}
    assert memory[1] == {"role": "user", "content": f"Task: {BERT_TASK}"}
    assert memory[2]["content"].endswith("}<end_action>")  # the cut stop sequence is put back
    assert memory[3] == {"role": "user", "content": "Observation:\ntwelve encoder blocks"}
    assert agent.logs[1]["tool_call"] == {"tool_name": "search",
                                          "tool_arguments": {"query": "number of blocks in BERT base encoder"}}
    assert agent.logs[1]["rationale"] == "I will search BERT first."
    assert agent.to_dict(6)["plan"] == [
        {"var": "#E1", "tool": "search", "input": '{"query": "number of blocks in BERT base encoder"}',
         "description": "I will search BERT first."},
        {"var": "#E2", "tool": "search", "input": '{"query": "layers in Attention is All You Need"}',
         "description": "Now the original Transformer."}]


def test_code_agent_one_shot_with_run_arguments_in_state(scripted_engine):
    engine = scripted_engine([
        "Thought: I will use `translator` on `sentence`.\nCode:\n```py\n"
        'translated = translator(text=sentence, src_lang="French", tgt_lang="English")\n'
        'print(f"Translation: {translated}")\nfinal_answer(translated)\n```<end_action>'])
    agent = CodeAgent(tools=[translator], llm_engine=engine)
    answer = agent.run("Could you translate this sentence from French?", sentence="Où est la boulangerie la plus proche?")
    assert answer == "Where is the nearest bakery?"
    assert len(engine.calls) == 1 and engine.calls[0]["stop_sequences"] == ["<end_action>"]
    assert agent.task.endswith("You have been provided with these initial arguments: "
                               "{'sentence': 'Où est la boulangerie la plus proche?'}.")
    assert agent.state["translated"] == answer
    assert agent.logs[-1]["observation"] == "Print outputs:\nTranslation: Where is the nearest bakery?"


def test_code_agent_without_final_answer_returns_the_last_value(scripted_engine):
    engine = scripted_engine(["Thought: arithmetic.\nCode:\n```py\nx = 5 + 3\nx * 2\n```"])
    assert CodeAgent(tools=[], llm_engine=engine).run("What is (5 + 3) * 2?") == 16


def test_code_agent_return_generated_code_does_not_run_it(scripted_engine):
    engine = scripted_engine(['Code:\n```py\nprint("hi")\n```'])
    agent = CodeAgent(tools=[], llm_engine=engine)
    assert agent.run("Say hi.", return_generated_code=True) == 'Code:\n```py\nprint("hi")\n```'
    assert "observation" not in agent.logs[-1]


# ---- the model's errors go back to the model ------------------------------------------------------

def test_invalid_code_is_fed_back_and_the_code_agent_tries_again(scripted_engine):
    bad = ("Thought: translate, then speak.\nCode:\n```py\ntext = sentence\n"
           "text_to_speech(text_to_speech vlas=text)\n```<end_action>")
    good = code_step("Fix the syntax.", 'final_answer(translator(text=sentence, src_lang="French", tgt_lang="English"))')
    engine = scripted_engine([bad, good])
    agent = CodeAgent(tools=[translator], llm_engine=engine)
    assert agent.run("Translate.", sentence="Où est la boulangerie la plus proche?") == "Where is the nearest bakery?"
    error = agent.logs[1]["error"]
    assert isinstance(error, AgentExecutionError) and "syntax error on line 2" in str(error)
    feedback = last_prompt(engine)[-1]
    assert feedback["role"] == "user" and feedback["content"].startswith("Error: the code failed: syntax error on line 2")


def test_sandbox_refusal_is_an_observation_not_a_crash(scripted_engine):
    engine = scripted_engine([
        code_step("List the files.", 'import os\nprint(os.listdir("/"))'),
        code_step("Read a file then.", 'print("before")\nprint(open("/etc/passwd").read())'),
        code_step("Give up on files.", 'final_answer("no file access")'),
    ])
    agent = ReactCodeAgent(tools=[], llm_engine=engine)
    assert agent.run("What is in /etc/passwd?") == "no file access"
    errors = [str(log["error"]) for log in agent.logs if "error" in log]
    assert "import of 'os' is not allowed" in errors[0]
    assert "'open' is not defined" in errors[1] and "Printed before the error:\nbefore" in errors[1]
    assert "import of 'os' is not allowed" in engine.calls[1]["messages"][-1]["content"]
    assert "'open' is not defined" in engine.calls[2]["messages"][-1]["content"]


def test_additional_authorized_imports_reach_the_sandbox_and_the_prompt(scripted_engine):
    engine = scripted_engine([code_step("csv is allowed.", 'import csv\nfinal_answer(csv.QUOTE_ALL)')])
    agent = ReactCodeAgent(tools=[], llm_engine=engine, additional_authorized_imports=["csv"])
    assert "csv" in agent.system_prompt and "math" in agent.system_prompt
    import csv
    assert agent.run("Which constant?") == csv.QUOTE_ALL


@pytest.mark.parametrize("output, error_type, says", [
    ("I think the answer is 6.", AgentParsingError, "your output has no 'Action:'"),
    ('Thought: t\nAction:\n{"action": search, "action_input": {}}', AgentParsingError, "not valid JSON"),
    ('Thought: t\nAction:\n{"tool": "search"}', AgentParsingError, 'no "action" key'),
    ('Thought: t\nAction:\n{"action": "browse", "action_input": {"url": "x"}}', AgentExecutionError,
     "there is no tool named 'browse'; use one of: search, final_answer"),
    ('Thought: t\nAction:\n{"action": "search", "action_input": {"q": "BERT"}}', AgentExecutionError,
     "missing required argument 'query'"),
    ('Thought: t\nAction:\n{"action": "search", "action_input": {"query": "unknown things"}}', AgentExecutionError,
     "nothing found for 'unknown things'"),
])
def test_json_agent_feeds_each_model_error_back(scripted_engine, output, error_type, says):
    engine = scripted_engine([output, json_step("Answer.", "final_answer", "6")])
    agent = ReactJsonAgent(tools=[search], llm_engine=engine)
    assert agent.run(BERT_TASK) == "6"
    error = agent.logs[1]["error"]
    assert isinstance(error, error_type) and says in str(error)
    feedback = last_prompt(engine)[-1]["content"]
    assert feedback.startswith("Error: ") and says in feedback and "Fix this in your next step" in feedback


def test_json_agent_string_arguments_name_state_variables(scripted_engine):
    engine = scripted_engine([
        json_step("Translate the given sentence.", "translator",
                  {"text": "sentence", "src_lang": "French", "tgt_lang": "English"}),
        json_step("Done.", "final_answer", {"answer": "Where is the nearest bakery?"})])
    agent = ReactJsonAgent(tools=[translator], llm_engine=engine)
    agent.run("Translate `sentence`.", sentence="Où est la boulangerie la plus proche?")
    assert agent.logs[1]["observation"] == "Where is the nearest bakery?"


def test_max_iterations_ends_with_an_answer_from_memory(scripted_engine):
    engine = scripted_engine(["no format at all", "still none", "The answer is probably 6."])
    agent = ReactJsonAgent(tools=[search], llm_engine=engine, max_iterations=2)
    assert agent.run(BERT_TASK) == "The answer is probably 6."
    assert isinstance(agent.logs[-1]["error"], AgentMaxIterationsError)
    final_prompt = last_prompt(engine)
    assert final_prompt[0]["role"] == "system" and "stopped before it gave an answer" in final_prompt[0]["content"]
    assert "Error: your output has no 'Action:'" in final_prompt[-2]["content"]
    assert final_prompt[-1]["content"].endswith(BERT_TASK)
    assert agent.stats["llm_calls"] == 3 and agent.stats["iterations"] == 2


# ---- the system prompt -----------------------------------------------------------------------------

def test_custom_system_prompt_without_tool_descriptions_is_refused(scripted_engine):
    with pytest.raises(ValueError, match=r"no <<tool_descriptions>> placeholder.*put <<tool_descriptions>>"):
        ReactJsonAgent(tools=[search], llm_engine=scripted_engine([]), system_prompt="You are helpful. Tools: <<tool_names>>")


def test_system_prompt_placeholders_and_tool_description_template(scripted_engine):
    helper = ReactJsonAgent(tools=[search], llm_engine=scripted_engine([]))
    template = "Tools:\n<<tool_descriptions>>\nNames: <<tool_names>>\nImports: <<authorized_imports>>\n<<managed_agents_descriptions>>"
    agent = ReactCodeAgent(tools=[search], llm_engine=scripted_engine([]), system_prompt=template,
                           tool_description_template="* {name} ({output_type}): {description}",
                           managed_agents=[ManagedAgent(helper, "researcher", "Finds facts on the web.")])
    prompt = agent.system_prompt
    assert "* search (string): Search the web." in prompt
    assert "* final_answer (any): Give the final answer" in prompt
    assert "Names: search, final_answer, researcher" in prompt
    assert "Imports: collections, datetime" in prompt
    assert "- researcher: Finds facts on the web." in prompt and "<<" not in prompt
    default = ReactJsonAgent(tools=[search], llm_engine=scripted_engine([])).system_prompt
    assert "- search: Search the web.\n    Takes inputs: {'query': {'type': 'string'" in default
    assert "<<" not in default and "team members" not in default


def test_the_engine_is_required_and_iterations_positive(scripted_engine):
    with pytest.raises(ValueError, match="give the agent an engine"):
        ReactJsonAgent(tools=[search])
    with pytest.raises(ValueError, match="max_iterations must be a positive integer"):
        ReactJsonAgent(tools=[search], llm_engine=scripted_engine([]), max_iterations=0)


def test_base_tools_and_the_toolbox_is_the_agents_own(scripted_engine):
    from toolkit import Toolbox
    box = Toolbox([search])
    agent = ReactCodeAgent(tools=box, llm_engine=scripted_engine([]), add_base_tools=True)
    assert "final_answer" in agent.toolbox and "final_answer" not in box
    assert "calculator" in agent.toolbox and "python_interpreter" not in agent.toolbox  # code runs natively
    assert agent.toolbox["llm"].engine is agent.llm_engine


def test_base_agent_has_no_step(scripted_engine):
    with pytest.raises(NotImplementedError, match="Agent must implement step"):
        Agent(tools=[], llm_engine=scripted_engine([])).run("t")


# ---- accounting ------------------------------------------------------------------------------------

def test_accounting_counts_every_engine_call_like_the_pipeline(scripted_engine):
    """stats come from engines.recording(), as Pipeline.run's do: tool-made model calls count too."""
    from pipeline.engines import FunctionEngine
    from toolkit.tools.llm import LLMTool

    inner = scripted_engine(["a summary"])
    engine = scripted_engine([json_step("Summarize.", "llm", {"prompt": "Summarize BERT."}),
                              json_step("Done.", "final_answer", {"answer": "a summary"})])
    agent = ReactJsonAgent(tools=[LLMTool(engine=FunctionEngine(inner))], llm_engine=engine)
    with recording() as outer:
        agent.run("Summarize BERT.")
    s = agent.stats
    assert s["llm_calls"] == 3 == len(outer)
    assert s["prompt_tokens"] == engine.prompt_tokens + inner.prompt_tokens
    assert s["completion_tokens"] == engine.completion_tokens + inner.completion_tokens
    roles = [t["role"] for t in agent.trace]
    assert roles == ["agent", "tool:llm", "tool", "agent"]
    assert all(t["t_end"] >= 0 for t in agent.trace)


def test_managed_agent_calls_count_in_the_manager(scripted_engine):
    worker_engine = scripted_engine([json_step("Look it up.", "search", {"query": "BERT blocks"}),
                                     json_step("Found.", "final_answer", {"answer": "twelve"})])
    worker = ReactJsonAgent(tools=[search], llm_engine=worker_engine)
    manager_engine = scripted_engine([json_step("Ask the researcher.", "researcher", {"request": "BERT blocks?"}),
                                      json_step("Done.", "final_answer", {"answer": "12"})])
    manager = ReactJsonAgent(tools=[], llm_engine=manager_engine,
                             managed_agents=[ManagedAgent(worker, "researcher", "Finds facts.")])
    assert manager.run("How many blocks has BERT base?") == "12"
    assert manager.logs[1]["observation"] == "twelve"
    assert manager.stats["llm_calls"] == 4 and worker.stats["llm_calls"] == 2
    assert "researcher" in manager.system_prompt and "Finds facts." in manager.system_prompt


# ---- ReWOOAgent ------------------------------------------------------------------------------------

PLAN = ("Plan: Find the blocks of BERT base.\n#E1 = search[number of blocks in BERT base encoder]\n"
        "Plan: Find the layers of the original encoder.\n#E2 = search[layers in Attention is All You Need]")


def test_rewoo_agent_has_the_agents_interface(scripted_engine):
    engine = scripted_engine([PLAN, "6"])
    agent = ReWOOAgent(tools=[search], llm_engine=engine)
    assert agent.run(BERT_TASK) == "6"
    assert agent.stats["llm_calls"] == 2 and agent.stats["prompt_tokens"] == engine.prompt_tokens
    out = agent.to_dict("6")
    assert out["plan"] == [{"var": "#E1", "tool": "search", "input": "number of blocks in BERT base encoder",
                            "description": "Find the blocks of BERT base."},
                           {"var": "#E2", "tool": "search", "input": "layers in Attention is All You Need",
                            "description": "Find the layers of the original encoder."}]
    assert out["evidence"] == {"#E1": "twelve encoder blocks", "#E2": ATTENTION}
    memory = agent.write_inner_memory_from_logs()
    assert [m["role"] for m in memory] == ["user", "assistant", "user", "user", "assistant"]
    assert memory[1]["content"] == PLAN and memory[-1]["content"] == "6"


def test_rewoo_agent_with_an_unparseable_plan_answers_none(scripted_engine):
    engine = scripted_engine(["I would search for it."])
    agent = ReWOOAgent(tools=[search], llm_engine=engine, constrain=False)
    assert agent.run(BERT_TASK) is None
    assert isinstance(agent.logs[-1]["error"], AgentParsingError)
    assert agent.stats["llm_calls"] == 1


# ---- parsers ---------------------------------------------------------------------------------------

def test_parsers_tolerate_what_models_write():
    assert fmt.parse_code_blob("```python\nx = 1\n```\ntext\n```py\ny = 2\n```") == "x = 1\n\ny = 2"
    assert fmt.parse_code_blob("```py\nx = 1\nprint(x)") == "x = 1\nprint(x)"  # fence cut by the stop sequence
    assert fmt.parse_code_blob("x = 1") == "x = 1"
    with pytest.raises(fmt.AgentParseError, match="no code block found"):
        fmt.parse_code_blob("I will now compute it.")
    assert fmt.parse_json_action('```json\n{"action": "a", "action_input": "x"}\n```') == ("a", "x")
    assert fmt.parse_json_action('{"action": "a"} and more {') == ("a", {})
    assert fmt.split_thought("Thought: t\nCode: no\nCode:\nx", "Code:") == ("t\nCode: no", "x")


# ---- load_tool -------------------------------------------------------------------------------------

TOOL_FILE = '''
from toolkit import Tool

class Shout(Tool):
    name = "shout"
    description = "Upper-case a text."
    inputs = {"text": {"type": "string", "description": "the text"}}
    output_type = "string"

    def __init__(self, suffix="!"):
        super().__init__()
        self.suffix = suffix

    def forward(self, text):
        return text.upper() + self.suffix
'''


def test_load_tool_from_a_file_a_folder_and_a_module(tmp_path):
    (tmp_path / "shout.py").write_text(TOOL_FILE)
    assert load_tool(f"{tmp_path / 'shout.py'}:Shout", suffix="?")(text="hi") == "HI?"
    assert load_tool(str(tmp_path / "shout.py"))(text="hi") == "HI!"
    folder = tmp_path / "shout_tool"
    folder.mkdir()
    (folder / "tool.py").write_text(TOOL_FILE)
    assert load_tool(str(folder)).name == "shout"
    assert load_tool("toolkit.tools.calculator:CalculatorTool")(expression="1/4 + 1/4") == "0.5"
    with pytest.raises(ValueError, match="Hub tools are not available offline"):
        load_tool("text-to-speech")
    with pytest.raises(ValueError, match="has no 'Nope'"):
        load_tool(f"{tmp_path / 'shout.py'}:Nope")
    assert isinstance(load_tool(f"{tmp_path / 'shout.py'}:Shout"), Tool)


def test_react_code_agent_keeps_modules_functions_and_data_and_says_what_it_drops(scripted_engine):
    engine = scripted_engine([
        code_step("Prepare.", "import math\ndef area(r):\n    return math.pi * r * r\nradius = 2\nit = iter([1])"),
        code_step("Use them.", "final_answer(round(area(radius), 3))"),
    ])
    agent = ReactCodeAgent(tools=[], llm_engine=engine)
    assert agent.run("Area of a circle of radius 2?") == 12.566
    observation = agent.logs[1]["observation"]
    assert "Not kept for the next step: it (a list_iterator object is not data" in observation
    assert agent.state["radius"] == 2 and "it" not in agent.state


def test_code_in_the_agents_runs_isolated_and_tools_run_in_the_host(scripted_engine, tmp_path):
    import os

    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    seen = []

    @tool
    def where(note: str) -> int:
        """Report the process the tool runs in.

        Args:
            note: anything
        """
        seen.append(note)
        return os.getpid()

    engine = scripted_engine([
        code_step("Read a host file.", f"import json.tool\nprint(json.tool.Path('{secret}').read_text())"),
        code_step("Ask the tool.", "final_answer(where(note='hi'))"),
    ])
    agent = CodeAgent(tools=[where], llm_engine=engine, max_iterations=2)
    assert agent.run("Where do tools run?") == os.getpid() and seen == ["hi"]
    assert "import of 'json.tool' is not allowed" in str(agent.logs[1]["error"])
    assert "s3cret" not in json.dumps([m["content"] for m in agent.write_inner_memory_from_logs()])
