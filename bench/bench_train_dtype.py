"""LoRA q/v training speed of the default base on this CPU: fp32 vs bf16 weights, side by side.

    python bench/bench_train_dtype.py [--threads 2 --rows 8 --tokens 384 --steps 3]

The same batch (unseen-tools task texts repeated to ``--tokens``), SmolLM2-135M-Instruct from the
cache (``pipeline.defaults.base_dir``), LoRA r=8 on q_proj/v_proj, forward + backward; steps
alternate between the two models after one warm-up step each, so noise hits both alike. Prints
tokens/s for each and their ratio: which dtype ``DemoConfig.planner_dtype`` should take on this CPU
(bf16 wins only where the CPU has AVX512-BF16 or AMX; without, it ran several times slower).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--tokens", type=int, default=384, help="tokens per row (truncated)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per dtype")
    a = p.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.defaults import base_dir

    torch.set_num_threads(a.threads)
    base = str(base_dir())
    tok = AutoTokenizer.from_pretrained(base)
    tasks = [json.loads(line)["task"] for line in (ROOT / "data" / "eval" / "unseen_tools.jsonl").open()][: a.rows]
    batch = tok([t * 40 for t in tasks], return_tensors="pt", padding=True, truncation=True, max_length=a.tokens)
    tokens = int(batch["attention_mask"].sum())
    models = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, attn_implementation="sdpa")
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
        models[name] = model.train()
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for step in range(a.steps + 1):
        for name, model in models.items():
            t = time.perf_counter()
            model(**batch, labels=batch["input_ids"]).loss.backward()
            model.zero_grad(set_to_none=True)
            if step:  # step 0 warms up
                seconds[name].append(time.perf_counter() - t)
    rate = {name: tokens * len(s) / sum(s) for name, s in seconds.items()}
    print(f"{a.rows} rows, {tokens} tokens a step, {a.threads} threads, {a.steps} timed steps each")
    for name in models:
        print(f"  {name}: {rate[name]:.0f} tokens/s  (steps: {', '.join(f'{s:.2f}' for s in seconds[name])} s)")
    print(f"bf16 / fp32: {rate['bf16'] / rate['fp32']:.2f}x")


if __name__ == "__main__":
    main()
