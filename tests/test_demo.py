"""The demo models' data and build: grounded rows, held-out tasks, determinism, caching, the CLI path."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline import formats
from pipeline.plan import parse_plan
from train import demo


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return demo.build_rows(demo.DemoConfig(caller_rows=20), tmp_path_factory.mktemp("ws"))


def test_rows_follow_the_contract_and_hold_real_evidence(rows):
    box = demo.demo_toolbox()
    names = list(box)
    for r in rows["planner"]:
        assert r["instruction"] == formats.planner_instruction(r["instruction"].rsplit("Task: ", 1)[1], box)
        plan = parse_plan(r["output"], names)
        assert 1 <= len(plan) <= demo.DemoConfig().max_steps
    kotfm = [r for r in rows["solver"] if "title = 'Killers of the Flower Moon']" in r["instruction"]
             and "SELECT director" in r["instruction"]]
    assert kotfm and all(r["output"] == "Martin Scorsese" for r in kotfm)
    assert all("Evidence: director\nMartin Scorsese\n(1 row)" in r["instruction"] for r in kotfm)
    for r in rows["caller"]:
        call = formats.parse_call(r["output"])
        assert call.name in r["instruction"]


def test_showcase_tasks_are_trained_and_heldout_films_are_not(rows):
    tasks = [r["instruction"].rsplit("Task: ", 1)[1] for r in rows["planner"]]
    assert sum("Killers of the Flower Moon" in t for t in tasks) >= 6  # both showcase shapes, several phrasings
    held = {h["task"] for h in rows["heldout"]}
    assert held and not held & set(tasks)
    for film in demo.DemoConfig().holdout_films:
        assert not any(film in t for t in tasks), film


def test_rows_are_deterministic_by_seed(rows, tmp_path):
    again = demo.build_rows(demo.DemoConfig(caller_rows=20), tmp_path)
    assert again["planner"] == rows["planner"] and again["solver"] == rows["solver"]
    assert demo.build_rows(demo.DemoConfig(caller_rows=20, seed=1), tmp_path)["planner"] != rows["planner"]


def test_planner_tail_keeps_the_task():
    row = {"instruction": formats.planner_instruction("Who directed Hugo?", demo.demo_toolbox()), "output": "x"}
    tail = demo.planner_tail(row)
    assert tail["instruction"].startswith(formats.PLANNER_RULES)
    assert tail["instruction"].endswith("Task: Who directed Hugo?") and len(tail["instruction"]) < 400


MICRO = dataclasses.replace(demo.DemoConfig(), hidden=32, layers=1, heads=2, short_steps=4, steps=3,
                            caller_steps=2, caller_rows=10, synthetic_planner=40, synthetic_solver=20,
                            vocab_size=600)


def test_build_writes_loadable_models_and_is_cached(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    manifest = demo.build(out, MICRO, progress=False)
    assert manifest["key"] == MICRO.key() and manifest["tools"] == demo.DEMO_TOOLS
    for name in ("planner", "caller"):
        assert (out / name / "config.json").exists() and (out / name / "tokenizer.json").exists()
        assert (out / name / "loss.png").exists()
    assert not list(out.glob("*-init")) and not (out.parent / "demo.building").exists()
    # cached: a second call builds nothing
    monkeypatch.setattr(demo, "build", lambda *a, **k: pytest.fail("rebuilt a cached demo"))
    got = demo.ensure_demo_models(out)
    assert got["planner"] == str(out / "planner") and got["pipeline"]["max_steps"] == MICRO.max_steps


def test_cli_without_a_model_uses_the_demo(tmp_path, monkeypatch, capsys):
    from pipeline.run import main

    out = tmp_path / "demo"
    demo.build(out, MICRO, progress=False)
    monkeypatch.setattr(demo, "default_dir", lambda cfg=None: out)
    monkeypatch.setattr(demo, "load_manifest", lambda d, current_only=True: json.loads((d / "manifest.json").read_text()))
    assert main(["Who directed the film 'Hugo'?", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {s["tool"] for s in result["plan"]} <= set(demo.DEMO_TOOLS)  # the offline toolbox
    assert len(result["plan"]) <= MICRO.max_steps  # the demo's own step limit
