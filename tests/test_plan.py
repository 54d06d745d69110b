"""The plan grammar of DESIGN.md, case by case, plus hypothesis properties."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.plan import Plan, PlanError, Step, parse_plan, references, substitute

TOOLS = ["search_wiki", "llm", "calculator", "save_file"]


def test_basic_two_steps():
    plan = parse_plan(
        "Plan: Find the director of the film.\n"
        "#E1 = search_wiki[Killers of the Flower Moon]\n"
        "Plan: Name one of his other films.\n"
        "#E2 = llm[List one film directed by the person in #E1]\n")
    assert [s.var for s in plan.steps] == ["#E1", "#E2"]
    assert plan.steps[0] == Step("#E1", "search_wiki", "Killers of the Flower Moon",
                                 "Find the director of the film.", (), 2)
    assert plan.steps[1].deps == ("#E1",)
    assert plan.steps[1].description == "Name one of his other films."
    assert plan.tools == ["search_wiki", "llm"]


def test_eleven_plus_steps_and_e10_is_not_e1():
    lines = []
    for i in range(1, 13):
        lines.append(f"Plan: step {i}")
        lines.append(f"#E{i} = llm[{'#E%d and #E1' % (i - 1) if i > 1 else 'start'}]")
    plan = parse_plan("\n".join(lines))
    assert len(plan) == 12
    assert plan["#E11"].deps == ("#E10", "#E1")
    assert plan["#E10"].deps == ("#E9", "#E1")
    # #E10 is one variable: substituting #E1 leaves it alone.
    assert substitute("#E10 #E1 #E1.", {"#E1": "x"}) == "#E10 x x."
    assert substitute("#E10#E1", {"#E10": "ten", "#E1": "one"}) == "tenone"


def test_reference_to_e10_before_it_is_defined_names_both():
    text = "\n".join(f"Plan: s{i}\n#E{i} = llm[x]" for i in range(1, 10))
    text += "\nPlan: bad\n#E10 = llm[uses #E11]\nPlan: later\n#E11 = llm[y]"
    with pytest.raises(PlanError) as e:
        parse_plan(text)
    assert "#E10" in str(e.value) and "#E11" in str(e.value) and "later" in str(e.value)
    assert e.value.line == 20


def test_nested_brackets_end_at_matching_close():
    plan = parse_plan("Plan: compute\n#E1 = calculator[max([1, 2], [3, [4]])]")
    assert plan.steps[0].input == "max([1, 2], [3, [4]])"


def test_unclosed_bracket_is_an_error_naming_the_line():
    with pytest.raises(PlanError, match="never closed") as e:
        parse_plan("Plan: x\n#E1 = calculator[max([1, 2)\n")
    assert e.value.line == 2


def test_multiline_input_continues_until_the_bracket_closes():
    plan = parse_plan("Plan: run code\n#E1 = python_interpreter[for i in range(3):\n    print([i])]\n"
                      "Plan: use it\n#E2 = llm[#E1]")
    assert plan.steps[0].input == "for i in range(3):\n    print([i])"
    assert plan.steps[1].line == 5


@pytest.mark.parametrize("line", ["#e2 = llm[#E1]", "**#E2** = llm[#E1]", "2. #E2 = llm[#E1]", "＃E2 = llm[#E1]",
                                  "- #E2 = llm[#E1]", "`#E2 = llm[#E1]`"])
def test_a_step_in_another_spelling_is_an_error_never_dropped(line):
    """These lines were skipped as text, so the plan ran with fewer steps than the model wrote."""
    with pytest.raises(PlanError, match="looks like a step") as e:
        parse_plan(f"Plan: find\n#E1 = search_wiki[x]\nPlan: use it\n{line}")
    assert e.value.line == 4


def test_a_huge_variable_number_is_a_plan_error():
    """A #E number of more than 4300 digits raised int()'s plain ValueError out of Pipeline.run."""
    with pytest.raises(PlanError, match="digits") as e:
        parse_plan("Plan: x\n#E" + "7" * 5000 + " = llm[a]")
    assert e.value.line == 2


def test_tolerated_forms():
    text = ("Sure! Here is my plan.\r\n"
            "  Plan: look it up\r\n"
            "\t#E1=search_wiki[Oppenheimer]\r\n"
            "Plan: the time\r\n"
            "#E2 = get_current_time[]\r\n"
            "Plan: Summarize. #E3 = llm[#E1 at #E2]\r\n"
            "Plan: Then answer the question.\r\n")
    plan = parse_plan(text)
    assert [(s.var, s.tool, s.input) for s in plan] == [
        ("#E1", "search_wiki", "Oppenheimer"), ("#E2", "get_current_time", ""),
        ("#E3", "llm", "#E1 at #E2")]
    assert plan["#E3"].description == "Summarize."
    assert plan["#E3"].deps == ("#E1", "#E2")


def test_cr_only_line_ends_and_step_without_plan_line():
    plan = parse_plan("#E1 = llm[a]\rPlan: b\r#E2 = llm[#E1]")
    assert plan["#E1"].description == "" and plan["#E2"].deps == ("#E1",)


def test_description_continues_on_following_lines():
    plan = parse_plan("Plan: first part\nsecond part\n\n#E1 = llm[x]")
    assert plan.steps[0].description == "first part second part"


@pytest.mark.parametrize("text, fragment, line", [
    ("Plan: a\n#E1 = llm[#E2]", "never defined", 2),
    ("Plan: a\n#E1 = llm[#E1]", "itself", 2),
    ("Plan: a\n#E1 = llm[x]\nPlan: b\n#E1 = llm[y]", "defined twice (first in line 2)", 4),
    ("Plan: a\n#E1 = llm(x)", "expected '['", 2),
    ("Plan: a\n#E1 llm[x]", "malformed step", 2),
    ("Plan: a\n#E = llm[x]", "malformed step", 2),
    ("Plan: a\n#E1 = [x]", "expected a tool name", 2),
    ("Plan: a\n#E1 = llm[x] and more", "unexpected text", 2),
    ("Plan: a\n#E0 = llm[x]", "numbered 1, 2, 3", 2),
    ("Plan: a\n#E01 = llm[x]", "leading zeros", 2),
    ("Plan: a\nPlan: b\n#E1 = llm[x]", "before the plan on line 1", 2),
])
def test_errors_name_line_and_reason(text, fragment, line):
    with pytest.raises(PlanError) as e:
        parse_plan(text)
    assert fragment in str(e.value)
    assert e.value.line == line
    assert str(e.value).startswith(f"line {line}: ")
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("text", ["", "   \n\n", "I cannot help with that.", "Plan: think about it\n"])
def test_no_step_is_an_error(text):
    with pytest.raises(PlanError, match="no step found"):
        parse_plan(text)


def test_unknown_tool_lists_known_tools_and_suggests():
    with pytest.raises(PlanError) as e:
        parse_plan("Plan: a\n#E1 = serch_wiki[x]", tools=TOOLS)
    msg = str(e.value)
    assert "unknown tool 'serch_wiki'" in msg and "Did you mean 'search_wiki'" in msg
    assert "search_wiki, llm, calculator, save_file" in msg


def test_tools_accepts_mapping_and_objects():
    class T:
        def __init__(self, name):
            self.name = name
    assert parse_plan("Plan: a\n#E1 = llm[x]", tools={"llm": object()}).tools == ["llm"]
    assert parse_plan("Plan: a\n#E1 = llm[x]", tools=[T("llm")]).tools == ["llm"]
    with pytest.raises(TypeError):
        parse_plan("Plan: a\n#E1 = llm[x]", tools="llm")


def test_levels_dag():
    plan = parse_plan("Plan: a\n#E1 = search_wiki[A]\nPlan: b\n#E2 = search_wiki[B]\n"
                      "Plan: c\n#E3 = llm[#E1 vs #E2]\nPlan: d\n#E4 = search_wiki[C]\n"
                      "Plan: e\n#E5 = llm[#E3 and #E4]")
    assert [[s.var for s in lvl] for lvl in plan.levels()] == [["#E1", "#E2", "#E4"], ["#E3"], ["#E5"]]
    assert [s.var for s in plan.dependants("#E1")] == ["#E3", "#E5"]
    assert plan.dependants("#E5") == []


def test_references_and_substitute_are_whole_token():
    assert references("#E2 then #E10, #E2 and #E1x") == ["#E2", "#E10", "#E1"]
    assert substitute("#E1 / #E12 / #E2", {"#E1": "#E2", "#E2": "two"}) == "#E2 / #E12 / two"


def test_to_list_shape():
    plan = parse_plan("Plan: a\n#E1 = llm[x]")
    assert plan.to_list() == [{"var": "#E1", "tool": "llm", "input": "x", "description": "a"}]


# ---- properties ------------------------------------------------------------------------------

_desc = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="#\x85"),
                max_size=40).map(lambda s: " ".join(s.split()))
_word = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
                              blacklist_characters="[]#\x85"), min_size=1, max_size=12)
_tool = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)


@st.composite
def plans(draw) -> Plan:
    n = draw(st.integers(1, 14))
    steps = []
    for i in range(1, n + 1):
        parts = []
        for _ in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from(["word", "ref", "nest"] if i > 1 else ["word", "nest"]))
            if kind == "ref":
                parts.append(f"#E{draw(st.integers(1, i - 1))}")
            elif kind == "nest":
                parts.append("[" + draw(_word) + "]")
            else:
                parts.append(draw(_word))
        inp = " ".join(" ".join(parts).split())
        deps = tuple(references(inp))
        steps.append(Step(f"#E{i}", draw(_tool), inp, draw(_desc), deps, 2 * i))
    return Plan(tuple(steps))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_render_then_parse_gives_the_same_plan(plan):
    again = parse_plan(plan.render())
    assert again == plan


_fragments = st.sampled_from(["Plan:", "Plan: x", "#E", "#E1", "#E12", " = ", "=", "[", "]", "[[", "]]",
                              "tool", "\n", "\r\n", "\r", " ", "#E1 = llm[", "#E2=t[#E1]", "\t", "#E0",
                              "plan :", "#E1 = ", "x]", "#e2 = ", "**", "2. ", "＃E2", "#E" + "9" * 4400])


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_fragments, max_size=30).map("".join)),
       st.one_of(st.none(), st.just(TOOLS)))
def test_arbitrary_text_raises_only_plan_error(text, tools):
    try:
        plan = parse_plan(text, tools)
    except PlanError:
        return
    assert len(plan) >= 1
    # no step is dropped: every line that reads as a step in any spelling became one
    step_like = [ln for ln in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
                 if re.search(r"[#＃]\s*[Ee]\s*\d+[\s*]*=", ln)]
    assert len(step_like) <= len(plan) or any("[" in ln and "]" not in ln for ln in step_like)
    for step in plan:  # what parses obeys the grammar's invariants
        assert all(plan.vars.index(d) < plan.vars.index(step.var) for d in step.deps)


@settings(max_examples=150, deadline=None)
@given(plans(), st.integers(1, 9), st.booleans())
def test_a_streamed_plan_hands_out_each_step_once_and_as_parsed(plan, size, python_input):
    """Fed in pieces of any size, PlanStream hands out exactly the steps parse_plan finds, each
    once, no later than the line after it (and a multi-line input stays whole)."""
    from pipeline.plan import PlanStream

    text = plan.render()
    if python_input:
        text += f"\nPlan: run code\n#E{len(plan) + 1} = tool[for x in [1, 2]:\n    print(x)]"
    want = parse_plan(text)
    stream, got = PlanStream(), []
    for i in range(0, len(text), size):
        for step in stream.feed(text[i:i + size]):
            # handed out once its line has ended: the text so far holds its whole #E line
            assert f"{step.var} = {step.tool}[" in stream.text
            got.append(step)
    final = stream.close()
    assert final == want
    assert got == list(want.steps[:len(got)]) and len(got) >= len(want) - 1  # the last may wait for close()
