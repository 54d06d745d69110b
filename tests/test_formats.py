"""The format contract: prompts render as specified and outputs parse back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import formats
from pipeline.formats import CallError, ToolCall, ToolSpec
from pipeline.plan import parse_plan


class TransformersStyleTool:
    """The transformers Agents tool shape: name, description, inputs, output_type."""

    name = "save_file"
    description = "Save text to a file in the workspace."
    inputs = {"path": {"type": "string", "description": "relative path"},
              "content": {"type": "string", "description": "the text"},
              "overwrite": {"type": "boolean", "description": "replace", "nullable": True}}
    output_type = "string"


WIKI = {"name": "search_wiki", "description": "Search the encyclopedia.\n  Returns passages.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
CLOCK = {"type": "function", "function": {"name": "get_current_time", "description": "The time now.",
                                          "parameters": {"type": "object", "properties": {}}}}


def test_tool_spec_from_every_shape():
    s = formats.tool_spec(TransformersStyleTool())
    assert s.name == "save_file"
    assert s.parameters["required"] == ["path", "content"]
    assert s.parameters["properties"]["overwrite"]["type"] == "boolean"
    assert formats.tool_spec(CLOCK).name == "get_current_time"
    assert formats.tool_spec(WIKI).parameters["required"] == ["query"]
    assert formats.tool_spec(s) is s
    assert [t.name for t in formats.tool_specs({"a": WIKI, "b": CLOCK})] == ["search_wiki", "get_current_time"]
    with pytest.raises(TypeError, match="cannot describe"):
        formats.tool_spec(42)
    with pytest.raises(ValueError, match="needs a 'name'"):
        formats.tool_spec({"description": "x"})


def test_tool_lines():
    assert formats.tool_line(WIKI) == "search_wiki[input]: Search the encyclopedia. Returns passages."
    assert formats.takes_one_string(formats.tool_spec(WIKI))
    assert not formats.takes_one_string(formats.tool_spec(CLOCK))
    line = formats.tool_line(TransformersStyleTool())
    assert line.startswith("save_file[input]: Save text to a file in the workspace. Arguments: path (string)")


def test_planner_prompt_alpaca_and_chat():
    tools = [WIKI, CLOCK, TransformersStyleTool()]
    prompt = formats.planner_prompt("Who directed Oppenheimer?", tools)
    assert prompt.startswith("### Instruction:\nFor the following tasks, make plans that can solve the problem "
                             "step-by-step. For each plan, indicate which external tool together with tool input "
                             "to retrieve evidence. You can store the evidence into a variable #E that can be "
                             "called by later tools. (Plan, #E1, Plan, #E2, Plan, ...)\n"
                             "Tools can be one of the following:\nsearch_wiki[input]: ")
    assert "\nget_current_time[input]: The time now.\n" in prompt
    assert prompt.endswith("Task: Who directed Oppenheimer?\n\n### Response:\n")
    messages = formats.planner_prompt("Who directed Oppenheimer?", tools, template="chat")
    assert messages == [{"role": "user", "content": formats.planner_instruction("Who directed Oppenheimer?", tools)}]
    with pytest.raises(ValueError, match="unknown template"):
        formats.planner_prompt("x", tools, template="vicuna")


def test_planner_output_round_trip_with_alpaca_stop():
    plan_text = "Plan: look up\n#E1 = search_wiki[Oppenheimer]\nPlan: now\n#E2 = get_current_time[]"
    out = plan_text + "\n### Instruction:\nPlan: junk\n#E9 = nope[x]"
    plan = formats.parse_planner_output(out, [WIKI, CLOCK])
    assert plan.render() == plan_text
    with pytest.raises(formats.PlanError, match="unknown tool 'nope'"):
        formats.parse_planner_output(plan_text + "\nPlan: junk\n#E3 = nope[x]", [WIKI, CLOCK])


def test_alpaca_split_is_the_inverse():
    instr = "Do this.\n\nWith two paragraphs."
    assert formats.split_alpaca(formats.alpaca(instr) + "Done.") == (instr, "Done.")
    with pytest.raises(ValueError, match="not an Alpaca example"):
        formats.split_alpaca("hello")


def test_messages_to_alpaca():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert formats.messages_to_alpaca(msgs) == "### Instruction:\nBe brief.\n\nHi\n\n### Response:\n"
    multi = msgs + [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    assert formats.messages_to_alpaca(multi) == (
        "### Instruction:\nBe brief.\n\nHi\n\n### Response:\nHello.\n\n### Instruction:\nBye\n\n### Response:\n")
    prefill = msgs + [{"role": "assistant", "content": "Plan:"}]
    assert formats.messages_to_alpaca(prefill).endswith("### Response:\nPlan:")
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert formats.messages_to_alpaca(parts) == formats.alpaca("ab")
    with pytest.raises(ValueError, match="unknown message role"):
        formats.messages_to_alpaca([{"role": "robot", "content": "x"}])


def test_caller_prompt_lists_schemas_and_the_step():
    step = formats.Step("#E3", "save_file", "films.txt with #E2", "Save the list.", ("#E2",))
    instr = formats.caller_instruction(step, [TransformersStyleTool(), WIKI])
    lines = instr.split("\n")
    assert lines[0] == formats.CALLER_INTRO
    assert json.loads(lines[1])["name"] == "save_file"
    assert json.loads(lines[2]) == {"name": "search_wiki", "description": WIKI["description"],
                                    "parameters": WIKI["parameters"]}
    assert instr.endswith("Step:\nPlan: Save the list.\n#E3 = save_file[films.txt with #E2]")
    # a dict step and a Step render the same
    assert formats.caller_instruction(step.to_dict(), [WIKI]) == formats.caller_instruction(step, [WIKI])


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True),
       st.dictionaries(st.text(min_size=1, max_size=10),
                       st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=False),
                                 st.booleans(), st.none(), st.lists(st.integers(), max_size=3)), max_size=4),
       st.sampled_from(["", "Sure, here you go: ", "```json\n", "<s> "]),
       st.sampled_from(["", "\n```", " Hope that helps! {not json}", "</s>"]))
def test_call_round_trip_with_text_around(name, args, before, after):
    text = before + formats.render_call(name, args) + after
    assert formats.parse_call(text) == ToolCall(name, args)


def test_parse_call_tolerances():
    assert formats.parse_call('{"function": "f", "arguments": "{\\"a\\": 1}"}') == ToolCall("f", {"a": 1})
    assert formats.parse_call('{"name": "get_current_time"}') == ToolCall("get_current_time", {})
    # a JSON object without a name before the call is skipped
    assert formats.parse_call('{"note": 1} then {"name": "f", "arguments": {}}').name == "f"
    # a fenced call wins over text around it
    assert formats.parse_call('x {bad\n```json\n{"name": "g", "arguments": {"k": [1]}}\n```').arguments == {"k": [1]}


@pytest.mark.parametrize("text, fragment", [
    ("I will search the wiki.", "no JSON object found"),
    ('{"name": "f", "arguments": {"a": }', "invalid JSON"),
    ('{"arguments": {}}', "without a 'name'"),
    ('{"name": "", "arguments": {}}', "non-empty string"),
    ('{"name": "f", "arguments": [1, 2]}', "must be a JSON object"),
    ('{"name": "f", "arguments": "not json"}', "not JSON"),
])
def test_parse_call_errors(text, fragment):
    with pytest.raises(CallError, match=fragment) as e:
        formats.parse_call(text)
    assert isinstance(e.value, ValueError)


def test_parse_call_checks_known_tools():
    with pytest.raises(CallError, match="unknown function 'nope'; known: search_wiki"):
        formats.parse_call('{"name": "nope", "arguments": {}}', [WIKI])


def test_solver_prompt_and_answer():
    plan = parse_plan("Plan: director\n#E1 = search_wiki[Killers of the Flower Moon]\n"
                      "Plan: one film\n#E2 = llm[a film by #E1]\nPlan: skipped\n#E3 = llm[x]")
    instr = formats.solver_instruction("Name a film by its director.", plan.steps,
                                       {"#E1": "Martin Scorsese", "#E2": "x" * 5000})
    assert instr.startswith(formats.SOLVER_INTRO + "\n\nTask: Name a film by its director.\n\n"
                            "Plan: director\n#E1 = search_wiki[Killers of the Flower Moon]\nEvidence: Martin Scorsese\n")
    assert "x" * formats.SOLVER_EVIDENCE_CHARS + " ..." in instr and "x" * 1501 not in instr
    assert "#E3 = llm[x]\nEvidence: (no evidence)" in instr
    assert instr.endswith(formats.SOLVER_RULES + "\n\nTask: Name a film by its director.")
    assert formats.solver_prompt("t", plan.to_list(), {}) == formats.alpaca(
        formats.solver_instruction("t", plan.steps, {}))
    assert formats.parse_answer("  Answer: Goodfellas\n### Instruction:\nmore") == "Goodfellas"
    assert formats.parse_answer("The answer is - 42") == "42"
    assert formats.parse_answer("Line one.\nLine two.") == "Line one.\nLine two."


def test_toolspec_openai_form():
    spec = ToolSpec("f", "does f", {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
    assert formats.tool_spec(spec.to_openai()) == spec
    assert formats.tool_spec(spec.to_json_schema()) == spec


def test_the_solvers_answer_ends_where_it_goes_on_writing_the_plan():
    """A solver that writes its answer and then plan steps (seen on the default planner: "Alibaba
    Group\\n\\n\\n#E1 = search_wiki[coffee shop]") answers what came before them; "Plan:" alone, a
    line of an answer, stays; one that writes only plan steps answers the last step's evidence."""
    from pipeline.engines import FunctionEngine
    from pipeline.plan import parse_plan
    from pipeline.solver import solve

    assert formats.parse_answer("Alibaba Group\n\n\n#E1 = search_wiki[coffee shop]") == "Alibaba Group"
    assert formats.parse_answer("Hero\nPlan: Save it.\n#E3 = save_file[path=a.txt, content=#E1]") == "Hero"
    assert formats.parse_answer("#E3 = llm[Summarize in one sentence: #E1]") == ""
    assert formats.parse_answer("Plan: see Rome on day 1.\nThen Florence.") == "Plan: see Rome on day 1.\nThen Florence."
    assert formats.parse_answer("Use #E1 = 42 as given") == "Use #E1 = 42 as given"  # not at a line's start
    plan = parse_plan("Plan: look it up\n#E1 = search_wiki[Ada Lovelace]\nPlan: sum up\n#E2 = llm[Summarize: #E1]",
                      ["search_wiki", "llm"])
    evidence = {"#E1": "Ada Lovelace was a mathematician.", "#E2": "A mathematician who wrote the first program."}
    only_steps = FunctionEngine(lambda messages, **kw: "#E3 = llm[Summarize in one sentence: #E1]")
    assert solve("Sum up Ada Lovelace.", plan, evidence, only_steps) == "A mathematician who wrote the first program."
    then_steps = FunctionEngine(lambda messages, **kw: "A mathematician.\nPlan: more\n#E3 = llm[x]")
    assert solve("Sum up Ada Lovelace.", plan, evidence, then_steps) == "A mathematician."


def test_a_solver_that_answers_with_a_tool_call_or_a_variable_answers_the_evidence():
    """Seen on the v25 default: "Llm[Skew: Stanley Kubrick is older than Alfred Hitchcock.]",
    "Saved_file: saves_file[path: #E1; content: #E2;]", "E1 = search_hotels[origin: Nairobi]", "Same
    as #E3.": a call of a plan's tool (its name in any case or misspelt a little, after a label) is
    not an answer, so the last step's evidence answers; a variable alone answers its evidence. Text
    that only mentions brackets or a variable stays as written."""
    from pipeline.engines import FunctionEngine
    from pipeline.plan import parse_plan
    from pipeline.solver import solve

    plan = parse_plan("Plan: look\n#E1 = search_wiki[Stanley Kubrick]\nPlan: compare\n#E2 = llm[Who is older? #E1]\n"
                      "Plan: keep\n#E3 = save_file[path=a.txt, content=#E2]", ["search_wiki", "llm", "save_file"])
    evidence = {"#E1": "Stanley Kubrick (1928-1999)", "#E2": "Alfred Hitchcock is older.", "#E3": "saved 26 bytes to a.txt"}

    def answer(text: str) -> str:
        return solve("Who is older?", plan, evidence, FunctionEngine(lambda messages, **kw: text))

    for call in ("Llm[Skew: Stanley Kubrick is older than Alfred Hitchcock.]", "Saved_file: saves_file[path: #E1; content: #E2;]",
                 "E1 = search_hotels[origin: Nairobi; check_in: 2025-03-14]", "search_wiki[Alfred Hitchcock]",
                 "Saved: llm[Summarize everything you found in #E1.]"):
        assert answer(call) == "saved 26 bytes to a.txt", call
    assert answer("Same as #E2.") == "Alfred Hitchcock is older."
    assert answer("#E1") == "Stanley Kubrick (1928-1999)"
    for text in ("Alfred Hitchcock [born 1899] is older.", "Kubrick is younger than in #E1 says.",
                 "Use list[int] here", "primes[10]", "Same as #E9."):
        assert answer(text) == text, text
