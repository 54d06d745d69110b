"""pipeline.eval: task files, BFCL-style call matching, metrics, skips and bad lines."""

from __future__ import annotations

import json

import pytest

from pipeline.eval import (TaskFileError, aggregate, call_matches, compare_reports, compare_text, evaluate_tasks,
                           load_tasks, main, normalize, rewoo_runner)
from toolkit import Toolbox, tool


@tool
def search_wiki(query: str) -> str:
    """Search the encyclopedia.

    Args:
        query: what to look up
    """
    return {"Killers of the Flower Moon": "Killers of the Flower Moon (2023) is directed by Martin Scorsese."}.get(
        query, "nothing found")


@tool
def top_k(items: list, k: int) -> list:
    """The first k items.

    Args:
        items: the items
        k: how many
    """
    return items[:k]


BOX = Toolbox([search_wiki, top_k])


def write_tasks(tmp_path, rows, name="tasks.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return p


TASKS = [
    {"id": "t1", "task": "Who directed Killers of the Flower Moon?", "tools": ["search_wiki"],
     "expect": {"tools": ["search_wiki"], "answer": "Martin Scorsese"}},
    {"id": "t2", "task": "Take two of a, b, c.", "tools": ["top_k", "search_wiki"],
     "expect": {"tools": ["search_wiki", "top_k"], "calls": [{"name": "top_k", "arguments": {"items": ["a", "b", "c"], "k": 2}}],
                "answer": "a, b"}},
    {"id": "t3", "task": "Needs a tool we lack.", "tools": ["search_bing"], "expect": {"answer": "x"}},
    {"id": "t4", "task": "Unparseable.", "expect": {"tools": ["search_wiki"]}},
]


def test_evaluate_with_scripted_engines(tmp_path, scripted_engine):
    tasks = load_tasks(write_tasks(tmp_path, TASKS))
    planner = scripted_engine([
        "Plan: look up\n#E1 = search_wiki[Killers of the Flower Moon]", "The director is Martin Scorsese.",
        "Plan: pick\n#E1 = top_k[a, b, c; 2]\nPlan: check\n#E2 = search_wiki[#E1]", "a, b",
        "I don't know how to plan this.",
    ])
    caller = scripted_engine(['{"name": "top_k", "arguments": {"items": ["A", "b", "c"], "k": 2}}'])
    report = evaluate_tasks(tasks, BOX, rewoo_runner(planner, caller, None), "rewoo", "tasks.jsonl", progress=False)
    assert report["n"] == 4 and report["skipped"] == [{"id": "t3", "reason": "tools not in the toolbox: search_bing"}]
    rows = {r["id"]: r for r in report["per_task"]}
    assert rows["t1"]["scores"] == {"tool_set": True, "tool_order": True, "answer_exact": False, "answer_contains": True}
    assert rows["t2"]["scores"]["tool_set"] is True and rows["t2"]["scores"]["tool_order"] is False
    assert rows["t2"]["scores"]["calls_matched"] == 1  # "A" matches "a" after normalisation
    assert rows["t2"]["scores"]["answer_exact"] is True
    assert rows["t4"]["parsed"] is False and "not a valid plan" in rows["t4"]["error"]
    m = report["metrics"]
    assert m["tasks"] == 3 and m["plan_parse_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["tool_set_accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert m["tool_order_accuracy"] == pytest.approx(1 / 3, abs=1e-3)
    assert m["caller_accuracy"] == 1.0 and m["answer_exact"] == 0.5 and m["answer_contains"] == 1.0
    assert m["llm_calls"] == pytest.approx((2 + 3 + 1) / 3, abs=1e-3)


def test_compare_reports_names_the_tasks_won_and_lost(tmp_path, scripted_engine):
    """Two real reports of one task file: the comparison names each task a score changed on, per
    score, and counts the rest as the same; a task in only one report is not compared."""
    tasks = load_tasks(write_tasks(tmp_path, TASKS))

    def report(planner_outputs, caller_outputs, subset):
        planner, caller = scripted_engine(planner_outputs), scripted_engine(caller_outputs)
        return [evaluate_tasks([t for t in tasks if t.id in subset], BOX, rewoo_runner(planner, caller, None),
                               "rewoo", "data/eval/tasks.jsonl", progress=False)]

    wrong_call = '{"name": "top_k", "arguments": {"items": ["a", "b", "c"], "k": 3}}'
    right_call = '{"name": "top_k", "arguments": {"items": ["a", "b", "c"], "k": 2}}'
    before = report(["Plan: a\n#E1 = search_wiki[x]\nPlan: b\n#E2 = search_wiki[y]", "Scorsese",  # t1: both wrong
                     "Plan: pick\n#E1 = top_k[a, b, c; 2]\nPlan: check\n#E2 = search_wiki[#E1]", "a, b",
                     "Plan: look\n#E1 = search_wiki[x]", "nothing"], [right_call], {"t1", "t2", "t4"})
    after = report(["Plan: look up\n#E1 = search_wiki[Killers of the Flower Moon]", "Martin Scorsese",
                    "Plan: pick\n#E1 = top_k[a, b, c; 2]\nPlan: check\n#E2 = search_wiki[#E1]", "a, b"],
                   [wrong_call], {"t1", "t2"})
    [diff] = compare_reports(before, after)
    assert (diff["tasks_file"], diff["mode"], diff["unpaired"]) == ("tasks.jsonl", "rewoo", 1)
    assert diff["scores"]["tool_set"] == {"won": ["t1"], "lost": [], "same": 1}
    assert diff["scores"]["answer_exact"] == {"won": ["t1"], "lost": [], "same": 1}
    assert diff["scores"]["calls"] == {"won": [], "lost": ["t2"], "same": 0}
    text = compare_text([diff])
    assert "tasks.jsonl rewoo calls: won 0; lost 1 (t2); 0 the same" in text
    assert "tasks.jsonl rewoo tool_set: won 1 (t1); lost 0; 1 the same" in text
    assert "1 task(s) in only one report" in text
    assert compare_reports(before, [dict(after[0], mode="react")]) == []  # another mode: nothing to pair
    # a task of two expected calls: right only when both match
    half, whole = ([{"tasks_file": "x.jsonl", "mode": "rewoo", "per_task": [
        {"id": "c", "scores": {"calls_matched": n, "calls_expected": 2}}]}] for n in (1, 2))
    assert compare_reports(half, whole)[0]["scores"]["calls"] == {"won": ["c"], "lost": [], "same": 0}


@pytest.mark.parametrize("got, want, ok", [
    ({"name": "f", "arguments": {"a": "Paris, France"}}, {"name": "f", "arguments": {"a": "paris france"}}, True),
    ({"name": "g", "arguments": {"a": "x"}}, {"name": "f", "arguments": {"a": "x"}}, False),
    ({"name": "f", "arguments": {"a": 2.0}}, {"name": "f", "arguments": {"a": 2}}, True),
    ({"name": "f", "arguments": {"a": "2"}}, {"name": "f", "arguments": {"a": 2}}, False),  # wrong type
    ({"name": "f", "arguments": {"a": True}}, {"name": "f", "arguments": {"a": 1}}, False),
    ({"name": "f", "arguments": {"a": [1, 2]}}, {"name": "f", "arguments": {"a": [2, 1]}}, False),
    ({"name": "f", "arguments": {"a": "x", "zzz": 1}}, {"name": "f", "arguments": {"a": "x"}}, False),  # not in schema
    ({"name": "f", "arguments": {}}, {"name": "f", "arguments": {}}, False),  # required 'a' missing
    ({"name": "f", "arguments": {"a": "x", "b": {"k": "V"}}}, {"name": "f", "arguments": {"a": "x", "b": {"k": "v"}}}, True),
])
def test_call_matching_bfcl_style(got, want, ok):
    schema = {"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a"]}
    assert call_matches(got, want, schema) is ok


def test_normalize():
    assert normalize("  Martin  Scorsese! ") == "martin scorsese"
    assert normalize("Amélie") == "amelie"


@pytest.mark.parametrize("line, fragment", [
    ("{not json", "not JSON"),
    ('["a list"]', "a task is a JSON object"),
    ('{"id": "x"}', "'task' must be a non-empty string"),
    ('{"task": "t", "tools": "search_wiki"}', "'tools' must be a list"),
    ('{"task": "t", "expect": {"answr": "x"}}', "unknown 'expect' keys ['answr']"),
    ('{"task": "t", "expect": {"calls": [{"arguments": {}}]}}', "each of 'expect.calls'"),
])
def test_bad_line_names_file_and_line(tmp_path, line, fragment):
    p = write_tasks(tmp_path, [TASKS[0], line])
    with pytest.raises(TaskFileError) as e:
        load_tasks(p)
    assert str(e.value).startswith(f"{p}:2: ") and fragment in str(e.value)


def test_duplicate_ids_and_empty_file(tmp_path):
    with pytest.raises(TaskFileError, match=":2: id 't1' is used twice"):
        load_tasks(write_tasks(tmp_path, [TASKS[0], TASKS[0]]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(TaskFileError, match="no tasks"):
        load_tasks(empty)


def test_cli_bad_task_file_exit_2(tmp_path, capsys):
    p = write_tasks(tmp_path, ["{oops"])
    assert main(["--tasks", str(p)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {p}:1: not JSON (Expecting property name enclosed in double quotes at column 2)"


def test_cli_json_with_the_tiny_model(tmp_path, tiny_model_dir, capsys):
    tools = tmp_path / "box.py"
    tools.write_text("from tests.test_eval import BOX as toolbox\n")
    p = write_tasks(tmp_path, TASKS[:2])
    assert main(["--tasks", str(p), "--planner", str(tiny_model_dir), "--tools", f"{tools}:toolbox", "--json",
                 "--max-new-tokens", "96"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["metrics"]["plan_parse_rate"] == 1.0  # constrained decoding
    assert report["metrics"]["prompt_tokens"] > 100
    assert set(report["metrics"]) == set(aggregate([]))


def test_catalog_tools_the_toolbox_lacks_are_evaluated_with_stand_ins(tmp_path, scripted_engine):
    """Task files written by train.datagen name catalog tools (held-out ones included): they are
    scored with stand-ins that carry the catalog's schema, not skipped."""
    task = {"id": "w", "task": "What's the weather in Paris?", "tools": ["get_weather", "search_wiki"],
            "expect": {"tools": ["get_weather"], "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}}
    tasks = load_tasks(write_tasks(tmp_path, [task, TASKS[2]]))
    planner = scripted_engine(["Plan: ask the weather service\n#E1 = get_weather[city=Paris]", "I could not tell."])
    caller = scripted_engine(['{"name": "get_weather", "arguments": {"city": "Paris", "units": "metric"}}'])
    report = evaluate_tasks(tasks, BOX, rewoo_runner(planner, caller, None), "rewoo", "tasks.jsonl", progress=False)
    assert [s["id"] for s in report["skipped"]] == ["t3"]  # search_bing: in no catalog either
    (row,) = report["per_task"]
    assert row["scores"]["tool_set"] is True and row["scores"]["calls_matched"] == 1
    (call,) = caller.calls
    assert '"enum": ["metric", "imperial"]' in call["messages"][0]["content"]  # the catalog's exact schema


def test_debug_shows_the_traceback_and_keeps_exit_2(tmp_path, capsys):
    """--debug used to re-raise, turning exit code 2 into 1."""
    bad = tmp_path / "tasks.jsonl"
    bad.write_text("not json\n")
    assert main(["--tasks", str(bad), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith(f"error: {bad}:1")


def test_an_answer_that_is_the_expected_number_is_exact():
    """The shipped planner answered "What's the square root of 729?" with 27.0 and was scored wrong."""
    from pipeline.eval import Task, score_task

    def exact(answer, want):
        return score_task(Task("t", "q", None, {"answer": want}, 1), None, [], answer, {})["answer_exact"]

    assert exact("27.0", "27") and exact("1,517", 1517) and exact("-3.50", "-3.5") and exact("42.", "42")
    assert not exact("27.5", "27") and not exact("27 apples", "27") and not exact("2026", "2025")
    assert exact("Canberra", "canberra") and not exact("The capital is Canberra.", "Canberra")


def test_the_shipped_task_files_load_and_name_only_tools_that_exist():
    """Every file of data/eval loads; its tasks name built-in or catalog tools; save_files.jsonl's
    expected calls copy a file name and a text that stand verbatim in the task (or a step's evidence),
    so its caller AST scores copying and nothing else."""
    from pathlib import Path

    from toolkit import default_toolbox

    builtin = set(default_toolbox(search_url=None))
    root = Path(__file__).resolve().parent.parent / "data" / "eval"
    catalog = {t["name"] for t in json.loads((root.parent / "catalog" / "tools.json").read_text())["tools"]}
    files = sorted(root.glob("*.jsonl")) + sorted((root / "generated").glob("*.jsonl"))
    assert {p.name for p in files} >= {"in_distribution.jsonl", "handwritten.jsonl", "save_files.jsonl"}
    for path in files:
        for task in load_tasks(path):
            assert set(task.tools or []) <= builtin | catalog, (path.name, task.id)
    saves = load_tasks(root / "save_files.jsonl")
    assert len(saves) >= 30 and len({t.task for t in saves}) == len(saves)
    for t in saves:
        (call,) = t.expect["calls"]
        assert call["name"] == "save_file" and call["name"] in t.expect["tools"]
        for value in call["arguments"].values():
            assert value == "#E1" or value in t.task, (t.id, value)


def test_bench_demo_compare_cli_reads_saved_reports_and_refuses_bad_files(tmp_path):
    """bench/bench_demo.py --compare on two files written by --out prints the won/lost lines; a missing
    or foreign file is one line on stderr and exit 2, not a traceback."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "bench_demo.py"

    def saved(name, right):
        p = tmp_path / name
        p.write_text(json.dumps([{"tasks_file": "data/eval/x.jsonl", "mode": "rewoo", "metrics": {}, "per_task": [
            {"id": "a", "scores": {"tool_set": right}}, {"id": "b", "scores": {"tool_set": True}}]}]))
        return str(p)

    ok = subprocess.run([sys.executable, str(script), "--compare", saved("old.json", False), saved("new.json", True)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == "x.jsonl rewoo tool_set: won 1 (a); lost 0; 1 the same"
    (tmp_path / "foreign.json").write_text('{"metrics": 1}')
    for bad in (str(tmp_path / "missing.json"), str(tmp_path / "foreign.json")):
        r = subprocess.run([sys.executable, str(script), "--compare", bad, bad], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith(f"bench_demo: {bad}: ")


def test_bench_demo_table_says_how_many_times_fewer_tokens_rewoo_spends(tmp_path):
    """bench/bench_demo.py --table prints, under the table, ReWOO against each agent mode set by set:
    the token ratio over all tasks, those of one tool and those of two or more, and whether ReWOO's
    accuracy is at least the agent's (issue 11's ">= 5x fewer tokens at equal or better accuracy")."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "bench_demo.py"
    tasks = tmp_path / "mixed.jsonl"
    tasks.write_text(json.dumps({"id": "one", "task": "Compute 1 + 1.", "expect": {"tools": ["calculator"]}}) + "\n"
                     + json.dumps({"id": "two", "task": "Compute 1 + 1 and save it to a.txt.",
                                   "expect": {"tools": ["calculator", "save_file"]}}) + "\n")

    def report(mode, one, two, tool_set, exact):
        return {"tasks_file": str(tasks), "mode": mode, "per_task": [
            {"id": "one", "prompt_tokens": one - 10, "completion_tokens": 10},
            {"id": "two", "prompt_tokens": two - 10, "completion_tokens": 10}],
            "metrics": {"tasks": 2, "tool_set_accuracy": tool_set, "answer_exact": exact,
                        "prompt_tokens": (one + two) / 2 - 10, "completion_tokens": 10}}

    saved = tmp_path / "reports.json"
    saved.write_text(json.dumps([report("rewoo", 100, 200, 1.0, 0.5), report("react", 400, 1600, 0.5, 0.5),
                                 report("code", 300, 600, 1.0, 1.0)]))
    r = subprocess.run([sys.executable, str(script), "--table", str(saved)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-2] == ("mixed: rewoo spends all 6.7x (2 tasks), one tool 4.0x (1 tasks), 2+ tools 8.0x (1 tasks) "
                         "fewer tokens a task than react; accuracy equal or better (tool-set 1.00 vs 0.50, "
                         "exact 0.50 vs 0.50)")
    assert lines[-1].startswith("mixed: rewoo spends all 3.0x (2 tasks), one tool 3.0x") and lines[-1].endswith(
        "than code; accuracy WORSE (tool-set 1.00 vs 1.00, exact 0.50 vs 1.00)")
