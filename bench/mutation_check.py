"""Break the code on purpose, one mutation at a time, and check that a test notices.

    python bench/mutation_check.py                 # every mutation (about 10-15 minutes on 2 cores)
    python bench/mutation_check.py --only sandbox  # the mutations whose name contains "sandbox"
    python bench/mutation_check.py --list

Each mutation replaces one exact piece of source text (it must occur exactly once) in a scratch
copy of the tracked files, runs the tests that guard it (``pytest -x``) and restores the file.
"caught" means the tests failed; "SURVIVED" means the code was broken and every test passed,
i.e. a README claim with nothing behind it; "stale" means the text to mutate is gone (the code
moved: update the mutation). The checkout itself is never modified.

The list is curated rather than generated: each entry breaks a promise the README makes (the
sandbox's OS layer and interpreter guards, the SQL read-only paths, the server's validation, the
plan parser, evidence binding in code, the caller's JSON spacing, packing, stop strings, the escape
corpus's guard messages, plan bounds, resume after a kill, report_to, a 500 anywhere the fuzz test
reaches, the server's quiet start and exit codes, the installed wheel's data, llama.cpp's batched
runner, prefix sharing, seeds and constraints, the GGUF export's importance matrix and errors, the
agents' training trajectories, typed chains in generated data, the demo's wider and focused task shapes, and the shipped recipe's training data).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, or "file::test", or "-k", "expr"


MUTATIONS = [
    # -- the sandbox: OS layer --------------------------------------------------------------------
    Mutation("sandbox: fake network namespace", "toolkit/sandbox/isolation.py",
             "    if _libc.unshare(CLONE_NEWNET) == 0:\n        return \"netns\"",
             "    if True:\n        return \"netns\"",
             ("tests/test_sandbox.py", "-k", "network")),
    Mutation("sandbox: no file-size limit", "toolkit/sandbox/isolation.py",
             '    set_rlimit("RLIMIT_FSIZE", max_file_mb * 1024 * 1024)', "    pass",
             ("tests/test_sandbox.py", "-k", "16_mib")),
    Mutation("sandbox: no open-file limit", "toolkit/sandbox/isolation.py",
             '    set_rlimit("RLIMIT_NOFILE", max_open_files)', "    pass",
             ("tests/test_sandbox.py", "-k", "16_mib")),
    # -- the sandbox: interpreter guards ------------------------------------------------------------
    Mutation("interpreter: private names allowed", "toolkit/sandbox/interpreter.py",
             '        if name.startswith("_"):\n            raise InterpreterError(f"access to the private or dunder attribute {name!r} is not allowed")',
             '        if False:\n            raise InterpreterError(f"access to the private or dunder attribute {name!r} is not allowed")',
             ("tests/test_sandbox.py",)),
    # -- SQL ------------------------------------------------------------------------------------
    Mutation("sql: write keywords pass the read-only policy", "toolkit/tools/sql.py",
             "    if not allow_write and first not in READ_KEYWORDS:", "    if False:",
             ("tests/test_tools_sql.py",)),
    Mutation("sql: no read-only transaction", "toolkit/tools/sql.py",
             "                    if read_only:\n                        self._enter_read_only(conn, dialect)",
             "                    if False:\n                        self._enter_read_only(conn, dialect)",
             ("tests/test_tools_sql.py",)),
    # -- the server's validation ----------------------------------------------------------------------
    Mutation("serve: echo accepted", "serve/app.py", "    if body.echo:", "    if False and body.echo:",
             ("tests/test_serve.py", "-k", "bad_completion")),
    Mutation("serve: max_completion_tokens ignored", "serve/app.py",
             "    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens",
             "    asked = body.max_tokens", ("tests/test_serve.py", "-k", "max_completion")),
    # -- the plan parser and evidence -----------------------------------------------------------------
    Mutation("plan: step-like lines dropped", "pipeline/plan.py",
             "        elif _STEP_LIKE_RE.search(stripped):", "        elif False:", ("tests/test_plan.py",)),
    Mutation("plan: huge variable numbers reach int()", "pipeline/plan.py",
             "        if len(head.group(1)) > _MAX_VAR_DIGITS:", "        if False:", ("tests/test_plan.py",)),
    Mutation("plan: #E1 matches inside #E10", "pipeline/plan.py",
             'VAR_RE = re.compile(r"#E(\\d+)(?!\\d)")', 'VAR_RE = re.compile(r"#E(\\d)")', ("tests/test_plan.py",)),
    Mutation("worker: evidence pasted into code", "pipeline/distributor.py",
             "    filled = {k: (substitute_code(v, evidence) if", "    filled = {k: (walk(v) if",
             ("tests/test_pipeline.py", "-k", "evidence")),
    Mutation("replan: successful evidence shown to the planner", "pipeline/rewoo.py",
             'status = {v: ("done" if e.ok else', 'status = {v: (f"done: {e.text}" if e.ok else',
             ("tests/test_pipeline.py", "-k", "replan")),
    # -- constrained decoding -------------------------------------------------------------------------
    Mutation("constrain: the mask comes from llguidance's torch.compile'd kernel", "pipeline/formats/constrain.py",
             "        apply_bitmask(scores, self.bitmask, self.lltok.vocab_size)",
             "        import llguidance.torch as _lt\n        _lt.apply_token_bitmask_inplace(scores, self.bitmask)",
             ("tests/test_constrain.py", "-k", "compiles_nothing")),
    Mutation("constrain: every row's mask written into the first row", "pipeline/formats/constrain.py",
             "    words = bitmask[row]", "    words = bitmask[0]", ("tests/test_constrain.py", "-k", "valid_plans")),
    Mutation("constrain: the bitmask read big-endian", "pipeline/formats/constrain.py",
             'bitorder="little")', 'bitorder="big")', ("tests/test_constrain.py", "-k", "bitmask")),
    Mutation("constrain: tokens past the bitmask allowed", "pipeline/formats/constrain.py",
             "    if scores.shape[-1] > width:\n        scores[:, width:] = float(\"-inf\")\n\n\nclass GrammarLogitsProcessor:",
             "\n\nclass GrammarLogitsProcessor:", ("tests/test_constrain.py", "-k", "bitmask")),
    Mutation("constrain: ids past the tokenizer's vocabulary allowed", "pipeline/formats/constrain.py",
             "min(scores.shape[-1], bits.shape[1], vocab_size or bits.shape[1])", "min(scores.shape[-1], bits.shape[1])",
             ("tests/test_constrain.py", "-k", "bitmask")),
    Mutation("constrain: numpy logits masked with the bits inverted", "pipeline/formats/constrain.py",
             "        scores[:, :width][forbidden] = -np.inf", "        scores[:, :width][~forbidden] = -np.inf",
             ("tests/test_constrain.py", "-k", "bitmask")),
    Mutation("defaults: a half-written base folder used as it is", "pipeline/defaults.py",
             '    if (out / "complete.json").is_file():\n        return out\n    with _exclusive(out):  # another process converting it',
             '    if out.is_dir():\n        return out\n    with _exclusive(out):  # another process converting it',
             ("tests/test_llamacpp.py", "-k", "half_written")),
    # -- a llama.cpp run without torch ----------------------------------------------------------------
    Mutation("importance matrix: the logits computed for the output layer's statistic", "serve/gguf.py",
             "        if module is head and decoder is not None:", "        if False:",
             ("tests/test_llamacpp.py", "-k", "never_computes_logits")),
    Mutation("base conversion: the GGUF parsed by each reader transformers opens", "pipeline/defaults.py",
             "    with _gguf_parsed_once():\n        tok = AutoTokenizer", "    with contextlib.nullcontext():\n        tok = AutoTokenizer",
             ("tests/test_llamacpp.py", "-k", "half_written")),
    Mutation("fast start: the default caller and agent loaded up front", "pipeline/defaults.py",
             'return LazyEngine(load, f"gguf:{role}")', 'return load()', ("tests/test_defaults.py", "-k", "first_call")),
    Mutation("fast start: a lazy engine made by every thread that asks", "pipeline/engines.py",
             "        with self._lock:\n            if self._engine is None:\n                engine = self._factory()",
             "        if True:\n            if True:\n                engine = self._factory()",
             ("tests/test_pipeline.py", "-k", "lazy_caller")),
    Mutation("a failing function caller ends the run", "pipeline/distributor.py",
             "        except EngineError as e:  # the caller failed", "        except ZeroDivisionError as e:  # the caller failed",
             ("tests/test_pipeline.py", "-k", "fails_becomes")),
    Mutation("fast start: torch threads set by importing torch", "pipeline/run.py",
             '    if threads and "torch" in sys.modules:\n        sys.modules["torch"].set_num_threads(threads)',
             "    if threads:\n        import torch\n        torch.set_num_threads(threads)",
             ("tests/test_llamacpp.py", "-k", "never_imports_torch")),
    Mutation("fast start: the GGUF's tokenizer read by transformers", "pipeline/llamacpp.py",
             "            return _tokenizer_folder(folder)",
             "            from transformers import AutoTokenizer\n            return AutoTokenizer.from_pretrained(str(folder))",
             ("tests/test_llamacpp.py", "-k", "never_imports_torch")),
    Mutation("fast start: the progress bars turned off through transformers", "toolkit/quiet.py",
             '        if "transformers" in sys.modules:\n            from transformers.utils',
             '        if True:\n            from transformers.utils', ("tests/test_llamacpp.py", "-k", "never_imports_torch")),
    Mutation("fast start: llguidance's view built by llguidance.hf", "pipeline/formats/constrain.py",
             "            _LLTOK_CACHE[key] = (tokenizer, llguidance.LLTokenizer(backend.to_str(), n_vocab=vocab_size,",
             "            import llguidance.hf\n            _LLTOK_CACHE[key] = (tokenizer, llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size,",
             ("tests/test_llamacpp.py", "-k", "never_imports_torch")),
    Mutation("fast start: a tokenizer read once per GGUF, not per content", "pipeline/llamacpp.py",
             "        if key not in _FOLDERS:", "        if True:", ("tests/test_llamacpp.py", "-k", "share_one")),
    Mutation("fast start: special tokens kept whatever decode is asked", "pipeline/llamacpp.py",
             "skip_special_tokens=skip_special_tokens)\n\n    def __len__", "skip_special_tokens=False)\n\n    def __len__",
             ("tests/test_llamacpp.py", "-k", "tokenizer_folder")),
    Mutation("fast start: the server's llguidance view read by llguidance.hf", "serve/constraints.py",
             "    return constrain.lltokenizer(tokenizer, vocab_size)",
             "    import llguidance.hf\n    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)",
             ("tests/test_llamacpp.py", "-k", "server_plan_constraint")),
    Mutation("fast start: an encoding without .input_ids", "pipeline/llamacpp.py",
             "        return Encoding(input_ids=self.encode(", "        return dict(input_ids=self.encode(",
             ("tests/test_llamacpp.py", "-k", "server_completion_matches")),
    Mutation("gguf: an export leaves its tokenizer behind", "serve/gguf.py",
             "    write_tokenizer_folder(src, out)\n", "", ("tests/test_llamacpp.py", "-k", "tokenizer_beside")),
    Mutation("sampling: top-p drops the token that crosses p", "pipeline/sampling.py",
             "drop = (np.cumsum(probs) - probs) >= self.top_p", "drop = np.cumsum(probs) >= self.top_p",
             ("tests/test_serve.py", "-k", "row_control")),
    Mutation("sampling: the request's seed ignored", "pipeline/sampling.py",
             "np.random.default_rng(None if seed is None else seed % 2**64)", "np.random.default_rng()",
             ("tests/test_serve.py", "-k", "row_control")),
    Mutation("sampling: a negative seed refused (a 500)", "pipeline/sampling.py",
             "np.random.default_rng(None if seed is None else seed % 2**64)", "np.random.default_rng(seed)",
             ("tests/test_serve.py", "-k", "row_control")),
    Mutation("serve: the mask comes from llguidance's torch.compile'd kernel", "serve/constraints.py",
             "        constrain.apply_bitmask(scores, self.bitmask, self.lltok.vocab_size)",
             "        import llguidance.torch as _lt\n        _lt.apply_token_bitmask_inplace(scores, self.bitmask)",
             ("tests/test_serve_constrained.py", "-k", "compiles_nothing")),
    Mutation("constrain: compact JSON forced on the caller", "pipeline/formats/constrain.py",
             '"whitespace_flexible": False, "item_separator": formats.CALL_ITEM_SEPARATOR,',
             '"whitespace_flexible": False, "item_separator": ",",',
             ("tests/test_constrain.py", "-k", "spacing")),
    # -- training and generation ----------------------------------------------------------------------
    Mutation("packing: predicts across example boundaries", "train/data.py",
             "            labels += [IGNORE] + list(f[\"labels\"][1:])  # never predict across the boundary",
             "            labels += list(f[\"labels\"])",
             ("tests/test_train_data.py", "-k", "packing")),
    Mutation("stop strings: first match not taken", "pipeline/engines.py",
             "        if 0 <= i < cut:\n            cut = i", "        if 0 <= i:\n            cut = i",
             ("tests/test_pipeline.py", "-k", "stop")),
    # -- the escape corpus: each case meets the guard it names --------------------------------------------
    Mutation("interpreter: time.sleep past the limit not refused up front", "toolkit/sandbox/interpreter.py",
             "                if seconds > self.deadline - time.monotonic():", "                if False:",
             ("tests/test_sandbox.py", "-k", "escape_fails and sleep")),
    Mutation("constrain: plan bounds split 1:1, not 1:2", "pipeline/formats/constrain.py",
             "            desc = free // 3", "            desc = free // 2", ("tests/test_constrain.py", "-k", "bounds")),
    # -- resume, reporting, the server's start, the wheel ---------------------------------------------
    Mutation("train: resume takes the newest checkpoint, complete or not", "train/sft.py",
             "        if checkpoint_is_complete(ckpt):", "        if True:",
             ("tests/test_train_sft.py", "-k", "kill_while_saving")),
    Mutation("train: checkpoints never marked complete", "train/sft.py",
             "                os.replace(tmp, ckpt / COMPLETE_MARK)", "                pass",
             ("tests/test_train_sft.py", "-k", "kill_while_saving")),
    Mutation("train: shared prefix's rows restart their positions at 0", "train/sft.py",
             "positions = torch.arange(p, end, device=ids.device)", "positions = torch.arange(0, end - p, device=ids.device)",
             ("tests/test_train_sft.py", "-k", "shared_prefix")),
    Mutation("train: a shared prefix reaches a row's first label", "train/data.py",
             "limits.append(max(0, first - 1))", "limits.append(max(0, first))",
             ("tests/test_train_sft.py", "-k", "shared_prefix")),
    Mutation("train: the label window keeps every position", "train/sft.py",
             "    return labels.shape[1] - max(int(cols[0]) - 1, 0)", "    return labels.shape[1]",
             ("tests/test_train_sft.py", "-k", "shared_prefix or label_window")),
    Mutation("train: the label window drops the logit of the first label", "train/sft.py",
             "    return labels.shape[1] - max(int(cols[0]) - 1, 0)", "    return labels.shape[1] - int(cols[0])",
             ("tests/test_train_sft.py", "-k", "shared_prefix or label_window")),
    Mutation("train: a windowed row in no group takes the weights of its first columns", "train/sft.py",
             "weights[rest, end - tail.shape[1]:end]", "weights[rest, :tail.shape[1]]",
             ("tests/test_train_sft.py", "-k", "shared_prefix")),
    Mutation("train: windowed group rows take the weights of their first columns", "train/sft.py",
             "weights[rows, end - tail.shape[1]:end]", "weights[rows, p:p + tail.shape[1]]",
             ("tests/test_train_sft.py", "-k", "shared_prefix")),
    Mutation("demo: the training job outlives a killed build", "train/demo.py",
             "preexec_fn=_dies_with(os.getpid()))", "preexec_fn=None)",
             ("tests/test_demo.py", "-k", "killed_build")),
    Mutation("demo: the training job outlives a build killed before it was armed", "train/demo.py",
             "        prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG", "        pass",
             ("tests/test_demo.py", "-k", "killed_build")),
    Mutation("demo: an error while following a job leaves it running", "train/demo.py",
             "            stop_process(proc)", "            pass",
             ("tests/test_demo.py", "-k", "error_while_following")),
    Mutation("demo: extra planner rows also make caller rows", "train/demo_data.py",
             "        if i >= planner:\n            if g[\"answer\"] and extra_solver:\n"
             "                later.append(_solver_row(d.text, shown, g, workspace, meta))\n            continue\n", "",
             ("tests/test_demo.py", "-k", "extra_planner")),
    Mutation("trajectories: rendered as Alpaca, not as the engine renders chat calls", "train/trajectories.py",
             'tokenizer, template: str = "auto")', 'tokenizer, template: str = "alpaca")',
             ("tests/test_trajectories.py", "-k", "run_time")),
    Mutation("trajectories: a replay that leaves its script is kept", "train/trajectories.py",
             "            or observed != grounded):", "            and observed != grounded):",
             ("tests/test_trajectories.py", "-k", "leaves_its_script")),
    Mutation("trajectories: the replay's clock not pinned to the grounded moment", "train/trajectories.py",
             'if name == "get_current_time" and clock is not None:', 'if False:',
             ("tests/test_trajectories.py", "-k", "finished_by_the_real_agent")),
    Mutation("demo: agent rows reshuffle the caller's file", "train/demo.py",
             "    planner = rows[\"planner\"] + rows[\"solver\"] + cat[\"planner\"]\n",
             "    planner = rows[\"planner\"] + rows[\"solver\"] + cat[\"planner\"] + agents\n    agents = []\n",
             ("tests/test_demo.py", "-k", "agent_trajectories")),
    Mutation("datagen: chained steps ignore what the evidence is", "train/datagen.py",
             "and not (on_ref and self.cfg.typed and not fits(ex.takes, gives))]", "]",
             ("tests/test_datagen.py", "-k", "fits")),
    Mutation("catalog: an example's types not read", "train/catalog.py",
             "        example = Example(ex[\"goal\"], dict(ex.get(\"args\", {})), **types)",
             "        example = Example(ex[\"goal\"], dict(ex.get(\"args\", {})))",
             ("tests/test_datagen.py", "-k", "fits or types")),
    Mutation("demo: chain, wide and focus drafts replace the others' draw", "train/demo_data.py",
             "            drafts += draw(count, seed + offset, mix=mix, skip={normalise(d.text) for d in drafts},\n"
             "                           open_values=open_values)",
             "            drafts = draw(count, seed + offset, mix=mix,\n                           open_values=open_values) + drafts",
             ("tests/test_demo.py", "-k", "chain_rows or wide_rows or focus_rows")),
    Mutation("demo: the later draws share one seed", "train/demo_data.py",
             "draw(count, seed + offset, mix=mix,", "draw(count, seed + 7, mix=mix,",
             ("tests/test_demo.py", "-k", "shipped_recipe")),
    Mutation("demo: a work folder of an older data version is resumed", "train/demo.py",
             'return f"{cfg.key()}/d{DATA_VERSION}.{CALLER_DATA_VERSION}{agent}"', "return cfg.key()",
             ("tests/test_demo.py", "-k", "older_data_version")),
    Mutation("demo: the planner's rows reorder the caller's file", "train/demo.py",
             "random.Random(cfg.seed + 2).shuffle(caller)", "random.Random(cfg.seed + len(planner)).shuffle(caller)",
             ("tests/test_demo.py", "-k", "caller_file")),
    Mutation("demo: wide_rows retrains the caller", "train/demo.py",
             '"chain_rows", "wide_rows", "focus_rows",', '"chain_rows", "focus_rows",', ("tests/test_demo.py", "-k", "wide_rows")),
    Mutation("demo: focus_rows retrains the caller", "train/demo.py",
             '"chain_rows", "wide_rows", "focus_rows",', '"chain_rows", "wide_rows",', ("tests/test_demo.py", "-k", "focus_rows")),
    Mutation("demo: films_rows retrains the caller", "train/demo.py",
             '                           "films_rows", "rare_rows",', '                           "rare_rows",',
             ("tests/test_demo.py", "-k", "films_rows")),
    Mutation("demo: rare_rows retrains the caller", "train/demo.py",
             '"films_rows", "rare_rows",', '"films_rows",', ("tests/test_demo.py", "-k", "rare_rows")),
    Mutation("demo: rare_rows draws the film mix", "train/demo_data.py",
             "(rare, 19, RARE_MIX)", "(rare, 19, FILMS_MIX)", ("tests/test_demo.py", "-k", "rare_rows")),
    Mutation("demo: rare_rows at 0 changes v19's key", "train/demo.py",
             '"films_rows": 0, "rare_rows": 0,', '"films_rows": 0,', ("tests/test_demo.py", "-k", "rare_rows")),
    Mutation("demo: the planner's rank is not passed to its recipe", "train/demo.py",
             '[f"lora.r={cfg.planner_lora_r}", f"lora.alpha={cfg.planner_lora_alpha}"]\n        if role == "planner" or (role == "agent" and cfg.agent_from_planner) else []',
             '[]', ("tests/test_demo.py", "-k", "rank_reaches")),
    Mutation("demo: the caller takes the planner's rank", "train/demo.py",
             'f"lora.alpha={cfg.planner_lora_alpha}"]\n        if role == "planner" or (role == "agent" and cfg.agent_from_planner) else []',
             'f"lora.alpha={cfg.planner_lora_alpha}"]', ("tests/test_demo.py", "-k", "rank_reaches")),
    Mutation("demo: planner_lora_r retrains the caller", "train/demo.py",
             '"rare_rows", "planner_lora_r", "planner_lora_alpha",', '"rare_rows", "planner_lora_alpha",',
             ("tests/test_demo.py", "-k", "rank_reaches")),
    Mutation("demo: the planner's rank at 8/16 changes v20's key", "train/demo.py",
             '"planner_lora_r": 8, "planner_lora_alpha": 16,', '"planner_lora_alpha": 16,',
             ("tests/test_demo.py", "-k", "rank_reaches")),
    Mutation("demo: catalog_extra_rows retrains the caller", "train/demo.py",
             '"planner_lora_alpha", "catalog_extra_rows",', '"planner_lora_alpha",',
             ("tests/test_demo.py", "-k", "catalog_extra")),
    Mutation("demo: catalog_extra_rows at 0 changes v20's key", "train/demo.py",
             '"planner_lora_alpha": 16, "catalog_extra_rows": 0,', '"planner_lora_alpha": 16,',
             ("tests/test_demo.py", "-k", "catalog_extra")),
    Mutation("demo: catalog_renamed retrains the caller", "train/demo.py",
             '"catalog_renamed", "planner_dtype", "catalog_breadth_rows",', '"planner_dtype", "catalog_breadth_rows",',
             ("tests/test_demo.py", "-k", "catalog_renamed")),
    Mutation("demo: catalog_renamed never reaches the generator", "train/demo.py",
             "renamed=cfg.catalog_renamed)", ")", ("tests/test_demo.py", "-k", "catalog_renamed")),
    Mutation("datagen: renamed rows draw from the main generator", "train/datagen.py",
             "names[t.name] = self.rename_rng.choice(options)", "names[t.name] = self.rng.choice(options)",
             ("tests/test_datagen.py", "-k", "renamed")),
    Mutation("datagen: renamed rows keep the old names in the plan", "train/datagen.py",
             "plan = \"\\n\".join(render_step(s.var, names[s.tool.name],", "plan = \"\\n\".join(render_step(s.var, s.tool.name,",
             ("tests/test_datagen.py", "-k", "renamed")),
    Mutation("datagen: renamed rows rename the built-ins", "train/datagen.py",
             "if t.builtin or t.name == \"llm\":", "if t.name == \"llm\":", ("tests/test_datagen.py", "-k", "renamed")),
    Mutation("datagen: renamed rows in the test splits", "train/datagen.py",
             'if split == "train" and self.cfg.renamed', 'if self.cfg.renamed', ("tests/test_datagen.py", "-k", "renamed")),
    Mutation("demo: catalog_extra_rows draw their own held-out tools", "train/demo.py",
             "heldout=list(heldout), seed=cfg.seed + 23)", "heldout=[], seed=cfg.seed + 23)",
             ("tests/test_demo.py", "-k", "catalog_extra")),
    Mutation("worker: a repeated call runs again", "pipeline/worker.py",
             "            if twin is not None:  # the same call ran", "            if False:  # the same call ran",
             ("tests/test_pipeline.py", "-k", "repeats_an_earlier")),
    Mutation("worker: a repeat of a running call runs at once", "pipeline/worker.py",
             "            if twin in running:\n                continue", "            if False:\n                continue",
             ("tests/test_pipeline.py", "-k", "repeats_an_earlier")),
    Mutation("worker: a reused step never starts", "pipeline/worker.py",
             '                notify("start", step.var)  # as every step', "                pass  # as every step",
             ("tests/test_pipeline.py", "-k", "repeats_an_earlier")),
    Mutation("worker: an earlier round's call is never tried again", "pipeline/worker.py",
             "if v not in before and e.tool == step.tool", "if e.tool == step.tool", ("tests/test_pipeline.py", "-k", "repeats_an_earlier")),
    Mutation("worker: any call of the same tool is a repeat", "pipeline/worker.py",
             "e.tool == step.tool and e.arguments == args", "e.tool == step.tool", ("tests/test_pipeline.py", "-k", "repeats_an_earlier")),
    Mutation("solver: a tool call answers as written", "pipeline/solver.py",
             "    if _is_tool_call(answer, [s.tool for s in plan.steps]):", "    if False:",
             ("tests/test_formats.py", "-k", "tool_call_or_a_variable")),
    Mutation("solver: a tool's name must be spelt exactly", "pipeline/solver.py",
             "t.lower()).ratio() >= 0.8", "t.lower()).ratio() >= 1.0", ("tests/test_formats.py", "-k", "tool_call_or_a_variable")),
    Mutation("solver: a variable answers as written", "pipeline/solver.py",
             'if ref and ref["var"].upper() in evidence:', "if False:", ("tests/test_formats.py", "-k", "tool_call_or_a_variable")),
    Mutation("solver: a call after a variable needs a plan's tool", "pipeline/solver.py",
             '    return m["var"] is not None or any(', "    return any(", ("tests/test_formats.py", "-k", "tool_call_or_a_variable")),
    Mutation("solver: any bracketed word is a call", "pipeline/solver.py",
             "    return m[\"var\"] is not None or any(", "    return True or any(", ("tests/test_formats.py", "-k", "tool_call_or_a_variable")),
    Mutation("demo: catalog_breadth_rows retrains the caller", "train/demo.py",
             '"planner_dtype", "catalog_breadth_rows", "catalog_tool_first",', '"planner_dtype", "catalog_tool_first",',
             ("tests/test_demo.py", "-k", "catalog_breadth")),
    Mutation("demo: catalog_tool_first retrains the caller", "train/demo.py",
             '"catalog_breadth_rows", "catalog_tool_first",\n', '"catalog_breadth_rows",\n',
             ("tests/test_demo.py", "-k", "catalog_tool_first")),
    Mutation("demo: catalog_tool_first off changes v32's key", "train/demo.py",
             '"agent_from_planner": False, "catalog_tool_first": False,', '"agent_from_planner": False,',
             ("tests/test_demo.py", "-k", "catalog_tool_first")),
    Mutation("demo: catalog_tool_first leaves the catalog's plans as datagen wrote them", "train/demo.py",
             "planner = [_tool_first_row(row) for row in planner]", "pass",
             ("tests/test_demo.py", "-k", "catalog_tool_first")),
    Mutation("demo: extra_solver_rows retrains the caller", "train/demo.py",
             '"catalog_tool_first",\n                           "extra_solver_rows", "solver_by_kind", "clock_part_sets"),',
             '"catalog_tool_first",\n                           "solver_by_kind", "clock_part_sets"),',
             ("tests/test_demo.py", "-k", "extra_solver_rows")),
    Mutation("demo: extra_solver_rows at 0 changes v32's key", "train/demo.py",
             '"catalog_tool_first": False,\n           "extra_solver_rows": 0, "solver_by_kind": False, "clock_part_sets": 0, "open_values": False}',
             '"catalog_tool_first": False,\n           "solver_by_kind": False, "clock_part_sets": 0, "open_values": False}',
             ("tests/test_demo.py", "-k", "extra_solver_rows")),
    Mutation("demo: extra_solver_rows are the first later drafts with an answer", "train/demo_data.py",
             "picked = sorted(random.Random(seed + 29).sample(range(len(later)), min(extra_solver, len(later))))",
             "picked = range(min(extra_solver, len(later)))", ("tests/test_demo.py", "-k", "extra_solver_rows")),
    Mutation("demo: extra_solver_rows answer the first drafts again", "train/demo_data.py",
             "        if g[\"answer\"] and len(rows[\"solver\"]) < solver:\n            rows[\"solver\"].append(_solver_row(",
             "        if g[\"answer\"] and extra_solver:\n            later.append(_solver_row(d.text, shown, g, workspace, meta))\n"
             "        if g[\"answer\"] and len(rows[\"solver\"]) < solver:\n            rows[\"solver\"].append(_solver_row(",
             ("tests/test_demo.py", "-k", "extra_solver_rows")),
    Mutation("demo: spread_by_kind takes a kind's rows before the next kind's", "train/demo_data.py",
             "        this_round = [kinds[k][n] for k in sorted(kinds) if n < len(kinds[k])]\n",
             "        this_round = [i for k in sorted(kinds) for i in kinds[k]][n * len(kinds):(n + 1) * len(kinds)]\n",
             ("tests/test_demo.py", "-k", "spread_by_kind")),
    Mutation("demo: spread_by_kind keeps the last round in the kinds' order", "train/demo_data.py",
             "        rng.shuffle(this_round)\n", "", ("tests/test_demo.py", "-k", "spread_by_kind")),
    Mutation("demo: spread_by_kind counts a kind per template", "train/demo_data.py",
             'kinds.setdefault(p.rsplit(":", 1)[0], []).append(i)', "kinds.setdefault(p, []).append(i)",
             ("tests/test_demo.py", "-k", "spread_by_kind")),
    Mutation("demo: solver_by_kind is ignored", "train/demo_data.py",
             "        if solver_by_kind:\n            picked = spread_by_kind(",
             "        if False:\n            picked = spread_by_kind(", ("tests/test_demo.py", "-k", "solver_by_kind")),
    Mutation("demo: solver_by_kind never reaches the data", "train/demo.py",
             "                     cfg.solver_by_kind, cfg.clock_part_sets, cfg.open_values)",
             "                     False, cfg.clock_part_sets, cfg.open_values)",
             ("tests/test_demo.py", "-k", "planner_only_fields_leave")),
    Mutation("demo: solver_by_kind retrains the caller", "train/demo.py",
             '"extra_solver_rows", "solver_by_kind", "clock_part_sets"),', '"extra_solver_rows", "clock_part_sets"),',
             ("tests/test_demo.py", "-k", "solver_by_kind")),
    Mutation("demo: clock_part_rows read a moment a row", "train/demo_data.py",
             "        evidence = _clock_text(rng)\n        parts = _clock_parts(evidence)\n"
             "        for part in (\"time\", \"date\", \"weekday\", \"year\"):\n",
             "        for part in (\"time\", \"date\", \"weekday\", \"year\"):\n"
             "            evidence = _clock_text(rng)\n            parts = _clock_parts(evidence)\n",
             ("tests/test_demo.py", "-k", "clock_part")),
    Mutation("demo: clock_part_rows answer the date whatever is asked", "train/demo_data.py",
             '"output": parts[part], "meta": meta}', '"output": parts["date"], "meta": meta}',
             ("tests/test_demo.py", "-k", "clock_part")),
    Mutation("demo: clock_part_rows may ask an evaluation task", "train/demo_data.py",
             "    banned = eval_texts() | {normalise(t) for t in skip}", "    banned = {normalise(t) for t in skip}",
             ("tests/test_demo.py", "-k", "clock_part")),
    Mutation("demo: clock_part_rows may ask one question twice", "train/demo_data.py",
             "            banned.add(normalise(text))\n", "", ("tests/test_demo.py", "-k", "clock_part")),
    Mutation("demo: clock_part_sets never reaches the data", "train/demo.py",
             "                     cfg.solver_by_kind, cfg.clock_part_sets, cfg.open_values)",
             "                     cfg.solver_by_kind, 0, cfg.open_values)",
             ("tests/test_demo.py", "-k", "planner_only_fields_leave")),
    Mutation("demo: clock_part_sets retrains the caller", "train/demo.py",
             '"solver_by_kind", "clock_part_sets"),', '"solver_by_kind"),', ("tests/test_demo.py", "-k", "clock_part")),
    Mutation("demo: clock_part_sets at 0 changes v32's key", "train/demo.py",
             '"solver_by_kind": False, "clock_part_sets": 0, "open_values": False}', '"solver_by_kind": False, "open_values": False}',
             ("tests/test_demo.py", "-k", "clock_part")),
    Mutation("serve: the agents run on the main model", "serve/pipeline_route.py",
             'model_id = agent.model_id if body.mode != "rewoo" and agent is not None else backend.model_id',
             "model_id = backend.model_id", ("tests/test_serve_pipeline.py", "-k", "agents_model")),
    Mutation("serve: every request runs on the main model", "serve/app.py",
             "        if model == backend.model_id:\n            return backend\n",
             "        if model == backend.model_id:\n            return state.backend\n",
             ("tests/test_serve_pipeline.py", "-k", "agents_model")),
    Mutation("serve: /v1/models lists the main model alone", "serve/app.py",
             "for backend in state.backends]}", "for backend in state.backends[:1]]}",
             ("tests/test_serve_pipeline.py", "-k", "agents_model")),
    Mutation("serve: --agent-adapter is never loaded", "serve/__main__.py",
             "        agent = build_agent_backend(cfg, backend)\n", "        agent = None\n",
             ("tests/test_demo_shipped.py", "-k", "served_default")),
    Mutation("serve: a bad agent adapter is reported as the model", "serve/__main__.py",
             '        what = f"--agent-adapter {cfg.agent_adapter}"\n', "", ("tests/test_serve_cli.py", "-k", "agent_adapter")),
    Mutation("cli: --model default leaves the agent adapter out", "pipeline/cli.py",
             '["--agent-adapter", agent] if agent else []', "[]", ("tests/test_cli.py", "-k", "model_default")),
    Mutation("demo: extra_solver_rows never reach the data", "train/demo.py",
             "cfg.films_rows, cfg.rare_rows, cfg.extra_solver_rows,", "cfg.films_rows, cfg.rare_rows, 0,",
             ("tests/test_demo.py", "-k", "planner_only_fields_leave")),
    Mutation("demo: catalog_breadth_rows at 0 changes v25's key", "train/demo.py",
             '"planner_dtype": "auto", "catalog_breadth_rows": 0,', '"planner_dtype": "auto",', ("tests/test_demo.py", "-k", "catalog_breadth")),
    Mutation("demo: catalog_breadth_rows draw their own held-out tools", "train/demo.py",
             "heldout=list(heldout), seed=cfg.seed + 31)", "heldout=[], seed=cfg.seed + 31)", ("tests/test_demo.py", "-k", "catalog_breadth")),
    Mutation("demo: catalog_breadth_rows leave the breadth tools out", "train/catalog.py",
             "return Catalog(self.tools + other.tools,", "return Catalog(self.tools,", ("tests/test_demo.py", "-k", "catalog_breadth")),
    Mutation("solver: the answer runs on into plan steps", "pipeline/formats/__init__.py",
             "text[:step.start()] if step else text", "text", ("tests/test_formats.py", "-k", "solvers_answer")),
    Mutation("solver: plan steps alone answer nothing", "pipeline/solver.py",
             "if not answer and plan.steps:", "if False:", ("tests/test_formats.py", "-k", "solvers_answer")),
    Mutation("solver: any Plan: line ends the answer", "pipeline/formats/__init__.py",
             r'(?:Plan:[^\n]*\n\s*)?#E\d+\s*=', r'(?:Plan:|#E\d+\s*=)', ("tests/test_formats.py", "-k", "solvers_answer")),
    Mutation("demo: planner_dtype never reaches the planner's command", "train/demo.py",
             'dtype = planner_train_dtype(cfg) if like_planner else "auto"\n', 'dtype = "auto"\n',
             ("tests/test_demo.py", "-k", "planner_dtype")),
    Mutation("demo: planner_dtype reaches the caller's command too", "train/demo.py",
             'dtype = planner_train_dtype(cfg) if like_planner else "auto"\n', "dtype = planner_train_dtype(cfg)\n",
             ("tests/test_demo.py", "-k", "planner_dtype")),
    Mutation("demo: bf16 kept on a CPU without bf16 instructions", "train/demo.py",
             'if cfg.planner_dtype == "bf16" and not cpu_has_bf16():', "if False:",
             ("tests/test_demo.py", "-k", "without_bf16")),
    Mutation("demo: the fp32 fallback says nothing", "train/demo.py",
             'if role != "caller" and dtype != cfg.planner_dtype:', "if False:",
             ("tests/test_demo.py", "-k", "without_bf16")),
    Mutation("demo: the manifest records the recipe's dtype, not the one trained in", "train/demo.py",
             '"dtype": dtype}', '"dtype": cfg.planner_dtype if role == "planner" else "auto"}', ("tests/test_demo.py", "-k", "whole_build")),
    Mutation("demo: cpu_has_bf16 reads AMX-BF16 only", "train/demo.py",
             r'(?:avx512_bf16|amx_bf16)\b', r'(?:amx_bf16)\b', ("tests/test_demo.py", "-k", "without_bf16")),
    Mutation("demo: cpu_has_bf16 matches a flag's prefix", "train/demo.py",
             r'(?:avx512_bf16|amx_bf16)\b', r'(?:avx512_bf16|amx_bf16)', ("tests/test_demo.py", "-k", "without_bf16")),
    Mutation("demo: planner_dtype retrains the caller", "train/demo.py",
             '"catalog_renamed", "planner_dtype", "catalog_breadth_rows",', '"catalog_renamed", "catalog_breadth_rows",',
             ("tests/test_demo.py", "-k", "planner_dtype")),
    Mutation("demo: save_wide saves another text than the task quotes", "train/demo_data.py",
             "        return self._save_draft(tid, text, path, content)\n\n    def calc_wide",
             "        return self._save_draft(tid, text, path, content[::-1])\n\n    def calc_wide",
             ("tests/test_demo.py", "-k", "rare_drafts")),
    Mutation("demo: films_rows draws the wider film mix", "train/demo_data.py",
             "(films, 17, FILMS_MIX)", "(films, 17, WIDE_MIX)", ("tests/test_demo.py", "-k", "films_rows")),
    Mutation("demo: films_rows without the wider words", "train/demo_data.py",
             'return self.director_films(more=self.FILM_MORE["director_films"])', "return self.director_films()",
             ("tests/test_demo.py", "-k", "films_rows")),
    Mutation("demo: born_shared asks directors in birth_year's own words", "train/demo_data.py",
             'return self.birth_year(intent="born_shared", templates=self.PERSON_BORN)',
             'return self.birth_year(intent="born_shared", templates=self.FILM_MORE["birth_year"])',
             ("tests/test_demo.py", "-k", "born_shared")),
    Mutation("demo: wiki_question asks about articles an eval task names", "train/demo_data.py",
             "                      and f\" {normalise(title.split(' (')[0])} \" not in named)", ")",
             ("tests/test_demo.py", "-k", "wide_intents")),
    Mutation("demo: film_wide without its new phrasings", "train/demo_data.py",
             "        return getattr(self, name)(more=self.FILM_MORE[name])", "        return getattr(self, name)()",
             ("tests/test_demo.py", "-k", "wide_intents")),
    Mutation("llamacpp: an AMX build loaded with its AMX buffers", "pipeline/llamacpp.py",
             "        params.use_extra_bufts = False\n", "        pass\n",
             ("tests/test_llamacpp.py", "-k", "no_amx")),
    Mutation("demo: typed_chains not passed to the catalog's generator", "train/demo.py",
             "typed=cfg.typed_chains, distinct=", "typed=False, distinct=",
             ("tests/test_demo.py", "-k", "typed_chains")),
    Mutation("demo: distinct_values not passed to the catalog's generator", "train/demo.py",
             "distinct=cfg.distinct_values,", "distinct=False,", ("tests/test_demo.py", "-k", "typed_chains")),
    Mutation("eval: 27.0 is not the answer 27", "pipeline/eval.py",
             'out["answer_exact"] = got == want or _same_number(answer or "", exp["answer"])',
             'out["answer_exact"] = got == want', ("tests/test_eval.py", "-k", "expected_number")),
    Mutation("catalog: equal arguments kept", "train/catalog.py",
             "        if not distinct or len(texts) == len(set(texts)):", "        if True:",
             ("tests/test_datagen.py", "-k", "sense_together")),
    Mutation("catalog: linked slots drawn on their own", "train/catalog.py",
             "            group = next((g for g in linked if slot in g), None)", "            group = None",
             ("tests/test_datagen.py", "-k", "sense_together")),
    Mutation("train: ranks end with their process group alive", "train/__main__.py",
             "    leave_process_group()  # every rank", "    pass  # every rank",
             ("tests/test_train_multirank.py", "-k", "zero2")),
    Mutation("train: the process group is never destroyed", "train/sft.py",
             "        dist.destroy_process_group()", "        pass",
             ("tests/test_train_multirank.py", "-k", "zero2")),
    Mutation("gpu_check: the timed training loop rebinds its batch size to the batch", "bench/gpu_check.py",
             "        batch = [rows[(i * batch_size + j) % len(rows)] for j in range(batch_size)]",
             "        batch = batch_size = [rows[(i * batch_size + j) % len(rows)] for j in range(batch_size)]",
             ("tests/test_gpu_check.py", "-k", "dry_run")),
    Mutation("gpu_check: a short budget leaves the nominal shares unscaled (set-up steps skipped)",
             "bench/gpu_check.py", "        scale = min(1.0, seconds / max(1, sum(nominal.values())))",
             "        scale = 1.0", ("tests/test_gpu_check.py", "-k", "budget")),
    Mutation("gpu_check: a step reaped after it ended counts the wait as its run", "bench/gpu_check.py",
             "    ended_before = proc.poll() is not None", "    ended_before = False",
             ("tests/test_gpu_check.py", "-k", "hanging")),
    Mutation("serve: the KV-cache page size passed only as page_size (older transformers refuse it)",
             "serve/backends/hf.py", '    return "page_size" if "page_size" in names else "block_size"',
             '    return "page_size"', ("tests/test_serve.py", "-k", "page_size")),
    Mutation("train: report_to hard-coded none", "train/sft.py",
             "report_to=t.report_to,", 'report_to="none",', ("tests/test_train_sft.py", "-k", "report_to")),
    Mutation("serve: a 500 when a request has exactly two stop strings", "serve/app.py",
             "    return [s for s in stops if s]",
             "    if len(stops) == 2:\n        raise RuntimeError('injected')\n    return [s for s in stops if s]",
             ("tests/test_serve_fuzz.py", "-k", "no_input")),
    Mutation("serve: library notes and loopback httpx lines shown at the default level", "serve/__main__.py",
             "    quiet_libraries(verbose=_parser().parse_args(argv).verbose, progress_bars=False)", "    pass",
             ("tests/test_serve_cli.py", "-k", "quietly")),
    Mutation("serve: a bad model exits 1", "serve/__main__.py",
             '        print(f"python -m serve: cannot load {what}: {why}", file=sys.stderr)\n        return 2',
             '        print(f"python -m serve: cannot load {what}: {why}", file=sys.stderr)\n        return 1',
             ("tests/test_serve_cli.py", "-k", "bad_model")),
    Mutation("wheel: data/ found beside the checkout only", "toolkit/config.py",
             '    spec = importlib.util.find_spec("rewoo_data")', "    spec = None", ("tests/test_wheel.py",)),
    # -- llama.cpp: the runner, the backend, the GGUF export ------------------------------------------
    Mutation("llamacpp: a request samples another row's logits", "pipeline/llamacpp.py",
             "                    rows.append((slot, n - 1))", "                    rows.append((slot, 0))",
             ("tests/test_llamacpp.py", "-k", "together")),
    Mutation("llamacpp: a common prefix never shared", "pipeline/llamacpp.py",
             "if best is not None and best is not slot and share >= keep + SHARE_MIN:", "if False:",
             ("tests/test_llamacpp.py", "-k", "share_a_common_prefix")),
    Mutation("llamacpp: the request's seed ignored", "serve/backends/llamacpp.py",
             "RowControl(request.prompt_ids, s.temperature, s.top_p, s.seed, constraint,",
             "RowControl(request.prompt_ids, s.temperature, s.top_p, None, constraint,",
             ("tests/test_llamacpp.py", "-k", "seeds_stops")),
    Mutation("llamacpp: a greedy request's constraint dropped", "serve/backends/llamacpp.py",
             "if constraint is not None or s.temperature >= MIN_TEMPERATURE:", "if s.temperature >= MIN_TEMPERATURE:",
             ("tests/test_llamacpp.py", "-k", "seeds_stops or plan_constraint")),
    Mutation("defaults: two first runs export the same GGUF at once", "pipeline/defaults.py",
             "        fcntl.flock(f, fcntl.LOCK_EX)\n", "",
             ("tests/test_llamacpp.py", "-k", "two_first_runs")),
    Mutation("gguf: the importance matrix never reaches the quantizer", "serve/gguf.py",
             "        params.imatrix = entries", "        pass",
             ("tests/test_llamacpp.py", "-k", "importance_matrix")),
    Mutation("gguf: the converter's reason hidden", "serve/gguf.py",
             "            return m.group(2)", "            return \"it failed\"",
             ("tests/test_llamacpp.py", "-k", "does_not_know")),
    # -- the agent adapter (--mode react|code on the default models) -------------------------------
    Mutation("agent: pipeline.run's agents run on the planner's adapter", "pipeline/run.py",
             "return run_agent_cli(args, agent_engine(demo, planner), toolbox)",
             "return run_agent_cli(args, planner, toolbox)", ("tests/test_defaults.py", "-k", "agents_run")),
    Mutation("agent: chat's agents run on the planner's adapter", "pipeline/chat.py",
             "max_new_tokens=args.max_new_tokens, agent=agent_engine(demo, planner))",
             "max_new_tokens=args.max_new_tokens)", ("tests/test_defaults.py", "-k", "agents_run")),
    Mutation("agent: pipeline.eval's agents run on the planner's adapter", "pipeline/eval.py",
             "factory = eval_runner(args.mode, cli.agent_engine(demo, planner))",
             "factory = eval_runner(args.mode, planner)", ("tests/test_defaults.py", "-k", "agents_run")),
    Mutation("agent: transformers gives the agents the planner's adapter", "pipeline/defaults.py",
             'return planner.with_adapter(adapter, "agent")', "return planner",
             ("tests/test_defaults.py", "-k", "agents_run")),
    Mutation("agent: llama.cpp loads the planner's GGUF for the agents", "pipeline/defaults.py",
             'return _lazy_gguf_engine("agent", models,', 'return _lazy_gguf_engine("planner", models,',
             ("tests/test_defaults.py", "-k", "agent_gguf")),
    Mutation("agent: a recipe with trajectories builds no agent adapter", "train/demo.py",
             '(("agent",) if self.agent_react_rows or self.agent_code_rows else ())', "()",
             ("tests/test_demo.py", "-k", "agent_adapter")),
    Mutation("agent: its fields key the planner's adapter", "train/demo.py",
             '"agent": ("agent_react_rows", "agent_code_rows", "agent_epochs", "agent_lr", "agent_max_seq_len",\n                         "agent_from_planner")}',
             '"agent": ()}', ("tests/test_demo.py", "-k", "agent_adapter")),
    Mutation("agent: trains at the planner's length", "train/demo.py",
             '"agent": cfg.agent_max_seq_len}[role]', '"agent": cfg.max_seq_len}[role]',
             ("tests/test_demo.py", "-k", "agent_adapter")),
    Mutation("agent: its trajectories join the planner's rows too", "train/demo.py",
             "cfg.extra_planner_rows, cfg.planner_full_share, cfg.tool_first, cfg.react_rows, cfg.code_rows,",
             "cfg.extra_planner_rows, cfg.planner_full_share, cfg.tool_first, cfg.react_rows or cfg.agent_react_rows, cfg.code_rows,",
             ("tests/test_demo.py", "-k", "agent_adapter")),
    Mutation("agent: agent_from_planner starts from a fresh adapter", "train/demo.py",
             """[f"lora.init_adapter={work / 'planner'}"] if role == "agent" and cfg.agent_from_planner else []""",
             "[]", ("tests/test_demo.py", "-k", "agent_adapter")),
    Mutation("agent: agent_from_planner leaves the planner's key out of its own", "train/demo.py",
             'blob += "/from:" + self.role_key("planner")', 'blob += "/from:planner"',
             ("tests/test_demo.py", "-k", "agent_adapter")),
    Mutation("agent: its rows name the build's workspace folder", "train/demo_data.py",
             'content=m["content"].replace(str(workspace), "workspace"))', 'content=m["content"])',
             ("tests/test_demo.py", "-k", "no_machine_folder")),
    Mutation("agent: a new agent data version keeps the agent's key", "train/demo.py",
             'version = {"caller": CALLER_DATA_VERSION, "agent": AGENT_DATA_VERSION}.get(role, DATA_VERSION)',
             'version = {"caller": CALLER_DATA_VERSION}.get(role, DATA_VERSION)',
             ("tests/test_demo.py", "-k", "agent_adapter")),
    Mutation("agent: the shipped manifest names no agent adapter", "data/demo/manifest.json",
             '"caller": "caller",\n    "agent": "agent"', '"caller": "caller"',
             ("tests/test_demo_shipped.py", "-k", "agents_answer")),
    Mutation("sft: init_adapter ignored", "train/sft.py",
             "        return _from_adapter(model, recipe, targets)\n", "        pass\n",
             ("tests/test_train_sft.py", "-k", "another_adapter")),
    Mutation("sft: init_adapter loaded frozen", "train/sft.py",
             "return PeftModel.from_pretrained(model, str(folder), is_trainable=True)",
             "return PeftModel.from_pretrained(model, str(folder), is_trainable=False)",
             ("tests/test_train_sft.py", "-k", "another_adapter")),
    Mutation("sft: init_adapter of another rank accepted", "train/sft.py",
             "    if differ:\n        raise RecipeError", "    if False:\n        raise RecipeError",
             ("tests/test_train_sft.py", "-k", "another_adapter")),
    Mutation("distributor: the caller's strings bounded in characters again", "pipeline/distributor.py",
             '        return Constraint("grammar", constrain_mod.call_grammar(spec, max_new_tokens))',
             '        raise Unsupported("mutant")', ("tests/test_pipeline.py", "-k", "long_text_through")),
    Mutation("demo: open values lower-cased by the lower style", "train/demo_data.py",
             '        if open_values and style == "lower":', '        if False:',
             ("tests/test_demo.py", "-k", "open_values")),
    Mutation("demo: the agent's key follows open_values", "train/demo.py",
             "            other |= set(NOT_AGENT_DATA)", "            pass", ("tests/test_demo.py", "-k", "open_values")),
    Mutation("eval: a save_files call expects a text its task does not hold", "data/eval/save_files.jsonl",
             '"content": "pick up dry cleaning"', '"content": "pick up cleaning"',
             ("tests/test_eval.py", "-k", "shipped_task_files"))
]


def scratch_copy() -> Path:
    """The tracked files (and untracked, not ignored ones) copied to a temporary folder."""
    out = Path(tempfile.mkdtemp(prefix="rewoo-mutants-"))
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for rel in files:
        src = REPO / rel
        if src.is_file():
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return out


def run_tests(root: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    try:
        p = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    tail = [ln for ln in p.stdout.splitlines() if ln.strip()][-1:] or [""]
    return p.returncode, tail[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append",
                    help="run the mutations whose name contains this text (repeat for several)")
    ap.add_argument("--list", action="store_true", help="list the mutations and stop")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per mutation's tests (default 600)")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not a.only or any(text in m.name for text in a.only)]
    if a.list:
        for m in chosen:
            print(f"{m.name:55s} {m.path}  <- {' '.join(m.tests)}")
        return 0
    root = scratch_copy()
    rows, t_all = [], time.perf_counter()
    try:
        baseline = {}
        for m in chosen:
            target = root / m.path
            text = target.read_text(encoding="utf-8")
            if text.count(m.old) != 1:
                rows.append((m.name, "stale", f"text to mutate found {text.count(m.old)} times", 0.0))
                continue
            key = m.tests
            if key not in baseline:  # the guarding tests must pass on the unbroken code first
                baseline[key] = run_tests(root, m.tests, a.timeout)[0]
            if baseline[key] != 0:
                rows.append((m.name, "broken", "its tests fail without the mutation", 0.0))
                continue
            target.write_text(text.replace(m.old, m.new), encoding="utf-8")
            t = time.perf_counter()
            try:
                rc, tail = run_tests(root, m.tests, a.timeout)
            finally:
                target.write_text(text, encoding="utf-8")
            rows.append((m.name, "caught" if rc != 0 else "SURVIVED", tail, time.perf_counter() - t))
            print(f"{rows[-1][1]:8s} {m.name}  ({rows[-1][3]:.0f} s)", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n| mutation | result | tests said | s |\n|---|---|---|---|")
    for name, result, tail, secs in rows:
        print(f"| {name} | {result} | {tail[:70]} | {secs:.0f} |")
    caught = sum(r[1] == "caught" for r in rows)
    print(f"\n{caught}/{len(rows)} caught, {sum(r[1] == 'SURVIVED' for r in rows)} survived, "
          f"{sum(r[1] in ('stale', 'broken') for r in rows)} stale or broken; {time.perf_counter() - t_all:.0f} s")
    return 0 if all(r[1] == "caught" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
