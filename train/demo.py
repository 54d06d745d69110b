"""The demo models: a small planner (which is also the solver and the ``llm`` tool) and a function
caller, trained from scratch on the CPU, so that ``python -m pipeline.run "TASK"`` works from a
fresh clone with no download and no GPU.

    python -m train.demo            # build them (once; ~5-10 minutes on 2 cores) or reuse the cache
    python -m train.demo --force    # rebuild
    python -m train.demo --check    # build if needed, then run the showcase tasks and print the answers

They are cached in ``$REWOO_DEMO_DIR`` or ``~/.cache/rewoo-stack/demo-<version>/`` (``planner/``,
``caller/``, ``manifest.json``), and rebuilt when the recipe below changes. The build is
deterministic by seed: data, tokenizer, initial weights and data order.

What they are trained on: tasks about the films and directors of the offline corpus
(``data/wiki``) and the demo database (``data/db``), arithmetic, the clock and saving files. Each
training task is run through the real offline tools, so the solver and ``llm`` rows hold real
evidence, and every prompt comes from ``pipeline.formats`` exactly as the pipeline sends it.
Plans are ReWOO plans over the offline toolbox (:data:`DEMO_TOOLS`). A few films are held out of
training so that ``--check`` measures whether the models copy from the evidence rather than
remember answers.

What they can do: plan and answer questions of those shapes about the corpus's films and
directors (who directed X; a film by the director of X; when was X born), sums, the time, save a
result. What they cannot: anything else. They are a few million parameters trained for minutes;
for real use, train a planner and a caller on a pretrained model (``scripts/train_planner.sh``,
``scripts/train_caller.sh``) and pass ``--planner``/``--caller``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import formats

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("REWOO_DATA_DIR", REPO / "data"))
VERSION = 2

# The offline toolbox the demo plans with: no web search, no bilibili (they need the network).
DEMO_TOOLS = ["get_current_time", "search_wiki", "query_sql", "calculator", "save_file", "llm"]

# Showcase tasks: `--check` and the tests run these.
SHOWCASE = [
    ("Who directed the film 'Killers of the Flower Moon'?", ["Martin Scorsese"]),
    ("What movies did the director of 'Killers of the Flower Moon' direct? List one of them.", None),
]


@dataclass(frozen=True)
class DemoConfig:
    """The demo recipe. Changing any field changes the cache key, so the models are rebuilt."""

    seed: int = 0
    vocab_size: int = 4096        # BPE merges learnt on the demo data: the fixed prompt text shrinks to few tokens
    hidden: int = 192             # planner/solver: 3 layers x 192 wide, ~2M parameters (tied embeddings);
    layers: int = 3               # ~7.5k tokens/s of training on 2 cores (bench/bench_demo.py)
    heads: int = 6
    short_epochs: float = 12.0    # phase 1: planner rows cut to the task (planner_tail) + solver rows
    epochs: float = 2.0           # phase 2: whole prompts, at half the learning rate
    learning_rate: float = 1e-3   # from scratch, small model: a high peak with cosine decay
    batch: int = 8
    max_seq_len: int = 1024
    caller_hidden: int = 128      # the caller only maps one step to one JSON call
    caller_layers: int = 2
    caller_heads: int = 4
    caller_epochs: float = 4.0
    caller_rows: int = 400        # generic caller rows from the tool catalog, besides save_file's
    holdout_films: tuple = ("Parasite", "Spirited Away", "Gladiator", "Titanic")
    planner_max_new_tokens: int = 768  # the pipeline settings the demo planner is run with
    max_steps: int = 2            # demo plans have 1-2 steps; fewer steps leave longer inputs (SQL) in the budget

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True) + f"v{VERSION}"
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def demo_toolbox(llm_engine=None):
    from toolkit import default_toolbox
    return default_toolbox(llm_engine=llm_engine, tools=DEMO_TOOLS)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------

def _read_csv(name: str) -> list[dict]:
    with open(DATA / "db" / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _quote(title: str, rng: random.Random) -> str:
    return rng.choice([f"'{title}'", f'"{title}"', title])


@dataclass
class _Task:
    task: str
    plan: str            # the plan text in the grammar
    answer: str
    heldout: bool = False


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _film_tasks(films, directors, rng, holdout) -> list[_Task]:
    """Questions about the demo database's films and directors, planned as SQL lookups: the
    evidence is a short table the solver can copy from."""
    by_director: dict[str, list[dict]] = {}
    for f in films:
        by_director.setdefault(f["director"], []).append(f)
    tasks = []
    who = ["Who directed the film {q}?", "Who is the director of {q}?", "Which filmmaker directed {q}?",
           "Tell me who directed the movie {q}.", "Who made the film {q}?"]
    others = ["What movies did the director of {q} direct? List one of them.",
              "Name a film made by the director of {q}.",
              "Which other films did the director of {q} make? Give one.",
              "List one movie by the person who directed {q}."]
    for f in films:
        t, d = f["title"], f["director"]
        if not t.isascii():
            continue  # the plan grammar keeps inputs to printable ASCII
        held = t in holdout
        for tmpl in rng.sample(who, 4):
            tasks.append(_Task(tmpl.format(q=_quote(t, rng)),
                               f"Plan: Look up the director of {t} in the films table.\n"
                               f"#E1 = query_sql[SELECT director FROM films WHERE title = {_sql_str(t)}]", d,
                               heldout=held))
        rest = [g["title"] for g in by_director[d] if g["title"] != t]
        if not rest:
            continue
        for tmpl in rng.sample(others, 3):
            plan = (f"Plan: List the films by the director of {t}.\n#E1 = query_sql[SELECT title FROM films "
                    f"WHERE director = (SELECT director FROM films WHERE title = {_sql_str(t)})]")
            tasks.append(_Task(tmpl.format(q=_quote(t, rng)), plan, rest[0], heldout=held))
    for d in directors:
        name, year = d["name"], d["birth_year"]
        for tmpl in rng.sample(["When was {n} born?", "In which year was the director {n} born?",
                                "What is the birth year of {n}?"], 3):
            tasks.append(_Task(tmpl.format(n=name),
                               f"Plan: Look up the birth year of {name}.\n"
                               f"#E1 = query_sql[SELECT birth_year FROM directors WHERE name = {_sql_str(name)}]",
                               year))
    return tasks


def _other_tasks(rng) -> list[_Task]:
    tasks = []
    ops = [("plus", "+"), ("times", "*"), ("minus", "-")]
    for _ in range(80):
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        word, sym = rng.choice(ops)
        q = rng.choice([f"What is {a} {word} {b}?", f"Compute {a} {sym} {b}.", f"How much is {a} {sym} {b}?"])
        tasks.append(_Task(q, f"Plan: Calculate {a} {sym} {b}.\n#E1 = calculator[{a} {sym} {b}]", ""))
    for q in ["What time is it now?", "What is the date today?", "What day of the week is it?",
              "Tell me the current time.", "What is today's date?"]:
        tasks.append(_Task(q, "Plan: Read the clock.\n#E1 = get_current_time[]", ""))
    return tasks


def _save_tasks(films, rng, holdout) -> list[_Task]:
    tasks = []
    for f in rng.sample([f for f in films if f["title"].isascii() and f["title"] not in holdout], 24):
        t = f["title"]
        path = re.sub(r"[^a-z0-9]+", "_", t.lower()).strip("_")[:20] + ".txt"
        tasks.append(_Task(f"Find who directed {_quote(t, rng)} and save it to {path}.",
                           f"Plan: Look up the director of {t} in the films table.\n"
                           f"#E1 = query_sql[SELECT director FROM films WHERE title = {_sql_str(t)}]\n"
                           f"Plan: Save the result to {path}.\n#E2 = save_file[{path} with #E1]",
                           f["director"]))
    return tasks


def build_rows(cfg: DemoConfig, workspace: Path) -> dict[str, list[dict]]:
    """The demo's training rows, grounded by running each plan with the real offline tools.

    Returns Alpaca rows ``{"instruction", "output"}``: ``"planner"`` (task -> plan), ``"solver"``
    (task, plan and real evidence -> answer), ``"caller"`` (step -> JSON call), and the held-out
    tasks ``{"task", "answer"}`` under ``"heldout"``.
    """
    from pipeline.distributor import fill_arguments
    from pipeline.plan import parse_plan
    from pipeline.worker import as_text
    from toolkit import default_toolbox

    rng = random.Random(cfg.seed)
    films, directors = _read_csv("films.csv"), _read_csv("directors.csv")
    holdout = set(cfg.holdout_films)
    box = default_toolbox(tools=DEMO_TOOLS, workspace=str(workspace))
    tasks = _film_tasks(films, directors, rng, holdout) + _other_tasks(rng) + _save_tasks(films, rng, holdout)

    planner_rows, solver_rows, caller_rows, heldout = [], [], [], []
    save_spec = formats.tool_spec(box["save_file"])
    for task in tasks:
        plan = parse_plan(task.plan, box)
        if task.heldout:
            heldout.append({"task": task.task, "answer": task.answer})
            continue
        planner_rows.append({"instruction": formats.planner_instruction(task.task, box), "output": plan.render()})
        evidence: dict[str, str] = {}  # run the plan with the real tools: the evidence the solver will see
        for step in plan:
            if step.tool == "save_file":
                path, _, content = step.input.partition(" with ")
                args = {"path": path, "content": content}
                caller_rows.append({"instruction": formats.caller_instruction(step, [save_spec]),
                                    "output": formats.render_call("save_file", args)})
            else:  # one string input (or none): what the distributor does without the caller
                props = formats.tool_spec(box[step.tool]).parameters.get("properties", {})
                args = {next(iter(props)): step.input} if props else {}
            filled = fill_arguments(args, evidence, formats.tool_spec(box[step.tool]).parameters)
            if step.tool == "get_current_time":  # a seeded moment in the tool's format: the data stays deterministic
                evidence[step.var] = _clock_text(rng)
                continue
            # (the build's scratch workspace must not leak into the data either)
            evidence[step.var] = as_text(box[step.tool](**filled)).replace(str(workspace.resolve()), "workspace")
        answer = task.answer or _answer_from_evidence(plan.steps[0].tool, evidence["#E1"])
        solver_rows.append({"instruction": formats.solver_instruction(task.task, plan.steps, evidence),
                            "output": answer})

    caller_rows += _generic_caller_rows(cfg)
    for rows in (planner_rows, solver_rows, caller_rows):
        rng.shuffle(rows)
    return {"planner": planner_rows, "solver": solver_rows, "caller": caller_rows, "heldout": heldout}


def planner_tail(row: dict) -> dict:
    """A planner row cut to the end of its instruction (the step format and the task): the part
    the plan copies from. The first phase trains on these, ~8x shorter than the whole prompt,
    so the model learns to condition on the task in many cheap steps before it sees the tool
    list (which is the same in every demo prompt)."""
    instruction = row["instruction"]
    return {"instruction": instruction[instruction.index(formats.PLANNER_RULES):], "output": row["output"]}


def _clock_text(rng: random.Random) -> str:
    """What ``get_current_time`` returns (``toolkit/tools/clock.py``), for a seeded moment."""
    from datetime import datetime, timedelta, timezone

    moment = datetime(2024, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=rng.randrange(3 * 365 * 86400))
    return f"{moment.isoformat(timespec='seconds')} ({moment.strftime('%A')}, UTC)"


def _answer_from_evidence(tool: str, evidence: str) -> str:
    """The answer of a calculator or clock task: the tool's result, as the solver should state it."""
    if tool == "get_current_time":
        return evidence.splitlines()[0].strip()
    return evidence.strip()


def _generic_caller_rows(cfg: DemoConfig) -> list[dict]:
    """Caller rows for the tool catalog's tools (train split), so the caller learns the format
    beyond ``save_file``."""
    from train.catalog import load_catalog
    from train.datagen import GenConfig, generate

    sets = generate(load_catalog(str(DATA / "catalog" / "tools.json")),
                    GenConfig(planner=1, caller=cfg.caller_rows, eval=1, test=1, seed=cfg.seed))
    return [{"instruction": r["instruction"], "output": r["output"]} for r in sets["caller_train"]]


# ------------------------------------------------------------------------------------------------
# Build
# ------------------------------------------------------------------------------------------------

def default_dir(cfg: DemoConfig | None = None) -> Path:
    cfg = cfg or DemoConfig()
    root = Path(os.environ.get("REWOO_DEMO_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                / "rewoo-stack")
    return root / f"demo-{cfg.key()}"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _train(model_dir: Path, data: Path, out: Path, epochs: float, lr: float, cfg: DemoConfig) -> dict:
    from train.recipe import load_recipe
    from train.sft import run_sft

    recipe = load_recipe(None, [
        f"model_name_or_path={model_dir}", "finetuning=full", "dtype=fp32", "gradient_checkpointing=false",
        "attn_implementation=sdpa", f"dataset={data}", "eval_fraction=0", f"max_seq_len={cfg.max_seq_len}",
        "packing=false", f"output_dir={out}", f"num_train_epochs={epochs}",
        f"per_device_train_batch_size={cfg.batch}", "gradient_accumulation_steps=1",
        f"learning_rate={lr}", "lr_scheduler_type=cosine", "warmup_ratio=0.03",
        "weight_decay=0.01", "logging_steps=10", "save_steps=100000", "save_total_limit=1", f"seed={cfg.seed}",
        "use_cpu=true", "group_by_length=true"])
    result = run_sft(recipe)
    return {"rows": result.train_rows, "final_loss": result.train_loss, "plot": str(result.plot)}


def build(out_dir: Path, cfg: DemoConfig | None = None, progress: bool = True) -> dict:
    """Build both demo models into ``out_dir`` and write ``manifest.json``; returns the manifest."""
    import torch

    from train.tiny import build_llama, build_tokenizer

    cfg = cfg or DemoConfig()
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    work = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    say = (lambda m: print(f"[demo] {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)

    say("generating training data from the offline corpus and database ...")
    rows = build_rows(cfg, work / "workspace")
    rng = random.Random(cfg.seed)
    short = [planner_tail(r) for r in rows["planner"]] + rows["solver"]
    full = rows["planner"] + rows["solver"]
    rng.shuffle(short)
    rng.shuffle(full)
    for name, data in (("short", short), ("full", full), ("caller", rows["caller"]), ("heldout", rows["heldout"])):
        _write_jsonl(work / f"{name}.jsonl", data)
    texts = [r["instruction"] + "\n" + r["output"] for r in full + rows["caller"]]
    say(f"{len(rows['planner'])} planner, {len(rows['solver'])} solver and {len(rows['caller'])} caller rows; "
        "training the tokenizer ...")
    tok = build_tokenizer(texts, vocab_size=cfg.vocab_size, model_max_length=cfg.max_seq_len)

    def fresh(name: str, hidden: int, layers: int, heads: int) -> Path:
        init = work / f"{name}-init"
        tok.save_pretrained(init)
        build_llama(tok, hidden_size=hidden, num_layers=layers, num_heads=heads,
                    max_position_embeddings=cfg.max_seq_len, seed=cfg.seed, tie_word_embeddings=True,
                    ).save_pretrained(init)
        return init

    stats = {}
    # planner (also the solver): phase 1 on the short rows, phase 2 on the whole prompts
    phases = [("planner-short", fresh("planner", cfg.hidden, cfg.layers, cfg.heads), "short.jsonl",
               cfg.short_epochs, cfg.learning_rate)]
    phases.append(("planner", work / "planner-short", "full.jsonl", cfg.epochs, cfg.learning_rate / 2))
    phases.append(("caller", fresh("caller", cfg.caller_hidden, cfg.caller_layers, cfg.caller_heads),
                   "caller.jsonl", cfg.caller_epochs, cfg.learning_rate))
    for name, start, data, epochs, lr in phases:
        say(f"training {name} ({epochs:g} epochs over {data}) ...")
        stats[name] = _train(start, work / data, work / name, epochs, lr, cfg)
        for ckpt in (work / name).glob("checkpoint-*"):
            shutil.rmtree(ckpt)
    for leftover in ("planner-init", "caller-init", "planner-short"):
        shutil.rmtree(work / leftover, ignore_errors=True)
    manifest = {"version": VERSION, "key": cfg.key(), "config": dataclasses.asdict(cfg),
                "planner": "planner", "caller": "caller", "tools": DEMO_TOOLS,
                "pipeline": {"planner_max_new_tokens": cfg.planner_max_new_tokens, "max_steps": cfg.max_steps},
                "build_seconds": round(time.perf_counter() - t0, 1), "train": stats}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    work.rename(out_dir)  # appears whole or not at all
    say(f"built in {manifest['build_seconds']:.0f} s: {out_dir}")
    return manifest


def load_manifest(out_dir: Path) -> dict | None:
    path = out_dir / "manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    return manifest if manifest.get("key") == DemoConfig().key() or out_dir != default_dir() else None


def ensure_demo_models(out_dir: str | Path | None = None) -> dict:
    """The demo models, built first when they are not cached.

    Returns ``{"planner": path, "caller": path, "tools": [names], "pipeline":
    {"planner_max_new_tokens", "max_steps"}}``: what ``pipeline.run`` needs to run them.
    """
    out = Path(out_dir) if out_dir else default_dir()
    manifest = load_manifest(out)
    if manifest is None:
        print("[demo] no demo models yet: building them once (CPU, a few minutes) ...", file=sys.stderr)
        manifest = build(out)
    return {"planner": str(out / manifest["planner"]), "caller": str(out / manifest["caller"]),
            "tools": manifest["tools"], "pipeline": manifest["pipeline"]}


def check(out_dir: Path) -> dict:
    """Run the showcase tasks and the held-out tasks; returns ``{"showcase": [...], "heldout": ...}``."""
    from pipeline.rewoo import Pipeline

    manifest = json.loads((out_dir / "manifest.json").read_text())
    pipe = Pipeline(str(out_dir / "planner"), str(out_dir / "caller"), toolbox=demo_toolbox(),
                    planner_max_new_tokens=manifest["pipeline"]["planner_max_new_tokens"],
                    max_steps=manifest["pipeline"]["max_steps"])
    shows = []
    for task, _ in SHOWCASE:
        t = time.perf_counter()
        r = pipe.run(task)
        shows.append({"task": task, "plan": r.plan.render(), "answer": r.answer,
                      "seconds": round(time.perf_counter() - t, 2)})
    held = [json.loads(line) for line in (out_dir / "heldout.jsonl").read_text().splitlines() if line]
    right = 0
    for h in held:
        got = pipe.run(h["task"]).answer
        right += formats.parse_answer(got).strip().lower() == h["answer"].strip().lower()
    return {"showcase": shows, "heldout": {"right": right, "total": len(held)}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", help="folder for the demo models (default: the cache)")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    p.add_argument("--check", action="store_true", help="run the showcase and held-out tasks afterwards")
    a = p.parse_args(argv)
    out = Path(a.out) if a.out else default_dir()
    if a.force or load_manifest(out) is None:
        build(out)
    print(f"demo planner: {out / 'planner'}\ndemo caller:  {out / 'caller'}")
    if a.check:
        print(json.dumps(check(out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
