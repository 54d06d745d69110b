"""Packed vs padded training throughput on the generated planner set, side by side in one run.

    python bench/bench_train.py [--rows 64 --batch 8 --steps 6 --hidden 128 --layers 2 --max-seq-len 2048]

Same model (a random tiny Llama with the tiny BPE tokenizer), same LoRA q/v adapter, same
examples in the same batches; only the collator differs: padding to the longest example of the
batch (``PaddedCollator``) or packing the batch into one row with per-example position ids
(``PackedCollator``). Prints real (non-pad) tokens per second for each and their ratio. Steps
alternate between the two so that noise on a shared machine hits both alike.
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
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="timed steps per collator (after one warm-up step)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--max-seq-len", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from train.catalog import load_catalog
    from train.data import IGNORE, PackedCollator, PaddedCollator, to_example, tokenize
    from train.datagen import GenConfig, generate
    from train.tiny import build_llama, build_tokenizer, tiny_corpus

    torch.set_num_threads(a.threads)
    root = Path(__file__).resolve().parents[1]
    catalog = load_catalog(root / "data" / "catalog" / "tools.json")
    sets = generate(catalog, GenConfig(planner=a.rows, caller=1, eval=1, test=1, seed=a.seed))
    rows = sets["planner_train"]
    tok = build_tokenizer(tiny_corpus() + [r["instruction"] + r["output"] for r in rows[:32]], vocab_size=2048)
    data = [tokenize(to_example(r, f"row {i}"), tok, a.max_seq_len) for i, r in enumerate(rows)]
    lengths = [len(d["input_ids"]) for d in data]
    model = build_llama(tok, hidden_size=a.hidden, num_layers=a.layers, num_heads=4,
                        max_position_embeddings=a.max_seq_len, seed=0)
    model.config._attn_implementation = "sdpa"
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
    rng = random.Random(a.seed)
    order = list(range(len(data)))
    rng.shuffle(order)
    batches = [[data[i] for i in order[j:j + a.batch]] for j in range(0, len(order) - a.batch + 1, a.batch)]
    collators = {"padded": PaddedCollator(tok.pad_token_id), "packed": PackedCollator()}
    stats = {k: {"time": 0.0, "real": 0, "computed": 0} for k in collators}

    def step(name, batch, timed):
        inputs = collators[name](batch)
        t0 = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if timed:
            s = stats[name]
            s["time"] += dt
            s["real"] += sum(len(b["input_ids"]) for b in batch)
            s["computed"] += inputs["input_ids"].numel()
        return float(loss)

    model.train()
    for name in collators:  # warm-up
        step(name, batches[0], timed=False)
    n = min(a.steps, len(batches) - 1)
    for b in batches[1:1 + n]:
        for name in collators:
            step(name, b, timed=True)

    print(f"planner set: {len(data)} rows, tokens per row min {min(lengths)} / mean {sum(lengths) / len(lengths):.0f} "
          f"/ max {max(lengths)} (tiny BPE, vocab {len(tok)})")
    print(f"model: Llama hidden {a.hidden}, {a.layers} layers, LoRA q/v, sdpa, fp32, {a.threads} thread(s); "
          f"batch {a.batch} examples, {n} timed steps each")
    for name, s in stats.items():
        print(f"  {name:6s}: {s['real'] / s['time']:8.0f} real tokens/s  ({s['computed'] / s['real']:.2f} computed "
              f"tokens per real token, {s['time']:.1f} s)")
    ratio = (stats["packed"]["real"] / stats["packed"]["time"]) / (stats["padded"]["real"] / stats["padded"]["time"])
    print(f"packed / padded: {ratio:.2f}x")


if __name__ == "__main__":
    main()
