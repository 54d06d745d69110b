"""The default models: SmolLM2-135M-Instruct (a pretrained Llama from PyPI) with two adapters made
by the stack's own recipes: the planner (also the solver and the ``llm`` tool) with LoRA on
q_proj/v_proj, and the function caller with QLoRA (4-bit NF4 base) and the prompt-loss mask.

    python -m train.demo --out data/demo          # build (resumable: run it again after a stop)
    python -m train.demo --out data/demo --force  # start over
    python -m train.demo --check                  # run the showcase tasks on the shipped adapters

Both adapters are trained through ``python -m train sft`` (the Trainer path that
``scripts/train_planner.sh`` and ``scripts/train_caller.sh`` run) from the recipes in
``train/configs/``, with a few overrides for a 2-core CPU (see :class:`DemoConfig`); the two runs
run one after the other with every core each. Data: :mod:`train.demo_data` (the nine built-in tools,
varied phrasing, real tool evidence) plus :mod:`train.datagen` rows over the tool catalog (other
tools, listed at run time, so the planner learns to read the tool list).

Output (what the repository ships in ``data/demo/``): ``planner/`` and ``caller/`` (each an
adapter: ``adapter_config.json``, ``adapter_model.safetensors``, ``loss.png``,
``log_history.json``), ``manifest.json`` (the base's key, the adapters, the toolbox, the
pipeline settings, the recipe key and each adapter's own key, build times; no machine paths).
``pipeline.defaults`` reads it.

An adapter whose own key (:meth:`DemoConfig.role_key`: the data's fields and that role's training
fields) matches the one in ``--out``'s (or the shipped) manifest is reused, not trained again: a
change to the planner's recipe retrains the planner only.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "data" / "demo"
VERSION = 7       # the recipe
DATA_VERSION = 7  # what build_data writes for a given config; bump when train.demo_data (or a tool description it shows) changes it
# The caller's file since v17: shuffled with its own generator. Before, one generator shuffled the
# planner's rows first, so a planner-only field (films_rows) reordered the caller's rows.
CALLER_DATA_VERSION = 8
# The agent adapter's file (agent.jsonl). 2: save_file's observations say "workspace", not the build's
# folder (v29-v31 trained on rows that named it: 32 of 762, and no two machines wrote the same file).
AGENT_DATA_VERSION = 2
# A plan's decisions: the first word of each step's description and its tool. One token in ~40 of a
# row, yet the v7 planner still got it wrong on its own training rows (per-token loss 1.8-4.1 there,
# under 0.1 on the rest): train.data.LossWeights can weigh these tokens decision_weight.
DECISION_PATTERN = r"(?m)^(?:Plan: (\S+)|#E\d+ = (\w+))"

# Showcase tasks: `--check`, the README and the tests run these.
SHOWCASE = [
    "What movies did the director of 'Killers of the Flower Moon' direct? List one of them.",
    "What time is it now?",
    "Compute 12 + 30.",
    "Save the text 'hello' to hello.txt",
]


@dataclass(frozen=True)
class DemoConfig:
    """The demo recipe. Any change changes :meth:`key`, which the manifest records and a test checks."""

    seed: int = 0
    base: str = "smollm2-135m-instruct"  # a key of pipeline.defaults.BASES, or a model folder
    # Rows. One planner row per drawn task; solver rows for those with a deterministic answer.
    # Sized for a 2-core CPU without AVX512 (measured here: LoRA fwd+bwd of this 135M model at
    # 67 tokens/s on one torch thread, 112 on two, fp32).
    planner_rows: int = 300
    solver_rows: int = 110
    caller_rows: int = 80            # save_file calls from the drawn tasks' plans
    # train.datagen rows over the catalog's other tools (v11: 30, v13-v17: 90). v19 (2026-12-02): 180,
    # for the unseen tools (v17 planned 1 of 26 three-tool tasks there; 17 of its 33 misses dropped a step).
    # Side by side with v17: unseen tools 0.25 vs 0.17 (0.15 vs 0.10 on v17's own set), multi-step
    # 6/9 vs 4/9; hand-written tool-set 0.69 vs 0.71. The caller retrained (its catalog rows change).
    catalog_planner_rows: int = 180
    catalog_caller_rows: int = 80
    heldout_catalog_tools: int = 8   # catalog tools kept out of training: data/eval/unseen_tools.jsonl
    # Training (overrides of train/configs/planner_lora.yaml and caller_qlora.yaml for a 2-core CPU):
    # the caller's dtype auto (fp32 on a CPU; the planner's: planner_dtype, below), batch 4 padded and grouped by length (packing measured 0.43x on CPU), one epoch, a high
    # LoRA learning rate for a short run.
    planner_lr: float = 1e-3
    caller_lr: float = 1e-3
    batch: int = 4
    # The planner adapter learns 23 intents (plans and answers); one epoch left it choosing search_wiki
    # for most tasks (measured on the shipped build): two. The caller maps one step to JSON: one.
    # (Tried 2026-11-30: one epoch over 560 tasks, every row listing the whole toolbox, films kept
    # to the database: hand-written tool-set 0.37 vs 0.35, exact answers 0.24 vs 0.45; not shipped.)
    planner_epochs: float = 3.0
    caller_epochs: float = 1.0
    # The loss weight of the planner's decision tokens (DECISION_PATTERN); 1: a plain mean (v7).
    # Tried 2026-11-30 with 5.0 (same data, 46 min): the showcase got worse ("What time is it now?"
    # planned query_sql, the director lookup upper-cased the title): not shipped.
    decision_weight: float = 1.0
    max_seq_len: int = 1024
    # Planner-only data and speed (neutral at these values, so earlier keys still name their builds):
    # drafts beyond planner_rows that make planner rows only (the solver and caller rows stay the
    # same), the share of planner rows listing the whole toolbox in its own order (as the pipeline
    # does at run time), the planner's batch (0: batch), and share_prefix (train.data: rows that
    # list the same toolbox run it once; measured 3.8x faster per batch of 8 on this CPU).
    extra_planner_rows: int = 100    # v13: 200 (v14 gave the other 100 to wide_rows)
    planner_full_share: float = 0.9
    planner_batch: int = 8
    share_prefix: int = 64
    # Plans whose step descriptions open on the tool ("Use query_sql to ..."): train.demo_data.tool_first.
    tool_first: bool = True
    # ReAct-JSON and code-agent trajectories of as many grounded tasks (train.trajectories: the
    # real agents replayed, one row per model call, rendered as the default engines render them),
    # for --mode react|code on the planner adapter. Their ~1,300-token system prompt needs the
    # planner's max_seq_len (0: max_seq_len) raised; the caller keeps max_seq_len.
    # Tried 2026-12-01 (v12: 30 + 30 trajectories, 130 rows, planner_max_seq_len 2048; planner 84
    # min): ReAct picked the right tools (in-distribution tool-set 0.90 on 20 tasks) but its final
    # answers were rarely right (0.05), the code agent did not learn its format (tool-set 0.00),
    # and ReWOO fell (in-distribution tool-set 0.50 vs 0.73, hand-written 0.43 vs 0.49): not shipped.
    react_rows: int = 0
    code_rows: int = 0
    planner_max_seq_len: int = 0
    # Catalog chains typed (train.datagen.GenConfig.typed): a step uses earlier evidence only when
    # it fits (a city for the weather, a number for the calculator). False: paired at random.
    # v13 (2026-12-01) = v11 + typed_chains + chain_rows 80 + 90 catalog rows: hand-written tool-set
    # 0.62 vs 0.49 (multi-step 4/9 vs 0/9), caller AST 0.50 vs 0.33, in-distribution 0.86 vs 0.73;
    # planner 73 min, caller 11 min: shipped.
    typed_chains: bool = True
    # Catalog values that make sense together (train.datagen.GenConfig.distinct): linked slots
    # (miles with kilometers) and no two equal arguments ("USD to USD"). False: drawn on their own.
    # Came after v13 was built; left out of v14, since it changes the catalog's caller rows and so
    # retrains the caller; in since v15 (with focus_rows, below).
    distinct_values: bool = True
    # Extra two-step tasks (train.demo_data.CHAIN_MIX: a lookup saved to a file, an entry summarised,
    # in many phrasings), planner rows only, drawn after the others (which stay the same).
    # Tried 2026-12-03 at 200, with extra_solver_rows 120 (v35, below): written after v25's plans
    # for the hand-written multi-step tasks stopped after one step (probed: after step one of "Calculate
    # 45 * 12 and store the result in calc.txt" the plan ended with p 0.91; the two-director comparisons
    # 0.43-0.56), when 15% of the demo's planner rows had two steps.
    chain_rows: int = 80
    # Extra tasks in new shapes and phrasings (train.demo_data.WIDE_MIX: encyclopedia questions that
    # are not "tell me about X", small computations for Python, writing tasks for `llm`, film
    # questions in other words), planner rows only, drawn after the chains.
    # v14 (2026-12-01) = v13 with 100 of its 200 extra planner rows given to wide_rows (same row count;
    # planner 42 min, caller reused). Side by side on one machine and llama.cpp build: in-distribution
    # tool-set 0.82 = 0.82, exact answers 0.82 vs 0.68; hand-written tool-set 0.62 vs 0.60, contains
    # 0.53 vs 0.50; unseen tools 0.15 = 0.15; the Python (2/6) and `llm` (1/4 vs 2/4) tasks it aimed at
    # did not move: shipped as a small step.
    wide_rows: int = 100
    # Extra tasks of the kinds v14 missed (train.demo_data.FOCUS_MIX: Python computations, writing
    # tasks for `llm`, directors asked "When was X born?" as person_born asks people), planner rows
    # only, drawn after the wide ones.
    # v15 (2026-12-01) = v14 + focus_rows 150 + distinct_values (930 planner rows: planner 53 min, 351
    # steps; the caller retrained, 7.5 min). Side by side with v14 on one machine and llama.cpp build:
    # hand-written tool-set 0.65 vs 0.62 (Python 4/6 vs 2/6, `llm` 4/4 vs 1/4; encyclopedia 9/12 vs
    # 11/12), unseen tools 0.23 vs 0.15 (and 0.15 vs 0.10 on v15's own held-out set), in-distribution
    # tool-set 0.82 = 0.82; but exact answers fell (in-distribution 0.68 vs 0.82: "What movies did the
    # director of X direct?" answered with the director again, as v13 did; hand-written 0.42 vs 0.45),
    # and "When was <director> born?" still goes to the encyclopedia: shipped for the planning.
    focus_rows: int = 150
    # Extra film-database tasks (train.demo_data.FILMS_MIX: "another film by the director of X" and
    # counts, in their base and wider words), planner rows only, drawn after the focused ones.
    # Written after v15 answered "What movies did the director of X direct?" with the director.
    # v17 (2026-12-02) = v15 + films_rows 120 (1,050 planner rows: planner 396 steps, loss 1.32 ->
    # 0.06; the caller retrained on its own shuffle, CALLER_DATA_VERSION 8: 9.1 min). Side by side
    # with v15 on one machine and llama.cpp build: hand-written tool-set 0.71 vs 0.65 and exact
    # 0.55 vs 0.42, in-distribution exact 0.82 vs 0.68 (tool-set 0.82 =); but unseen tools 0.17 vs
    # 0.23 (0.10 vs 0.15 on the own held-out set) and caller AST 0.33 vs 0.50 (6 tasks).
    films_rows: int = 120
    # Extra tasks of the kinds with the fewest plans (train.demo_data.RARE_MIX: the clock, the web and
    # saving files in new words, the calculator's powers, tips and differences, film years and
    # directors' birth facts in new words), planner rows only, drawn after the film ones.
    # Written after v19's hand-written misses (clock-3, web-1, web-3, save-2, save-3, calc-4 went to
    # other tools; 25-30 of ~1,230 plans open on the clock, the web or save_file).
    # v20 (2026-12-02) = v19 + rare_rows 120 (planner 474 steps, 79 min, loss 1.53 -> 0.12; v19's
    # caller reused). Side by side with v19: hand-written tool-set 0.74 vs 0.69 (save 4/4, web 3/3,
    # but multi-step 3/9 vs 6/9), exact 0.58 vs 0.55; in-distribution 0.86 vs 0.82; unseen tools
    # 0.30 vs 0.25 (0.20 vs 0.15 on v17's own set): shipped.
    rare_rows: int = 120
    # The planner adapter's LoRA rank and alpha (train/configs/planner_lora.yaml: r 8, alpha 16; still
    # q_proj and v_proj only). alpha/sqrt(r) is held (rank-stabilised LoRA: 16/sqrt(8) = 32/sqrt(32)),
    # so a higher rank adds directions without scaling the step up. Rank barely costs time here: the
    # base's forward and backward dominate. (The caller keeps its recipe's rank.)
    planner_lora_r: int = 8
    planner_lora_alpha: int = 16
    # More train.datagen rows over the catalog's training tools (never the held-out ones), planner
    # rows only, drawn with a seed of their own after the catalog's rows (which, with the caller's
    # rows and data/eval/unseen_tools.jsonl, stay the same). Written after v20's 28 unseen-tools
    # misses: 7 repeat a step (four identical search_hotels steps for a three-tool task), 7 drop
    # one, 2 add one, 12 pick another tool for a step.
    catalog_extra_rows: int = 0
    # The share of the catalog's planner rows (those above included) whose listed tools go by other
    # names (train.datagen.GenConfig.renamed): the planner learns to take names from the list, as
    # it must for the held-out tools, whose names it never wrote. The caller's rows stay the same.
    # v25 (2026-12-03) = v20 + catalog_renamed 0.5 + planner_dtype bf16 (same rows and steps: the
    # renamed rows replace nothing; planner 474 steps, 43 min on a 2-core EPYC with AVX512-BF16, loss
    # 1.53 -> 0.17; v20's caller reused). Side by side with v20 on that machine and sequence: unseen
    # tools 0.40 vs 0.25 (alone) and 0.42 vs 0.30 (after the other sets); in-distribution 0.86 / 0.82
    # / 0.91 (tool-set / exact / contains) as v20; hand-written tool-set 0.74 =, exact 0.55 vs 0.58,
    # contains 0.63 vs 0.66: shipped for the unseen tools.
    # Tried 2026-12-03, not shipped: v26 = v25 + catalog_extra_rows 100 (510 steps, 58 min): in-distribution
    # tool-set 0.91, exact 0.86; hand-written 0.75, exact 0.50; unseen tools 0.20 alone (v25: 0.40).
    # Tried 2026-12-03, not shipped: v27 = v25 with catalog_renamed 0.75 (474 steps, 48 min, loss 1.53 ->
    # 0.10): in-distribution 0.86 / 0.82 (=); hand-written tool-set 0.78 vs 0.74 but exact 0.50 vs 0.55;
    # unseen tools 0.20 alone (v25: 0.40), but 0.27 vs 0.23 on data/eval/generated/unseen_tools_160.jsonl.
    catalog_renamed: float = 0.5
    # The planner's training dtype ("auto": fp32 on a CPU; "bf16"). On a CPU with AVX512-BF16 (a
    # 2-core EPYC, 2026-12-03) bf16 ran LoRA q/v forward+backward of SmolLM2-135M 2.0-2.6x as fast
    # as fp32 on 2 threads (bench/bench_train_dtype.py: 549 vs 214 tokens/s on 384-token rows; 338 vs
    # 169 on shorter ones); without it, bf16 ran several times slower, so there the build trains
    # in fp32 and says so (planner_train_dtype). v24 (2026-12-03) = v20 in bf16 (5.3-5.6 s a step
    # against 8.6-10 in fp32), side by side with v20: in-distribution tool-set 0.82 vs 0.86, exact
    # 0.77 vs 0.82; hand-written 0.78 vs 0.74, exact 0.55 vs 0.58; unseen tools 0.30 vs 0.25: single
    # tasks move both ways, as with any retrain; the figures do not. The caller keeps "auto" (its NF4
    # base computes in its own dtype).
    planner_dtype: str = "bf16"
    # Planner rows over the catalog's training tools and data/catalog/breadth_tools.json's 33 tools
    # (training only: books, travel, geo, language, media, code, science, transport, finance,
    # productivity), each described in other words than its goals ("Height above sea level" for "find
    # how high Lima lies"), drawn with a seed of their own after the catalog's rows, renamed at
    # catalog_renamed's share like them. Written after v25's unseen-tools misses: 12 of 24 pick
    # another listed tool for a held-out one whose description shares no word with the task's
    # ("find the coordinates of" -> geocode, "Get the latitude and longitude"); v26 showed more
    # rows over the same 42 tools do not teach that: more tools might.
    # Tried 2026-12-03, not shipped: v28 = v25 + catalog_breadth_rows 150 (531 steps, 67 min sharing the
    # cores with a bench, ~49 alone; loss 1.53 -> 0.06). Side by side with v25 (llama.cpp, 1 thread each):
    # data/eval/generated/unseen_tools_160.jsonl 0.26 vs 0.23 (v27: 0.27; held-out tools planned 83 vs 80 of 173;
    # plans repeating a tool 33 vs 51; geocode still 0 of 21), unseen_tools.jsonl 0.25 vs 0.40,
    # in-distribution tool-set 0.82 vs 0.86 (exact 0.82 =), hand-written 0.74 = (exact 0.55 =, caller
    # AST 0.67 vs 0.50): fewer repeated steps, no more held-out tools chosen.
    catalog_breadth_rows: int = 0
    # A third adapter, "agent", for --mode react|code (pipeline.agents' ReactJsonAgent and
    # ReactCodeAgent): LoRA q_proj/v_proj on the planner's recipe, trained on nothing but the
    # trajectories of agent_react_rows ReAct-JSON and agent_code_rows code-agent runs over the demo's
    # grounded tasks (train.trajectories: the real agents replayed, one row per model call). Its own
    # adapter, since v12 showed that the same trajectories in the planner's data make ReWOO plan
    # worse; 0 and 0: no agent adapter (the agents run on the planner's, which never learned them).
    # v29 (2026-12-03) = v25 + 180 + 180 tasks, 1.5 epochs (762 rows, 144 steps, 37 min sharing the cores with
    # tests; loss 1.16 -> 0.20; v25's planner and caller reused). Side by side with v25's planner adapter on
    # in_distribution: ReAct exact 0.32 vs 0.00, code 0.59 vs 0.00 (v25's never finished: 5 calls, ~7,000
    # tokens a task); tool-set 0.14 and 0.32 (ReWOO 0.86): the agent sends film questions to search_wiki.
    # v30 = 300 + 300 tasks for 1 epoch (1,284 rows, 161 steps, 34 min): in_distribution ReAct 0.09 / 0.27,
    # code 0.27 / 0.45 (tool-set / exact): more tasks at the same cost did not help. v29-v31 trained on rows
    # naming the build's folder (AGENT_DATA_VERSION 1); v32 = v29's recipe on the fixed rows (144 steps,
    # 31 min alone; loss 1.16 -> 0.19): shipped, see the README's "ReWOO vs ReAct vs code".
    agent_react_rows: int = 180
    agent_code_rows: int = 180
    agent_epochs: float = 1.5
    agent_lr: float = 1e-3
    # The agents' ~1,150-token system prompt plus a task, its calls and observations (up to ~2,200 tokens).
    agent_max_seq_len: int = 2304
    # Start the agent adapter from the planner's (train.recipe's lora.init_adapter) rather than a fresh
    # one: the planner learned which tool each kind of task wants from ~1,460 rows, the agents' data
    # holds a few hundred tasks. The agent's key then includes the planner's.
    agent_from_planner: bool = False
    # Per mode, that many more trajectories of tasks of two steps or more (the drafts after the first
    # planner_rows: chains, wide, focused, film and rare tasks), so that the agents learn to go on after
    # a first tool. v32's 180 + 180 tasks averaged 2.1 model calls each: on the hand-written multi-goal
    # set both agents stopped after one tool on every task (tool-set 0.00), and forced to go on
    # ("Thought: I will" written for them while the task's goals outnumbered their calls) they called
    # the same tool again (0.04, 6,090 tokens a task against 4,610).
    agent_multi_rows: int = 0
    # The catalog's planner rows (and those above: catalog_extra_rows, catalog_breadth_rows) with each
    # step opening on its tool ("Use send_email to email ..."), as tool_first writes the demo's own.
    # Written after v25's unseen-tools plans: the catalog rows' steps open on a paraphrase of the
    # task ("Detect the language of the result."), so on a catalog task the planner wrote one (374
    # of 394 steps on the 160-task set) and then named a tool it was trained on (translate_text)
    # beside the listed held-out one (detect_language): the two kinds of rows taught two formats.
    # Tried 2026-12-03, not shipped: v33 = v32 + catalog_tool_first (474 steps, 51 min sharing the cores
    # with tests; loss 1.53 -> 0.16; caller and agent reused). Side by side with v25's planner (llama.cpp,
    # 1 thread): data/eval/generated/unseen_tools_160.jsonl 0.14 vs 0.23 (held-out tools planned 78 vs 100
    # times; every step now opens on "Use"), in-distribution 0.86 / 0.82 / 0.86 (tool-set / exact /
    # contains; v25 0.86 / 0.82 / 0.91), hand-written 0.77 / 0.53 / 0.58 (v25 0.74 / 0.55 / 0.63): the
    # paraphrase written first is what led the planner to the listed tool it was never trained on.
    catalog_tool_first: bool = False
    # More solver rows (the planner adapter is the solver too), after the 110 of solver_rows, from the
    # later drafts (extra_planner_rows, chain_rows, wide_rows, focus_rows, films_rows, rare_rows) that
    # have an answer, picked evenly over them: planner rows only, unlike solver_rows, whose rows come
    # from the first planner_rows drafts and so are data of every adapter. Written after v25's answers:
    # 110 solver rows of ~1,260, two of them a capital ("capital of brazil?" answered with the
    # encyclopedia's sentence), none of the later kinds' shapes.
    # Tried 2026-12-03: v35 = v32 + chain_rows 200 + extra_solver_rows 120 (1,500 planner rows, 564 steps, 52 min, ~13
    # of them beside the test suite; loss 1.50 -> 0.01-0.18 over its last logs; caller and agent reused). Side by side with v25's
    # planner (llama.cpp, 1 thread): in-distribution tool-set 0.86 =, exact 0.91 vs 0.82, contains 1.00 vs
    # 0.91; hand-written tool-set 0.78 vs 0.74 (sql-13, clock-3, multi-5, multi-6, multi-7 won; wiki-7,
    # web-1 lost), exact 0.61 vs 0.55, caller AST 0.67 vs 0.50; unseen tools (160 tasks) 0.23 =. Not shipped:
    # "What time is it now?" answered "Thursday, UTC" from the clock's "2026-12-03T23:38:27+00:00 (Thursday,
    # UTC)" (v25: the time). Its 4 clock solver rows ask the year or the weekday, none the time; the bench
    # cannot see it (a clock answer has no fixed text), test_what_time_is_it_now now checks the answer.
    extra_solver_rows: int = 0
    # extra_solver_rows spread over the later drafts' kinds (train.demo_data.spread_by_kind: each
    # phrasing family, "clock_time", "chain_save", ..., gets one before any gets a second) rather
    # than drawn uniformly, which follows their mix: written after v35's clock answer, above.
    # Tried 2026-12-04, not shipped: v36 = v35 + solver_by_kind (564 steps, 52 min, ~13 of them beside
    # other work; caller and agent reused): 58 kinds answered against v35's 34, the clock 17 rows (3 the
    # time) against 4; "What time is it now?" answered "2026-12-04", the date (v25: the whole reading).
    solver_by_kind: bool = False
    # Sets of four clock solver rows over one reading each (its time, date, weekday and year; after
    # the others: train.demo_data.clock_part_rows), planner rows only. Written after v36 (v35 +
    # solver_by_kind) answered "What time is it now?", "What time is it?" and "Tell me the current
    # time." with the date from "2026-12-04T10:09:08+00:00 (Friday, UTC)": its 17 clock solver rows,
    # 3 of them the time, each read another moment, so none shows two questions over one reading.
    # Tried 2026-12-04, not shipped: v37 = v36 + 10 sets and v38 = v35 + 10 sets (579 steps each, caller
    # and agent reused) both answer the time asked five ways "HH:MM UTC", the date and the year; v37's
    # in-distribution answers fell (exact 0.73 vs v32's 0.82), v38's held (0.82) but it answered
    # "What's the square root of 729?" "7.00" and "capital of brazil?" "Brazil" (README, v38).
    clock_part_sets: int = 0
    # File names and texts to save drawn from the encyclopedia's ~2,000 words (train.demo_data.Intents.
    # open_text: "harbor_treaty.md", "Orbit crater basin on Friday"), by a generator of their own, so
    # the same tasks are drawn; the ReAct and code trajectories keep the closed lists (the agent
    # adapter's rows stay the same). Written after v32 wrote "casine.txt" for "casino.txt" and
    # "meeting" for "meeting moved to Friday": its rows drew file names from 15 stems and texts from
    # 24 phrases, so it learned those by heart rather than to copy. Changes the caller's rows.
    # v39 (2026-12-04) = v32 + open_values (474 planner steps, 58 min, ~25 of them beside tests;
    # loss 1.61 -> 0.14; the caller retrained, 29 steps, 6.1 min; the agent reused). Side by side
    # with v32 on one machine (llama.cpp, 1 thread, both with the caller's token-bounded grammar):
    # data/eval/save_files.jsonl tool-set 0.70 vs 0.63, caller AST 0.53 vs 0.40; in-distribution
    # exact 0.91 vs 0.86 (tool-set 0.86 =); hand-written tool-set 0.77 vs 0.74, exact 0.58 vs 0.55;
    # unseen tools 0.26 vs 0.23 on 160 tasks, 0.30 vs 0.38 on 40: shipped.
    open_values: bool = True
    # More save tasks (train.demo_data.SAVE_MIX: notes and messages saved as given, in new phrasings
    # and with texts shaped like real notes, "Room 12: harbor meeting, 9:45", "Email Rosa the report";
    # and lookups whose answer is saved), planner rows only, drawn after the rare ones. Written after
    # v39's data/eval/save_files.jsonl misses: texts that read like another tool's task went to
    # query_sql or llm ("Write 'Standup moved to 9:30' ...", "Write 'Hello from the agent!' ..."), "X,
    # then save it" dropped the save step, unseen names were misspelled ("erardens" for "errands.txt");
    # 57 of v39's ~1,260 planner rows save a given text.
    # v40 (2026-12-04) = v39 + save_rows 160 (1,420 planner rows, 534 steps, 56 min alone; loss 1.59 ->
    # 0.16; caller and agent reused). Side by side with v39 in one run (llama.cpp Q8_0, 1 thread each):
    # data/eval/save_files.jsonl tool-set 0.90 vs 0.70, caller AST 0.77 vs 0.53; in-distribution
    # tool-set 0.82 vs 0.86 (born-3 to search_wiki), exact 0.91 =, its one call 1 vs 0 ("casino.txt");
    # hand-written tool-set 0.75 vs 0.77 (multi-2, multi-7, wiki-7 won; multi-6, py-5, web-3, wiki-10
    # lost), exact 0.58 =; unseen tools 0.30 = on 40, 0.25 = on 160 (10 won, 10 lost): shipped.
    save_rows: int = 160
    # save_file's plan inputs written "path: X; content: Y" (train.demo_data.colon_saves; the catalog's
    # style) in the planner's, solver's and caller's rows, rather than "path=X, content=Y". Written after
    # v40's misspelt file names: after "=" a name splits into other tokens than after the task's space
    # (" groceries" one token, "=groceries" g|ro|cer|ies), and v40 wrote the path right in 20 of 22
    # calls whose pieces match either way, 10 of 15 whose pieces differ. The shipped caller, given
    # such steps without training on them, kept 21 of the 24 literal save_files calls exact (24 of 24
    # in its own style). Changes the caller's rows (it retrains); the agent's stay.
    # Tried 2026-12-05, not shipped: v41 = v40 + colon_save_inputs (planner 534 steps, caller 29). Against
    # v40 on one machine: save_files caller AST 0.70 vs 0.77, in-distribution exact 0.73 vs 0.91,
    # hand-written tool-set 0.80 vs 0.77, unseen 0.20 vs 0.27 on 160. The planner copied the names, but
    # the caller then respelt them ('path: groceries.txt' -> {"path": "gores.txt"}, v40's caller alike):
    # a JSON string opens on a quote, so the respelling only moved from the planner to the caller.
    colon_save_inputs: bool = False
    # Tried 2026-12-03, not shipped: v23 = v20 with extra_planner_rows 0, catalog_extra_rows 100 and
    # catalog_renamed 0.5 (same row count; planner 474 steps, 74 min on a 2-core EPYC, loss 1.45 ->
    # 0.096; v20's caller reused). Side by side with v20 on one machine, each set in a fresh process:
    # unseen tools 0.33 vs 0.25 (get_movie_details now planned), hand-written tool-set 0.75 vs 0.74,
    # but exact answers fell (in-distribution 0.73 vs 0.82, hand-written 0.45 vs 0.58: the solver
    # wrote plan steps where v20 answered).
    # The pipeline settings the default models run with (not part of the recipe's key). 512 tokens
    # leave a 4-step constrained plan 62 tokens per input and 31 per description.
    planner_max_new_tokens: int = 512
    max_steps: int = 4
    # The adapters never saw a replanning prompt (and offline, search_web and search_bilibili
    # always fail): no second round for them.
    replan: int = 0
    # Each step's tool leans towards the listed tools whose name and description share words with
    # the step's Plan: line, by up to this many logits (pipeline.formats.toolprior). Written after
    # v40's unseen-tools misses: a step described right, the tool wrong ("Get the latest results of
    # New York Yankees." then llm, sports_scores listed). Measured 2026-12-05 on v40's files, one
    # machine, llama.cpp Q8_0 1 thread, at 0 / 2 / 4 / 8 / 16 logits: data/eval/unseen_tools.jsonl 0.30
    # / 0.40 / 0.45 / 0.47 / 0.47, generated/unseen_tools_160.jsonl 0.27 / - / 0.37 / 0.42 / 0.42;
    # save_files, in_distribution and handwritten the same on every task at each (their steps' Plan:
    # lines name the tool the planner then writes: "Use query_sql to ...").
    tool_prior: float = 8.0

    def key(self) -> str:
        """A digest of the training recipe (every field but the run settings) and VERSION."""
        fields = {k: v for k, v in dataclasses.asdict(self).items()
                  if k not in RUN_SETTINGS and NEUTRAL.get(k, object()) != v}
        blob = json.dumps(fields, sort_keys=True) + f"v{VERSION}"
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


    def role_key(self, role: str) -> str:
        """A digest of what one adapter's training depends on: the data's fields (every adapter's
        rows come from one generator) and ``role``'s own training fields."""
        other = {k for r, keys in ROLE_FIELDS.items() if r != role for k in keys}
        if role == "agent":
            other |= set(NOT_AGENT_DATA)
        fields = {k: v for k, v in dataclasses.asdict(self).items()
                  if k not in RUN_SETTINGS and k not in other and ROLE_NEUTRAL.get(k, object()) != v}
        version = {"caller": CALLER_DATA_VERSION, "agent": AGENT_DATA_VERSION}.get(role, DATA_VERSION)
        blob = json.dumps(fields, sort_keys=True) + f"{role}/d{version}"
        if role == "agent" and self.agent_from_planner:  # it starts from the planner's adapter
            blob += "/from:" + self.role_key("planner")
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


    def roles(self) -> tuple[str, ...]:
        """The adapters this recipe builds: the planner and the caller, and the agents' when it
        has trajectories for one."""
        return ("planner", "caller") + (("agent",) if self.agent_react_rows or self.agent_code_rows else ())


RUN_SETTINGS = ("planner_max_new_tokens", "max_steps", "replan", "tool_prior")
# Fields added after a shipped build, at the value that trains exactly as before they existed: left
# out of the key then, so the key of that build still names it.
NEUTRAL = {"decision_weight": 1.0, "extra_planner_rows": 0, "planner_full_share": 0.35, "planner_batch": 0,
           "share_prefix": 0, "tool_first": False, "react_rows": 0, "code_rows": 0, "planner_max_seq_len": 0,
           "typed_chains": False, "chain_rows": 0, "distinct_values": False, "wide_rows": 0,
           "focus_rows": 0, "films_rows": 0, "rare_rows": 0,
           "planner_lora_r": 8, "planner_lora_alpha": 16, "catalog_extra_rows": 0,
           "catalog_renamed": 0.0, "planner_dtype": "auto", "catalog_breadth_rows": 0,
           "agent_react_rows": 0, "agent_code_rows": 0, "agent_epochs": 1.5, "agent_lr": 1e-3,
           "agent_max_seq_len": 2304, "agent_from_planner": False, "agent_multi_rows": 0, "catalog_tool_first": False,
           "extra_solver_rows": 0, "solver_by_kind": False, "clock_part_sets": 0, "open_values": False,
           "save_rows": 0, "colon_save_inputs": False}
# role_key came with decision_weight, so only the later fields are left out of it at their neutral value.
# Data fields that the agent's trajectories never see (_agent_data draws them without).
NOT_AGENT_DATA = ("open_values", "colon_save_inputs")
ROLE_NEUTRAL = {k: v for k, v in NEUTRAL.items() if k != "decision_weight"}
ROLE_FIELDS = {"planner": ("planner_lr", "planner_epochs", "decision_weight", "extra_planner_rows",
                           "planner_full_share", "planner_batch", "share_prefix", "tool_first", "react_rows",
                           "code_rows", "planner_max_seq_len", "chain_rows", "wide_rows", "focus_rows",
                           "films_rows", "rare_rows", "planner_lora_r", "planner_lora_alpha", "catalog_extra_rows",
                           "catalog_renamed", "planner_dtype", "catalog_breadth_rows", "catalog_tool_first",
                           "extra_solver_rows", "solver_by_kind", "clock_part_sets", "save_rows"),
               "caller": ("caller_lr", "caller_epochs"),
               "agent": ("agent_react_rows", "agent_code_rows", "agent_epochs", "agent_lr", "agent_max_seq_len",
                         "agent_from_planner", "agent_multi_rows")}


def data_stamp(cfg: DemoConfig) -> str:
    """What a build's work folder holds data for: the recipe's key and the data versions (the key
    alone does not change when build_data does)."""
    agent = f".a{AGENT_DATA_VERSION}" if "agent" in cfg.roles() else ""
    return f"{cfg.key()}/d{DATA_VERSION}.{CALLER_DATA_VERSION}{agent}"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def catalog_rows(cfg: DemoConfig) -> dict[str, list[dict]]:
    """train.datagen rows over the catalog: planner and caller rows for training, and the
    held-out-tools tasks (``tasks``) that ``data/eval/unseen_tools.jsonl`` holds."""
    from train.catalog import load_catalog
    from train.datagen import GenConfig, eval_tasks, generate

    catalog = load_catalog(REPO / "data" / "catalog" / "tools.json")
    gen = GenConfig(planner=cfg.catalog_planner_rows, caller=cfg.catalog_caller_rows, eval=1, test=40,
                    heldout_tools=cfg.heldout_catalog_tools, max_steps=3, max_tools=9, seed=cfg.seed,
                    typed=cfg.typed_chains, distinct=cfg.distinct_values, renamed=cfg.catalog_renamed)
    sets = generate(catalog, gen)
    heldout = sets["_heldout"][0]["tools"]
    planner = sets["planner_train"]
    if cfg.catalog_extra_rows:  # the same training tools, a seed of their own (none of 2,000 such
        # rows repeats one of the catalog's 180 prompts: measured, and the test checks its own)
        more = dataclasses.replace(gen, planner=cfg.catalog_extra_rows, caller=0, eval=0, test=0,
                                   heldout=list(heldout), seed=cfg.seed + 23)
        planner = planner + generate(catalog, more)["planner_train"]
    if cfg.catalog_breadth_rows:  # the training tools and the breadth-only ones, a seed of their own
        wider = catalog.merged(load_catalog(REPO / "data" / "catalog" / "breadth_tools.json"))
        more = dataclasses.replace(gen, planner=cfg.catalog_breadth_rows, caller=0, eval=0, test=0,
                                   heldout=list(heldout), seed=cfg.seed + 31)
        planner = planner + generate(wider, more)["planner_train"]
    if cfg.catalog_tool_first:
        planner = [_tool_first_row(row) for row in planner]
    return {"planner": planner, "caller": sets["caller_train"],
            "tasks": eval_tasks(sets["planner_test_tools"]), "heldout": heldout}


def _tool_first_row(row: dict) -> dict:
    """A catalog planner row whose plan opens each step on its tool (train.demo_data.tool_first)."""
    from pipeline.plan import parse_plan
    from train.demo_data import tool_first

    return {**row, "output": tool_first(parse_plan(row["output"])).render()}


def build_data(cfg: DemoConfig, work: Path, base: str | None = None) -> dict:
    """Write ``planner.jsonl`` and ``caller.jsonl`` (Alpaca rows; the agents' trajectories as
    prompt-completion rows rendered with ``base``'s tokenizer) into ``work``, and ``agent.jsonl``
    (trajectories only) when the recipe has an agent adapter; returns counts."""
    from train.demo_data import demo_rows
    from train.trajectories import as_prompts

    rows = demo_rows(cfg.seed, work / "workspace", cfg.planner_rows, cfg.solver_rows, cfg.caller_rows,
                     cfg.extra_planner_rows, cfg.planner_full_share, cfg.tool_first, cfg.react_rows, cfg.code_rows,
                     cfg.chain_rows, cfg.wide_rows, cfg.focus_rows, cfg.films_rows, cfg.rare_rows, cfg.extra_solver_rows,
                     cfg.solver_by_kind, cfg.clock_part_sets, cfg.open_values, cfg.save_rows,
                     cfg.colon_save_inputs)
    agents = []
    if rows["agents"]:
        from transformers import AutoTokenizer

        agents = as_prompts(rows["agents"], AutoTokenizer.from_pretrained(base))
    cat = catalog_rows(cfg)
    planner = rows["planner"] + rows["solver"] + cat["planner"]
    caller = rows["caller"] + cat["caller"]
    random.Random(cfg.seed).shuffle(planner)
    random.Random(cfg.seed + 2).shuffle(caller)  # its own generator: the planner's rows do not reorder it
    if agents:  # after the caller's shuffle, with their own generator: the caller's file stays the same
        mix = random.Random(cfg.seed + 1)
        for row in agents:
            planner.insert(mix.randint(0, len(planner)), row)
    _write_jsonl(work / "planner.jsonl", planner)
    _write_jsonl(work / "caller.jsonl", caller)
    _write_jsonl(work / "unseen_tools.jsonl", cat["tasks"])
    shutil.rmtree(work / "workspace", ignore_errors=True)
    counts = {"planner_rows": len(rows["planner"]), "solver_rows": len(rows["solver"]),
              "catalog_planner_rows": len(cat["planner"]), "caller_rows": len(rows["caller"]),
              "catalog_caller_rows": len(cat["caller"]), "heldout_catalog_tools": cat["heldout"],
              **({"agent_rows": len(agents), "agent_replays_dropped": sum(rows["dropped"])} if agents else {})}
    if "agent" in cfg.roles():
        counts.update(_agent_data(cfg, work, base))
    return counts


def _agent_data(cfg: DemoConfig, work: Path, base: str | None) -> dict:
    """``agent.jsonl``: the ReAct-JSON and code-agent trajectories of the demo's grounded tasks (the
    first ``agent_react_rows`` and ``agent_code_rows`` with an answer, in the generator's order, and
    ``agent_multi_rows`` more of two steps or more each), as prompt-completion rows rendered as the
    default engines render them, in an order of their own."""
    from transformers import AutoTokenizer

    from train.demo_data import demo_rows
    from train.trajectories import as_prompts

    rows = demo_rows(cfg.seed, work / "workspace-agent", cfg.planner_rows, cfg.solver_rows, cfg.caller_rows,
                     cfg.extra_planner_rows, cfg.planner_full_share, cfg.tool_first, cfg.agent_react_rows,
                     cfg.agent_code_rows, cfg.chain_rows, cfg.wide_rows, cfg.focus_rows, cfg.films_rows, cfg.rare_rows,
                     multi=cfg.agent_multi_rows)
    shutil.rmtree(work / "workspace-agent", ignore_errors=True)
    agent = as_prompts(rows["agents"], AutoTokenizer.from_pretrained(base))
    random.Random(cfg.seed + 5).shuffle(agent)
    _write_jsonl(work / "agent.jsonl", agent)
    return {"agent_adapter_rows": len(agent), "agent_adapter_replays_dropped": sum(rows["dropped"])}


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16, from Linux's
    /proc/cpuinfo; False where that file is missing)."""
    try:
        flags = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"\b(?:avx512_bf16|amx_bf16)\b", flags) is not None


def planner_train_dtype(cfg: DemoConfig) -> str:
    """The dtype the planner trains in: ``cfg.planner_dtype``, but fp32 for "bf16" on a CPU without
    bf16 instructions (there bf16 ran several times slower than fp32; the two measured alike)."""
    if cfg.planner_dtype not in ("auto", "bf16", "fp32"):
        raise ValueError(f"planner_dtype must be auto, bf16 or fp32, not {cfg.planner_dtype!r}")
    if cfg.planner_dtype == "bf16" and not cpu_has_bf16():
        return "fp32"
    return cfg.planner_dtype


def sft_command(role: str, cfg: DemoConfig, base: str, work: Path) -> list[str]:
    """The ``python -m train sft`` command line of one adapter: the shipped recipe plus overrides."""
    # The agent adapter trains as the planner's does (LoRA q/v, its dtype, batch and shared prefixes:
    # every row of one agent opens on the same system prompt), on its own rows, rate and epochs.
    like_planner = role in ("planner", "agent")
    recipe = {"planner": "planner_lora.yaml", "caller": "caller_qlora.yaml", "agent": "planner_lora.yaml"}[role]
    dtype = planner_train_dtype(cfg) if like_planner else "auto"
    lr = {"planner": cfg.planner_lr, "caller": cfg.caller_lr, "agent": cfg.agent_lr}[role]
    epochs = {"planner": cfg.planner_epochs, "caller": cfg.caller_epochs, "agent": cfg.agent_epochs}[role]
    batch = (cfg.planner_batch or cfg.batch) if like_planner else cfg.batch
    share = cfg.share_prefix if like_planner else 0
    max_len = {"planner": cfg.planner_max_seq_len or cfg.max_seq_len, "caller": cfg.max_seq_len,
               "agent": cfg.agent_max_seq_len}[role]
    return [sys.executable, "-m", "train", "sft", "--config", str(REPO / "train" / "configs" / recipe),
            f"model_name_or_path={base}", f"dataset={work / (role + '.jsonl')}", "eval_dataset=",
            "eval_fraction=0", f"output_dir={work / role}", f"dtype={dtype}", "attn_implementation=sdpa",
            "gradient_checkpointing=false", "packing=false", "group_by_length=true",
            f"per_device_train_batch_size={batch}", "gradient_accumulation_steps=1", f"share_prefix={share}",
            f"num_train_epochs={epochs}", f"learning_rate={lr}", "warmup_ratio=0.03",
            f"max_seq_len={max_len}", "logging_steps=5", "save_steps=10", "save_total_limit=1",
            "resume=true", "use_cpu=true"] + (
        [f"lora.r={cfg.planner_lora_r}", f"lora.alpha={cfg.planner_lora_alpha}"]
        if role == "planner" or (role == "agent" and cfg.agent_from_planner) else []) + (
        [f"lora.init_adapter={work / 'planner'}"] if role == "agent" and cfg.agent_from_planner else []) + (
        [f"loss_weight_pattern={DECISION_PATTERN}", f"loss_weight={cfg.decision_weight}"]
        if role == "planner" and cfg.decision_weight != 1.0 else [])


_PROGRESS_RE = re.compile(r"(\d+)/(\d+) \[")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _reusable(cfg: DemoConfig, role: str, sources: list[Path]) -> Path | None:
    """A built adapter folder for ``role`` whose manifest records ``cfg.role_key(role)``."""
    for src in sources:
        try:
            manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        folder = src / manifest.get("adapters", {}).get(role, role)
        if manifest.get("role_keys", {}).get(role) == cfg.role_key(role) and (folder / "adapter_model.safetensors").is_file():
            return folder
    return None


def _adopt(role: str, folder: Path, manifest_train: dict, work: Path) -> dict:
    """Copy a reused adapter into the work folder as if trained there."""
    dest = work / role
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(folder, dest)
    stats = dict(manifest_train, reused=True)
    (dest / "done.json").write_text(json.dumps(stats))
    return stats


def _train_adapters(cfg: DemoConfig, base: str, work: Path, say, reuse: list[Path] = ()) -> dict:
    """Run the two SFT jobs one after the other, each with every core, the planner first (the
    longer one; measured on 2 cores: one job on two threads 112 tokens/s against 67 on one, so
    two jobs side by side on one thread each finish later than in turn); progress bars from
    their logs."""
    threads = str(_cores())
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    stats = {}
    for role in cfg.roles():
        if (work / role / "done.json").is_file():
            stats[role] = json.loads((work / role / "done.json").read_text())
            say(f"{role} adapter already trained: {stats[role]}")
            continue
        found = _reusable(cfg, role, list(reuse))
        if found is not None:
            manifest = json.loads((found.parent / "manifest.json").read_text(encoding="utf-8"))
            stats[role] = _adopt(role, found, manifest.get("train", {}).get(role, {}), work)
            say(f"{role} adapter reused from {found} (its recipe key {cfg.role_key(role)} is unchanged)")
            continue
        stats[role] = _train_one(role, cfg, base, work, env, say)
    return stats


def _dies_with(parent: int):
    """A ``preexec_fn`` for the SFT jobs (Linux): the kernel sends the job SIGTERM when the process
    that started it dies, by any signal (SIGKILL included), so a killed build leaves no trainer
    behind writing checkpoints into the work folder, where a rerun would resume alongside it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # noqa: PLC0415  (here, not in the forked child: no import between fork and exec)

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the build died before the line above: nothing would send it
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


def _train_one(role: str, cfg: DemoConfig, base: str, work: Path, env: dict, say) -> dict:
    from pipeline.cli import stop_process

    folder = work / role
    folder.mkdir(exist_ok=True)
    cmd = sft_command(role, cfg, base, work)
    dtype = planner_train_dtype(cfg) if role != "caller" else "auto"  # what it trains in on this machine
    if role != "caller" and dtype != cfg.planner_dtype:  # only bf16 falls back
        say("this CPU has no AVX512-BF16 or AMX-BF16: the planner trains in fp32, not the recipe's bf16 (bf16 "
            "would run several times slower here; the figures of the two measured alike, see DemoConfig)")
    say(f"training the {role} adapter ({env['OMP_NUM_THREADS']} threads): {' '.join(cmd[1:4])} ... "
        f"(log: {folder / 'train.log'})")
    t0 = time.perf_counter()
    with open(folder / "train.log", "a", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                preexec_fn=_dies_with(os.getpid()))
        try:
            _follow(folder, role, proc)
        finally:  # an exception while following (Ctrl-C, an error) stops the job too
            stop_process(proc)
    if proc.returncode != 0:
        tail = "\n".join(_tail(folder / "train.log").splitlines()[-15:])
        raise RuntimeError(f"training the {role} adapter failed (exit {proc.returncode}); the end of "
                           f"{folder / 'train.log'}:\n{tail}")
    history = json.loads((folder / "log_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    stats = {"seconds": round(time.perf_counter() - t0, 1), "first_loss": losses[0],
             "final_loss": losses[-1], "steps": history[-1].get("step"),
             "dtype": dtype}
    (folder / "done.json").write_text(json.dumps(stats))
    return stats


def _tail(path: Path, size: int = 4000) -> str:
    """The last ``size`` bytes of a log (a two-hour build's grows to megabytes of progress bars)."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read().decode("utf-8", errors="replace")


def _follow(folder: Path, role: str, proc: subprocess.Popen) -> None:
    """A progress bar from the job's log (``folder/train.log``) until the job ends."""
    from tqdm import tqdm

    with tqdm(desc=role, unit="step", file=sys.stderr, dynamic_ncols=True) as bar:
        while True:
            time.sleep(1)
            found = _PROGRESS_RE.findall(_tail(folder / "train.log"))
            if found:
                bar.n, bar.total = map(int, found[-1])
                bar.refresh()
            if proc.poll() is not None:
                return


def build(out_dir: Path, cfg: DemoConfig | None = None, force: bool = False, progress: bool = True) -> dict:
    """Build both adapters into ``out_dir`` and write ``manifest.json``; returns the manifest.

    Resumable: the work folder (``<out_dir>.building``) keeps the data, each run's Trainer
    checkpoints and a ``done.json`` per finished adapter; running again continues there.
    """
    from pipeline.defaults import BASES, base_dir

    cfg = cfg or DemoConfig()
    t0 = time.perf_counter()
    say = (lambda m: print(f"[demo] {m}", file=sys.stderr, flush=True)) if progress else (lambda m: None)
    work = out_dir.with_name(out_dir.name + ".building")
    key_file = work / "key"
    stamp = data_stamp(cfg)
    if force or (key_file.is_file() and key_file.read_text() != stamp):
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    key_file.write_text(stamp)
    base = str(base_dir(cfg.base, progress=progress)) if cfg.base in BASES else cfg.base  # a key, or a model folder

    if not (work / "data.json").is_file():
        say("generating the training data (real offline tools for the evidence) ...")
        counts = build_data(cfg, work, base)
        (work / "data.json").write_text(json.dumps(counts, indent=1))
    counts = json.loads((work / "data.json").read_text())
    say(f"data: {counts}")
    stats = _train_adapters(cfg, base, work, say, reuse=list(dict.fromkeys([out_dir, SHIPPED])))

    staged = work / "out"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir()
    for role in cfg.roles():
        (staged / role).mkdir()
        for name in ("adapter_model.safetensors", "loss.png", "log_history.json"):
            shutil.copy2(work / role / name, staged / role / name)
        adapter_cfg = json.loads((work / role / "adapter_config.json").read_text())
        adapter_cfg["base_model_name_or_path"] = cfg.base  # a key for pipeline.defaults, not a machine path
        (staged / role / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
    shutil.copy2(work / "unseen_tools.jsonl", staged / "unseen_tools.jsonl")
    from toolkit.toolbox import BUILTIN_TOOL_NAMES

    manifest = {"version": VERSION, "key": cfg.key(), "base": cfg.base, "config": dataclasses.asdict(cfg),
                "role_keys": {role: cfg.role_key(role) for role in cfg.roles()},
                "adapters": {role: role for role in cfg.roles()}, "tools": list(BUILTIN_TOOL_NAMES),
                "pipeline": {k: getattr(cfg, k) for k in RUN_SETTINGS},
                "data": counts, "train": stats, "build_seconds": round(time.perf_counter() - t0, 1)}
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    staged.rename(out_dir)  # appears whole or not at all
    shutil.rmtree(work, ignore_errors=True)  # checkpoints and data: regenerable, not shipped
    trained = ", ".join(f"{role} {stats[role]['seconds']} s" for role in cfg.roles())
    say(f"built: {out_dir} (this run {manifest['build_seconds']:.0f} s; {trained} of training)")
    return manifest


def check(out_dir: Path) -> dict:
    """Run the showcase tasks on the adapters in ``out_dir``; returns ``{"showcase": [...]}``."""
    from pipeline.defaults import default_models, default_pipeline

    models = default_models(out_dir)
    pipe = default_pipeline(models)
    shows = []
    for task in SHOWCASE:
        t = time.perf_counter()
        r = pipe.run(task)
        shows.append({"task": task, "plan": r.plan.render(), "evidence": {v: e.text for v, e in r.evidence.items()},
                      "answer": r.answer, "seconds": round(time.perf_counter() - t, 2)})
    return {"showcase": shows}


def build_parser() -> argparse.ArgumentParser:
    from toolkit.helpformat import HelpFormatter, summary

    p = argparse.ArgumentParser(prog="python -m train.demo", description=summary(__doc__),
                                formatter_class=HelpFormatter)
    p.add_argument("--out", default=str(SHIPPED), help="folder for the adapters (default: data/demo, what ships)")
    p.add_argument("--force", action="store_true", help="start over instead of resuming")
    p.add_argument("--check", action="store_true", help="only run the showcase tasks on the adapters in --out")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    out = Path(a.out)
    if not a.check:
        build(out, force=a.force)
    print(json.dumps(check(out), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
