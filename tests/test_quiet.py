"""Quiet by default, -v shows it (toolkit.quiet): the real libraries emit their notes in a fresh
process (DeepSpeed guessing the CPU accelerator, transformers' gradient_checkpointing deprecation
that our TrainingArguments used to trigger, the tokenizer's over-length note); bitsandbytes' CPU
kernel note needs an AVX512-BF16 CPU without the `kernels` package, so its text is logged through
its own logger (the training-script test checks the real one where the CPU has it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = r'''
import logging, sys, warnings
warnings.simplefilter("default")  # as a plain `python -m ...` run shows them
from toolkit.quiet import quiet_libraries
quiet_libraries(verbose="-v" in sys.argv)
logging.basicConfig()
import deepspeed  # noqa: F401  (no GPU, no DS_ACCELERATOR: "Setting accelerator to CPU")
from transformers import AutoTokenizer, TrainingArguments
tok = AutoTokenizer.from_pretrained(sys.argv[1], model_max_length=8)
tok("a long text " * 40)
TrainingArguments(output_dir=sys.argv[2], gradient_checkpointing=True, use_cpu=True, report_to="none")
logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "No module named 'kernels'")
logging.getLogger("bitsandbytes.backends.cpu.ops").warning("another bitsandbytes note")
print("probe done")
'''

NOISE = ["Setting accelerator to CPU", "Token indices sequence length is longer",
         "`gradient_checkpointing` is deprecated", "Failed to load CPU gemm_4bit_forward"]


@pytest.mark.slow
def test_library_notes_are_hidden_by_default_and_shown_with_v(tiny_model_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    runs = {}
    for flag in ("", "-v"):
        proc = subprocess.run([sys.executable, "-c", PROBE, str(tiny_model_dir), str(tmp_path / "args"), flag],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0 and "probe done" in proc.stdout, proc.stderr[-3000:]
        runs[flag] = proc.stdout + proc.stderr  # DeepSpeed's logger writes to stdout
    for noise in NOISE:
        assert noise in runs["-v"], noise  # the libraries do say it ...
        assert noise not in runs[""], noise  # ... and it is hidden by default
    assert "another bitsandbytes note" in runs[""]  # only the listed messages are dropped


def test_our_training_arguments_use_the_new_checkpointing_names(tmp_path):
    """transformers 5 warns (FutureWarning) for `gradient_checkpointing*`: our own recipe triggered it."""
    import warnings

    from train.recipe import load_recipe
    from train.sft import training_arguments

    recipe = load_recipe(None, ["model_name_or_path=m", "dataset=d", f"output_dir={tmp_path}"])
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = training_arguments(recipe, torch.float32, 10, has_eval=False)
    assert args.gradient_checkpointing is True  # the old name mirrors the new one
