"""Shared-prefix vs plain padded LoRA training steps on planner rows, side by side in one run.

    python bench/bench_shared_prefix.py [--model default|tiny|PATH] [--rows FILE.jsonl] [--batch 8]
                                        [--steps 4] [--threads 1]

Planner rows list the toolbox before the task, so a batch's rows share most of their prompt.
``PaddedCollator(share_prefix=N)`` marks such rows and ``train.sft.shared_prefix_loss`` runs the
shared prefix once, the rest of each row on its KV cache. This bench takes planner rows (a JSONL
of Alpaca rows, else ``train.demo_data``'s own, every row listing the whole toolbox as the
pipeline does at run time), the real base (``default``: SmolLM2-135M-Instruct) or the tiny Llama,
one LoRA q/v adapter, and times forward + backward of the same batches both ways, alternating so
noise on a shared machine hits both alike. It prints the loss of each way (they must agree),
seconds per batch, response tokens per second and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def planner_rows(path: str, n: int, seed: int) -> list[dict]:
    if path:
        return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    from train.demo_data import demo_rows

    with tempfile.TemporaryDirectory() as work:
        return demo_rows(seed, Path(work), n, 0, 0, full_share=1.0)["planner"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="default (SmolLM2-135M-Instruct), tiny, or a folder")
    p.add_argument("--rows", default="", help="a JSONL of planner rows (default: train.demo_data's)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4, help="timed batches per way (after one warm-up each)")
    p.add_argument("--share", type=int, default=64, help="share_prefix: least shared tokens")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from train.data import PaddedCollator, to_example, tokenize
    from train.sft import shared_prefix_loss, weighted_token_loss

    torch.set_num_threads(a.threads)
    if a.model == "tiny":
        from train.tiny import build_llama, build_tokenizer
        tok = build_tokenizer()
        base = build_llama(tok, hidden_size=128, num_layers=2)
    else:
        path = a.model
        if a.model == "default":
            from pipeline.defaults import base_dir
            path = str(base_dir())
        tok = AutoTokenizer.from_pretrained(path)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    model.train()

    rows = planner_rows(a.rows, a.batch * (a.steps + 1), a.seed)
    feats = [tokenize(to_example(r, f"row {i}"), tok, 1024) for i, r in enumerate(rows)]
    batches = [feats[i:i + a.batch] for i in range(0, len(feats) - a.batch + 1, a.batch)]
    collate = PaddedCollator(tok.pad_token_id, share_prefix=a.share)

    def step(batch: dict, shared: bool) -> tuple[float, float]:
        t = time.perf_counter()
        if shared:
            loss = shared_prefix_loss(model, batch)
        else:
            plain = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
            loss = weighted_token_loss(model(**plain), plain["labels"])
        loss.backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - t, float(loss)

    times = {False: [], True: []}
    losses = {False: [], True: []}
    shared_tokens = []
    for i, feats_b in enumerate(batches):
        batch = collate(feats_b)
        if "prefix_len" not in batch:
            print(f"batch {i}: no rows share {a.share} tokens; skipped")
            continue
        shared_tokens.append(int(batch["prefix_len"].max()))
        for shared in ((False, True) if i % 2 == 0 else (True, False)):
            dt, loss = step(batch, shared)
            if i:  # batch 0 warms both ways up
                times[shared].append(dt)
                losses[shared].append(loss)
    resp = sum(sum(y != -100 for y in f["labels"]) for f in feats[a.batch:]) / max(1, len(batches) - 1)
    total = sum(len(f["input_ids"]) for f in feats) / len(feats)
    print(f"model {a.model}, {len(rows)} rows, batch {a.batch}, {a.threads} thread(s); mean row {total:.0f} tokens, "
          f"shared prefix {sum(shared_tokens) / max(1, len(shared_tokens)):.0f} tokens")
    print("| way | s/batch | response tok/s | mean loss |")
    print("|---|---|---|---|")
    for shared, name in ((False, "plain padded"), (True, "shared prefix")):
        s = sum(times[shared]) / max(1, len(times[shared]))
        print(f"| {name} | {s:.2f} | {resp / s:.1f} | {sum(losses[shared]) / max(1, len(losses[shared])):.5f} |")
    ratio = (sum(times[False]) / max(1, len(times[False]))) / (sum(times[True]) / max(1, len(times[True])))
    print(f"shared prefix speed-up: {ratio:.2f}x")


if __name__ == "__main__":
    main()
