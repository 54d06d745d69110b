"""The default models' data and build: coverage of the nine tools, phrasing variety, typed chains,
grounding through the real worker, the recipes used, and a whole build on a tiny base."""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from pipeline import formats
from pipeline.plan import parse_plan
from train import demo, demo_data

BUILTINS = demo_data.TOOLS


@pytest.fixture(scope="module")
def drafts():
    return demo_data.draw(8000, seed=0)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return demo_data.demo_rows(0, tmp_path_factory.mktemp("ws"), planner=120, solver=80, caller=20)


def test_every_builtin_tool_is_planned(drafts):
    used = collections.Counter(tool for d in drafts for _, tool, _ in d.steps)
    assert set(used) == set(BUILTINS), set(BUILTINS) - set(used)


def test_single_step_intents_have_at_least_30_phrasings(drafts):
    phrasings = collections.defaultdict(set)
    for d in drafts:
        phrasings[d.intent].add(d.template)
    chains = {"calc_chain", "compare_births", "wiki_then_llm"}  # 21-28 each (3-4 templates x 7 styles)
    few = {k: len(v) for k, v in phrasings.items() if len(v) < 30 and k not in chains}
    assert not few, few
    assert all(len(phrasings[k]) >= 20 for k in chains)


def test_no_task_is_an_eval_task(drafts):
    banned = demo_data.eval_texts()
    assert len(banned) >= 90  # in_distribution + unseen_tools + handwritten
    assert not {demo_data.normalise(d.text) for d in drafts} & banned
    # the filter is what keeps them out: without it the generator writes an eval task verbatim
    free = {demo_data.normalise(d.text) for d in demo_data.draw(3000, seed=0, banned=set())}
    assert free & banned
    # data/eval/generated (tasks that need held-out catalog tools) is not banned, and never drawn
    generated = {demo_data.normalise(json.loads(line)["task"])
                 for path in (demo_data.DATA / "eval" / "generated").glob("*.jsonl") for line in path.open()}
    assert len(generated) >= 150 and not generated & free
    # nor is data/eval/multi_goal (hand-written multi-goal requests), which no draw writes either
    multi = {demo_data.normalise(json.loads(line)["task"])
             for line in (demo_data.DATA / "eval" / "multi_goal" / "handwritten_multi_goal.jsonl").open()}
    assert len(multi) == 24 and not multi & free


def test_chains_pass_only_fitting_evidence(drafts):
    """A step's evidence feeds the next tool only where it fits: a number into calculator (from
    calculator or python), any text into save_file or llm; never a table into arithmetic."""
    for d in drafts:
        for i, (_, tool, inp) in enumerate(d.steps):
            for ref in re.findall(r"#E(\d+)", inp):
                source = d.steps[int(ref) - 1][1]
                if tool == "calculator":
                    assert source in ("calculator", "python_interpreter"), d
                else:
                    assert tool in ("save_file", "llm"), d


def test_rows_ground_through_the_real_tools(rows):
    from toolkit import default_toolbox

    box = default_toolbox()
    for r in rows["planner"]:
        plan = parse_plan(r["output"], list(box))
        listed = re.findall(r"^(\w+)\[input\]: ", r["instruction"], re.M)
        assert {s.tool for s in plan} <= set(listed)
        for name in listed:  # the toolbox's own line for each listed tool
            assert formats.tool_line(box[name]) in r["instruction"]
    by_intent = collections.defaultdict(list)
    for r in rows["solver"]:
        by_intent[r["meta"]["intent"]].append(r)
    for r in by_intent["film_director"]:
        assert f"Evidence: director\n{r['output']}\n(1 row)" in r["instruction"]
    for r in by_intent["web"]:
        assert "search_web has no search backend" in r["instruction"] and r["output"].startswith("I could not")
    for r in by_intent["arithmetic"] + by_intent["python"]:
        assert f"Evidence: {r['output']}" in r["instruction"]
    save = formats.tool_spec(box["save_file"]).parameters
    assert rows["caller"]
    for r in rows["caller"]:
        call = formats.parse_call(r["output"], [box["save_file"]])
        jsonschema.validate(call.arguments, save)
        assert f"path={call.arguments['path']}, content={call.arguments['content']}]" in r["instruction"]


def test_data_is_deterministic_by_seed(tmp_path):
    a = demo_data.demo_rows(3, tmp_path / "a", planner=30, solver=10, caller=5)
    b = demo_data.demo_rows(3, tmp_path / "b", planner=30, solver=10, caller=5)
    assert a == b


def test_adapters_come_from_the_shipped_recipes(tmp_path):
    from train.recipe import load_recipe

    for role, targets, quant in (("planner", ["q_proj", "v_proj"], "none"), ("caller", None, "4bit")):
        cmd = demo.sft_command(role, demo.DemoConfig(), "BASE", tmp_path)
        assert cmd[1:4] == ["-m", "train", "sft"]
        config, overrides = cmd[5], cmd[6:]
        assert Path(config).name == {"planner": "planner_lora.yaml", "caller": "caller_qlora.yaml"}[role]
        recipe = load_recipe(config, overrides)  # an unknown key would raise
        assert recipe.lora.quantization == quant and recipe.data.train_on_prompt is False
        if targets:
            assert recipe.lora.target_modules == targets


@pytest.mark.slow
def test_a_whole_build_on_a_tiny_base_is_resumable_and_ships_no_paths(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(demo, "cpu_has_bf16", lambda: False)  # the same build on every CPU: the planner in fp32
    cfg = demo.DemoConfig(base=str(tiny_model_dir), planner_rows=12, solver_rows=4, caller_rows=4,
                          catalog_planner_rows=2, catalog_caller_rows=4, max_seq_len=768, extra_planner_rows=4,
                          chain_rows=2, wide_rows=2, focus_rows=2, films_rows=2, rare_rows=2,  # not 570 more rows
                          agent_react_rows=2, agent_code_rows=1)
    out = tmp_path / "demo"
    manifest = demo.build(out, cfg, progress=False)
    assert manifest["key"] == cfg.key()
    assert manifest["adapters"] == {"planner": "planner", "caller": "caller", "agent": "agent"}
    assert manifest["role_keys"] == {role: cfg.role_key(role) for role in ("planner", "caller", "agent")}
    # the dtype each adapter trained in (the recipe's bf16 fell back to fp32: no bf16 instructions)
    assert [manifest["train"][r]["dtype"] for r in ("planner", "caller", "agent")] == ["fp32", "auto", "fp32"]
    assert manifest["data"]["agent_adapter_rows"] > 3
    for role in ("planner", "caller", "agent"):
        files = {p.name for p in (out / role).iterdir()}
        assert {"adapter_config.json", "adapter_model.safetensors", "loss.png", "log_history.json"} <= files
    quant = json.loads((out / "caller" / "adapter_config.json").read_text())
    assert set(quant["target_modules"]) >= {"q_proj", "v_proj", "down_proj"}  # the QLoRA recipe's modules
    assert not (tmp_path / "demo.building").exists()
    # a second build with the same recipe finds the adapters done and only re-stages them
    work = tmp_path / "demo.building"
    work.mkdir()
    (work / "key").write_text(demo.data_stamp(cfg))
    for role in ("planner", "caller", "agent"):
        (work / role).mkdir()
        for f in (out / role).iterdir():
            (work / role / f.name).write_bytes(f.read_bytes())
        (work / role / "done.json").write_text(json.dumps(manifest["train"][role]))
    (work / "data.json").write_text(json.dumps(manifest["data"]))
    (work / "unseen_tools.jsonl").write_text((out / "unseen_tools.jsonl").read_text())
    again = demo.build(out, cfg, progress=False)
    assert again["train"] == manifest["train"]


def test_a_work_folder_of_an_older_data_version_is_started_again(tmp_path, monkeypatch):
    """A data version changes what build_data writes for the same recipe: a resumed build must not
    train on the data an older version left in its work folder."""
    cfg = demo.DemoConfig(base=str(tmp_path / "base"))
    work = tmp_path / "demo.building"
    work.mkdir()
    (work / "key").write_text(f"{cfg.key()}/d{demo.DATA_VERSION}.{demo.CALLER_DATA_VERSION - 1}.a{demo.AGENT_DATA_VERSION}")
    (work / "data.json").write_text("{}")
    made = []

    class Stop(Exception):
        pass

    monkeypatch.setattr(demo, "build_data", lambda c, w, base: made.append(w) or {"planner_rows": 1})
    monkeypatch.setattr(demo, "_train_adapters", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    with pytest.raises(Stop):
        demo.build(tmp_path / "demo", cfg, progress=False)
    # the form written out (with data_stamp on both sides, a stamp of the key alone passed)
    assert made == [work] and (work / "key").read_text() == (
        f"{cfg.key()}/d{demo.DATA_VERSION}.{demo.CALLER_DATA_VERSION}.a{demo.AGENT_DATA_VERSION}")
    made.clear()  # the same version resumes: the data is kept
    with pytest.raises(Stop):
        demo.build(tmp_path / "demo", cfg, progress=False)
    assert made == []


def test_planner_only_fields_leave_the_caller_file_as_it_is(tmp_path):
    """A planner-only field keeps the caller's key, so a build reuses the caller adapter: its file
    must then be the very file (rows and order) the adapter was trained on. One generator shuffled
    the planner's rows and then the caller's, so more planner rows reordered the caller's file."""
    small = dict(planner_rows=20, solver_rows=6, caller_rows=4, extra_planner_rows=0, chain_rows=0, wide_rows=0,
                 focus_rows=0, films_rows=0, rare_rows=0, catalog_planner_rows=10, catalog_caller_rows=12,
                 agent_react_rows=0, agent_code_rows=0, extra_solver_rows=0)
    files = {}
    for name, more in (("plain", {}), ("films", {"films_rows": 10}), ("focus", {"focus_rows": 10}),
                       ("rare", {"rare_rows": 10}), ("chains", {"chain_rows": 10}),
                       ("answers", {"chain_rows": 10, "extra_solver_rows": 4}),
                       ("by_kind", {"chain_rows": 10, "extra_solver_rows": 4, "solver_by_kind": True}),
                       ("clock", {"chain_rows": 10, "clock_part_sets": 2}), ("saves", {"save_rows": 10})):
        demo.build_data(demo.DemoConfig(**{**small, **more}), tmp_path / name)
        files[name] = {role: (tmp_path / name / f"{role}.jsonl").read_bytes() for role in ("planner", "caller")}
    assert len({f["caller"] for f in files.values()}) == 1
    assert files["plain"]["planner"] != files["rare"]["planner"]
    assert files["plain"]["planner"] != files["films"]["planner"]
    assert files["plain"]["planner"] != files["saves"]["planner"]
    solved = [sum(line.startswith(b'{"instruction": "Solve the following') for line in files[name]["planner"].splitlines())
              for name in ("chains", "answers", "clock")]
    assert solved == [6, 10, 14]  # extra_solver_rows: 4 more solver rows in the planner's file; clock_part_sets 8
    assert files["by_kind"]["planner"] != files["answers"]["planner"]  # solver_by_kind picks other ones


def test_the_shipped_manifest_matches_the_recipe_and_holds_no_machine_paths():
    manifest = json.loads((demo.SHIPPED / "manifest.json").read_text())
    assert manifest["key"] == demo.DemoConfig().key(), (
        "data/demo was built from another recipe: rebuild it with python -m train.demo --out data/demo --force")
    # the settings the default models run with are the recipe's (not part of its key)
    assert manifest["pipeline"] == {k: getattr(demo.DemoConfig(), k) for k in demo.RUN_SETTINGS}
    texts = [(demo.SHIPPED / "manifest.json").read_text()]
    for role, sub in manifest["adapters"].items():
        cfg = json.loads((demo.SHIPPED / sub / "adapter_config.json").read_text())
        assert cfg["base_model_name_or_path"] == manifest["base"] == "smollm2-135m-instruct"
        texts.append(json.dumps(cfg))
    for text in texts:
        assert not re.search(r"/(root|home|tmp|work)/", text), text[:200]
    size = sum(f.stat().st_size for f in demo.SHIPPED.rglob("*") if f.is_file())
    # planner LoRA r=8 on q/v: 1.8 MB; caller QLoRA r=16 on all seven projections (its recipe): 19 MB
    assert size < 32 * 2**20, f"the shipped adapters take {size / 2**20:.1f} MB; the limit is 32 MB"


def test_each_adapter_has_its_own_key_and_an_unchanged_one_is_reused(tmp_path):
    cfg = demo.DemoConfig(**V25)  # the planner and the caller (the agent's reuse: the whole-build test)
    planner_change = demo.DemoConfig(**V25, decision_weight=2.0)
    caller_change = demo.DemoConfig(**V25, caller_lr=5e-4)
    data_change = demo.DemoConfig(**V25, planner_rows=301)
    assert planner_change.role_key("caller") == cfg.role_key("caller") != caller_change.role_key("caller")
    assert caller_change.role_key("planner") == cfg.role_key("planner") != planner_change.role_key("planner")
    assert data_change.role_key("planner") != cfg.role_key("planner")  # both adapters' rows change
    assert data_change.role_key("caller") != cfg.role_key("caller")
    assert demo.DemoConfig(**V25, replan=3).role_key("planner") == cfg.role_key("planner")  # a run setting
    built = tmp_path / "built"
    for role in ("planner", "caller"):
        (built / role).mkdir(parents=True)
        (built / role / "adapter_model.safetensors").write_bytes(role.encode())
    (built / "manifest.json").write_text(json.dumps({
        "adapters": {"planner": "planner", "caller": "caller"},
        "role_keys": {r: cfg.role_key(r) for r in ("planner", "caller")},
        "train": {"planner": {"seconds": 1.0}, "caller": {"seconds": 2.0}}}))
    assert demo._reusable(planner_change, "planner", [built]) is None
    assert demo._reusable(planner_change, "caller", [built]) == built / "caller"
    work = tmp_path / "work"
    work.mkdir()
    stats = demo._train_adapters(cfg, "BASE", work, lambda m: None, reuse=[tmp_path / "missing", built])
    assert stats == {"planner": {"seconds": 1.0, "reused": True}, "caller": {"seconds": 2.0, "reused": True}}
    assert (work / "caller" / "adapter_model.safetensors").read_bytes() == b"caller"


def test_the_planner_weighs_its_decision_tokens():
    from train.data import LossWeights
    from train.recipe import load_recipe

    cmd = demo.sft_command("planner", demo.DemoConfig(decision_weight=5.0), "BASE", Path("/w"))
    recipe = load_recipe(cmd[5], cmd[6:])
    assert (recipe.data.loss_weight_pattern, recipe.data.loss_weight) == (demo.DECISION_PATTERN, 5.0)
    plan = "Plan: Search the encyclopedia for Zhang Yimou.\n#E1 = search_wiki[Zhang Yimou]\n" \
           "Plan: Summarize it.\n#E2 = llm[Summarize: #E1]"
    assert [plan[a:b] for a, b in LossWeights(demo.DECISION_PATTERN, 5.0).spans(plan)] == [
        "Search", "search_wiki", "Summarize", "llm"]
    caller = load_recipe(*(lambda c: (c[5], c[6:]))(demo.sft_command("caller", demo.DemoConfig(), "B", Path("/w"))))
    assert caller.data.loss_weight_pattern == ""
    assert "loss_weight_pattern" not in " ".join(demo.sft_command("planner", demo.DemoConfig(decision_weight=1.0),
                                                                  "B", Path("/w")))


def test_the_planner_rank_reaches_its_recipe_and_leaves_the_caller_alone():
    """planner_lora_r / planner_lora_alpha override the planner's LoRA (still q_proj and v_proj
    only); the caller keeps its recipe's rank and its key; at the yaml's 8/16 they are left out of
    both keys, so the shipped build's key still names it."""
    from train.recipe import load_recipe

    wide = demo.DemoConfig(planner_lora_r=32, planner_lora_alpha=32)
    recipe = load_recipe(*(lambda c: (c[5], c[6:]))(demo.sft_command("planner", wide, "B", Path("/w"))))
    assert (recipe.lora.r, recipe.lora.alpha, recipe.lora.target_modules) == (32, 32, ["q_proj", "v_proj"])
    caller = load_recipe(*(lambda c: (c[5], c[6:]))(demo.sft_command("caller", wide, "B", Path("/w"))))
    default = load_recipe(*(lambda c: (c[5], c[6:]))(demo.sft_command("caller", demo.DemoConfig(), "B", Path("/w"))))
    assert (caller.lora.r, caller.lora.alpha) == (default.lora.r, default.lora.alpha)
    assert wide.role_key("caller") == demo.DemoConfig().role_key("caller")
    assert wide.role_key("planner") != demo.DemoConfig().role_key("planner") and wide.key() != demo.DemoConfig().key()
    v20 = demo.DemoConfig(planner_lora_r=8, planner_lora_alpha=16, **V20)
    assert v20.key() == "6ef8efb4eedc" and v20.role_key("planner") == "d11506e397f3"  # v20's keys (its manifest)
    v25 = demo.DemoConfig(planner_lora_r=8, planner_lora_alpha=16, **V25)
    assert v25.key() == "10f470ca28bb" and v25.role_key("planner") == "bb0424ebda8f"  # v25's (the shipped manifest)


def test_extra_planner_rows_leave_the_solver_and_caller_rows_and_the_callers_key_alone(tmp_path):
    """The planner can get more rows (and whole-toolbox tool lists, a bigger batch, shared
    prefixes) without retraining the caller: its rows and its recipe key stay the same."""
    from train.recipe import load_recipe

    a = demo_data.demo_rows(0, tmp_path / "a", planner=40, solver=12, caller=6)
    b = demo_data.demo_rows(0, tmp_path / "b", planner=40, solver=12, caller=6, extra_planner=20, full_share=1.0)
    assert (a["solver"], a["caller"]) == (b["solver"], b["caller"]) and len(b["planner"]) == 60
    assert [r["output"] for r in a["planner"]] == [r["output"] for r in b["planner"][:40]]
    from toolkit import default_toolbox

    box = default_toolbox(workspace=str(tmp_path / "w"), search_url=None)
    whole = formats.planner_instruction("T", demo_data.planner_tools(box, [], random.Random(0), 1.0))
    head = whole.split("Task:")[0]
    assert all(r["instruction"].startswith(head) for r in b["planner"])  # every row: one shared prefix
    base = demo.DemoConfig(extra_planner_rows=0, planner_full_share=0.35, planner_batch=0, share_prefix=0)
    for change in ({"extra_planner_rows": 7}, {"planner_full_share": 1.0}, {"planner_batch": 16}, {"share_prefix": 32}):
        cfg = demo.DemoConfig(**{**base.__dict__, **change})
        assert cfg.role_key("caller") == base.role_key("caller") and cfg.role_key("planner") != base.role_key("planner")
    cmd = demo.sft_command("planner", demo.DemoConfig(planner_batch=8, share_prefix=64), "BASE", tmp_path)
    recipe = load_recipe(cmd[5], cmd[6:])
    assert (recipe.train.per_device_train_batch_size, recipe.data.share_prefix, recipe.data.packing) == (8, 64, False)
    caller = demo.sft_command("caller", demo.DemoConfig(planner_batch=8, share_prefix=64), "BASE", tmp_path)
    assert "share_prefix=0" in caller and f"per_device_train_batch_size={demo.DemoConfig().batch}" in caller


def test_tool_first_plans_open_each_step_on_its_tool_and_leave_the_caller_rows_alone(tmp_path):
    a = demo_data.demo_rows(0, tmp_path / "a", planner=30, solver=10, caller=6)
    b = demo_data.demo_rows(0, tmp_path / "b", planner=30, solver=10, caller=6, tool_first_plans=True)
    assert a["caller"] == b["caller"] and len(a["solver"]) == len(b["solver"])
    for row_a, row_b in zip(a["planner"], b["planner"]):
        plan_a, plan_b = parse_plan(row_a["output"], BUILTINS), parse_plan(row_b["output"], BUILTINS)
        assert [(s.var, s.tool, s.input) for s in plan_a] == [(s.var, s.tool, s.input) for s in plan_b]
        for sa, sb in zip(plan_a, plan_b):
            assert sb.description == f"Use {sa.tool} to {sa.description[0].lower()}{sa.description[1:]}"
    assert all("Plan: Use " in r["instruction"] for r in b["solver"])
    assert demo.DemoConfig(tool_first=False).role_key("caller") == demo.DemoConfig().role_key("caller")


def test_agent_trajectories_join_the_planners_data_only(tmp_path, tiny_model_dir):
    """ReAct and code trajectories (train.trajectories) go into planner.jsonl as prompt-completion
    rows rendered with the base's tokenizer, over the planner's tasks; the caller's rows and key,
    and the planner's other rows, stay as they were; the planner trains them at its own max_seq_len."""
    from train.recipe import load_recipe

    small = dict(planner_rows=16, solver_rows=6, caller_rows=4, catalog_planner_rows=2, catalog_caller_rows=4,
                 extra_planner_rows=4, agent_react_rows=0, agent_code_rows=0)
    plain = demo.DemoConfig(**small, react_rows=0, code_rows=0, planner_max_seq_len=0)
    agents = demo.DemoConfig(**small, react_rows=3, code_rows=2, planner_max_seq_len=2048)
    counts = {}
    for name, cfg in (("plain", plain), ("agents", agents)):
        (tmp_path / name).mkdir()
        counts[name] = demo.build_data(cfg, tmp_path / name, str(tiny_model_dir))
    read = lambda name, f: [json.loads(line) for line in (tmp_path / name / f).read_text().splitlines()]  # noqa: E731
    assert read("plain", "caller.jsonl") == read("agents", "caller.jsonl")
    rows = read("agents", "planner.jsonl")
    trajectories = [r for r in rows if "prompt" in r]
    assert [r for r in rows if "prompt" not in r] == read("plain", "planner.jsonl")
    assert len(trajectories) == counts["agents"]["agent_rows"] > 5 and counts["agents"]["agent_replays_dropped"] == 0
    assert {r["meta"]["mode"] for r in trajectories} == {"react", "code"}
    assert len({r["meta"]["phrasing"] for r in trajectories if r["meta"]["mode"] == "react"}) == 3
    assert all(r["prompt"].startswith("### Instruction:\nYou solve a task step by step") and r["completion"].startswith("Thought: ")
               for r in trajectories)  # the tiny tokenizer has no chat template: the engine renders Alpaca
    assert agents.role_key("caller") == plain.role_key("caller") != None  # noqa: E711
    assert agents.role_key("planner") != plain.role_key("planner")
    for role, want in (("planner", 2048), ("caller", agents.max_seq_len)):
        cmd = demo.sft_command(role, agents, "BASE", tmp_path)
        assert load_recipe(cmd[5], cmd[6:]).data.max_seq_len == want


def test_the_agent_adapter_trains_on_trajectories_alone_and_retrains_neither_other_adapter(tmp_path, tiny_model_dir,
                                                                                           monkeypatch):
    """agent_react_rows / agent_code_rows make a third adapter for --mode react|code: agent.jsonl
    holds the ReAct-JSON and code trajectories of the demo's tasks (prompt-completion rows, as the
    engine renders them) and nothing else; planner.jsonl and caller.jsonl, and both adapters'
    keys, stay as they were (v12 put trajectories in the planner's data and its plans got worse).
    It trains as the planner does (LoRA q/v, its dtype and batch), at its own length, rate and epochs."""
    from train.recipe import load_recipe

    small = dict(planner_rows=16, solver_rows=6, caller_rows=4, catalog_planner_rows=2, catalog_caller_rows=4,
                 extra_planner_rows=4, agent_react_rows=0, agent_code_rows=0)
    plain = demo.DemoConfig(**small)
    agent = demo.DemoConfig(**{**small, "agent_react_rows": 3, "agent_code_rows": 2}, agent_epochs=2.0, agent_lr=5e-4)
    assert plain.roles() == ("planner", "caller") and agent.roles() == ("planner", "caller", "agent")
    counts = {}
    for name, cfg in (("plain", plain), ("agent", agent)):
        (tmp_path / name).mkdir()
        counts[name] = demo.build_data(cfg, tmp_path / name, str(tiny_model_dir))
    read = lambda name, f: [json.loads(line) for line in (tmp_path / name / f).read_text().splitlines()]  # noqa: E731
    for f in ("planner.jsonl", "caller.jsonl", "unseen_tools.jsonl"):
        assert read("plain", f) == read("agent", f)
    assert not (tmp_path / "plain" / "agent.jsonl").exists() and "agent_adapter_rows" not in counts["plain"]
    rows = read("agent", "agent.jsonl")
    assert len(rows) == counts["agent"]["agent_adapter_rows"] > 5 and counts["agent"]["agent_adapter_replays_dropped"] == 0
    assert all(set(r) == {"prompt", "completion", "meta"} and r["completion"].startswith("Thought: ")
               and r["completion"].endswith("<end_action>") for r in rows)
    assert {r["meta"]["mode"] for r in rows} == {"react", "code"}
    assert len({r["meta"]["phrasing"] for r in rows if r["meta"]["mode"] == "react"}) == 3
    assert len({r["meta"]["phrasing"] for r in rows if r["meta"]["mode"] == "code"}) == 2
    assert not (tmp_path / "agent" / "workspace-agent").exists()
    # keys: the recipe's changes; the planner's and the caller's do not; the agent's follows its own fields and the data
    assert agent.key() != plain.key() and plain.key() == demo.DemoConfig(**small).key()
    for role in ("planner", "caller"):
        assert agent.role_key(role) == plain.role_key(role)
    assert agent.role_key("agent") != dataclasses.replace(agent, agent_epochs=1.0).role_key("agent")
    assert agent.role_key("agent") != dataclasses.replace(agent, planner_rows=17).role_key("agent")
    assert agent.role_key("agent") == dataclasses.replace(agent, planner_lr=5e-4, caller_lr=5e-4).role_key("agent")
    cmd = demo.sft_command("agent", agent, "BASE", tmp_path)
    recipe = load_recipe(cmd[5], cmd[6:])
    assert Path(cmd[5]).name == "planner_lora.yaml" and recipe.lora.target_modules == ["q_proj", "v_proj"]
    assert recipe.lora.quantization == "none" and recipe.data.train_on_prompt is False
    assert (recipe.data.max_seq_len, recipe.train.learning_rate, recipe.train.num_train_epochs) == (2304, 5e-4, 2.0)
    assert f"dataset={tmp_path / 'agent.jsonl'}" in cmd and f"output_dir={tmp_path / 'agent'}" in cmd
    planner = load_recipe(*(lambda c: (c[5], c[6:]))(demo.sft_command("planner", agent, "BASE", tmp_path)))
    assert (planner.data.max_seq_len, planner.train.learning_rate) == (agent.max_seq_len, agent.planner_lr)
    assert recipe.lora.init_adapter == ""  # a fresh adapter
    # agent_from_planner: it starts from the planner's adapter (trained first), so the planner's key is in its own
    warm = dataclasses.replace(agent, agent_from_planner=True)
    started = load_recipe(*(lambda c: (c[5], c[6:]))(demo.sft_command("agent", warm, "BASE", tmp_path)))
    assert started.lora.init_adapter == str(tmp_path / "planner") and (started.lora.r, started.lora.alpha) == (
        warm.planner_lora_r, warm.planner_lora_alpha)
    assert warm.role_key("agent") != agent.role_key("agent")
    assert warm.role_key("agent") != dataclasses.replace(warm, planner_lr=5e-4).role_key("agent")
    assert (warm.role_key("planner"), warm.role_key("caller")) == (agent.role_key("planner"), agent.role_key("caller"))
    before = agent.role_key("agent")  # a new version of the agent's data retrains the agent alone
    monkeypatch.setattr(demo, "AGENT_DATA_VERSION", demo.AGENT_DATA_VERSION + 1)
    assert agent.role_key("agent") != before and agent.role_key("planner") == plain.role_key("planner")


def test_agent_trajectories_name_no_machine_folder(tmp_path):
    """save_file's observation names the workspace folder; in the agents' rows it is "workspace",
    as in the solver's rows, so two machines (two build folders) write the same rows. v29-v31 were
    trained on rows that named the build's folder (32 of 762)."""
    a = demo_data.demo_rows(0, tmp_path / "a", planner=40, solver=10, caller=5, react=20, code=20)
    b = demo_data.demo_rows(0, tmp_path / "elsewhere" / "b", planner=40, solver=10, caller=5, react=20, code=20)
    assert a["agents"] == b["agents"]
    texts = [m["content"] for r in a["agents"] for m in r["messages"]]
    assert not any(str(tmp_path) in t for t in texts)
    assert sum("in the workspace (workspace)" in t for t in texts) >= 2  # the saves' observations


def later_draw(tmp_path, before: dict, **more) -> list[dict]:
    """The planner rows one more later draw adds (chains, wide, focus): the caller's and solver's
    rows stay the same, the earlier planner rows come first unchanged, no task twice, no eval task."""
    a = demo_data.demo_rows(0, tmp_path / "a", planner=20, solver=6, caller=4, **before)
    b = demo_data.demo_rows(0, tmp_path / "b", planner=20, solver=6, caller=4, **before, **more)
    n = len(a["planner"])
    assert a["caller"] == b["caller"] and a["solver"] == b["solver"] and b["planner"][:n] == a["planner"]
    texts = [demo_data.normalise(r["instruction"].rsplit("Task: ", 1)[1]) for r in b["planner"]]
    assert len(set(texts)) == len(texts) and not set(texts) & demo_data.eval_texts()
    return b["planner"][n:]


# The fields whose defaults changed after v20 (v25: the first two; v29: the agent adapter), at v20's values: with
# them an older build's key still names it.
V20 = {"catalog_renamed": 0.0, "planner_dtype": "auto", "agent_react_rows": 0, "agent_code_rows": 0, "open_values": False,
       "save_rows": 0}
# v25's planner and caller with no agent adapter (v29 added one, changing the recipe's key only).
V25 = {"agent_react_rows": 0, "agent_code_rows": 0, "open_values": False, "save_rows": 0}
# v32's recipe (v25's planner and caller, the agent adapter); v39 drew open values for its planner and
# caller, v40 added save rows to its planner's.
V32 = {"open_values": False, "save_rows": 0}


def planner_only_key(field: str, value: int) -> None:
    """A planner-only field changes the recipe's key and the planner's, not the caller's."""
    plain, more = demo.DemoConfig(**{field: 0}), demo.DemoConfig(**{field: value})
    assert more.key() != plain.key()
    assert more.role_key("caller") == plain.role_key("caller") != more.role_key("planner")


def test_chain_rows_add_two_step_plans_for_the_planner_only(tmp_path):
    """chain_rows draws more two-step tasks (a lookup saved to a file, an entry summarised) after
    the others: they make planner rows only, every one a plan of two or more steps (the new intents'
    last step uses the evidence before it), and the other rows (solver, caller) stay the same."""
    extra = later_draw(tmp_path, {}, chains=24)
    assert len(extra) == 24 and {r["meta"]["intent"] for r in extra} >= {"save_chain", "summary_chain"}
    for row in extra:
        plan = parse_plan(row["output"], BUILTINS)
        assert len(plan) >= 2, row["output"]
        if row["meta"]["intent"] in ("save_chain", "summary_chain"):
            assert f"#E{len(plan) - 1}" in plan.steps[-1].input, row["output"]
            assert plan.steps[-1].tool == {"save_chain": "save_file", "summary_chain": "llm"}[row["meta"]["intent"]]
    planner_only_key("chain_rows", 80)


WIDE = {"wiki_question": "search_wiki", "python_wide": "python_interpreter", "llm_wide": "llm"}


@pytest.fixture(scope="module")
def wide_drafts():
    return demo_data.draw(3000, seed=0, mix=demo_data.WIDE_MIX)


def test_wide_rows_add_new_shapes_for_the_planner_only(tmp_path):
    """wide_rows draws tasks in new shapes and words (WIDE_MIX) after the others: planner rows
    only, the other rows unchanged, nothing twice and no eval task; the caller's key stays."""
    extra = later_draw(tmp_path, dict(chains=6), wide=40)
    assert len(extra) == 40 and {r["meta"]["intent"] for r in extra} >= set(WIDE)
    for row in extra:
        plan = parse_plan(row["output"], BUILTINS)
        if row["meta"]["intent"] in WIDE:
            assert [s.tool for s in plan] == [WIDE[row["meta"]["intent"]]], row
        else:  # a film-database intent in new words
            assert {s.tool for s in plan} == {"query_sql"}, row
    planner_only_key("wide_rows", 100)
    # at 0 it is left out of the keys: v13's recipe still has v13's keys
    v13 = demo.DemoConfig(**V20, extra_planner_rows=200, wide_rows=0, focus_rows=0, films_rows=0, rare_rows=0, distinct_values=False,
                          catalog_planner_rows=90)
    with pytest.MonkeyPatch.context() as data:  # the caller's key as of its data version 7, when v13 was built
        data.setattr(demo, "CALLER_DATA_VERSION", 7)
        assert (v13.key(), v13.role_key("planner"), v13.role_key("caller")) == ("7069bb876ab1", "28dc20f9e5c1", "5ab4a8bfd8f3")


def test_wide_intents_are_varied_and_ask_nothing_an_eval_task_names(wide_drafts):
    phrasings = collections.defaultdict(set)
    for d in wide_drafts:
        phrasings[d.intent].add(d.template)
    assert all(len(phrasings[k]) >= 30 for k in WIDE), {k: len(v) for k, v in phrasings.items()}
    # the film intents in new words use templates the base intents do not have
    base = {d.template.split("/")[0] for d in demo_data.draw(3000, seed=0)}
    film = {d.template.split("/")[0] for d in wide_drafts if d.intent not in WIDE}
    assert film - base and len(film - base) >= 30
    # wiki_question asks about articles no eval task names (Mount Everest, Apollo 11, Linux, ...)
    named = " " + " ".join(demo_data.eval_texts()) + " "
    asked = {d.steps[0][2] for d in wide_drafts if d.intent == "wiki_question"}
    assert len(asked) >= 60
    assert not {a for a in asked if f" {demo_data.normalise(a)} " in named}
    assert " mount everest " in named and " apollo 11 " in named


def test_wide_python_tasks_run_in_the_real_interpreter(tmp_path):
    from toolkit import default_toolbox

    drafts = [d for d in demo_data.draw(400, seed=5, mix=demo_data.WIDE_MIX) if d.intent == "python_wide"]
    kinds = {d.template.split(":")[1] for d in drafts}
    assert len(kinds) == 12
    grounded = demo_data.ground(drafts, default_toolbox(workspace=str(tmp_path), search_url=None), 0)
    for g in grounded:
        out = g["evidence"]["#E1"]
        assert out.strip() and not out.startswith("Error"), (g["draft"].text, out)
        assert g["answer"] == out.strip().splitlines()[0]


def test_focus_rows_come_after_the_wide_ones_for_the_planner_only(tmp_path):
    """focus_rows draws FOCUS_MIX (Python, `llm`, directors asked as people are) after the wide
    rows: planner rows only, every earlier row unchanged, no eval task; the caller's key stays and
    at 0 the keys still name v14."""
    extra = later_draw(tmp_path, dict(chains=6, wide=10), focus=40)
    assert len(extra) == 40 and {r["meta"]["intent"] for r in extra} == set(demo_data.FOCUS_MIX)
    tool = dict(WIDE, born_shared="query_sql")
    for row in extra:
        assert [s.tool for s in parse_plan(row["output"], BUILTINS)] == [tool[row["meta"]["intent"]]], row
    planner_only_key("focus_rows", 150)
    v14 = demo.DemoConfig(**V20, extra_planner_rows=100, wide_rows=100, focus_rows=0, films_rows=0, rare_rows=0, distinct_values=False,
                          catalog_planner_rows=90)
    with pytest.MonkeyPatch.context() as data:  # the caller's key as of its data version 7, when v14 was built
        data.setattr(demo, "CALLER_DATA_VERSION", 7)
        assert (v14.key(), v14.role_key("planner"), v14.role_key("caller")) == ("f95f2c20e9f5", "0d3ff01f2098", "5ab4a8bfd8f3")


def test_films_rows_come_after_the_focused_ones_for_the_planner_only(tmp_path):
    """films_rows draws FILMS_MIX ("another film by the director of X" and counts, in their base and
    wider words) after the focused rows: planner rows only, every earlier row unchanged, no eval task;
    each plan is the one SQL statement of its intent; the caller's key stays, and at 0 the key is
    v15's (the recipe before it)."""
    extra = later_draw(tmp_path, dict(chains=6, wide=10, focus=10), films=40)
    intents = collections.Counter(r["meta"]["intent"] for r in extra)
    assert len(extra) == 40 and set(intents) == {"director_films", "count_films"}
    assert intents["director_films"] > intents["count_films"]
    sql = {"director_films": r"SELECT title FROM films WHERE director = \(SELECT director FROM films WHERE title = '.+'\)",
           "count_films": r"SELECT COUNT\(\*\) FROM films WHERE director = '.+'"}
    for row in extra:
        steps = parse_plan(row["output"], BUILTINS).steps
        assert len(steps) == 1 and steps[0].tool == "query_sql", row
        assert re.fullmatch(sql[row["meta"]["intent"]], steps[0].input), row
    # the wider words too: the base intents have 10 and 6 templates, FILM_MORE's come after them
    base = {"director_films": 10, "count_films": 6}
    wider = {r["meta"]["intent"] for r in extra if int(r["meta"]["phrasing"].split("/")[0].split(":")[1]) >= base[r["meta"]["intent"]]}
    assert wider == set(base)
    planner_only_key("films_rows", 120)
    assert demo.DemoConfig(films_rows=0, rare_rows=0, catalog_planner_rows=90, **V20).key() == "d4f53934ee4c"  # at 0 it is left out: v15's key still names v15


RARE_TOOLS = {"clock": ["get_current_time"], "web": ["search_web"], "save_text": ["save_file"],
              "arithmetic": ["calculator"], "film_year": ["query_sql"], "birth_year": ["query_sql"],
              "birthplace": ["query_sql"], "compare_births": ["query_sql", "query_sql"]}


def test_rare_rows_come_after_the_film_ones_for_the_planner_only(tmp_path):
    """rare_rows draws RARE_MIX (the clock, the web, saving files and the calculator in new words, film
    years and directors' birth facts in new words) after the film rows: planner rows only, every
    earlier row unchanged, no eval task; each plan is its intent's tool, run for real when the rows
    were made; the caller's key stays, and at 0 the key is v19's (the recipe before it)."""
    extra = later_draw(tmp_path, dict(chains=6, wide=10, focus=10, films=10), rare=80)
    intents = collections.Counter(r["meta"]["intent"] for r in extra)
    assert len(extra) == 80 and {"clock", "web", "save_text", "arithmetic"} <= set(intents) <= set(RARE_TOOLS)
    phrasings = {r["meta"]["phrasing"].split(":")[0].split("/")[0] for r in extra}
    assert {"web_wide", "save_wide", "calc_wide"} <= phrasings and any(p.startswith("clock_wide") for p in phrasings)
    for row in extra:
        assert [s.tool for s in parse_plan(row["output"], BUILTINS)] == RARE_TOOLS[row["meta"]["intent"]], row
    planner_only_key("rare_rows", 120)
    assert demo.DemoConfig(rare_rows=0, **V20).key() == "4df725859b28"  # at 0 it is left out: v19's key still names v19


def test_rare_drafts_ground_on_the_real_tools(tmp_path):
    """Every rare intent's draft runs on the offline toolbox as the plan says: the clock answers a
    moment, the calculator a number, save_file writes the quoted text, search_web says it is not
    configured (the solver row says so), the film database answers its query."""
    from toolkit import default_toolbox

    drafts = demo_data.draw(120, seed=19, mix=demo_data.RARE_MIX)
    assert {d.template.split(":")[0].split("/")[0] for d in drafts} >= {
        "clock_wide_time", "clock_wide_date", "clock_wide_weekday", "clock_wide_year", "web_wide", "save_wide"}
    assert any(d.template.startswith("calc_wide:0") for d in drafts)  # powers in words ("2 to the 16th")
    box = default_toolbox(workspace=str(tmp_path), search_url=None)
    for d in drafts:  # one at a time: two saves may name one path
        g = demo_data.ground([d], box, 0)[0]
        ev = g["evidence"]
        if d.intent == "web":
            assert ev["#E1"].startswith("Error") and g["answer"].startswith("I could not search the web:"), g
            continue
        assert not any(v.startswith("Error") for v in ev.values()), (d.text, ev)
        assert g["answer"], (d.text, ev)
        if d.intent == "arithmetic":
            assert re.fullmatch(r"-?\d+(\.\d+)?", g["answer"]), (d.text, g["answer"])
        if d.intent == "save_text":  # the file holds the text the task quotes (the "lower" style lower-cases it)
            saved = (tmp_path / d.entities[1]).read_text()
            assert saved == d.entities[0] and f"'{saved.lower()}'" in d.text.lower(), d.text


def test_save_rows_save_given_notes_and_lookups_for_the_planner_only(tmp_path):
    """save_rows draws SAVE_MIX after the rare rows: notes and messages saved as given (texts shaped
    like real ones, some reading like another tool's task: "Email Rosa the report", which v39 sent to
    llm or query_sql) and lookups whose answer is saved. Planner rows only, every earlier row
    unchanged, no eval task; each plan ends on save_file; a given text and its file name stand in
    the task as the plan writes them. The caller's and the agent's keys stay (their adapters are
    reused); at 0 the key is v39's."""
    extra = later_draw(tmp_path, dict(chains=6, wide=10, focus=10, films=10, rare=10, open_values=True), saves=60)
    assert len(extra) == 60
    phrasings = collections.Counter(r["meta"]["phrasing"].split(":")[0] for r in extra)
    assert set(phrasings) == {"save_message", "save_chain"} and min(phrasings.values()) > 15
    for row in extra:
        plan = parse_plan(row["output"], BUILTINS)
        assert plan.steps[-1].tool == "save_file", row["output"]
        args = demo_data.save_arguments(plan.steps[-1].input)
        task = row["instruction"].rsplit("Task: ", 1)[1]
        assert args["path"] in task, (args, task)
        if row["meta"]["phrasing"].startswith("save_message"):
            assert len(plan) == 1 and f"'{args['content']}'" in task, (args, task)
        else:
            assert len(plan) >= 2 and args["content"] == f"#E{len(plan) - 1}", row["output"]
    planner_only_key("save_rows", 160)
    assert demo.DemoConfig(save_rows=160).role_key("agent") == demo.DemoConfig(save_rows=0).role_key("agent")
    assert demo.DemoConfig(save_rows=0).key() == "90ad2309f1d6"  # at 0 it is left out: v39's key still names v39


def test_colon_save_inputs_write_save_steps_in_the_catalogs_style(tmp_path):
    """colon_save_inputs writes every save_file step "path: X; content: Y" (a name then splits into
    the pieces it has after the task's space) in the planner's, solver's and caller's rows; the
    caller still answers the same JSON, every other step and row stays as it was, and the agent's
    key stays (its trajectories never show a plan)."""
    args = dict(planner=40, solver=8, caller=6, open_values=True, saves=10)
    a = demo_data.demo_rows(0, tmp_path / "a", **args)
    b = demo_data.demo_rows(0, tmp_path / "b", **args, colon_save_inputs=True)
    assert [r["output"] for r in a["caller"]] == [r["output"] for r in b["caller"]] and len(b["caller"]) > 3
    changed = 0
    for role in ("planner", "solver", "caller"):
        for old, new in zip(a[role], b[role], strict=True):
            text = {"planner": "output", "solver": "instruction", "caller": "instruction"}[role]
            saves = re.findall(r"save_file\[path=(.*?), content=(.*?)\]", old[text])
            assert new[text] == re.sub(r"save_file\[path=(.*?), content=(.*?)\]",
                                       r"save_file[path: \1; content: \2]", old[text]), (old[text], new[text])
            changed += bool(saves)
            if role == "caller":
                call = json.loads(new["output"])["arguments"]
                assert f"save_file[path: {call['path']}; content: {call['content']}]" in new["instruction"]
    assert changed > 20
    small = dict(planner_rows=20, solver_rows=6, caller_rows=4, extra_planner_rows=0, chain_rows=0, wide_rows=0,
                 focus_rows=0, films_rows=0, rare_rows=0, save_rows=0, catalog_planner_rows=10, catalog_caller_rows=12,
                 agent_react_rows=0, agent_code_rows=0)
    files = {}
    for name, colon in (("plain", False), ("colon", True)):  # the field reaches the files build_data writes
        demo.build_data(demo.DemoConfig(**small, colon_save_inputs=colon), tmp_path / name)
        files[name] = (tmp_path / name / "caller.jsonl").read_text()
    # (the catalog's own caller rows write save_file that way already: "kv_colon")
    assert files["colon"].count("save_file[path: ") > files["plain"].count("save_file[path: ")
    assert files["colon"].count("save_file[path=") < files["plain"].count("save_file[path=")
    plain, colon = demo.DemoConfig(), demo.DemoConfig(colon_save_inputs=True)
    assert plain.key() == "e18a5378f35a" != colon.key()  # off: v40's key still names v40
    assert colon.role_key("planner") != plain.role_key("planner") and colon.role_key("caller") != plain.role_key("caller")
    assert colon.role_key("agent") == plain.role_key("agent")


def test_saved_messages_ground_on_the_real_save_file(tmp_path):
    """A saved message is written by the real save_file byte for byte (commas, colons, "#", "!",
    times), and the texts are of many shapes, some of them imperatives that read like a task."""
    from toolkit import default_toolbox

    drafts = [d for d in demo_data.draw(80, seed=41, mix=demo_data.SAVE_MIX, open_values=True)
              if d.template.startswith("save_message")]
    texts = [d.entities[0] for d in drafts]
    assert len(set(texts)) == len(texts) > 30
    assert any(re.search(r"\d:\d\d", t) for t in texts) and any(t.startswith(("Email ", "Call ", "Search ", "Translate "))
                                                                  for t in texts)
    box = default_toolbox(workspace=str(tmp_path), search_url=None)
    for d in drafts:  # one at a time: two saves may name one path
        g = demo_data.ground([d], box, 0)[0]
        assert not g["evidence"]["#E1"].startswith("Error"), g["evidence"]
        assert (tmp_path / d.entities[1]).read_text() == d.entities[0], d.text


def test_born_shared_asks_directors_in_the_words_person_born_asks_people(tmp_path):
    """The same phrasing, the other tool: a director of the film database asked "When was X
    born?" goes to query_sql and answers from it, a person of the encyclopedia goes to search_wiki."""
    from toolkit import default_toolbox

    drafts = demo_data.draw(600, seed=3, mix={"born_shared": 1.0, "person_born": 1.0})
    directors = {d["name"] for d in demo_data.World.load().directors}
    shared = [d for d in drafts if d.intent == "born_shared"]
    people = [d for d in drafts if d.intent == "person_born"]
    assert shared and people
    assert {d.template.split("/")[0].split(":")[1] for d in shared} == set(map(str, range(len(demo_data.Intents.PERSON_BORN))))
    assert {d.entities[0] for d in shared} <= directors and not {d.entities[0] for d in people} & directors
    assert {d.steps[0][1] for d in shared} == {"query_sql"} and {d.steps[0][1] for d in people} == {"search_wiki"}
    intents = demo_data.Intents(demo_data.World.load(), random.Random(0))
    for _ in range(30):  # unstyled: the very words person_born uses
        d = intents.born_shared()
        assert d.text in {t.format(n=d.entities[0]) for t in demo_data.Intents.PERSON_BORN}, d.text
    grounded = demo_data.ground(shared[:12], default_toolbox(workspace=str(tmp_path), search_url=None), 0)
    for g in grounded:
        assert g["answer"] and g["answer"] in g["evidence"]["#E1"], (g["draft"].text, g["evidence"])


def test_the_shipped_recipe_still_writes_the_data_the_shipped_adapters_were_trained_on(tmp_path):
    """python -m train.demo rebuilds the shipped adapters only if build_data still writes the
    training files of v40's planner, v39's caller and v32's agent byte for byte. The generator reads data/eval (it never emits an eval task or asks
    about an article one names), so replacing an eval file changes them too: this test says so."""
    import hashlib

    from pipeline.defaults import base_dir

    demo.build_data(demo.DemoConfig(), tmp_path, str(base_dir()))  # the agent's rows: rendered with the base's template
    digest = {name: hashlib.sha256((tmp_path / f"{name}.jsonl").read_bytes()).hexdigest()[:16]
              for name in ("planner", "caller", "agent")}
    assert digest == {"planner": "b22cbe11883154ea", "caller": "4f7efafc174ada2f", "agent": "eb6b8fbe3bb46ee1"}, (
        "the shipped recipe now writes other training data than data/demo was built from (did train/demo_data.py "
        "or a data/eval file change?): rebuild with python -m train.demo --out data/demo --force, or undo it")


def test_typed_chains_change_the_catalog_rows_of_both_adapters(tmp_path):
    """typed_chains makes the catalog's chains typed and distinct_values its values distinct
    (train.datagen): both adapters' rows come from that generator, so both keys change; at False
    (and chain_rows 0, 30 catalog rows) the key still names v11, the build before them."""
    v11 = demo.DemoConfig(**V20, typed_chains=False, chain_rows=0, catalog_planner_rows=30, distinct_values=False,
                          extra_planner_rows=200, wide_rows=0, focus_rows=0, films_rows=0, rare_rows=0)
    with pytest.MonkeyPatch.context() as data:  # the caller's key as of its data version 7, when v11 was built
        data.setattr(demo, "CALLER_DATA_VERSION", 7)
        assert (v11.key(), v11.role_key("planner"), v11.role_key("caller")) == ("e09cf8472d24", "e878afa91b74", "f07e560880ef")
    # at False it is left out of the keys (v14's pinned keys: test_focus_rows_...); True retrains the caller
    assert demo.DemoConfig(distinct_values=True).role_key("caller") != demo.DemoConfig(distinct_values=False).role_key("caller")
    untyped = demo.DemoConfig(typed_chains=False)
    assert untyped.role_key("caller") != demo.DemoConfig().role_key("caller")
    assert untyped.role_key("planner") != demo.DemoConfig().role_key("planner")
    small = dict(catalog_planner_rows=40, catalog_caller_rows=4, heldout_catalog_tools=8)
    random_tasks = demo.catalog_rows(demo.DemoConfig(**small, typed_chains=False))["tasks"]
    typed_tasks = demo.catalog_rows(demo.DemoConfig(**small, typed_chains=True))["tasks"]
    loose = [t["task"] for t in random_tasks if re.search(r"latest results of (it|the result|that|what you found)", t["task"])]
    assert loose and not [t for t in typed_tasks if re.search(r"latest results of (it|the result|that|what you found)", t["task"])]
    calls = lambda cfg: [json.loads(r["output"])["arguments"] for r in demo.catalog_rows(cfg)["caller"]]  # noqa: E731
    same = lambda args: len({v for v in args.values() if isinstance(v, str)}) < sum(isinstance(v, str) for v in args.values())  # noqa: E731
    few = dict(catalog_planner_rows=2, catalog_caller_rows=300, typed_chains=False)
    assert [a for a in calls(demo.DemoConfig(**few, distinct_values=False)) if same(a)]
    assert not [a for a in calls(demo.DemoConfig(**few, distinct_values=True)) if same(a)]


def _sleeper(pidfile: Path):
    """An sft_command stand-in: a job that records its pid and runs for two minutes."""
    code = f"import os, pathlib, time; pathlib.Path({str(pidfile)!r}).write_text(str(os.getpid())); time.sleep(120)"
    return lambda role, cfg, base, work: [sys.executable, "-c", code]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(pidfile: Path, seconds: float = 60) -> int:
    deadline = time.monotonic() + seconds
    while not pidfile.is_file() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    return int(pidfile.read_text())


def _gone(pid: int, seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_build_leaves_no_trainer_behind(tmp_path, sig):
    """Observed: `kill <pid>` of a running build (`python -m train.demo` under nohup) left its
    `python -m train sft` job training on, with both cores, and a rerun resumes into the same work
    folder beside it. The job now dies with the build, by any signal."""
    pidfile = tmp_path / "job.pid"
    script = tmp_path / "build.py"
    script.write_text(
        "import os, sys\nfrom pathlib import Path\nimport train.demo as demo\nimport tests.test_demo as t\n"
        f"demo.sft_command = t._sleeper(Path({str(pidfile)!r}))\n"
        f"work = Path({str(tmp_path / 'work')!r}); work.mkdir()\n"
        "demo._train_one('planner', demo.DemoConfig(), 'BASE', work, dict(os.environ, OMP_NUM_THREADS='1'), print)\n")
    root = Path(demo.__file__).resolve().parents[1]
    build = subprocess.Popen([sys.executable, str(script)], cwd=root, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(root)))
    try:
        job = _wait_for(pidfile)
        assert _alive(job)
        build.send_signal(sig)
        build.wait(timeout=30)
        assert _gone(job), f"the training job {job} outlived its build (killed by {sig.name})"
    finally:
        build.kill()
        if pidfile.is_file() and pidfile.read_text() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_an_error_while_following_a_job_stops_it(tmp_path, monkeypatch):
    """Ctrl-C (or any error) in the build's progress loop stops the training job it started."""
    pidfile = tmp_path / "job.pid"
    monkeypatch.setattr(demo, "sft_command", _sleeper(pidfile))

    def interrupted(*args):
        _wait_for(pidfile)
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "_follow", interrupted)
    (tmp_path / "work").mkdir()
    with pytest.raises(KeyboardInterrupt):
        demo._train_one("planner", demo.DemoConfig(), "BASE", tmp_path / "work",
                        dict(os.environ, OMP_NUM_THREADS="1"), lambda m: None)
    assert _gone(int(pidfile.read_text()))


def test_a_failed_job_is_an_error_with_the_end_of_its_log(tmp_path, monkeypatch):
    code = "import sys; print('loading'); print('ValueError: bad recipe', file=sys.stderr); sys.exit(3)"
    monkeypatch.setattr(demo, "sft_command", lambda role, cfg, base, work: [sys.executable, "-c", code])
    (tmp_path / "work").mkdir()
    with pytest.raises(RuntimeError, match=r"(?s)training the caller adapter failed \(exit 3\).*ValueError: bad recipe"):
        demo._train_one("caller", demo.DemoConfig(), "BASE", tmp_path / "work",
                        dict(os.environ, OMP_NUM_THREADS="1"), lambda m: None)
    assert not (tmp_path / "work" / "caller" / "done.json").exists()


def appended_catalog_rows(small: dict, **field: int) -> tuple[dict, list[dict]]:
    """``(catalog rows without the field, the planner rows it appends)``, having checked that the
    field only appends that many planner rows, no prompt twice, and leaves the catalog's planner
    rows, the caller's rows, the unseen-tools tasks and the held-out tools as they were."""
    (n,) = field.values()
    plain = demo.catalog_rows(demo.DemoConfig(**small))
    more = demo.catalog_rows(demo.DemoConfig(**small, **field))
    first = small["catalog_planner_rows"]
    assert more["planner"][:first] == plain["planner"] and len(more["planner"]) == first + n
    assert more["caller"] == plain["caller"] and more["tasks"] == plain["tasks"] and more["heldout"] == plain["heldout"]
    assert len({r["instruction"] for r in more["planner"]}) == first + n
    return plain, more["planner"][first:]


def test_catalog_extra_rows_add_catalog_plans_for_the_planner_only():
    """catalog_extra_rows draws more catalog tasks after the catalog's own rows, with a seed of their
    own: planner rows only, over the training tools (no held-out tool is listed or planned), no
    prompt twice, and the catalog's rows, the caller's rows and the unseen-tools tasks stay the same;
    the caller's key stays, and at 0 the key is v20's (the recipe before it)."""
    plain, extra = appended_catalog_rows(dict(catalog_planner_rows=12, catalog_caller_rows=6), catalog_extra_rows=15)
    held = set(plain["heldout"])
    assert held and not any(held & (set(r["meta"]["tools"]) | set(r["meta"]["plan_tools"])) for r in extra)
    assert any(len(r["meta"]["plan_tools"]) > 1 for r in extra)
    planner_only_key("catalog_extra_rows", 100)
    assert demo.DemoConfig(catalog_extra_rows=0, **V20).key() == "6ef8efb4eedc"  # at 0 it is left out: v20's key still names v20


def test_catalog_breadth_rows_add_plans_over_more_tools_for_the_planner_only():
    """catalog_breadth_rows draws planner rows over the catalog's training tools and the breadth
    file's (listed and planned, some renamed), after the catalog's rows, with a seed of their own:
    no held-out tool anywhere in them, every plan parses over its listed names, no prompt twice, and
    the catalog's rows, the caller's rows and the unseen-tools tasks stay the same; the caller's key
    stays, and at 0 the key is v25's."""
    from train.catalog import load_catalog

    breadth = set(load_catalog(demo.REPO / "data" / "catalog" / "breadth_tools.json").names)
    plain, extra = appended_catalog_rows(dict(catalog_planner_rows=12, catalog_caller_rows=6, catalog_renamed=0.5),
                                         catalog_breadth_rows=40)
    held = set(plain["heldout"])
    original = [{new: old for old, new in r["meta"].get("renamed", {}).items()} for r in extra]
    planned = [{names.get(t, t) for t in r["meta"]["plan_tools"]} for r, names in zip(extra, original)]
    listed = [{names.get(t, t) for t in r["meta"]["tools"]} for r, names in zip(extra, original)]
    assert held and not any(held & (p | l) for p, l in zip(planned, listed))
    assert sum(bool(breadth & p) for p in planned) >= 10 and sum(bool(breadth & l) for l in listed) >= 20
    assert any("renamed" in r["meta"] for r in extra) and any(len(p) > 1 for p in planned)
    for row in extra:
        assert [s.tool for s in parse_plan(row["output"], row["meta"]["tools"])] == row["meta"]["plan_tools"]
    planner_only_key("catalog_breadth_rows", 150)
    assert demo.DemoConfig(catalog_breadth_rows=0, **V25).key() == "10f470ca28bb"  # at 0 it is left out: v25's key


def test_catalog_renamed_renames_catalog_plans_for_the_planner_only():
    """catalog_renamed gives that share of the catalog's planner rows (the extra ones too) tools under
    other names; the caller's rows and the unseen-tools tasks stay the same, the caller's key too,
    and at 0 the key is v20's."""
    small = dict(catalog_planner_rows=12, catalog_caller_rows=6, catalog_extra_rows=8)
    plain = demo.catalog_rows(demo.DemoConfig(**small))
    renamed = demo.catalog_rows(demo.DemoConfig(**small, catalog_renamed=0.5))
    assert renamed["caller"] == plain["caller"] and renamed["tasks"] == plain["tasks"]
    flags = ["renamed" in r["meta"] for r in renamed["planner"]]
    assert len(flags) == 20 and any(flags[:12]) and any(flags[12:]) and not all(flags)
    assert [r for r, f in zip(renamed["planner"], flags) if not f] == [r for r, f in zip(plain["planner"], flags) if not f]
    planner_only_key("catalog_renamed", 1)
    assert demo.DemoConfig(**V20).key() == "6ef8efb4eedc"


def test_catalog_tool_first_opens_every_catalog_step_on_its_tool_for_the_planner_only():
    """catalog_tool_first writes the catalog's planner rows (the extra ones too, renamed or not) as
    tool_first writes the demo's: each step's description opens on "Use <its tool> to", the steps'
    tools, inputs and the rest of each description stay; the caller's rows, the unseen-tools tasks
    and the caller's key stay, and off it is left out of the key (v32's still names v32)."""
    small = dict(catalog_planner_rows=12, catalog_caller_rows=6, catalog_extra_rows=8, catalog_renamed=0.5)
    plain = demo.catalog_rows(demo.DemoConfig(**small))
    first = demo.catalog_rows(demo.DemoConfig(**small, catalog_tool_first=True))
    assert first["caller"] == plain["caller"] and first["tasks"] == plain["tasks"]
    assert len(first["planner"]) == len(plain["planner"]) == 20
    assert any("renamed" in r["meta"] for r in first["planner"])
    for was, now in zip(plain["planner"], first["planner"]):
        assert {k: v for k, v in now.items() if k != "output"} == {k: v for k, v in was.items() if k != "output"}
        old, new = parse_plan(was["output"], was["meta"]["tools"]), parse_plan(now["output"], now["meta"]["tools"])
        assert [(s.var, s.tool, s.input) for s in new.steps] == [(s.var, s.tool, s.input) for s in old.steps]
        for o, n in zip(old.steps, new.steps):
            assert n.description == f"Use {o.tool} to {o.description[:1].lower()}{o.description[1:]}"
    planner_only_key("catalog_tool_first", 1)
    assert demo.DemoConfig(**V32).key() == "8a45f8113146"  # off: left out of the key, v32's still names v32


def test_extra_solver_rows_answer_later_kinds_for_the_planner_only(tmp_path):
    """extra_solver_rows adds that many solver rows after solver_rows' own, each the answer of a
    draft beyond planner_rows (never one of the first), picked over the later kinds rather than the
    first ones found; the planner's and caller's rows and the earlier solver rows stay the same, no
    row names the build's folder; the caller's and the agent's keys stay, and at 0 the key is v32's."""
    kw = dict(planner=20, solver=6, caller=4, extra_planner=10, chains=12, wide=16)
    a = demo_data.demo_rows(0, tmp_path / "a", **kw)
    b = demo_data.demo_rows(0, tmp_path / "b", **kw, extra_solver=9)
    assert (a["planner"], a["caller"]) == (b["planner"], b["caller"]) and b["solver"][:6] == a["solver"]
    extra = b["solver"][6:]

    def task(row):
        return row["instruction"].rsplit("Task: ", 1)[1].strip()

    first, later = [task(r) for r in a["planner"][:20]], [task(r) for r in a["planner"][20:]]
    asked = [task(r) for r in extra]
    assert len(extra) == 9 and len(set(asked)) == 9 and all(r["output"].strip() for r in extra)
    assert not set(asked) & set(first) and set(asked) <= set(later)
    assert sorted(asked, key=later.index) == asked  # in the drafts' order
    assert later.index(asked[-1]) >= 20 and len({r["meta"]["intent"] for r in extra}) >= 4  # spread, not the first 9
    assert not any(str(tmp_path) in r["instruction"] for r in b["solver"])
    planner_only_key("extra_solver_rows", 120)
    assert demo.DemoConfig(extra_solver_rows=120).role_key("agent") == demo.DemoConfig().role_key("agent")
    assert demo.DemoConfig(**V32).key() == "8a45f8113146"  # at 0: left out of the key, v32's still names v32


def test_spread_by_kind_gives_every_kind_a_row_before_any_a_second():
    """spread_by_kind takes one row of each kind (the template id less its number) a round at a time:
    a kind of many rows does not crowd out one of few (v35's uniform draw: four clock rows of 120, none
    asking the time), each index once, in the rows' order, and the same rows for the same seed."""
    import random

    ids = [f"chain:{i}" for i in range(30)] + ["clock_time:0", "clock_year:2"] + [f"python:mean:{i}" for i in range(5)]
    picked = demo_data.spread_by_kind(ids, 6, random.Random(1))
    kinds = [ids[i].rsplit(":", 1)[0] for i in picked]
    assert picked == sorted(set(picked)) and len(picked) == 6
    assert sorted(set(kinds)) == ["chain", "clock_time", "clock_year", "python:mean"]  # each before any twice
    assert max(kinds.count(k) for k in kinds) == 2
    assert picked == demo_data.spread_by_kind(ids, 6, random.Random(1))
    assert len(demo_data.spread_by_kind(ids, 99, random.Random(1))) == len(ids)  # all of them, no repeats
    assert demo_data.spread_by_kind([], 5, random.Random(1)) == []
    twice = set()
    for seed in range(12):
        five = [ids[i].rsplit(":", 1)[0] for i in demo_data.spread_by_kind(ids, 5, random.Random(seed))]
        twice |= {k for k in five if five.count(k) == 2}
    assert twice == {"chain", "python:mean"}  # the fifth row's kind is drawn, not the first in order


def test_solver_by_kind_answers_every_later_kind(tmp_path):
    """With solver_by_kind the extra solver rows reach every kind of the later drafts that has an
    answer when there are rows enough (the uniform pick follows the mix and leaves kinds out); the
    other rows stay the same; a planner-only field, off (v32's key) by default."""
    kw = dict(planner=10, solver=4, caller=2, extra_planner=80)
    plain = demo_data.demo_rows(0, tmp_path / "a", **kw, extra_solver=30)
    spread = demo_data.demo_rows(0, tmp_path / "b", **kw, extra_solver=30, solver_by_kind=True)
    every = demo_data.demo_rows(0, tmp_path / "c", **kw, extra_solver=10_000)
    assert (plain["planner"], plain["caller"]) == (spread["planner"], spread["caller"])
    assert spread["solver"][:4] == plain["solver"][:4] and len(spread["solver"]) == len(plain["solver"]) == 34

    def kinds(rows):
        return {r["meta"]["phrasing"].rsplit(":", 1)[0] for r in rows}

    answered = kinds(every["solver"][4:])
    assert 10 < len(answered) <= 30 and kinds(spread["solver"][4:]) == answered
    assert kinds(plain["solver"][4:]) < answered  # what the uniform draw left out
    planner_only_key("solver_by_kind", 1)
    assert demo.DemoConfig(**V32).key() == "8a45f8113146"  # off: left out of the key, v32's still names v32


def test_the_planner_dtype_reaches_its_command_and_leaves_the_caller_alone(monkeypatch):
    """planner_dtype sets the planner's training dtype (bf16 trains 2x as fast on a CPU with
    AVX512-BF16); the caller's command keeps dtype=auto and its key; at "auto" the key is v20's."""
    from train.recipe import load_recipe

    monkeypatch.setattr(demo, "cpu_has_bf16", lambda: True)
    bf16 = demo.DemoConfig(planner_dtype="bf16")
    assert load_recipe(*(lambda c: (c[5], c[6:]))(demo.sft_command("planner", bf16, "B", Path("/w")))).model.dtype == "bf16"
    assert "dtype=auto" in demo.sft_command("caller", bf16, "B", Path("/w"))
    auto = demo.DemoConfig(planner_dtype="auto")
    assert "dtype=auto" in demo.sft_command("planner", auto, "B", Path("/w"))
    assert bf16.role_key("caller") == auto.role_key("caller")
    assert bf16.role_key("planner") != auto.role_key("planner")
    assert demo.DemoConfig(**V20).key() == "6ef8efb4eedc"
    with pytest.raises(ValueError, match="planner_dtype"):
        demo.sft_command("planner", demo.DemoConfig(planner_dtype="int3"), "B", Path("/w"))


def test_a_cpu_without_bf16_trains_the_bf16_planner_in_fp32_and_says_so(tmp_path, monkeypatch, capsys):
    """bf16 ran several times slower than fp32 on CPUs without AVX512-BF16 or AMX-BF16: there the
    recipe's bf16 planner trains in fp32, with a line that says so; fp32 and auto stay as asked;
    the key stays the recipe's. The flags come from /proc/cpuinfo."""
    monkeypatch.setattr(demo, "cpu_has_bf16", lambda: False)
    cfg = demo.DemoConfig(planner_dtype="bf16")
    assert "dtype=fp32" in demo.sft_command("planner", cfg, "B", tmp_path)
    assert "dtype=auto" in demo.sft_command("planner", demo.DemoConfig(planner_dtype="auto"), "B", tmp_path)
    assert cfg.key() == demo.DemoConfig().key()
    said = []

    def say(line):  # the first line is the one; stop before any training starts
        said.append(line)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        demo._train_one("planner", cfg, "B", tmp_path, dict(os.environ, OMP_NUM_THREADS="1"), say)
    assert "trains in fp32" in said[0] and "AVX512-BF16" in said[0]
    monkeypatch.setattr(demo, "cpu_has_bf16", lambda: True)
    assert "dtype=bf16" in demo.sft_command("planner", cfg, "B", tmp_path)
    monkeypatch.undo()
    info = tmp_path / "cpuinfo"
    for flags, has in (("fpu avx2 avx512f avx512bw", False), ("avx512f avx512_bf16 avx512_vnni", True),
                       ("avx2 amx_bf16 amx_tile", True), ("avx512_bf16x", False)):
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        assert demo.cpu_has_bf16(info) is has, flags
    assert demo.cpu_has_bf16(tmp_path / "missing") is False  # not Linux: fp32


def test_clock_part_rows_ask_each_part_of_one_reading(tmp_path):
    """clock_part_sets adds sets of four solver rows over one clock reading: its time (HH:MM and the
    zone), date, weekday and year, the four differing in the question alone (v36 answered "What time
    is it now?" with the date); none asks an evaluation task's text or one of the drafts', none twice;
    the other rows stay the same; a planner-only field, off (v32's key) by default."""
    from datetime import datetime

    kw = dict(planner=10, solver=4, caller=2, extra_planner=10)
    plain = demo_data.demo_rows(0, tmp_path / "a", **kw)
    more = demo_data.demo_rows(0, tmp_path / "b", **kw, clock_sets=6)
    assert (plain["planner"], plain["caller"]) == (more["planner"], more["caller"])
    assert more["solver"][:4] == plain["solver"] and len(more["solver"]) == 4 + 24
    rows = more["solver"][4:]

    def split(row):
        body = row["instruction"]
        return body.rsplit("Task: ", 1)[1].strip(), re.search(r"Evidence: (.+)", body).group(1)

    asked = [split(r)[0] for r in rows]
    drafts = {demo_data.normalise(r["instruction"].rsplit("Task: ", 1)[1]) for r in plain["planner"]}
    assert len(set(asked)) == 24 and not {demo_data.normalise(t) for t in asked} & (demo_data.eval_texts() | drafts)
    for n in range(6):
        four = rows[4 * n:4 * n + 4]
        (evidence,) = {split(r)[1] for r in four}
        moment = datetime.fromisoformat(evidence.split(" ")[0])
        zone = evidence.rsplit(", ", 1)[1].rstrip(")")
        assert [r["output"] for r in four] == [moment.strftime("%H:%M ") + zone, moment.strftime("%Y-%m-%d"),
                                               moment.strftime("%A"), str(moment.year)]
        assert [r["meta"]["phrasing"].split(":")[0].rsplit("_", 1)[1] for r in four] == ["time", "date", "weekday",
                                                                                        "year"]
    assert len({split(r)[1] for r in rows}) == 6  # a reading of its own a set
    assert demo_data.clock_part_rows(2, 5) == demo_data.clock_part_rows(2, 5) != demo_data.clock_part_rows(2, 6)
    many = [demo_data.normalise(split(r)[0]) for r in demo_data.clock_part_rows(60, 0)]  # year: 9 phrasings
    assert len(set(many)) == 240 and not set(many) & demo_data.eval_texts()
    planner_only_key("clock_part_sets", 10)
    assert demo.DemoConfig(clock_part_sets=10).role_key("agent") == demo.DemoConfig().role_key("agent")
    assert demo.DemoConfig(**V32).key() == "8a45f8113146"  # at 0: left out of the key, v32's still names v32


def test_open_values_draw_the_same_tasks_with_file_names_and_texts_to_copy(tmp_path):
    """With open_values the same tasks are drawn (a generator of their own), but the files and the
    texts to save come from the encyclopedia's words (v32 drew 15 stems and 24 texts, and wrote
    "casine.txt" for "casino.txt"); each stands in its task as the plan writes it, the lower-case
    style included, so a row never teaches changing what is copied. The caller's rows change (its
    key too); the agent's trajectories do not (its key stays)."""
    closed, opened = demo_data.draw(400, 0), demo_data.draw(400, 0, open_values=True)
    assert [d.intent for d in closed] == [d.intent for d in opened]
    saves = [d for d in opened if demo_data.saved_values(d)]
    literal = [d for d in saves if any(s[1] == "save_file" and not s[2].endswith("#E1") for s in d.steps)]
    assert len(saves) > 30 and len(literal) > 10
    for d in saves:
        for value in demo_data.saved_values(d):
            assert value in d.text, (value, d.text)
    paths = {v for d in saves for v in demo_data.saved_values(d) if "." in v[-5:]}
    assert len(paths) > 0.9 * len(saves)  # nearly every file name new (the closed lists: 15 stems)
    texts = {v for d in literal for v in demo_data.saved_values(d)} - paths
    assert len(texts) > 0.9 * len(literal)
    lowered = [d for d in saves if d.template.endswith("/lower")]
    assert lowered and any(v != v.lower() for d in lowered for v in demo_data.saved_values(d))
    assert demo_data.lower_except("Save 'Tea At 5' To A.txt", ["Tea At 5", "A.txt"]) == "save 'Tea At 5' to A.txt"
    assert demo_data.lower_except("Save IT", []) == "save it"
    a = demo_data.demo_rows(0, tmp_path / "a", planner=60, solver=4, caller=6)
    b = demo_data.demo_rows(0, tmp_path / "b", planner=60, solver=4, caller=6, open_values=True)
    assert a["caller"] != b["caller"] and len(a["caller"]) == len(b["caller"]) == 6
    for row in b["caller"]:
        args = json.loads(row["output"])["arguments"]
        assert f"path={args['path']}, content={args['content']}" in row["instruction"]
    cfg, opened_cfg = demo.DemoConfig(**V32), demo.DemoConfig(**{**V32, "open_values": True})
    assert cfg.key() == "8a45f8113146" != opened_cfg.key()  # off: v32's key still names v32
    for role in ("planner", "caller"):
        assert opened_cfg.role_key(role) != cfg.role_key(role)
    assert opened_cfg.role_key("agent") == cfg.role_key("agent")


def test_agent_multi_rows_add_multi_step_trajectories_for_the_agent_only(tmp_path):
    """agent_multi_rows: per mode, that many more agent trajectories of tasks of two steps or more,
    from the drafts after the first planner_rows, after the others (which stay the same): each runs
    two tools or more before final_answer. v32's agents, trained on 2.1 calls a task, stopped after
    one tool on every task of the hand-written multi-goal set. The agent's key changes, the
    planner's and caller's do not; at 0 it is left out of the key (v32's still names v32)."""
    base = dict(planner=12, solver=4, caller=3, react=2, code=2, chains=12)
    a = demo_data.demo_rows(0, tmp_path / "a", **base)
    b = demo_data.demo_rows(0, tmp_path / "b", **base, multi=3)
    assert a["planner"] == b["planner"] and b["dropped"] == [0, 0]
    for mode in ("react", "code"):
        before, after = ([r for r in rows["agents"] if r["meta"]["mode"] == mode] for rows in (a, b))
        assert after[:len(before)] == before
        added = after[len(before):]
        tasks = {r["messages"][1]["content"]: r["meta"]["tools"] for r in added}
        assert len(tasks) == 3 and all(len(tools) >= 2 for tools in tasks.values()), tasks
        # a row per model call: each task's last row is its final_answer, after one row per tool
        assert len(added) == sum(len(tools) + 1 for tools in tasks.values())
    more = demo.DemoConfig(agent_multi_rows=40)
    assert more.role_key("agent") != demo.DemoConfig().role_key("agent") and more.key() != demo.DemoConfig().key()
    assert (more.role_key("planner"), more.role_key("caller")) == (demo.DemoConfig().role_key("planner"),
                                                                   demo.DemoConfig().role_key("caller"))
    assert demo.DemoConfig(**V32).key() == "8a45f8113146"  # at 0: left out of the key, v32's still names v32
