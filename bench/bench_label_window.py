"""The planner's training step with and without the label window, side by side in one run.

    python bench/bench_label_window.py [--batches 6 --batch 8 --threads 2 --rows 0]

The demo's own planner rows (``train.demo.build_data`` at the shipped recipe, real offline tools
for the evidence), tokenized and collated as ``python -m train sft`` does for the demo
(``PaddedCollator(share_prefix=64)``, batches of 8 of neighbouring length, as ``group_by_length``
makes them), on the real base (SmolLM2-135M-Instruct) with the planner's LoRA (q_proj/v_proj,
r 8). Each batch runs forward and backward through ``train.sft.shared_prefix_loss`` twice: once
as shipped (logits from the token before the first label on, :func:`train.sft.label_window`) and
once with the window opened to every position (the code before it), alternating which goes
first. Prints seconds per batch for each, the ratio, and the largest difference of loss and LoRA
gradient between the two (they compute the same thing).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=6, help="batches timed (each run both ways)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch threads (the demo build uses the cores)")
    p.add_argument("--rows", default="", help="a planner.jsonl of a build's work folder (default: build the data)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import train.sft as sft
    from pipeline.defaults import base_dir
    from train.data import PaddedCollator, load_examples, tokenize_all
    from train.demo import DemoConfig, build_data

    torch.set_num_threads(a.threads)
    cfg = DemoConfig()
    base = str(base_dir(cfg.base))
    tok = AutoTokenizer.from_pretrained(base)
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(a.rows) if a.rows else Path(tmp) / "planner.jsonl"
        if not a.rows:
            print("[bench] building the demo's training data ...", file=sys.stderr, flush=True)
            build_data(cfg, Path(tmp), base)
        rows, _ = tokenize_all(load_examples(rows_file, "alpaca", tok), tok, cfg.max_seq_len)
    # group_by_length's batches: rows of neighbouring length; a random sample of them
    rows.sort(key=lambda r: len(r["input_ids"]))
    batches = [rows[i:i + a.batch] for i in range(0, len(rows) - a.batch + 1, a.batch)]
    random.Random(a.seed).shuffle(batches)
    batches = batches[:a.batches]
    collate = PaddedCollator(tok.pad_token_id, share_prefix=cfg.share_prefix)

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.train()
    shipped = sft.label_window

    def run(batch, windowed: bool):
        sft.label_window = shipped if windowed else (lambda labels: labels.shape[1])
        t0 = time.perf_counter()
        loss = sft.shared_prefix_loss(model, batch)
        loss.backward()
        dt = time.perf_counter() - t0
        grads = {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}
        model.zero_grad(set_to_none=True)
        return dt, float(loss), grads

    secs = {"windowed": 0.0, "every position": 0.0}
    worst_loss = worst_grad = 0.0
    tokens = 0
    for i, rows_b in enumerate(batches):
        batch = collate(rows_b)
        tokens += int(batch["attention_mask"].sum())
        first = i % 2 == 0
        order = [True, False] if first else [False, True]
        out = {w: run(batch, w) for w in order}
        secs["windowed"] += out[True][0]
        secs["every position"] += out[False][0]
        worst_loss = max(worst_loss, abs(out[True][1] - out[False][1]))
        worst_grad = max(worst_grad, max(float((out[True][2][n] - g).abs().max()) for n, g in out[False][2].items()))
        print(f"[bench] batch {i + 1}/{len(batches)}: {batch['input_ids'].shape[1]} columns, "
              f"groups {batch['prefix_len'].tolist()}, windowed {out[True][0]:.1f} s, "
              f"every position {out[False][0]:.1f} s", file=sys.stderr, flush=True)
    sft.label_window = shipped
    n = len(batches)
    print(f"| label window | s/batch | tokens/s |\n|---|---|---|")
    for name, s in secs.items():
        print(f"| {name} | {s / n:.2f} | {tokens / s:.0f} |")
    print(f"\nspeed-up {secs['every position'] / secs['windowed']:.2f}x over {n} batches of {a.batch} "
          f"({tokens} tokens, {a.threads} threads); largest difference: loss {worst_loss:.2e}, "
          f"LoRA gradient {worst_grad:.2e}")


if __name__ == "__main__":
    main()
