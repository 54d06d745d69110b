"""llama.cpp on this CPU, side by side: the default planner as GGUF at each quantization type.

    python bench/bench_llamacpp.py                         # speed + accuracy, all types (~15-25 min)
    python bench/bench_llamacpp.py --only speed --types Q8_0,Q4_K_M
    python bench/bench_llamacpp.py --only accuracy --limit 20

Per type (BF16, Q8_0, Q4_K_M, Q2_K, IQ2_M; IQ2_M's importance matrix from planner training rows):
size, effective bits per weight, single-stream decode tok/s through our runner
(:class:`pipeline.llamacpp.LlamaCppModel`, what the server and the engine use) and through
``llama-cpp-python``'s own ``Llama.generate`` on the same file, 8 clients' aggregate tok/s through
our runner, and tool-set / answer accuracy on ``data/eval/handwritten.jsonl`` (``pipeline.eval``
with that planner and the default caller at Q8_0). The transformers path (the default run
before: fp32, the adapter merged) is measured in the same run for the ratio. Also: one default
task's wall time on each backend.

Decode speed: a real planner prompt (~500 tokens), then 128 tokens greedy, EOS ignored; decode
tok/s = 127 / (time of the 128th token - time of the 1st), best of 3, 1 thread for every engine
(side by side; FACTS.md). The one-task figure uses each path's default threads (llama.cpp: every
core; torch: 1 on <= 2 cores). The machine is noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("REWOO_LLAMACPP_THREADS", "1")

N_NEW = 128
TASK = "who's the director of Jurassic Park"


def planner_prompt(tokenizer) -> list[int]:
    from pipeline import formats
    from pipeline.defaults import default_models
    from toolkit import default_toolbox

    box = default_toolbox(tools=default_models(progress=False).get("tools"))
    prompt = formats.planner_prompt(TASK, formats.tool_specs(box), "alpaca", None)
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def decode_rate(stamps: list[float]) -> float:
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def single_stream(model, path: Path, ids) -> tuple[float, float]:
    """``(ours, binding)`` decode tok/s, best of 3, the two interleaved so drift hits both."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_threads=1, n_threads_batch=1, verbose=False)
    ours = binding = 0.0
    for _ in range(3):
        stamps: list[float] = []
        model.generate(ids, N_NEW, on_token=lambda _t: stamps.append(time.perf_counter()) or True, ignore_eos=True)
        ours = max(ours, decode_rate(stamps))
        stamps = []
        llm.reset()
        for _t in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) == N_NEW:
                break
        binding = max(binding, decode_rate(stamps))
    llm.close()
    return ours, binding


def ours_clients(model, ids, clients: int = 8) -> float:
    """Aggregate tok/s of ``clients`` requests started together (distinct prompt tails)."""
    n_new = 64
    done = []
    t0 = time.perf_counter()
    threads = [threading.Thread(target=lambda i=i: done.append(len(model.generate(
        ids + [100 + i], n_new, ignore_eos=True)[0]))) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def transformers_single(models: dict, ids) -> float:
    import torch

    from pipeline.engines import TransformersEngine

    torch.set_num_threads(1)
    engine = TransformersEngine(models["base"], dtype="auto", adapter=models["adapters"]["planner"],
                                adapter_name="planner")
    model = engine.model.merge_and_unload()  # the adapter folded in: the fastest the transformers path gets
    best = 0.0
    for _ in range(3):
        stamps: list[float] = []

        class Stamp:
            def put(self, _v):
                stamps.append(time.perf_counter())

            def end(self):
                pass

        with torch.no_grad():
            model.generate(torch.tensor([ids]), max_new_tokens=N_NEW, min_new_tokens=N_NEW, do_sample=False,
                           streamer=Stamp(), pad_token_id=engine.tokenizer.pad_token_id)
        best = max(best, decode_rate(stamps[1:]))  # the first put is the prompt
    return best


def calibration_file(work: Path) -> Path:
    """Planner training rows (the demo's own generator: prompts the planner sees) as JSONL."""
    from train.demo_data import demo_rows

    rows = demo_rows(0, work / "cal-workspace", 60, 10, 10)
    out = work / "calibration.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows["planner"] + rows["solver"]))
    return out


def export_type(type_name: str, models: dict, work: Path) -> Path:
    """The default planner at ``type_name`` (cached by pipeline.defaults; IQ types with calibration)."""
    from pipeline.defaults import default_gguf, merge_adapter
    from serve import gguf

    if type_name not in gguf.NEEDS_IMATRIX:
        return default_gguf("planner", models, type_name)
    out = work / f"planner-{type_name}.gguf"
    if not out.is_file():
        merged = work / "planner-merged"
        if not merged.is_dir():
            merge_adapter(Path(models["base"]), Path(models["adapters"]["planner"]), merged)
        gguf.export(merged, out, type_name, calibration=calibration_file(work), work=work / "gguf-work")
    return out


def accuracy(planner: str, caller: str | None, limit: int | None, backend: str | None = None) -> dict:
    cmd = [sys.executable, "-m", "pipeline.eval", "--tasks", str(REPO / "data/eval/handwritten.jsonl"), "--json"]
    if planner:
        cmd += ["--planner", planner]
    if caller:
        cmd += ["--caller", caller]
    if backend:
        cmd += ["--backend", backend]
    if limit:
        cmd += ["--limit", str(limit)]
    env = {k: v for k, v in os.environ.items() if k != "REWOO_LLAMACPP_THREADS"}  # default threads: faster
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={**env, "OMP_NUM_THREADS": "1"})
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}"}
    m = json.loads(r.stdout)["metrics"]
    return {k: m.get(k) for k in ("tool_set_accuracy", "answer_exact", "answer_contains", "caller_accuracy", "wall_s")}


def one_task(backend: str) -> float:
    """Wall seconds of one default task inside one process, models loaded and warmed up by
    another task first (the first run pays loading, llguidance's tokenizer and the tool list's
    prompt evaluation; this task's own text and evidence are new to the cache)."""
    code = ("import time,os; from pipeline.defaults import default_pipeline; p=default_pipeline(backend=%r); "
            "p.run('Compute 12 + 30.'); t=time.perf_counter(); r=p.run(%r); "
            "print('WALL', time.perf_counter()-t, repr(r.answer))" % (backend, TASK))
    env = {k: v for k, v in os.environ.items() if k != "REWOO_LLAMACPP_THREADS"}  # the default threads
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**env, "OMP_NUM_THREADS": "1"})
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("WALL")), None)
    if line is None:
        raise RuntimeError(r.stderr[-2000:])
    print(f"  {backend}: {line}", flush=True)
    return float(line.split()[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--types", default="BF16,Q8_0,Q4_K_M,Q2_K,IQ2_M")
    p.add_argument("--only", choices=["speed", "accuracy", "task"], action="append")
    p.add_argument("--limit", type=int, help="eval only the first N hand-written tasks")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args()
    only = set(a.only or ["speed", "accuracy", "task"])

    import torch

    torch.set_num_threads(1)
    from pipeline.defaults import default_gguf, default_models
    from pipeline.llamacpp import LlamaCppModel
    from serve.gguf import GGUFReport, gguf_parameters

    models = default_models()
    types = [t.strip().upper() for t in a.types.split(",") if t.strip()]
    results: dict = {"date": time.strftime("%Y-%m-%d"), "n_new": N_NEW, "types": {}}
    with tempfile.TemporaryDirectory(prefix="bench-llamacpp-") as tmp:
        work = Path(os.environ.get("BENCH_WORK", tmp))
        work.mkdir(parents=True, exist_ok=True)
        caller = str(default_gguf("caller", models, "Q8_0"))
        ids = None
        for t in types:
            path = export_type(t, models, work)
            row = {"file": str(path), "bytes": path.stat().st_size}
            rep = GGUFReport(path, t, path.stat().st_size, gguf_parameters(path), 0.0)
            row["bpw"] = round(rep.bpw, 2)
            if "speed" in only:
                model = LlamaCppModel(path, slots=8, cache_tokens=8 * 1024, context_length=1024, threads=1)
                ids = ids or planner_prompt(model.tokenizer)
                ours, binding = single_stream(model, path, ids)
                row["ours_tok_s"], row["binding_tok_s"] = round(ours, 1), round(binding, 1)
                row["clients8_tok_s"] = round(ours_clients(model, ids), 1)
                row["clients8_shared_prompt_tokens"] = model.prompt_tokens_shared
                model.close()
                row["ours_vs_binding"] = round(row["ours_tok_s"] / row["binding_tok_s"], 3)
            if "accuracy" in only:
                row.update(accuracy(str(path), caller, a.limit))
            results["types"][t] = row
            print(t, json.dumps(row), flush=True)
        if "speed" in only:
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(models["base"])
            ids = planner_prompt(tok)
            results["transformers_fp32_tok_s"] = round(transformers_single(models, ids), 1)
            print("transformers fp32 (merged planner):", results["transformers_fp32_tok_s"], "tok/s", flush=True)
        if "accuracy" in only:
            results["transformers_accuracy"] = accuracy("", None, a.limit, backend="transformers")
            print("transformers accuracy:", results["transformers_accuracy"], flush=True)
        if "task" in only:
            results["one_task_s"] = {b: round(one_task(b), 2) for b in ("llamacpp", "transformers")}
    print()
    print(f"| type | size MiB | bpw | ours tok/s | llama-cpp-python tok/s | ratio | 8 clients tok/s | tool-set | exact |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t, r in results["types"].items():
        print(f"| {t} | {r['bytes'] / 2**20:.1f} | {r['bpw']} | {r.get('ours_tok_s', '-')} | {r.get('binding_tok_s', '-')} "
              f"| {r.get('ours_vs_binding', '-')} | {r.get('clients8_tok_s', '-')} | {r.get('tool_set_accuracy', '-')} "
              f"| {r.get('answer_exact', '-')} |")
    if "transformers_fp32_tok_s" in results:
        hf = results["transformers_fp32_tok_s"]
        print(f"transformers fp32: {hf} tok/s; ours / transformers: "
              + ", ".join(f"{t} {r['ours_tok_s'] / hf:.2f}x" for t, r in results["types"].items() if "ours_tok_s" in r))
    if "transformers_accuracy" in results:
        print("transformers (fp32, adapters) accuracy:", results["transformers_accuracy"])
    if "one_task_s" in results:
        print("one default task, models loaded:", results["one_task_s"])
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
