"""Evaluate an agent on a task file and print metrics.

    python -m pipeline.eval --tasks data/eval/in_distribution.jsonl --json
    python -m pipeline.eval --tasks data/eval/unseen_tools.jsonl --planner ./planner --caller ./caller
    python -m pipeline.eval --tasks FILE --mode react --planner http://127.0.0.1:8000/v1

Task file (JSONL), one object per line (DESIGN.md):
``{"id": "...", "task": "...", "tools": ["name", ...], "expect": {"tools": [...], "answer": "...",
"calls": [{"name": "...", "arguments": {...}}]}}``. ``tools`` limits the toolbox for that task;
every ``expect`` key is optional. A task naming a tool the toolbox lacks is skipped, with the
reason, unless the tool catalog (``data/catalog/tools.json``) describes it: then a stand-in
with the catalog's schema takes its place (:class:`CatalogStandIn`: plans and calls are scored,
running it records an error). A malformed line stops the run with an error naming the file and line.

Metrics (each over the tasks that have what it needs):

- ``plan_parse_rate``: runs whose plan parsed (rewoo) / whose agent finished without an error;
- ``tool_set_accuracy``: the plan's tools equal ``expect.tools`` as a multiset;
- ``tool_order_accuracy``: ... and in the same order;
- ``caller_accuracy``: expected calls matched by the calls made, by AST match in the manner of
  the Berkeley Function Calling Leaderboard: same function name, every required argument
  present, no argument the schema lacks, values of the right type and equal after
  normalisation (strings compared case- and punctuation-insensitively, numbers as numbers,
  lists element-wise, objects key-wise);
- ``answer_exact`` / ``answer_contains``: the normalised answer equals / contains the expected one
  (an answer that is one number equals an expected number of the same value: "27.0" is 27);
- ``llm_calls``, ``prompt_tokens``, ``completion_tokens``, ``wall_s``: means per task.

``--json`` prints ``{"tasks_file", "mode", "n", "skipped": [{id, reason}], "metrics": {...},
"per_task": [...]}``; otherwise a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.config import data_root

EXIT_BAD_INPUT = 2


class TaskFileError(ValueError):
    """A task file line that is not a valid task; the message names the file and line."""


@dataclass
class Task:
    id: str
    task: str
    tools: list[str] | None
    expect: dict
    line: int


_EXPECT_KEYS = {"tools", "answer", "calls"}


def load_tasks(path: str | Path) -> list[Task]:
    """Parse a task file; a bad line raises :class:`TaskFileError` naming ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"task file {path} does not exist")
    tasks, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskFileError(f"{where}: not JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(obj, dict):
            raise TaskFileError(f"{where}: a task is a JSON object, got {type(obj).__name__}")
        if not isinstance(obj.get("task"), str) or not obj["task"].strip():
            raise TaskFileError(f"{where}: 'task' must be a non-empty string")
        tid = str(obj.get("id", f"line{n}"))
        if tid in seen:
            raise TaskFileError(f"{where}: id {tid!r} is used twice")
        seen.add(tid)
        tools = obj.get("tools")
        if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, str) for t in tools)):
            raise TaskFileError(f"{where}: 'tools' must be a list of tool names")
        expect = obj.get("expect", {})
        if not isinstance(expect, dict):
            raise TaskFileError(f"{where}: 'expect' must be an object")
        unknown = set(expect) - _EXPECT_KEYS
        if unknown:
            raise TaskFileError(f"{where}: unknown 'expect' keys {sorted(unknown)}; valid: {sorted(_EXPECT_KEYS)}")
        if "tools" in expect and not (isinstance(expect["tools"], list) and all(isinstance(t, str) for t in expect["tools"])):
            raise TaskFileError(f"{where}: 'expect.tools' must be a list of tool names")
        if "answer" in expect and not isinstance(expect["answer"], str):
            raise TaskFileError(f"{where}: 'expect.answer' must be a string")
        for c in expect.get("calls", []):
            if not (isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("arguments", {}), dict)):
                raise TaskFileError(f"{where}: each of 'expect.calls' must be {{\"name\": str, \"arguments\": object}}")
        tasks.append(Task(tid, obj["task"], tools, expect, n))
    if not tasks:
        raise TaskFileError(f"{path}: no tasks")
    return tasks


# ------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------

def normalize(text: str) -> str:
    """Lowercase, strip accents and punctuation, collapse spaces: for answers and string values."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[^\w\s#]", " ", text)
    return " ".join(text.split())


def _same_number(got: str, want: Any) -> bool:
    """Both answers are one number and equal as numbers ("27.0" answers "27"; "1,517" answers 1517)."""
    def number(text: Any) -> float | None:
        text = str(text).strip().rstrip(".").replace(",", "")
        return float(text) if re.fullmatch(r"-?\d+(\.\d+)?", text) else None
    g, w = number(got), number(want)
    return g is not None and w is not None and abs(g - w) <= 1e-9 * max(1.0, abs(w))


def _value_match(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and abs(float(got) - float(want)) <= 1e-9 * max(1.0, abs(float(want)))
    if isinstance(want, str):
        return isinstance(got, str) and normalize(got) == normalize(want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(_value_match(g, w) for g, w in zip(got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and set(got) == set(want) and all(_value_match(got[k], want[k]) for k in want)
    return got == want


def call_matches(got: dict, want: dict, parameters: dict | None = None) -> bool:
    """AST match of one call against the expected one (see the module docstring)."""
    if got.get("name") != want.get("name"):
        return False
    g, w = got.get("arguments", {}), want.get("arguments", {})
    params = parameters or {}
    props = params.get("properties")
    if props is not None and any(k not in props for k in g):
        return False
    if any(r not in g for r in params.get("required", [])):
        return False
    return all(k in g and _value_match(g[k], v) for k, v in w.items())


def score_calls(made: list[dict], expected: list[dict], schemas: dict[str, dict]) -> tuple[int, int]:
    """(matched, expected): each expected call is matched by at most one call made."""
    free = list(made)
    matched = 0
    for want in expected:
        for i, got in enumerate(free):
            if call_matches(got, want, schemas.get(want["name"])):
                matched += 1
                free.pop(i)
                break
    return matched, len(expected)


def score_task(task: Task, plan_tools: list[str] | None, calls: list[dict], answer: str | None,
               schemas: dict[str, dict]) -> dict:
    """Per-task scores; None where the task does not expect that."""
    exp = task.expect
    out: dict[str, Any] = {}
    if "tools" in exp:
        out["tool_set"] = plan_tools is not None and Counter(plan_tools) == Counter(exp["tools"])
        out["tool_order"] = plan_tools is not None and list(plan_tools) == list(exp["tools"])
    if "calls" in exp:
        out["calls_matched"], out["calls_expected"] = score_calls(calls, exp["calls"], schemas)
    if "answer" in exp:
        got, want = normalize(answer or ""), normalize(exp["answer"])
        out["answer_exact"] = got == want or _same_number(answer or "", exp["answer"])
        out["answer_contains"] = bool(want) and want in got
    return out


def aggregate(rows: list[dict]) -> dict:
    """The metrics table from per-task rows (skipped tasks excluded)."""
    def mean(key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return round(sum(vals) / len(vals), 4) if vals else None

    def rate(key):
        vals = [bool(r["scores"][key]) for r in rows if key in r["scores"]]
        return round(sum(vals) / len(vals), 4) if vals else None

    matched = sum(r["scores"].get("calls_matched", 0) for r in rows)
    expected = sum(r["scores"].get("calls_expected", 0) for r in rows)
    return {
        "tasks": len(rows),
        "plan_parse_rate": round(sum(r["parsed"] for r in rows) / len(rows), 4) if rows else None,
        "tool_set_accuracy": rate("tool_set"),
        "tool_order_accuracy": rate("tool_order"),
        "caller_accuracy": round(matched / expected, 4) if expected else None,
        "answer_exact": rate("answer_exact"),
        "answer_contains": rate("answer_contains"),
        "llm_calls": mean("llm_calls"),
        "prompt_tokens": mean("prompt_tokens"),
        "completion_tokens": mean("completion_tokens"),
        "wall_s": mean("wall_s"),
    }


def _task_outcomes(row: dict) -> dict[str, bool]:
    s = row["scores"]
    out = {k: bool(s[k]) for k in ("tool_set", "answer_exact") if k in s}
    if s.get("calls_expected"):
        out["calls"] = s["calls_matched"] == s["calls_expected"]
    return out


def compare_reports(before: list[dict], after: list[dict]) -> list[dict]:
    """Task by task, what ``after``'s reports won and lost against ``before``'s: for every task
    file and mode in both, and every score both have for a task (``tool_set``, ``calls``: every
    expected call matched, ``answer_exact``), the ids right after and wrong before (``won``) and
    the reverse (``lost``). A task in only one of the two is counted in ``unpaired``, not compared."""
    def keyed(reports):
        return {(Path(r["tasks_file"]).name, r["mode"]): {row["id"]: row for row in r["per_task"]} for r in reports}

    old, new = keyed(before), keyed(after)
    out = []
    for key in [k for k in new if k in old]:
        a, b = old[key], new[key]
        entry = {"tasks_file": key[0], "mode": key[1], "unpaired": len(set(a) ^ set(b)), "scores": {}}
        for tid in [t for t in b if t in a]:
            was, now = _task_outcomes(a[tid]), _task_outcomes(b[tid])
            for score in [s for s in now if s in was]:
                e = entry["scores"].setdefault(score, {"won": [], "lost": [], "same": 0})
                if now[score] and not was[score]:
                    e["won"].append(tid)
                elif was[score] and not now[score]:
                    e["lost"].append(tid)
                else:
                    e["same"] += 1
        out.append(entry)
    return out


def compare_text(diff: list[dict]) -> str:
    lines = []
    for entry in diff:
        for score, e in entry["scores"].items():
            won = f"won {len(e['won'])}" + (f" ({', '.join(e['won'])})" if e["won"] else "")
            lost = f"lost {len(e['lost'])}" + (f" ({', '.join(e['lost'])})" if e["lost"] else "")
            lines.append(f"{entry['tasks_file']} {entry['mode']} {score}: {won}; {lost}; {e['same']} the same")
        if entry["unpaired"]:
            lines.append(f"{entry['tasks_file']} {entry['mode']}: {entry['unpaired']} task(s) in only one report")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    m = report["metrics"]
    lines = [f"**{report['tasks_file']}**, mode `{report['mode']}`: {m['tasks']} tasks run, "
             f"{len(report['skipped'])} skipped", "", "| metric | value |", "|---|---|"]
    for k, v in m.items():
        if k == "tasks":
            continue
        lines.append(f"| {k} | {'n/a' if v is None else v} |")
    for s in report["skipped"]:
        lines.append(f"\nskipped {s['id']}: {s['reason']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------

def _subset(toolbox, names: list[str] | None):
    if names is None:
        return toolbox
    if hasattr(toolbox, "subset"):
        return toolbox.subset(names)
    return {n: toolbox[n] for n in names}


def run_task(task: Task, toolbox, agent_factory, schemas: dict[str, dict]) -> dict:
    """Run one task with ``agent_factory(toolbox) -> runner`` where ``runner(task) -> dict`` with
    ``plan`` (list of {var, tool, input, description}) or None, ``calls`` (list of {name,
    arguments}), ``answer``, ``stats``, ``error`` (None when it ran through)."""
    box = _subset(toolbox, task.tools)
    t0 = time.perf_counter()
    out = agent_factory(box)(task.task)
    wall = time.perf_counter() - t0
    plan = out.get("plan")
    plan_tools = None if plan is None else [s["tool"] for s in plan]
    stats = out.get("stats") or {}
    return {"id": task.id, "parsed": out.get("error") is None and plan is not None,
            "error": out.get("error"), "plan_tools": plan_tools, "plan": plan, "answer": out.get("answer"),
            "scores": score_task(task, plan_tools, out.get("calls", []), out.get("answer"), schemas),
            "llm_calls": stats.get("llm_calls"), "prompt_tokens": stats.get("prompt_tokens"),
            "completion_tokens": stats.get("completion_tokens"), "wall_s": round(stats.get("wall_s", wall), 4)}


def rewoo_runner(planner, caller, solver, **pipeline_kw):
    """An ``agent_factory`` for the ReWOO pipeline. With catalog stand-ins in the toolbox there is
    no replanning: a stand-in fails by design, and a second round would be scored as the plan."""
    from pipeline.engines import recording
    from pipeline.plan import PlanError
    from pipeline.rewoo import Pipeline

    def factory(box):
        kw = dict(pipeline_kw)
        if any(isinstance(t, CatalogStandIn) for t in (box.values() if hasattr(box, "values") else box)):
            kw["replan"] = 0
        pipe = Pipeline(planner, caller, solver, box, **kw)

        def run(task: str) -> dict:
            t0 = time.perf_counter()
            with recording() as spent:
                try:
                    r = pipe.run(task)
                except PlanError as e:  # the planner's calls still count
                    stats = {"llm_calls": len(spent), "wall_s": time.perf_counter() - t0,
                             "prompt_tokens": sum(c["prompt_tokens"] or 0 for c in spent),
                             "completion_tokens": sum(c["completion_tokens"] or 0 for c in spent)}
                    return {"plan": None, "calls": [], "answer": None, "stats": stats, "error": str(e)}
            calls = [{"name": c.tool, "arguments": c.arguments} for c in r.calls.values() if c.error is None]
            return {"plan": r.plan.to_list(), "calls": calls, "answer": r.answer, "stats": r.stats, "error": None}
        return run
    return factory


CATALOG = data_root() / "catalog" / "tools.json"


class CatalogStandIn(dict):
    """A tool of the catalog (``data/catalog/tools.json``) that this toolbox does not implement,
    so that tasks written for it (``train.datagen``'s held-out-tools sets) can be evaluated: the
    planner sees its line, the function caller its exact JSON schema, and tool-set, order and
    caller metrics are scored; running it records an error as its evidence, which the run
    survives (answers of such tasks are not meaningful)."""

    def __init__(self, entry: dict):
        super().__init__(name=entry["name"], description=entry.get("description", ""),
                         parameters=entry.get("parameters", {"type": "object", "properties": {}}))

    @property
    def name(self) -> str:
        return self["name"]

    def __call__(self, **arguments):
        raise NotImplementedError(f"{self['name']} is a catalog tool with no implementation in this toolbox "
                                  "(an evaluation stand-in)")

    def as_tool(self):
        """The stand-in as a :class:`toolkit.Tool` (the agents' toolboxes hold Tools): the catalog's
        description, its parameters as inputs (those it does not require nullable), and a call
        that fails with the same error (once its arguments fit the schema), which the agent reads
        as the step's observation."""
        import inspect

        from toolkit import Tool

        schema = self["parameters"]
        required = set(schema.get("required") or ())
        inputs = {}
        for arg, spec in (schema.get("properties") or {}).items():
            kind = spec.get("type") if spec.get("type") in ("string", "integer", "number", "boolean", "array",
                                                              "object") else "any"
            inputs[arg] = {"type": kind, "description": spec.get("description") or arg,
                           **({"enum": spec["enum"]} if isinstance(spec.get("enum"), list) else {}),
                           **({} if arg in required else {"nullable": True})}
        stand_in = self

        def forward(self, **arguments):
            stand_in(**arguments)

        forward.__signature__ = inspect.Signature(
            [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
            + [inspect.Parameter(a, inspect.Parameter.KEYWORD_ONLY,
                                 default=None if spec.get("nullable") else inspect.Parameter.empty)
               for a, spec in inputs.items()])
        cls = type(f"StandIn_{self.name}", (Tool,), {"name": self.name, "description": self["description"],
                                                      "inputs": inputs, "output_type": "string",
                                                      "forward": forward})
        return cls()


def catalog_standins(names: list[str], catalog: Path = CATALOG) -> dict[str, CatalogStandIn]:
    """Stand-ins for those of ``names`` that the catalog describes."""
    if not names or not catalog.is_file():
        return {}
    data = json.loads(catalog.read_text(encoding="utf-8"))
    entries = data["tools"] if isinstance(data, dict) else data
    return {e["name"]: CatalogStandIn(e) for e in entries if e.get("name") in names}


def _with_standins(toolbox, tasks: list[Task]):
    """The toolbox plus catalog stand-ins for tools the tasks name and it lacks."""
    wanted = sorted({t for task in tasks for t in (task.tools or []) if t not in toolbox})
    extra = catalog_standins(wanted)
    if not extra:
        return toolbox
    return {**{n: toolbox[n] for n in toolbox}, **extra}


def _schemas(toolbox) -> dict[str, dict]:
    from pipeline.formats import tool_specs
    return {s.name: s.parameters for s in tool_specs(toolbox)}


def evaluate_tasks(tasks: list[Task], toolbox, agent_factory, mode: str = "rewoo", tasks_file: str = "",
                   progress: bool = True) -> dict:
    """Run ``tasks`` and return the report (see the module docstring)."""
    from tqdm import tqdm

    toolbox = _with_standins(toolbox, tasks)
    schemas = _schemas(toolbox)
    rows, skipped = [], []
    for task in tqdm(tasks, desc=f"eval {mode}", unit="task", disable=not progress, file=sys.stderr):
        missing = [t for t in (task.tools or []) if t not in toolbox]
        if missing:
            skipped.append({"id": task.id, "reason": f"tools not in the toolbox: {', '.join(missing)}"})
            continue
        rows.append(run_task(task, toolbox, agent_factory, schemas))
    return {"tasks_file": tasks_file, "mode": mode, "n": len(tasks), "skipped": skipped,
            "metrics": aggregate(rows), "per_task": rows}


def build_parser() -> argparse.ArgumentParser:
    from pipeline import run as cli
    from toolkit.helpformat import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m pipeline.eval", description="Evaluate an agent on a task file.",
                                formatter_class=HelpFormatter)
    p.add_argument("--tasks", required=True, help="task file (JSONL, one task per line: see the module docstring)")
    p.add_argument("--mode", choices=["rewoo", "react", "code"], default="rewoo",
                   help="the agent to evaluate: rewoo (plan, then work, then solve), or the ReAct / Code agents")
    p.add_argument("--planner", help="planner model: local path, model name or http://host:port/v1 "
                                     "(default: the demo models)")
    p.add_argument("--caller", help="function-caller model (same forms); default: the default caller adapter "
                                    "when the planner is the default, else none")
    p.add_argument("--solver", help="solver model (same forms); default: the planner's engine")
    p.add_argument("--backend", choices=["auto", "transformers", "llamacpp"], default=None,
                   help="what runs the default models (as pipeline.run): auto is llamacpp when installed; "
                        "default $REWOO_BACKEND or auto")
    p.add_argument("--tools", action="append", metavar="SPEC",
                   help="replace the toolbox (as pipeline.run --tools; repeat to combine)")
    p.add_argument("--template", choices=["alpaca", "chat"], default="alpaca",
                   help="prompt template the models were trained on")
    p.add_argument("--max-new-tokens", type=int, help="planner token budget (default: as pipeline.run)")
    cli.add_tool_prior_arg(p)
    p.add_argument("--threads", type=int, help="torch threads for local models (default: as pipeline.run)")
    p.add_argument("--no-constrain", action="store_true",
                   help="decode without the plan grammar / call schemas (a plan that does not parse lowers "
                        "plan_parse_rate)")
    p.add_argument("--limit", type=int, metavar="N", help="run only the first N tasks of the file (default: all)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (the exit code stays 2)")
    return p


def main(argv: list[str] | None = None) -> int:
    from pipeline import run as cli
    from pipeline.usage import UsageError

    args = build_parser().parse_args(argv)
    try:
        cli.check_tool_prior(args)
        tasks = load_tasks(args.tasks)[: args.limit]
        toolbox, demo, planner, caller, solver = cli.build_engines(args)
        if args.mode == "rewoo":
            factory = rewoo_runner(planner, caller, solver, template=args.template, constrain=not args.no_constrain,
                                   **cli.pipeline_settings(args, demo))
        else:
            try:
                from pipeline.agents import eval_runner
            except ImportError as e:
                raise UsageError(f"--mode {args.mode} needs pipeline.agents, which this checkout does not "
                                 "have yet; use --mode rewoo") from e
            factory = eval_runner(args.mode, cli.agent_engine(demo, planner))
        report = evaluate_tasks(tasks, toolbox, factory, args.mode, str(args.tasks))
    except (TaskFileError, UsageError) as e:
        if args.debug:  # the traceback as well; the exit code stays 2
            import traceback
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(report, ensure_ascii=False) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
