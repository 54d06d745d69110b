"""Generate planner and function-caller datasets from a tool catalog.

    python -m train.datagen --catalog data/catalog/tools.json --out data/generated --seed 0
    python -m train.datagen --tools my_tools.py:toolbox --out data/my_generated --planner 3000

Writes, under ``--out`` (Alpaca JSONL: ``instruction``, ``input`` (empty), ``output``, plus
``meta`` that training ignores):

- ``planner_{split}.jsonl``: instruction = ``formats.planner_instruction(task, tools)`` with a
  sampled subset of tools, output = a plan of 1 to 6 steps (chains, parallel branches, ``llm``
  steps that combine evidence);
- ``caller_{split}.jsonl``: instruction = ``formats.caller_instruction(step, tools)``, output =
  ``formats.render_call(name, arguments)``;
- ``tasks_{split}.jsonl``: the held-out tasks in ``pipeline.eval``'s task-file format;
- ``manifest.json``: counts, the seed, the held-out tools and templates.

Splits: ``train`` and ``eval`` (same distribution, no shared instruction), ``test_tools`` (every
task uses at least one tool that never appears in train or eval, not even in a tool list) and
``test_templates`` (training tools, but task phrasings and step-input styles never used in
train or eval). Every plan passes ``parse_plan``; every call validates against its schema.
Deterministic: the same catalog, arguments and seed give byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema

from pipeline import formats
from pipeline.plan import render_step
from train.catalog import Catalog, CatalogTool, fill_example, fits, load_catalog

SPLITS = ("train", "eval", "test_tools", "test_templates")

# How a task asks for one goal. Train and held-out phrasings never overlap.
TRAIN_FRAMES = ["{G}.", "Please {g}.", "Can you {g}?", "I need you to {g}.", "{G}, please.",
                "Help me {g}.", "I'd like you to {g}.", "Task: {g}."]
HELDOUT_FRAMES = ["Here is what I want: {g}.", "Your job is simple: {g}.", "Would you kindly {g}?",
                  "Without asking questions, {g}."]
# How two goals follow each other.
TRAIN_JOINERS = ["{a}, then {b}", "{a} and then {b}", "first {a}; after that, {b}",
                 "{a}. Next, {b}", "{a}, and {b}"]
HELDOUT_JOINERS = ["{a}, followed by the request to {b}", "{a} -- once that is done, {b}"]
PARALLEL_JOINERS = ["{a}, and {b}", "{a} as well as {b}", "{a}; also {b}", "{a} and {b}"]
HELDOUT_PARALLEL_JOINERS = ["{a}, and in parallel {b}", "{a} alongside the request to {b}"]
# What "{ref}" reads as inside a task's goal.
REF_WORDS = ["it", "the result", "that", "what you found"]
# Other verbs a tool's name may open on (GenConfig.renamed): "get_weather" -> "fetch_weather".
NAME_VERBS = {"get": ["fetch", "lookup", "retrieve", "read"], "search": ["find", "lookup", "browse"],
              "create": ["make", "add", "new"], "send": ["post", "deliver"], "book": ["reserve"],
              "convert": ["change", "transform"], "detect": ["identify", "guess"], "extract": ["pull", "find"],
              "list": ["show", "browse"], "read": ["open", "load"], "translate": ["localize"],
              "summarize": ["condense", "shorten"], "transcribe": ["decode"], "distance": ["measure"]}


def other_names(name: str) -> list[str]:
    """Names a tool ``name`` could go by in another toolbox: its first word in another verb, its
    words in another order, camelCase, without its verb, with a suffix. Never ``name`` itself."""
    words = name.split("_")
    forms = ["_".join([v] + words[1:]) for v in NAME_VERBS.get(words[0], [])]
    forms.append(words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:]))
    if len(words) > 1:
        forms += ["_".join(words[1:] + words[:1]), "_".join(words[1:])]
    forms += [name + "_tool", name + "_api"]
    return [f for f in dict.fromkeys(forms) if f != name]


# The llm step that combines evidence: (goal, prompt); "{refs}" lists the variables.
COMBINE = [
    ("compare the results and say which looks best", "Compare {refs} and say which looks best."),
    ("summarize everything you found", "Summarize what {refs} say in one short paragraph."),
    ("explain how the findings relate", "Explain how {refs} relate to each other."),
    ("write a short answer from the results", "Using {refs}, write a short answer to the task."),
    ("list the key facts", "List the key facts in {refs} as bullet points."),
]
# How a step input spells the arguments of a tool that takes more than one string.
TRAIN_INPUT_STYLES = ["kv_eq", "kv_colon", "json"]
HELDOUT_INPUT_STYLES = ["prose"]


@dataclass(frozen=True)
class DraftStep:
    """A step being generated: tool, filled goal, arguments (evidence as ``#E<n>``)."""

    var: str
    tool: CatalogTool
    goal: str          # task-facing phrase ("it" for earlier evidence)
    description: str   # the Plan: line, earlier evidence named by its variable
    args: dict
    parallel: bool = False  # shares no dependency with the step before it
    gives: str = "text"     # the type of its evidence (its example's ``gives``)


@dataclass
class GenConfig:
    """What to generate; the CLI flags map one to one."""

    planner: int = 2000          # planner rows in train
    caller: int = 2000           # caller rows in train
    eval: int = 100              # rows of each kind in eval
    test: int = 200              # rows of each kind in each test split
    heldout_tools: int = 8       # tools kept out of train/eval (never built-ins, never llm)
    min_tools: int = 3           # fewest tools listed in a planner prompt
    max_tools: int = 12          # most tools listed in a planner prompt
    max_steps: int = 6           # longest plan
    seed: int = 0
    heldout: list[str] = field(default_factory=list)  # explicit held-out tools (overrides the count)
    # Chain a step onto earlier evidence only when the evidence fits what the step takes (the
    # catalog's ``gives``/``takes``, :func:`train.catalog.fits`); False pairs them at random (the
    # generator before 2026-12-01: "get the latest results of the current time").
    typed: bool = True
    # The share of train planner rows whose listed tools (built-ins and llm excepted) go by other
    # names (:func:`other_names`), in the list and the plan alike: the planner learns to take a tool's
    # name from the list it is given, as it must for tools it never saw. Drawn from a generator of
    # its own, so every other row (caller rows, eval and test splits) stays the same.
    renamed: float = 0.0
    # Values that make sense together (train.catalog.fill_example's ``distinct``): the catalog's
    # linked slots drawn together, no two arguments the same ("USD to USD", "Berlin to Berlin").
    distinct: bool = True


def _join(parts: Sequence[str], joiners: Sequence[str], rng: random.Random) -> str:
    text = parts[0]
    for p in parts[1:]:
        text = rng.choice(joiners).format(a=text, b=p)
    return text


def _refs(vars_: Sequence[str]) -> str:
    return vars_[0] if len(vars_) == 1 else ", ".join(vars_[:-1]) + " and " + vars_[-1]


def _step_input(step: DraftStep, style: str) -> str:
    """The text inside ``tool[...]``: the value for a one-string tool, else all arguments."""
    spec = step.tool.spec
    if formats.takes_one_string(spec):
        (value,) = step.args.values()
        return value
    if not step.args:
        return ""
    items = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in step.args.items()]
    if style == "kv_eq":
        return ", ".join(f"{k}={v}" for k, v in items)
    if style == "kv_colon":
        return "; ".join(f"{k}: {v}" for k, v in items)
    if style == "json":
        return json.dumps(step.args, ensure_ascii=False)
    if style == "prose":
        return " and ".join(f"{k.replace('_', ' ')} is {v}" for k, v in items)
    raise ValueError(f"unknown input style {style!r}")


class Generator:
    """Draws plans, tasks and calls from a catalog; one instance per output set."""

    def __init__(self, catalog: Catalog, cfg: GenConfig):
        self.catalog, self.cfg = catalog, cfg
        self.rng = random.Random(cfg.seed)
        names = catalog.names
        if cfg.heldout:
            missing = [n for n in cfg.heldout if n not in names]
            if missing:
                raise ValueError(f"held-out tools {missing} are not in the catalog; known: {', '.join(names)}")
            self.heldout = sorted(cfg.heldout)
        else:
            candidates = sorted(t.name for t in catalog.tools if not t.builtin and t.name != "llm")
            k = min(cfg.heldout_tools, max(0, len(candidates) - 2))
            self.heldout = sorted(random.Random(cfg.seed + 1).sample(candidates, k))
        self.train_tools = [t for t in catalog.tools if t.name not in self.heldout]
        self.heldout_set = [t for t in catalog.tools if t.name in self.heldout]
        self.llm = next((t for t in catalog.tools if t.name == "llm"), None)
        self.seen: set[str] = set()
        self.rename_rng = random.Random(cfg.seed + 29)

    # -- plans ------------------------------------------------------------------------------

    def _pick(self, pool: list[CatalogTool], on_ref: bool, must: CatalogTool | None = None, gives: str = "text"):
        """A (tool, example) whose example does / does not consume earlier evidence (of type
        ``gives``, which the example must take when the generator is typed)."""
        tools = [must] if must else pool
        options = [(t, ex) for t in tools for ex in t.examples if ex.uses_ref == on_ref
                   and not (on_ref and self.cfg.typed and not fits(ex.takes, gives))]
        if not options and must is not None:
            return None
        return self.rng.choice(options) if options else None

    def _make_step(self, n: int, tool: CatalogTool, example, ref_vars: Sequence[str], parallel: bool):
        ref_args = _refs(ref_vars) if ref_vars else None
        ref_word = self.rng.choice(REF_WORDS)
        state = self.rng.getstate()
        sense = {"distinct": self.cfg.distinct, "linked": self.catalog.linked}
        goal, args = fill_example(example, tool.spec, self.catalog.slots, self.rng, ref_args, ref_word, **sense)
        self.rng.setstate(state)  # the description repeats the same draw, with variables shown
        desc, again = fill_example(example, tool.spec, self.catalog.slots, self.rng, ref_args, ref_args or "", **sense)
        assert again == args, (again, args)
        return DraftStep(f"#E{n}", tool, goal, desc[0].upper() + desc[1:] + ".", args, parallel, example.gives)

    def _combine_step(self, n: int, ref_vars: Sequence[str]) -> DraftStep:
        goal, prompt = self.rng.choice(COMBINE)
        refs = _refs(ref_vars)
        args = {next(iter(self.llm.spec.parameters["properties"]), "prompt"): prompt.format(refs=refs)}
        desc = f"{goal[0].upper() + goal[1:]} from {refs}."
        return DraftStep(f"#E{n}", self.llm, goal, desc, args)

    def draft_plan(self, pool: list[CatalogTool], must: CatalogTool | None = None) -> tuple[str, list[DraftStep]]:
        """``(shape, steps)``: a plan of 1..max_steps steps over ``pool``; ``must`` appears in it."""
        for _ in range(1000):
            drafted = self._try_plan(pool, must)
            if drafted is not None:
                return drafted
        raise ValueError(f"cannot build a plan around {must.name if must else 'these tools'}: "
                         "its examples never fit (give it examples without {ref})")

    def _try_plan(self, pool: list[CatalogTool], must: CatalogTool | None):
        rng, cfg = self.rng, self.cfg
        n = min(rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6]), cfg.max_steps)
        can_combine = self.llm is not None and self.llm in pool
        shapes = ["single"] if n == 1 else ["chain", "parallel", "fanout"]
        shape = rng.choice(shapes)
        steps: list[DraftStep] = []
        must_at = rng.randrange(n) if must else -1

        def add(on_ref: bool, parallel: bool, source: DraftStep | None = None) -> bool:
            """Draw step i; ``source``: the earlier step whose evidence it may use."""
            i = len(steps)
            forced = must if i == must_at else None
            ref_vars = [source.var] if source else []
            gives = source.gives if source else "text"
            picked = self._pick(pool, on_ref, forced, gives)
            if picked is None and forced is not None:  # the held-out tool lacks this kind of example
                picked = self._pick(pool, not on_ref, forced, gives)
                if picked is not None and picked[1].uses_ref and not ref_vars:
                    return False
                if picked and not picked[1].uses_ref:  # it cannot use the evidence: a step of its own
                    parallel = parallel or (self.cfg.typed and bool(ref_vars))
                    ref_vars = []
            if picked is None:
                return False
            steps.append(self._make_step(i + 1, picked[0], picked[1], ref_vars, parallel))
            return True

        if shape == "single":
            ok = add(False, False)
        elif shape == "chain":
            ok = add(False, False)
            while ok and len(steps) < n:
                ok = add(True, False, steps[-1])
        elif shape == "parallel":
            combine = can_combine and n >= 3 and must_at != n - 1
            k = n - 1 if combine else n
            ok = True
            while ok and len(steps) < k:
                ok = add(False, len(steps) > 0)
            if ok and combine:
                steps.append(self._combine_step(n, [s.var for s in steps]))
        else:  # fanout: one source, branches on it, maybe a combine
            combine = can_combine and n >= 3 and must_at != n - 1
            k = n - 1 if combine else n
            ok = add(False, False)
            while ok and len(steps) < k:
                ok = add(True, len(steps) > 1, steps[0])
            if ok and combine:
                steps.append(self._combine_step(n, [s.var for s in steps[1:]]))
        if not ok or (must is not None and must not in [s.tool for s in steps]):
            return None
        return shape, steps

    def task_text(self, steps: Sequence[DraftStep], heldout_templates: bool) -> tuple[str, str]:
        """``(task, frame)``: the steps' goals joined into one request."""
        rng = self.rng
        frames = HELDOUT_FRAMES if heldout_templates else TRAIN_FRAMES
        seq = HELDOUT_JOINERS if heldout_templates else TRAIN_JOINERS
        par = HELDOUT_PARALLEL_JOINERS if heldout_templates else PARALLEL_JOINERS
        text = steps[0].goal
        for s in steps[1:]:
            text = rng.choice(par if s.parallel else seq).format(a=text, b=s.goal)
        frame = rng.choice(frames)
        return frame.format(g=text, G=text[0].upper() + text[1:]), frame

    # -- rows -------------------------------------------------------------------------------

    def _tool_list(self, used: Sequence[CatalogTool], pool: list[CatalogTool]) -> list[CatalogTool]:
        rng, cfg = self.rng, self.cfg
        used_names = list(dict.fromkeys(t.name for t in used))
        want = rng.randint(max(cfg.min_tools, len(used_names)), max(cfg.max_tools, len(used_names)))
        others = [t for t in pool if t.name not in used_names]
        chosen = [self.catalog[n] for n in used_names] + rng.sample(others, min(len(others), want - len(used_names)))
        rng.shuffle(chosen)
        return chosen

    def planner_row(self, split: str) -> dict | None:
        pool, must, held_tpl = self._split_pool(split)
        shape, steps = self.draft_plan(pool if split != "test_tools" else self.catalog.tools, must)
        task, frame = self.task_text(steps, held_tpl)
        listed = self._tool_list([s.tool for s in steps], pool)
        style = self.rng.choice(HELDOUT_INPUT_STYLES if held_tpl else TRAIN_INPUT_STYLES)
        instruction = formats.planner_instruction(task, [t.spec for t in listed])
        if instruction in self.seen:
            return None
        self.seen.add(instruction)
        names = {t.name: t.name for t in listed}
        if split == "train" and self.cfg.renamed and self.rename_rng.random() < self.cfg.renamed:
            names = self._renames(listed)  # (after the check above: the rows drawn stay the same)
            instruction = formats.planner_instruction(
                task, [dataclasses.replace(t.spec, name=names[t.name]) for t in listed])
        plan = "\n".join(render_step(s.var, names[s.tool.name], _step_input(s, style), s.description) for s in steps)
        parsed = formats.parse_plan(plan, list(names.values()))  # the contract: every plan parses
        assert [(p.var, p.tool) for p in parsed.steps] == [(s.var, names[s.tool.name]) for s in steps], plan
        row = {"instruction": instruction, "input": "", "output": plan,
               "meta": {"split": split, "kind": "planner", "task": task, "shape": shape, "frame": frame,
                        "tools": [names[t.name] for t in listed], "plan_tools": [names[s.tool.name] for s in steps]}}
        renamed = {old: new for old, new in names.items() if new != old}
        if renamed:
            row["meta"]["renamed"] = renamed
        return row

    def _renames(self, listed: Sequence[CatalogTool]) -> dict[str, str]:
        """``{name: name in this row}``: each listed tool but the built-ins and ``llm`` under
        another name, none of them a catalog tool's or another listed tool's."""
        taken = set(self.catalog.names)
        names = {}
        for t in listed:
            if t.builtin or t.name == "llm":
                names[t.name] = t.name
                continue
            options = [n for n in other_names(t.name) if n not in taken]
            names[t.name] = self.rename_rng.choice(options) if options else t.name
            taken.add(names[t.name])
        return names

    def caller_rows(self, split: str) -> list[dict]:
        """Caller rows for the steps of one freshly drawn plan (steps a distributor would send
        to the caller, plus some one-string steps)."""
        pool, must, held_tpl = self._split_pool(split)
        _, steps = self.draft_plan(pool if split != "test_tools" else self.catalog.tools, must)
        rows = []
        for s in steps:
            if must is not None and s.tool is not must:
                continue
            if formats.takes_one_string(s.tool.spec) and self.rng.random() > 0.2:
                continue
            style = self.rng.choice(HELDOUT_INPUT_STYLES if held_tpl else TRAIN_INPUT_STYLES)
            step = formats.Step(s.var, s.tool.name, _step_input(s, style), s.description)
            k = self.rng.randint(2, 6)
            others = [t for t in pool if t is not s.tool]
            listed = [s.tool] + self.rng.sample(others, min(k, len(others)))
            self.rng.shuffle(listed)
            instruction = formats.caller_instruction(step, [t.spec for t in listed])
            if instruction in self.seen:
                continue
            jsonschema.validate(s.args, s.tool.spec.parameters)  # the contract: every call validates
            self.seen.add(instruction)
            rows.append({"instruction": instruction, "input": "", "output": formats.render_call(s.tool.name, s.args),
                         "meta": {"split": split, "kind": "caller", "tool": s.tool.name, "style": style,
                                  "tools": [t.name for t in listed]}})
        return rows

    def _split_pool(self, split: str):
        if split in ("train", "eval"):
            return self.train_tools, None, False
        if split == "test_templates":
            return self.train_tools, None, True
        if split == "test_tools":
            if not self.heldout_set:
                raise ValueError("no held-out tools: the catalog is too small for a test_tools split")
            return self.catalog.tools, self.rng.choice(self.heldout_set), False
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")


def generate(catalog: Catalog, cfg: GenConfig) -> dict[str, list[dict]]:
    """All rows: ``{"planner_train": [...], "caller_train": [...], ..., }`` for every split."""
    gen = Generator(catalog, cfg)
    counts = {"train": (cfg.planner, cfg.caller), "eval": (cfg.eval, cfg.eval),
              "test_tools": (cfg.test, cfg.test), "test_templates": (cfg.test, cfg.test)}
    out: dict[str, list[dict]] = {}
    for split in SPLITS:
        n_plan, n_call = counts[split]
        if split == "test_tools" and not gen.heldout_set:
            continue
        planner, caller = [], []
        for rows, n, make in ((planner, n_plan, lambda: [gen.planner_row(split)]),
                              (caller, n_call, lambda: gen.caller_rows(split))):
            misses = 0
            while len(rows) < n:
                new = [r for r in make() if r is not None]
                misses = 0 if new else misses + 1
                if misses > 1000:
                    raise ValueError(f"cannot draw {n} distinct {split} rows from this catalog "
                                     f"(got {len(rows)}); ask for fewer")
                rows.extend(new[: n - len(rows)])
        out[f"planner_{split}"], out[f"caller_{split}"] = planner, caller
    out["_heldout"] = [{"tools": gen.heldout, "frames": HELDOUT_FRAMES, "joiners": HELDOUT_JOINERS,
                        "input_styles": HELDOUT_INPUT_STYLES}]
    return out


def eval_tasks(rows: Sequence[dict]) -> list[dict]:
    """``pipeline.eval`` task rows from planner rows (``expect.tools``: the plan's tools)."""
    return [{"id": f"{r['meta']['split']}-{i}", "task": r["meta"]["task"], "tools": r["meta"]["tools"],
             "expect": {"tools": r["meta"]["plan_tools"]}} for i, r in enumerate(rows)]


def write(out_dir: str | Path, sets: dict[str, list[dict]], catalog: Catalog, cfg: GenConfig) -> dict:
    """Write every set as JSONL plus ``manifest.json``; returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, rows in sets.items():
        if name.startswith("_"):
            continue
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        files[path.name] = len(rows)
        if name.startswith("planner_test"):
            tpath = out / f"tasks_{name.removeprefix('planner_')}.jsonl"
            tpath.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in eval_tasks(rows)),
                             encoding="utf-8")
            files[tpath.name] = len(rows)
    manifest = {"catalog": catalog.source, "tools": catalog.names, "seed": cfg.seed, "typed": cfg.typed, "distinct": cfg.distinct,
                "heldout": sets["_heldout"][0], "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


GEN_HELP = {
    "planner": "planner rows in the train split",
    "caller": "function-caller rows in the train split",
    "eval": "rows of each kind in the eval split",
    "test": "rows of each kind in each test split (test_tools, test_templates)",
    "heldout_tools": "how many catalog tools to keep out of train and eval (never built-ins, never llm)",
    "min_tools": "fewest tools listed in a planner prompt",
    "max_tools": "most tools listed in a planner prompt",
    "max_steps": "longest plan, in steps",
    "seed": "random seed (the same catalog, flags and seed give byte-identical files)",
}


def build_parser() -> argparse.ArgumentParser:
    from toolkit.helpformat import HelpFormatter, summary

    p = argparse.ArgumentParser(prog="python -m train.datagen", description=summary(__doc__),
                                formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--catalog", default="data/catalog/tools.json", help="tool catalog (.json/.jsonl)")
    src.add_argument("--tools", help="a user toolbox instead: FILE.py:NAME or module:NAME")
    p.add_argument("--out", default="data/generated", help="output folder")
    d = GenConfig()
    for name in ("planner", "caller", "eval", "test", "heldout_tools", "min_tools", "max_tools", "max_steps", "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name), metavar="N",
                       help=GEN_HELP[name])
    p.add_argument("--heldout", default="", metavar="TOOL,...",
                   help="comma-separated tools to hold out (overrides --heldout-tools)")
    p.add_argument("--renamed", type=float, default=0.0, metavar="SHARE",
                   help="share of train planner rows whose listed tools (not built-ins, not llm) go by other "
                        "names, in the list and the plan (get_weather -> fetch_weather): teaches taking names "
                        "from the list, for tools never seen; the other rows stay the same")
    p.add_argument("--untyped", action="store_true",
                   help="chain steps onto earlier evidence at random, ignoring the catalog's gives/takes, "
                        "and draw each slot on its own, allowing equal arguments (the generator before "
                        "2026-12-01)")
    return p


def main(argv: list[str] | None = None) -> dict:
    p = build_parser()
    a = p.parse_args(argv)
    if not 0.0 <= a.renamed <= 1.0:
        p.error(f"--renamed is a share of rows, from 0 to 1 (got {a.renamed})")
    catalog = load_catalog(a.tools or a.catalog)
    cfg = GenConfig(a.planner, a.caller, a.eval, a.test, a.heldout_tools, a.min_tools, a.max_tools,
                    a.max_steps, a.seed, [h for h in a.heldout.split(",") if h], typed=not a.untyped,
                    distinct=not a.untyped, renamed=a.renamed)
    manifest = write(a.out, generate(catalog, cfg), catalog, cfg)
    print(f"wrote {sum(v for k, v in manifest['files'].items() if not k.startswith('tasks'))} rows to {a.out} "
          f"({len(catalog.tools)} tools; held out: {', '.join(manifest['heldout']['tools']) or 'none'})")
    for name, n in manifest["files"].items():
        print(f"  {name}: {n}")
    return manifest


if __name__ == "__main__":
    main()
