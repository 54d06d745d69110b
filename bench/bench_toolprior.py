"""What the planner's tool prior costs and changes: each task planned with and without it, side by side.

    python bench/bench_toolprior.py                       # data/eval/unseen_tools.jsonl, the demo's weight
    python bench/bench_toolprior.py --weight 4 --limit 10 --tasks data/eval/handwritten.jsonl

Runs the default planner (llama.cpp where installed, else transformers; 1 thread) on each task with
the prior off and at ``--weight`` (default: the demo's setting), alternating per task so both see the
same machine load, and prints seconds per plan for each, their ratio, how many plans' tools changed
and how many match the task's expected tools. Tools absent from the toolbox get catalog stand-ins
(``pipeline.eval``), as in ``bench/bench_demo.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="data/eval/unseen_tools.jsonl")
    p.add_argument("--weight", type=float, help="the prior's weight in logits (default: the demo's)")
    p.add_argument("--limit", type=int)
    a = p.parse_args()
    os.environ.setdefault("REWOO_LLAMACPP_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from pipeline.defaults import default_engines, default_models
    from pipeline.eval import _subset, _with_standins, load_tasks
    from pipeline.planner import make_plan
    from toolkit import default_toolbox

    models = default_models()
    planner, _ = default_engines(models)
    settings = models["pipeline"]
    weight = settings.get("tool_prior", 0.0) if a.weight is None else a.weight
    tasks = load_tasks(REPO / a.tasks)[: a.limit]
    box = _with_standins(default_toolbox(llm_engine=planner, tools=models["tools"]), tasks)
    kw = {"max_new_tokens": settings["planner_max_new_tokens"], "max_steps": settings["max_steps"]}
    make_plan(tasks[0].task, box, planner, **kw)  # warm-up: llguidance's tokenizer, first-call allocations
    seconds = {0.0: 0.0, weight: 0.0}
    right = Counter()
    changed = 0
    for i, task in enumerate(tasks):
        sub = _subset(box, task.tools)
        tools = {}
        for w in ((0.0, weight) if i % 2 == 0 else (weight, 0.0)):
            t = time.perf_counter()
            plan, _ = make_plan(task.task, sub, planner, tool_prior=w, **kw)
            seconds[w] += time.perf_counter() - t
            tools[w] = [s.tool for s in plan]
            right[w] += "tools" in task.expect and Counter(tools[w]) == Counter(task.expect["tools"])
        changed += tools[0.0] != tools[weight]
    n = len(tasks)
    print(f"{a.tasks}: {n} tasks; prior {weight:g} logits vs off")
    print(f"s/plan: off {seconds[0.0] / n:.2f}, prior {seconds[weight] / n:.2f} "
          f"(ratio {seconds[weight] / seconds[0.0]:.2f})")
    print(f"plans whose tools changed: {changed}/{n}; expected tools: off {right[0.0]}/{n}, prior {right[weight]}/{n}")


if __name__ == "__main__":
    main()
