"""Dataset generation: the catalog, the contract (plans parse, calls validate), splits, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from pipeline import formats
from train.catalog import CatalogError, load_catalog
from train.datagen import HELDOUT_FRAMES, TRAIN_FRAMES, GenConfig, generate, main

CATALOG = Path(__file__).resolve().parents[1] / "data" / "catalog" / "tools.json"
BUILTINS = {"get_current_time", "search_wiki", "search_web", "search_bilibili", "save_file", "query_sql",
            "python_interpreter", "calculator", "llm"}
SMALL = GenConfig(planner=80, caller=60, eval=10, test=25, seed=3)


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(CATALOG)


@pytest.fixture(scope="module")
def sets(catalog):
    return generate(catalog, SMALL)


def test_catalog_has_40_tools_with_valid_schemas_and_the_builtins(catalog):
    assert len(catalog.tools) == 50
    assert BUILTINS <= set(catalog.names)
    assert len({t.domain for t in catalog.tools}) == 21
    for t in catalog.tools:
        jsonschema.Draft202012Validator.check_schema(t.spec.parameters)
        assert t.examples, t.name
    params = {t.name: t.spec.parameters for t in catalog.tools}
    assert params["save_file"]["required"] == ["path", "content"]
    assert list(params["search_bilibili"]["properties"]) == ["keyword"]


def test_every_plan_parses_and_every_call_validates(sets, catalog):
    for name, rows in sets.items():
        if name.startswith("_"):
            continue
        assert rows, name
        for r in rows:
            assert r["input"] == ""
            listed = r["meta"]["tools"]
            specs = [catalog[n].spec for n in listed]
            if name.startswith("planner"):
                assert r["instruction"] == formats.planner_instruction(r["meta"]["task"], specs)
                plan = formats.parse_plan(r["output"], listed)
                assert 1 <= len(plan) <= 6
                assert plan.tools == r["meta"]["plan_tools"]
            else:
                call = formats.parse_call(r["output"], specs)
                assert r["output"] == formats.render_call(call.name, call.arguments)
                jsonschema.validate(call.arguments, catalog[call.name].spec.parameters)
                assert r["instruction"].startswith(formats.CALLER_INTRO)


def test_plans_cover_lengths_parallel_branches_and_llm_combines(sets):
    plans = [formats.parse_plan(r["output"]) for r in sets["planner_train"]]
    lengths = {len(p) for p in plans}
    assert {1, 2, 3} <= lengths and max(lengths) >= 5
    # a parallel branch: two steps on the same level of the DAG
    assert any(any(len(level) > 1 for level in p.levels()) for p in plans)
    # an llm step that combines the evidence of two or more steps
    assert any(s.tool == "llm" and len(s.deps) >= 2 for p in plans for s in p.steps)
    assert len({r["meta"]["frame"] for r in sets["planner_train"]}) >= 5


def test_heldout_tools_never_appear_in_train_or_eval(sets):
    held = set(sets["_heldout"][0]["tools"])
    assert len(held) == SMALL.heldout_tools and not held & BUILTINS
    for name in ("planner_train", "planner_eval", "caller_train", "caller_eval"):
        for r in sets[name]:
            assert not held & set(r["meta"]["tools"]), name
            assert not any(f'"name": "{h}"' in r["instruction"] or f"\n{h}[input]" in r["instruction"]
                           for h in held)
    for r in sets["planner_test_tools"]:
        assert held & set(r["meta"]["plan_tools"])
    for r in sets["caller_test_tools"]:
        assert r["meta"]["tool"] in held


def test_heldout_templates_are_unseen_in_training(sets):
    assert {r["meta"]["frame"] for r in sets["planner_train"]} <= set(TRAIN_FRAMES)
    assert {r["meta"]["frame"] for r in sets["planner_test_templates"]} <= set(HELDOUT_FRAMES)
    assert {r["meta"]["style"] for r in sets["caller_test_templates"]} == {"prose"}
    assert "prose" not in {r["meta"]["style"] for r in sets["caller_train"]}
    train = {r["instruction"] for r in sets["planner_train"]}
    assert not train & {r["instruction"] for r in sets["planner_eval"]}


def test_generation_is_deterministic_by_seed(catalog, sets):
    again = generate(catalog, SMALL)
    assert again["planner_train"] == sets["planner_train"] and again["caller_train"] == sets["caller_train"]
    other = generate(catalog, GenConfig(planner=80, caller=60, eval=10, test=25, seed=4))
    assert other["planner_train"] != sets["planner_train"]


def test_cli_writes_sets_tasks_and_manifest(tmp_path, capsys):
    manifest = main(["--catalog", str(CATALOG), "--out", str(tmp_path), "--planner", "12", "--caller", "12",
                     "--eval", "4", "--test", "5", "--seed", "1"])
    assert "wrote" in capsys.readouterr().out
    assert manifest["files"]["planner_train.jsonl"] == 12
    tasks = [json.loads(line) for line in (tmp_path / "tasks_test_tools.jsonl").read_text().splitlines()]
    assert len(tasks) == 5 and set(tasks[0]) == {"id", "task", "tools", "expect"}
    assert set(tasks[0]["expect"]["tools"]) <= set(tasks[0]["tools"])
    first = (tmp_path / "planner_train.jsonl").read_bytes()
    main(["--catalog", str(CATALOG), "--out", str(tmp_path), "--planner", "12", "--caller", "12",
          "--eval", "4", "--test", "5", "--seed", "1"])
    assert (tmp_path / "planner_train.jsonl").read_bytes() == first
    assert manifest["typed"] is True
    loose = main(["--catalog", str(CATALOG), "--out", str(tmp_path / "u"), "--planner", "12", "--caller", "12",
                  "--eval", "4", "--test", "5", "--seed", "1", "--untyped"])
    assert loose["typed"] is False and (tmp_path / "u" / "planner_train.jsonl").read_bytes() != first


def test_user_toolbox_from_a_python_file(tmp_path):
    (tmp_path / "mytools.py").write_text('''
from toolkit import Toolbox, tool

@tool
def lookup_order(order_id: str) -> str:
    """Find an order by id.

    Args:
        order_id: order id
    """
    return order_id

@tool
def refund(order_id: str, amount: float) -> str:
    """Refund an order.

    Args:
        order_id: id
        amount: how much
    """
    return order_id

@tool
def weather_in(city: str) -> str:
    """Weather of a city.

    Args:
        city: city
    """
    return city

@tool
def notify(to: str, text: str, urgent: bool) -> str:
    """Send a note.

    Args:
        to: email
        text: message
        urgent: flag
    """
    return to

@tool
def llm(prompt: str) -> str:
    """A language model.

    Args:
        prompt: instruction
    """
    return prompt

toolbox = Toolbox([lookup_order, refund, weather_in, notify, llm])
''')
    catalog = load_catalog(f"{tmp_path / 'mytools.py'}:toolbox")
    assert catalog.names == ["lookup_order", "refund", "weather_in", "notify", "llm"]
    sets = generate(catalog, GenConfig(planner=20, caller=20, eval=3, test=5, heldout_tools=1, max_tools=5))
    for r in sets["planner_train"]:
        formats.parse_plan(r["output"], catalog.names)
    for r in sets["caller_train"]:
        call = formats.parse_call(r["output"])
        jsonschema.validate(call.arguments, catalog[call.name].spec.parameters)


def test_bad_catalogs_name_the_place(tmp_path):
    bad = tmp_path / "tools.jsonl"
    bad.write_text('{"name": "a", "description": "x", "parameters": {"type": "object", "properties": {}}}\n'
                   "{not json\n")
    with pytest.raises(CatalogError, match=r"tools\.jsonl:2"):
        load_catalog(bad)
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps([{"name": "t", "description": "d",
                                  "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                                  "examples": [{"goal": "g", "args": {"query": "x"}}]}]))
    with pytest.raises(CatalogError, match=r"\['query'\].*valid: \['q'\]"):
        load_catalog(extra)
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "missing.json")


def _typed_catalog(tmp_path):
    """Two sources (a city, a number) and two tools that take one of them as earlier evidence."""
    one = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    tools = [
        {"name": "find_capital", "description": "capital of a country", "parameters": one,
         "examples": [{"goal": "find the capital of {country}", "args": {"q": "{country}"}, "gives": "city"}]},
        {"name": "count_rows", "description": "count rows", "parameters": one,
         "examples": [{"goal": "count the rows of {table}", "args": {"q": "{table}"}, "gives": "number"}]},
        {"name": "weather", "description": "weather in a city", "parameters": one,
         "examples": [{"goal": "check the weather in {city}", "args": {"q": "{city}"}},
                      {"goal": "check the weather in {ref}", "args": {"q": "{ref}"}, "takes": "city"}]},
        {"name": "add_one", "description": "add one", "parameters": one,
         "examples": [{"goal": "add 1 to {n}", "args": {"q": "{n}"}, "gives": "number"},
                      {"goal": "add 1 to {ref}", "args": {"q": "{ref}"}, "takes": "number", "gives": "number"}]},
    ]
    path = tmp_path / "typed.json"
    path.write_text(json.dumps({"slots": {"table": ["films"], "n": ["3", "4"]}, "tools": tools}))
    return load_catalog(path)


def _chained_pairs(catalog, typed: bool) -> list[tuple[str, str, str]]:
    """(source tool, its evidence type, the tool that used it) for every use of earlier evidence."""
    from train.datagen import Generator

    gen = Generator(catalog, GenConfig(max_steps=3, heldout_tools=0, seed=5, typed=typed))
    pairs = []
    for _ in range(300):
        _, steps = gen.draft_plan(catalog.tools)
        for s in steps:
            for ref in {v for v in s.args.values() if isinstance(v, str) and v.startswith("#E")}:
                src = steps[int(ref[2:]) - 1]
                pairs.append((src.tool.name, src.gives, s.tool.name))
    return pairs


def test_chained_steps_take_evidence_that_fits(tmp_path):
    """A step uses earlier evidence only when the catalog says it fits: the weather of a city, one
    added to a number; never "the weather in 12" (what the untyped generator wrote)."""
    from train.catalog import fits

    catalog = _typed_catalog(tmp_path)
    takes = {t.name: ex.takes for t in catalog.tools for ex in t.examples if ex.uses_ref}
    pairs = _chained_pairs(catalog, typed=True)
    assert {(src, user) for src, _, user in pairs} == {("find_capital", "weather"), ("count_rows", "add_one"),
                                                       ("add_one", "add_one")}
    assert all(fits(takes[user], gives) for _, gives, user in pairs)
    untyped = _chained_pairs(catalog, typed=False)
    assert any(not fits(takes[user], gives) for _, gives, user in untyped)  # what typing prevents
    assert fits("text", "list") and fits("place", "city") and fits("any", "number") and not fits("city", "number")


def test_the_shipped_catalog_types_every_use_of_earlier_evidence(catalog, sets):
    untyped = [(t.name, ex.goal) for t in catalog.tools for ex in t.examples
               if ex.uses_ref and ex.takes == "any" and t.name != "save_file"]
    assert untyped == []  # save_file alone stores whatever it is given
    # Nothing gives a sports team, so "get the latest results of the result" is never asked for.
    tasks = [r["meta"]["task"] for name, rows in sets.items() if name.startswith("planner_") for r in rows]
    assert tasks and not [t for t in tasks if "latest results of" in t and
                          any(f"latest results of {w}" in t for w in ("it", "the result", "that", "what you found"))]


def test_catalog_types_must_be_words_and_takes_needs_a_ref(tmp_path):
    one = {"type": "object", "properties": {"q": {"type": "string"}}}
    for example, message in (({"goal": "g {city}", "args": {"q": "{city}"}, "takes": "city"}, r"'takes' but uses no \{ref\}"),
                             ({"goal": "g", "args": {}, "gives": "A City"}, r"lower-case word")):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps([{"name": "t", "description": "d", "parameters": one, "examples": [example]}]))
        with pytest.raises(CatalogError, match=r"bad\.json tool #1 \(t\): example #1 .*" + message):
            load_catalog(path)


def test_values_make_sense_together(catalog):
    """No two arguments of one call are equal ("convert 20 EUR to EUR", "flights from Berlin to
    Berlin") and linked slots go together (miles to kilometers, never fahrenheit to kilometers);
    the --untyped generator drew each slot on its own and wrote both."""
    pairs = dict(zip(catalog.slots["unit_from"], catalog.slots["unit_to"]))

    def calls(distinct: bool) -> list[dict]:
        rows = generate(catalog, GenConfig(planner=10, caller=600, eval=0, test=0, heldout_tools=0, seed=2,
                                           typed=distinct, distinct=distinct))["caller_train"]
        return [json.loads(r["output"]) for r in rows]

    def senseless(call: dict) -> bool:
        args = call["arguments"]
        texts = [v.lower() for v in args.values() if isinstance(v, str) and not v.startswith("#E")]
        unit = call["name"] == "unit_convert" and pairs.get(args.get("from_unit")) != args.get("to_unit")
        return len(texts) != len(set(texts)) or unit

    good = calls(True)
    assert {"unit_convert", "convert_currency", "search_flights"} <= {c["name"] for c in good}
    assert [c for c in good if senseless(c)] == []
    assert [c for c in calls(False) if senseless(c)]  # what the untyped generator wrote


def test_linked_slots_must_be_known_and_of_one_length(tmp_path):
    tool = {"name": "t", "description": "d", "parameters": {"type": "object", "properties": {}}}
    for linked, message in (([["a", "nope"]], "two or more known slots"), ([["a", "b"]], "the same length")):
        path = tmp_path / "linked.json"
        path.write_text(json.dumps({"slots": {"a": ["x", "y"], "b": ["z"]}, "linked_slots": linked, "tools": [tool]}))
        with pytest.raises(CatalogError, match=r"linked\.json: linked_slots .*" + message):
            load_catalog(path)


def test_renamed_rows_list_and_plan_tools_by_other_names(catalog, capsys):
    """GenConfig.renamed: that share of the train planner rows gives the listed tools (never the
    built-ins or llm) other names, the same in the list and the plan, none of them a catalog tool's;
    every other row (caller rows, eval and test splits) stays as without it."""
    from train.datagen import other_names

    plain = generate(catalog, SMALL)
    renamed = generate(catalog, GenConfig(**{**SMALL.__dict__, "renamed": 0.5}))
    assert {k: v for k, v in renamed.items() if k != "planner_train"} == {k: v for k, v in plain.items() if k != "planner_train"}
    rows = [r for r in renamed["planner_train"] if "renamed" in r["meta"]]
    assert 0.3 * len(plain["planner_train"]) <= len(rows) <= 0.7 * len(plain["planner_train"])
    kept = [r for r in renamed["planner_train"] if "renamed" not in r["meta"]]
    assert all(r in plain["planner_train"] for r in kept)
    for row in rows:
        names = row["meta"]["renamed"]
        assert not set(names) & BUILTINS and not set(names.values()) & set(catalog.names)
        assert all(new in other_names(old) for old, new in names.items())
        listed = [line.split("[")[0] for line in row["instruction"].splitlines() if "[input]:" in line]
        assert listed == row["meta"]["tools"] and not set(names) & set(listed)
        plan = formats.parse_plan(row["output"], listed)
        assert [s.tool for s in plan.steps] == row["meta"]["plan_tools"]
        original = plain["planner_train"][renamed["planner_train"].index(row)]
        assert row["output"].count("#E") == original["output"].count("#E")
    assert any(set(r["meta"]["plan_tools"]) & set(r["meta"]["renamed"].values()) for r in rows)
    with pytest.raises(SystemExit) as e:
        main(["--renamed", "1.5", "--out", "/nonexistent"])
    assert e.value.code == 2 and "--renamed is a share" in capsys.readouterr().err


def test_the_breadth_catalog_adds_typed_tools_whose_calls_validate(catalog):
    """data/catalog/breadth_tools.json (train.demo's catalog_breadth_rows): 33 more tools, none named
    as a catalog tool, every use of earlier evidence typed, and over the catalog and it together
    every plan parses and every call validates against its schema."""
    breadth = load_catalog(CATALOG.with_name("breadth_tools.json"))
    assert len(breadth.tools) == 33 and not set(breadth.names) & set(catalog.names)
    assert [(t.name, ex.goal) for t in breadth.tools for ex in t.examples if ex.uses_ref and ex.takes == "any"] == []
    wider = catalog.merged(breadth)
    rows = generate(wider, GenConfig(planner=120, caller=200, eval=0, test=0, heldout=list(catalog.names[-8:]), seed=5))
    called = set()
    for r in rows["planner_train"]:
        assert formats.parse_plan(r["output"], r["meta"]["tools"]).tools == r["meta"]["plan_tools"]
    for r in rows["caller_train"]:
        call = formats.parse_call(r["output"], [wider[n].spec for n in r["meta"]["tools"]])
        jsonschema.validate(call.arguments, wider[call.name].spec.parameters)
        called.add(call.name)
    assert len(called & set(breadth.names)) >= 20
