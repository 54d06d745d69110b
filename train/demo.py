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
from dataclasses import dataclass
from pathlib import Path

from pipeline import formats

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("REWOO_DATA_DIR", REPO / "data"))
VERSION = 6

# The offline toolbox the demo plans with: no web search, no bilibili (they need the network).
DEMO_TOOLS = ["get_current_time", "search_wiki", "query_sql", "calculator", "save_file", "llm"]

# Showcase tasks: `--check` and the tests run these.
SHOWCASE = [
    "Who directed the film 'Killers of the Flower Moon'?",
    "What movies did the director of 'Killers of the Flower Moon' direct? List one of them.",
]


@dataclass(frozen=True)
class DemoConfig:
    """The demo recipe. Changing any field changes the cache key, so the models are rebuilt."""

    seed: int = 0
    vocab_size: int = 4096        # BPE merges learnt on the demo data: the fixed prompt text shrinks to few tokens
    # The planner (also the solver) is 2 layers x 128 wide, ~1.4M parameters with tied embeddings.
    # Measured: copying an unseen title from the task appears as a phase change after ~900-1200
    # steps and reaches 93% exact by ~2100 (lr 2e-3, batch 16); the schedule below gives it ~2500.
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    short_steps: int = 2200       # phase 1: planner rows cut to the task (planner_tail), from scratch
    steps: int = 400              # phase 2: whole prompts and solver rows, at half the learning rate
    learning_rate: float = 2e-3   # from scratch, small model: a high peak with cosine decay
    batch: int = 16
    max_seq_len: int = 1024
    caller_steps: int = 200       # the caller starts from the phase-1 planner, which already copies
    caller_rows: int = 1200       # synthetic save_file calls (the demo toolbox's one tool with several arguments)
    synthetic_planner: int = 4800  # random-entity planner rows (copying), see synthetic_rows
    synthetic_solver: int = 2400   # random-entity solver rows with query_sql-shaped evidence
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


# Synthetic rows: random titles and names that occur in one row each, so the only way to write the
# plan (or the answer) is to copy it from the task (or the evidence). Without them a model this
# small learns the plan shapes but writes the most common title whatever the task says.
_WORDS = ("Silent River Midnight Garden Stone Glass Winter Harbor Iron Crown Paper Moon Red Desert "
          "Last Letter Golden Hour Hidden City Broken Bridge Night Train Blue Valley Summer Storm "
          "Lost Empire Quiet Shore Burning Sky Seventh Door White Tiger Black Orchid Falling Star "
          "Northern Lights Empty Room Long Road Secret Island Crimson Tide Frozen Lake Wild Heart "
          "Distant Shore Wooden Horse Silver Lining Dark Forest Little Prince Old Mill Open Sea").split()
_FIRST = ("Anna Ben Carla David Elena Farid Grace Hiro Ines Jonas Kenji Lena Marco Nadia Omar Priya "
          "Quinn Rosa Sven Tara Umar Vera Wei Yara Zoe Akira Bruno Chloe Dmitri Emil").split()
_LAST = ("Alvarez Becker Castillo Dubois Eriksen Fischer Garcia Hoffmann Ibrahim Jensen Kowalski Larsen "
         "Moreau Nakamura Okafor Petrov Quintero Rossi Schmidt Tanaka Urbina Varga Weber Yilmaz Zhou").split()


def _random_title(rng: random.Random) -> str:
    words = rng.sample(_WORDS, rng.randint(1, 4))
    return ("The " if rng.random() < 0.3 else "") + " ".join(words)


def _random_name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _table(column: str, values: list[str]) -> str:
    """A result as ``query_sql`` prints it (``toolkit/tools/sql.py``)."""
    n = len(values)
    return "\n".join([column, *values, f"({n} row{'s' if n != 1 else ''})"])


def synthetic_rows(cfg: DemoConfig, box) -> dict[str, list[dict]]:
    """Planner, solver and caller rows over random entities (see the comment above ``_WORDS``)."""
    from pipeline.plan import parse_plan

    rng = random.Random(cfg.seed + 1)
    who = ["Who directed the film {q}?", "Who is the director of {q}?", "Which filmmaker directed {q}?",
           "Tell me who directed the movie {q}.", "Who made the film {q}?"]
    others = ["What movies did the director of {q} direct? List one of them.", "Name a film made by the director of {q}.",
              "Which other films did the director of {q} make? Give one.", "List one movie by the person who directed {q}."]
    born = ["When was {n} born?", "In which year was the director {n} born?", "What is the birth year of {n}?"]
    planner, solver = [], []
    for i in range(cfg.synthetic_planner):
        kind = i % 3
        if kind == 0:
            t = _random_title(rng)
            task = rng.choice(who).format(q=_quote(t, rng))
            plan_text = (f"Plan: Look up the director of {t} in the films table.\n"
                         f"#E1 = query_sql[SELECT director FROM films WHERE title = {_sql_str(t)}]")
            name = _random_name(rng)
            evidence, answer = _table("director", [name]), name
        elif kind == 1:
            t = _random_title(rng)
            task = rng.choice(others).format(q=_quote(t, rng))
            plan_text = (f"Plan: List the films by the director of {t}.\n#E1 = query_sql[SELECT title FROM films "
                         f"WHERE director = (SELECT director FROM films WHERE title = {_sql_str(t)})]")
            films = [_random_title(rng) for _ in range(rng.randint(1, 5))]
            at = rng.randrange(len(films) + 1)  # the asked film is somewhere in its director's list
            listed = list(dict.fromkeys(films[:at] + [t] + films[at:]))
            evidence, answer = _table("title", listed), next((f for f in listed if f != t), "")
        else:
            n = _random_name(rng)
            task = rng.choice(born).format(n=n)
            plan_text = (f"Plan: Look up the birth year of {n}.\n"
                         f"#E1 = query_sql[SELECT birth_year FROM directors WHERE name = {_sql_str(n)}]")
            year = str(rng.randint(1890, 1995))
            evidence, answer = _table("birth_year", [year]), year
        plan = parse_plan(plan_text, box)
        planner.append({"instruction": formats.planner_instruction(task, box), "output": plan.render()})
        if answer and i < cfg.synthetic_solver:
            solver.append({"instruction": formats.solver_instruction(task, plan.steps, {"#E1": evidence}),
                           "output": answer})
    save = formats.tool_spec(box["save_file"])
    caller = []
    for _ in range(cfg.caller_rows):
        stem = "_".join(w.lower() for w in rng.sample(_WORDS, rng.randint(1, 3)))
        path = stem + rng.choice([".txt", ".md", ".csv", ".json"])
        k = rng.randint(2, 6)
        src = f"#E{rng.randint(1, k - 1)}"
        content = rng.choice([src, f"Result: {src}", f"{src} and #E{k - 1}" if k > 2 else src])
        step = formats.Step(f"#E{k}", "save_file", f"{path} with {content}",
                            rng.choice(["Save the result to {p}.", "Write what was found to {p}.",
                                        "Store the answer in {p}."]).format(p=path))
        caller.append({"instruction": formats.caller_instruction(step, [save]),
                       "output": formats.render_call("save_file", {"path": path, "content": content})})
    return {"planner": planner, "solver": solver, "caller": caller}


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

    planner_rows, solver_rows, caller_rows, heldout, heldout_planner = [], [], [], [], []
    save_spec = formats.tool_spec(box["save_file"])
    for task in tasks:
        plan = parse_plan(task.plan, box)
        if task.heldout:
            heldout.append({"task": task.task, "answer": task.answer})
            heldout_planner.append({"instruction": formats.planner_instruction(task.task, box),
                                    "output": plan.render()})
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

    for rows in (planner_rows, solver_rows, caller_rows):
        rng.shuffle(rows)
    return {"planner": planner_rows, "solver": solver_rows, "caller": caller_rows, "heldout": heldout,
            "heldout_planner": heldout_planner}


def copy_probe(model_dir: Path, rows: list[dict], n: int = 20) -> str:
    """How many of ``rows`` (held-out planner rows) the model at ``model_dir`` plans exactly, greedy,
    from their tails: a build diagnostic for the copying skill phase 1 must learn."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    right = 0
    for row in rows[:n]:
        ids = tok(formats.alpaca(planner_tail(row)["instruction"]), return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=96, do_sample=False, pad_token_id=tok.pad_token_id)
        right += tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == row["output"]
    return f"{right}/{min(n, len(rows))}"


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


# ------------------------------------------------------------------------------------------------
# Build
# ------------------------------------------------------------------------------------------------

SHIPPED = DATA / "demo"  # `python -m train.demo --out data/demo` writes the copy the repository ships


def default_dir(cfg: DemoConfig | None = None) -> Path:
    cfg = cfg or DemoConfig()
    root = Path(os.environ.get("REWOO_DEMO_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                / "rewoo-stack")
    return root / f"demo-{cfg.key()}"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _train(model_dir: Path, rows: list[dict], out: Path, steps: int, lr: float, cfg: DemoConfig,
           desc: str) -> dict:
    """Train the model at ``model_dir`` on Alpaca ``rows`` for ``steps`` optimiser steps; save to ``out``.

    A plain loop over ``train.data``'s prompt-loss masking and padding collator rather than
    ``train.sft``'s HF Trainer, for a measured reason: from scratch at this size, the Trainer
    run never learnt to copy the task's title into the plan (0/20 held-out plans after ~2300
    steps, twice), while this loop on the same rows and tokenizer passed 37% at 900 steps and
    >90% by ~2000. Uniform random batches, AdamW, clipping at 1.0, cosine decay after a 5%
    warm-up; ``loss.png`` and ``log_history.json`` as the SFT runner writes them.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.data import Example, PaddedCollator, tokenize
    from train.plot import plot_losses

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    encoded = [e for e in (tokenize(Example(formats.alpaca(r["instruction"]), r["output"]), tok, cfg.max_seq_len)
                           for r in rows) if e is not None]
    collate = PaddedCollator(tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05,
                                                anneal_strategy="cos")
    rng = random.Random(cfg.seed)
    history, window = [], []
    for step in tqdm(range(1, steps + 1), desc=desc, unit="step", file=sys.stderr, mininterval=2):
        batch = collate(rng.sample(encoded, min(cfg.batch, len(encoded))))
        loss = model(**batch).loss  # mean over the response tokens (prompt labels are -100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        window.append(loss.item())
        if step % 25 == 0 or step == steps:
            history.append({"step": step, "loss": round(sum(window) / len(window), 4),
                            "learning_rate": sched.get_last_lr()[0]})
            window = []
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "log_history.json").write_text(json.dumps(history, indent=1))
    plot = plot_losses(history, out / "loss.png", title=f"demo {desc}")
    return {"rows": len(encoded), "steps": steps, "final_loss": history[-1]["loss"], "plot": str(plot)}


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
    synth = synthetic_rows(cfg, demo_toolbox())
    rows["caller"] += synth["caller"]
    rng = random.Random(cfg.seed)
    # phase 1: planner rows only (real and synthetic), cut to their tail: the copying skill, learnt
    # from scratch. Other row kinds mixed in here kept the model from ever learning to copy (measured).
    short = [planner_tail(r) for r in rows["planner"] + synth["planner"]]
    # then the planner on whole prompts (plus some synthetic ones: copying under the long prompt)
    # and the solver rows; the caller starts from the same phase-1 model
    full = rows["planner"] + synth["planner"][: len(synth["planner"]) // 8] + rows["solver"] + synth["solver"]
    rng.shuffle(short)
    rng.shuffle(full)
    for name, data in (("short", short), ("full", full), ("caller", rows["caller"]), ("heldout", rows["heldout"])):
        _write_jsonl(work / f"{name}.jsonl", data)
    texts = [r["instruction"] + "\n" + r["output"] for r in full + rows["caller"]]
    say(f"{len(rows['planner'])} planner, {len(rows['solver'])} solver and {len(rows['caller'])} caller rows "
        f"(+{len(synth['planner'])} planner and {len(synth['solver'])} solver rows over random entities); "
        "training the tokenizer ...")
    tok = build_tokenizer(texts, vocab_size=cfg.vocab_size, model_max_length=cfg.max_seq_len)
    init = work / "init"
    tok.save_pretrained(init)
    build_llama(tok, hidden_size=cfg.hidden, num_layers=cfg.layers, num_heads=cfg.heads,
                max_position_embeddings=cfg.max_seq_len, seed=cfg.seed, tie_word_embeddings=True).save_pretrained(init)

    stats = {}
    phases = [("planner-short", init, short, cfg.short_steps, cfg.learning_rate),
              ("planner", work / "planner-short", full, cfg.steps, cfg.learning_rate / 2),
              ("caller", work / "planner-short", rows["caller"], cfg.caller_steps, cfg.learning_rate / 2)]
    for name, start, data, steps, lr in phases:
        say(f"training {name} ({steps} steps over {len(data)} rows) ...")
        stats[name] = _train(start, data, work / name, steps, lr, cfg, desc=name)
        if name == "planner-short":
            stats[name]["copies"] = copy_probe(work / name, rows["heldout_planner"])
            say(f"after phase 1 the planner copies {stats[name]['copies']} held-out tasks' plans exactly")
    for leftover in ("init", "planner-short", "workspace"):  # regenerable by seed: not kept
        shutil.rmtree(work / leftover, ignore_errors=True)
    for data in ("short.jsonl", "full.jsonl", "caller.jsonl"):
        (work / data).unlink()
    manifest = {"version": VERSION, "key": cfg.key(), "config": dataclasses.asdict(cfg),
                "planner": "planner", "caller": "caller", "tools": DEMO_TOOLS,
                "pipeline": {"planner_max_new_tokens": cfg.planner_max_new_tokens, "max_steps": cfg.max_steps},
                "build_seconds": round(time.perf_counter() - t0, 1), "train": stats}
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    work.rename(out_dir)  # appears whole or not at all
    say(f"built in {manifest['build_seconds']:.0f} s: {out_dir}")
    return manifest


def load_manifest(out_dir: Path, current_only: bool = True) -> dict | None:
    """The manifest of the demo models in ``out_dir``; None when there are none, or, with
    ``current_only``, when they were built from another recipe (another :class:`DemoConfig`)."""
    path = out_dir / "manifest.json"
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    return manifest if not current_only or manifest.get("key") == DemoConfig().key() else None


def ensure_demo_models(out_dir: str | Path | None = None) -> dict:
    """The demo models, built first when they are not cached.

    Returns ``{"planner": path, "caller": path, "tools": [names], "pipeline":
    {"planner_max_new_tokens", "max_steps"}}``: what ``pipeline.run`` needs to run them.
    """
    if out_dir is not None:  # a folder the caller chose: whatever recipe built it
        out = Path(out_dir)
        manifest = load_manifest(out, current_only=False)
    else:  # the shipped copy, else the cache, when built from the current recipe
        out = SHIPPED if load_manifest(SHIPPED) else default_dir()
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
    for task in SHOWCASE:
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
