"""The default models on the evaluation sets: ReWOO, ReAct (JSON) and code agents side by side.

    python bench/bench_demo.py                                   # every set, every mode (long on 2 cores)
    python bench/bench_demo.py --modes rewoo --out rewoo.json    # one mode, results kept
    python bench/bench_demo.py --modes react code --limit 15 --out agents.json
    python bench/bench_demo.py --table rewoo.json agents.json    # one table from saved results
    python bench/bench_demo.py --compare old.json new.json       # the tasks new.json won and lost, by id
    python bench/bench_demo.py --speed                           # seconds per task, 1 vs 2 threads, merged vs adapters
    python bench/bench_demo.py --agreement rewoo.json            # constrained vs unconstrained plans

Sets: ``data/eval/in_distribution.jsonl`` (shapes the adapters trained on, over the demo
database), ``data/eval/unseen_tools.jsonl`` (catalog tools held out of training, given at run
time; evaluated with catalog stand-ins, so answers are not scored there) and
``data/eval/handwritten.jsonl`` (written by hand like real users) and ``data/eval/save_files.jsonl``
(30 calls of the function caller, a file name and a text copied from each task). One engine for every mode: the
base with the planner adapter (the caller adapter for ReWOO's function calls). Columns are
``pipeline.eval``'s metrics; tokens are prompt + completion per task. ``--limit N`` runs the
first N tasks of each set (the same tasks for every mode). Under the table (and ``--table``'s), a
line per set and agent mode: how many times fewer tokens a task ReWOO spends than the agent, over
the set and over its tasks of one tool and of two or more, and whether ReWOO's tool-set and exact
answers are at least the agent's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETS = ["data/eval/in_distribution.jsonl", "data/eval/unseen_tools.jsonl", "data/eval/handwritten.jsonl",
        "data/eval/save_files.jsonl"]
COLUMNS = [("tool_set_accuracy", "tool-set"), ("tool_order_accuracy", "tool-order"), ("caller_accuracy", "caller AST"),
           ("answer_exact", "exact"), ("answer_contains", "contains")]


def run(modes: list[str], limit: int | None, sets: list[str], react_iterations: int,
        tool_prior: float | None = None) -> list[dict]:
    from pipeline.agents import eval_runner
    from pipeline.defaults import agent_engine, default_engines, default_models
    from pipeline.eval import evaluate_tasks, load_tasks, rewoo_runner
    from toolkit import default_toolbox

    models = default_models()
    planner, caller = default_engines(models)
    agent = agent_engine(models, planner)  # the agent adapter where the manifest ships one
    settings = dict(models["pipeline"])
    if tool_prior is not None:
        settings["tool_prior"] = tool_prior
    results = []
    for path in sets:
        tasks = load_tasks(REPO / path)[:limit]
        for mode in modes:
            box = default_toolbox(llm_engine=planner, tools=models["tools"])
            factory = (rewoo_runner(planner, caller, planner, **settings) if mode == "rewoo"
                       else eval_runner(mode, agent, max_iterations=react_iterations))
            t0 = time.perf_counter()
            report = evaluate_tasks(tasks, box, factory, mode, path, progress=True)
            report["seconds"] = round(time.perf_counter() - t0, 1)
            if mode == "rewoo":
                report["tool_prior"] = settings.get("tool_prior", 0.0)
            results.append(report)
            print(f"{path} {mode}: {json.dumps(report['metrics'])}", file=sys.stderr, flush=True)
    return results


def table(results: list[dict]) -> str:
    head = "| set | mode | tasks | " + " | ".join(c for _, c in COLUMNS) + " | tokens/task | s/task |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        m = r["metrics"]
        cells = ["n/a" if m.get(k) is None else f"{m[k]:.2f}" for k, _ in COLUMNS]
        tokens = (m.get("prompt_tokens") or 0) + (m.get("completion_tokens") or 0)
        lines.append(f"| {Path(r['tasks_file']).stem} | {r['mode']} | {m['tasks']} | " + " | ".join(cells)
                     + f" | {tokens:.0f} | {m.get('wall_s') or 0:.1f} |")
    return "\n".join(lines)


def _expected_tools(tasks_file: str) -> dict[str, int]:
    """``{task id: how many tool calls it expects}`` (tasks without a tool expectation left out)."""
    from pipeline.eval import load_tasks

    path = Path(tasks_file)
    path = path if path.is_absolute() or path.is_file() else REPO / path
    return {t.id: len(t.expect["tools"]) for t in load_tasks(path) if t.expect.get("tools")}


def ratios(results: list[dict]) -> str:
    """ReWOO against each agent mode, set by set: how many times fewer tokens (prompt + completion)
    a task ReWOO spends, over the tasks both ran, over those that expect one tool and those that
    expect two or more (a ReAct run takes at least two model calls, each sending its system prompt:
    a task of one tool is its cheapest case); and whether ReWOO's tool-set and exact answers are at
    least as good (issue 11's target: >= 5x fewer at equal or better accuracy)."""
    runs = {(Path(r["tasks_file"]).stem, r["mode"]): r for r in results}
    lines = []
    for (name, mode), agent in runs.items():
        rewoo = runs.get((name, "rewoo"))
        if mode == "rewoo" or rewoo is None:
            continue
        expected = _expected_tools(agent["tasks_file"])
        spent = [{row["id"]: (row.get("prompt_tokens") or 0) + (row.get("completion_tokens") or 0)
                  for row in r["per_task"]} for r in (rewoo, agent)]
        parts = []
        for label, keep in (("all", lambda n: True), ("one tool", lambda n: n == 1), ("2+ tools", lambda n: n >= 2)):
            ids = [i for i in spent[0] if i in spent[1] and keep(expected.get(i, 0))]
            ours, theirs = sum(spent[0][i] for i in ids), sum(spent[1][i] for i in ids)
            if ids and ours:
                parts.append(f"{label} {theirs / ours:.1f}x ({len(ids)} tasks)")
        shown, worse = [], False
        for key, label in (("tool_set_accuracy", "tool-set"), ("answer_exact", "exact")):
            a, b = rewoo["metrics"].get(key), agent["metrics"].get(key)
            if a is not None and b is not None:
                shown.append(f"{label} {a:.2f} vs {b:.2f}")
                worse = worse or a < b
        lines.append(f"{name}: rewoo spends {', '.join(parts) or 'n/a'} fewer tokens a task than {mode}; "
                     f"accuracy {'WORSE' if worse else 'equal or better'} ({', '.join(shown) or 'not scored'})")
    return "\n".join(lines)


def speed(task: str = "Compute 12 + 30.", repeats: int = 3) -> None:
    """Seconds per task on the default models with 1 and 2 torch threads (after a warm-up run),
    and the planner's call on one base with switched adapters vs a merged copy of the planner."""
    import torch

    from pipeline import formats
    from pipeline.defaults import default_models, default_pipeline
    from pipeline.engines import TransformersEngine

    models = default_models()
    pipe = default_pipeline(models)
    pipe.run(task)  # warm-up: llguidance's tokenizer, first-call allocations
    for threads in (1, 2):
        torch.set_num_threads(threads)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            r = pipe.run(task)
            times.append(time.perf_counter() - t)
        print(f"{threads} thread(s): best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s "
              f"per task ({task!r} -> {r.answer!r}, {r.stats['prompt_tokens']} + {r.stats['completion_tokens']} tokens)")
    torch.set_num_threads(1)
    merged = TransformersEngine(models["base"], adapter=models["adapters"]["planner"])
    merged.model = merged.model.merge_and_unload()
    merged.adapter_name = None
    prompt = formats.planner_prompt(task, pipe.toolbox)
    for name, engine in (("one base, adapters switched", pipe.planner), ("merged planner copy", merged)):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            out = engine.complete(prompt, stop_sequences=formats.ALPACA_STOP, max_new_tokens=64)
            times.append(time.perf_counter() - t)
        print(f"planner call, {name}: best {min(times):.2f} s ({out.prompt_tokens} + {out.completion_tokens} tokens)")


def agreement(report_files: list[str]) -> None:
    """Constrained vs unconstrained plans: for the rewoo runs in ``report_files`` (their plans were
    written under the grammar), plan each task again without it and compare the parsed plans."""
    from pipeline.defaults import default_engines, default_models
    from pipeline.eval import load_tasks
    from pipeline.plan import Plan, PlanError
    from pipeline.planner import ground_file_names, make_plan
    from toolkit import default_toolbox

    models = default_models()
    planner, _ = default_engines(models)
    box = default_toolbox(llm_engine=planner, tools=models["tools"])
    settings = models["pipeline"]
    same = parsed = total = 0
    for f in report_files:
        for report in json.loads(Path(f).read_text()):
            if report["mode"] != "rewoo" or "unseen" in report["tasks_file"]:
                continue  # (unseen-tools tasks list catalog tools this toolbox lacks)
            tasks = {t.id: t for t in load_tasks(REPO / report["tasks_file"])}
            for row in report["per_task"]:
                total += 1
                try:
                    free, _ = make_plan(tasks[row["id"]].task, box, planner, constrain=False,
                                        max_new_tokens=settings["planner_max_new_tokens"], max_steps=settings["max_steps"])
                except PlanError:
                    continue
                parsed += 1
                task = tasks[row["id"]].task  # the pipeline's plans are grounded; so is this one
                free = Plan(tuple(ground_file_names(step, task)[0] for step in free.steps))
                same += row["plan"] is not None and free.to_list() == row["plan"]
    print(f"unconstrained plans that parse: {parsed}/{total}; constrained plan equal to it: {same}/{parsed} "
          f"({same / max(parsed, 1):.1%})")


def _reports(path: str) -> list[dict]:
    """A file written by ``--out``, or exit 2 with one line saying what is wrong with it."""
    try:
        reports = json.loads(Path(path).read_text())
        if isinstance(reports, list) and all("per_task" in r and "tasks_file" in r for r in reports):
            return reports
        problem = "not a list of reports written by --out"
    except (OSError, ValueError) as e:
        problem = str(e)
    print(f"bench_demo: {path}: {problem}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=["rewoo", "react", "code"], choices=["rewoo", "react", "code"])
    p.add_argument("--sets", nargs="+", default=SETS)
    p.add_argument("--limit", type=int, help="first N tasks of each set")
    p.add_argument("--react-iterations", type=int, default=4, help="most steps of the ReAct and code agents")
    p.add_argument("--tool-prior", type=float, metavar="LOGITS",
                   help="the ReWOO planner's tool prior (pipeline.formats.toolprior); default: the demo's setting")
    p.add_argument("--out", help="also write the reports as JSON here")
    p.add_argument("--table", nargs="+", metavar="JSON", help="print one table from saved reports and stop")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"),
                   help="name the tasks the second saved report won and lost against the first, and stop")
    p.add_argument("--speed", action="store_true", help="time one task with 1 and 2 torch threads and stop")
    p.add_argument("--agreement", nargs="+", metavar="JSON",
                   help="compare the constrained plans of saved rewoo reports with unconstrained ones and stop")
    a = p.parse_args()
    if a.table:
        reports = [r for f in a.table for r in _reports(f)]
        print(table(reports) + (f"\n\n{text}" if (text := ratios(reports)) else ""))
        return
    if a.compare:
        from pipeline.eval import compare_reports, compare_text

        before, after = (_reports(f) for f in a.compare)
        print(compare_text(compare_reports(before, after)))
        return
    import torch

    torch.set_num_threads(1)
    if a.speed:
        speed()
        return
    if a.agreement:
        agreement(a.agreement)
        return
    if a.tool_prior is not None and not a.tool_prior >= 0:
        p.error(f"--tool-prior must be >= 0 logits, not {a.tool_prior}")
    results = run(a.modes, a.limit, a.sets, a.react_iterations, a.tool_prior)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1, ensure_ascii=False, default=str))
    print(table(results) + (f"\n\n{text}" if (text := ratios(results)) else ""))


if __name__ == "__main__":
    main()
