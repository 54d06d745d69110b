"""Training entry points.

    python -m train sft --config train/configs/planner_lora.yaml [key=value ...]
    python -m train sft --help-recipe                      (every recipe key, default and meaning)
    python -m train sft --check --config ... [key=value ...] (validate only; prints output_dir)
    python -m train merge --base BASE --adapter ADAPTER --out OUT
    python -m train datagen --out data/generated           (same as python -m train.datagen)

``-v`` (anywhere) shows the libraries' messages that are hidden by default (toolkit.quiet: an
optional bitsandbytes CPU kernel, DeepSpeed's accelerator guess, deprecation notes about gradient
checkpointing, the tokenizer's over-length note).
"""

from __future__ import annotations

import argparse
import sys


def sft_parser() -> argparse.ArgumentParser:
    """The flags of ``python -m train sft``."""
    from toolkit.helpformat import HelpFormatter  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m train sft", description="LoRA / QLoRA / full SFT from a recipe.",
                                formatter_class=HelpFormatter)
    p.add_argument("--config", help="YAML recipe (train/configs/*.yaml); default: every recipe key at its default")
    p.add_argument("--help-recipe", action="store_true", help="list every recipe key and exit")
    p.add_argument("--check", action="store_true",
                   help="validate the recipe and the required keys (model_name_or_path, dataset), print "
                        "output_dir and exit: no model, no data, nothing written (the training scripts run "
                        "this before any work)")
    p.add_argument("overrides", nargs="*", help="key=value (e.g. max_steps=10 lora.r=16)")
    return p


def _sft(argv: list[str]) -> int:
    from train.recipe import RecipeError, describe, load_recipe  # noqa: PLC0415

    a = sft_parser().parse_args(argv)
    if a.help_recipe:
        print(describe())
        return 0
    recipe = load_recipe(a.config, a.overrides)
    if a.check:
        from train.sft import check_model_path  # noqa: PLC0415  (no torch)

        check_model_path(recipe.model.model_name_or_path)
        if not recipe.data.dataset:
            raise RecipeError("dataset is empty: give a JSONL/JSON/parquet file, a folder or a datasets name")
        print(recipe.train.output_dir)
        return 0
    from train.sft import leave_process_group, run_sft  # noqa: PLC0415  (imports torch: after the recipe is known good)

    result = run_sft(recipe)
    leave_process_group()  # every rank, before its interpreter ends
    # every rank says what it did (a launcher prefixes or collects these lines); only rank 0 wrote files
    print(f"[train] rank {result.rank} of {result.world_size}: {result.global_step} optimiser steps, "
          f"last train loss {result.train_loss}")
    if result.rank == 0:
        print(f"[train] adapter: {result.adapter_dir}")
        print(f"[train] loss plot: {result.plot}")
        print(f"[train] logs: {result.log_history}")
        print(f"[train] checkpoints: {', '.join(str(c) for c in result.checkpoints) or 'none'}")
        print(f"[train] last train loss: {result.train_loss}  last eval loss: {result.eval_loss}  "
              f"(rows: {result.train_rows} train, {result.eval_rows} eval)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    from toolkit.quiet import quiet_libraries  # noqa: PLC0415

    quiet_libraries(verbose=verbose)
    commands = ("sft", "merge", "datagen")
    if not argv or argv[0] not in commands:
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "sft":
        return _sft(rest)
    if cmd == "merge":
        from train.merge import main as merge_main  # noqa: PLC0415

        merge_main(rest)
        return 0
    from train.datagen import main as datagen_main  # noqa: PLC0415

    datagen_main(rest)
    return 0


if __name__ == "__main__":
    from train.recipe import RecipeError  # noqa: PLC0415
    from train.data import DataError  # noqa: PLC0415
    from train.merge import MergeError  # noqa: PLC0415

    try:
        code = main()
    except (RecipeError, DataError, MergeError) as e:  # a user's mistake: one clear line, no traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if "train.sft" in sys.modules:  # a rank of a multi-process run ends without the teardown that can abort it
        sys.modules["train.sft"].exit_rank(code)
    sys.exit(code)
