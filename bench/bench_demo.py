"""The demo models: build time, per-task time, and ReWOO vs ReAct on the same tasks and engine.

    python bench/bench_demo.py                       # the shipped (or cached) demo models
    python bench/bench_demo.py --rebuild             # time a fresh build first (~8-10 minutes on 2 cores)
    python bench/bench_demo.py --tasks data/eval/unseen_tools.jsonl

Prints the demo's build time (measured now with --rebuild, else from its manifest), the time of
each showcase task, and for every task file the metrics of `pipeline.eval` in rewoo mode and in
react mode (ReactJsonAgent) with the same demo planner engine, with tokens per task side by side.
ReWOO makes two model calls per task (plus the function caller's) whatever the number of steps;
ReAct makes one per step and resends the growing transcript each time. The paper reports ~5x
fewer tokens for ReWOO on HotpotQA.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import torch

    from pipeline.engines import TransformersEngine
    from pipeline.eval import evaluate_tasks, load_tasks, markdown, rewoo_runner
    from pipeline.rewoo import Pipeline
    from train import demo

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rebuild", action="store_true", help="build the demo models into a temp folder and time it")
    p.add_argument("--tasks", nargs="*", default=["data/eval/in_distribution.jsonl", "data/eval/unseen_tools.jsonl"])
    p.add_argument("--react-iterations", type=int, default=4)
    a = p.parse_args()
    torch.set_num_threads(1)

    if a.rebuild:
        out = Path(tempfile.mkdtemp()) / "demo"
        t = time.perf_counter()
        demo.build(out)
        print(f"demo build: {time.perf_counter() - t:.0f} s (fresh, this machine)")
        models = demo.ensure_demo_models(out)
    else:
        models = demo.ensure_demo_models()
        manifest = Path(models["planner"]).parent / "manifest.json"
        import json
        print(f"demo build: {json.loads(manifest.read_text())['build_seconds']:.0f} s (from its manifest)")

    planner = TransformersEngine(models["planner"])
    caller = TransformersEngine(models["caller"])
    settings = models["pipeline"]
    box = demo.demo_toolbox(llm_engine=planner)
    pipe = Pipeline(planner, caller, planner, box, **settings)
    for task in demo.SHOWCASE:
        t = time.perf_counter()
        r = pipe.run(task)
        print(f"showcase ({time.perf_counter() - t:.2f} s): {task} -> {r.answer}")

    from pipeline.agents import eval_runner
    for path in a.tasks:
        tasks = load_tasks(path)
        reports = {}
        for mode in ("rewoo", "react"):
            factory = (rewoo_runner(planner, caller, planner, **settings) if mode == "rewoo"
                       else eval_runner("react", planner, max_iterations=a.react_iterations))
            reports[mode] = evaluate_tasks(tasks, demo.demo_toolbox(llm_engine=planner), factory, mode, path,
                                           progress=False)
            print(markdown(reports[mode]))
        rw, rc = reports["rewoo"]["metrics"], reports["react"]["metrics"]
        tok_rw = (rw["prompt_tokens"] or 0) + (rw["completion_tokens"] or 0)
        tok_rc = (rc["prompt_tokens"] or 0) + (rc["completion_tokens"] or 0)
        print(f"\n{path}: tokens per task rewoo {tok_rw:.0f} vs react {tok_rc:.0f} "
              f"({tok_rc / max(tok_rw, 1):.2f}x), model calls {rw['llm_calls']} vs {rc['llm_calls']}, "
              f"wall {rw['wall_s']:.2f} s vs {rc['wall_s']:.2f} s per task\n")


if __name__ == "__main__":
    main()
