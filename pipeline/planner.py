"""The planner: one model call writes the whole plan, before any tool runs (ReWOO).

    from pipeline.planner import make_plan, planner_request
    plan, raw = make_plan("Who directed Oppenheimer?", toolbox, engine)
    req = planner_request("Who directed Oppenheimer?", toolbox, engine)    # the same call, to stream:
    for piece in req.stream(engine): ...

The prompt comes from ``formats`` with the toolbox's ``name[input]: description`` lines. With
``constrain=True`` and an engine that enforces constraints, decoding follows the plan grammar
compiled with the toolbox's tool names and bounded by ``max_new_tokens``, so the output always
parses; otherwise an unparseable output raises ``PlanError`` carrying the raw text
(``err.raw_output``). :func:`planner_request` builds that call once, for :func:`make_plan` and
for streamed dispatch (``Pipeline._streamed_round``).

:func:`ground_file_names` writes a file name the plan misspells as the task wrote it (``Pipeline``
applies it to every step it runs): a small planner respells a name it copies when the tokenizer
splits it otherwise in the plan than in the task ("gobergs.txt" for "groceries.txt"; README, "The
default models"). :func:`ground_held_values` does as much for a value of the database the task
names, in a SQL step's literals (``' Greta Gerwig'``, an unescaped ``'Schindler's List'``), and
:func:`ground_quoted_content` for the text a step saves where the task quotes it (``content=1200``
for "containing 'rent,1200'").

:class:`RepeatedSteps` drops a step that repeats an earlier step of its round (the same tool on the
same input): it would only fetch the same evidence again. A small planner loops so ("Find papers on
mRNA vaccines on arXiv." four times over); later steps are numbered on without the gap and read the
kept step's evidence.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from pipeline import formats
from pipeline.engines import Completion, Constraint, Engine, role
from pipeline.formats import constrain as constrain_mod
from pipeline.formats.toolprior import ToolPrior, task_goals, task_holdings, value_words
from pipeline.plan import Plan, PlanError, Step, references, substitute

# a file name: a word, then maybe folders, then ".ext" (1-5 characters, a letter first); not inside a longer token
FILE_NAME_RE = re.compile(r"(?<![\w/.-])\w[\w/-]*(?:\.[\w-]+)*\.[A-Za-z][A-Za-z0-9]{0,4}(?![\w/-])")


def ground_file_names(step: Step, task: str) -> tuple[Step, dict[str, str]]:
    """``step`` with each file name of its input that the task lacks, but spells nearly like one
    file name of the task, written as the task writes it; and ``{misspelt: task's}``. Nearly:
    ``difflib`` ratio >= 0.6 (case aside), lengths within 30% of each other and the same
    extension, for that name of the task alone. A ``path`` argument without an extension
    ("path=erardens") is held against the task's names without theirs. A name the task has, a name
    made up (``report_summary.txt`` next to ``report.txt``: too long) and a task without file names
    leave the step as it is."""
    names = sorted(set(FILE_NAME_RE.findall(task)))
    fixes: dict[str, str] = {}
    for found in sorted(set(FILE_NAME_RE.findall(step.input))) if names else ():
        if found in names:
            continue
        near = [n for n in names if SequenceMatcher(None, found.lower(), n.lower()).ratio() >= 0.6
                and 0.7 <= len(found) / len(n) <= 1 / 0.7
                and found.rsplit(".", 1)[1].lower() == n.rsplit(".", 1)[1].lower()]  # data.csv is not data.json
        if len(near) == 1:  # two names of the task as near: which one was meant is not known
            fixes[found] = near[0]
    text = FILE_NAME_RE.sub(lambda m: fixes.get(m.group(0), m.group(0)), step.input) if fixes else step.input
    # a path written without its extension ("path=erardens" for "errands.txt"): the task's name whose
    # own name, extension aside, is as near
    bare = _BARE_PATH.search(text) if names else None
    if bare is not None and not _EXTENSION.search(bare.group(2)):
        found = bare.group(2)
        stems = {n: n.rsplit(".", 1)[0] for n in names}
        near = [n for n, stem in stems.items() if SequenceMatcher(None, found.lower(), stem.lower()).ratio() >= 0.6
                and 0.7 <= len(found) / len(stem) <= 1 / 0.7]
        if len(near) == 1:
            fixes[found] = near[0]
            text = text[:bare.start(2)] + near[0] + text[bare.end(2):]
    if not fixes:
        return step, {}
    return dataclasses.replace(step, input=text), fixes


# a step input's path argument ("path=notes", "path: notes;") and a name's extension
_BARE_PATH = re.compile(r"(\bpath\s*[=:]\s*)([\w/-]+)(?=\s*(?:[,;]|$))")
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,4}$")
# a quoted text of a task ('...' or "..."; an apostrophe inside a word opens none) and a step's content argument
_QUOTED = re.compile(r"""(?<![\w'"])'([^'\n]+)'(?!\w)|(?<![\w'"])"([^"\n]+)"(?!\w)""")
_CONTENT = re.compile(r"(\bcontent\s*[=:]\s*)(.*?)\s*$", re.S)


def ground_quoted_content(step: Step, task: str) -> tuple[Step, dict[str, str]]:
    """``step`` with the content it writes as the task quotes it; and ``{as planned: as quoted}``.
    Where the task quotes exactly one text ("Create budget_2027.csv containing 'rent,1200'") and
    the step's ``content`` argument is not it but a part of it ("1200") or spelt nearly like it
    (``difflib`` ratio >= 0.6, case aside: "order number: 5521 shipped" for "order #5521 shipped"),
    the content becomes the quote. Content that reads evidence (``#E1``), a task of two quotes or
    none, and content of other words leave the step as it is."""
    m = _CONTENT.search(step.input)
    quotes = {a or b for a, b in _QUOTED.findall(task)}
    if m is None or len(quotes) != 1 or references(m.group(2)):
        return step, {}
    (quote,), found = quotes, m.group(2)
    if found.strip("'\"") == quote or not found.strip():
        return step, {}
    part = len(found) >= 3 and found.casefold() in quote.casefold()
    if not (part or SequenceMatcher(None, found.casefold(), quote.casefold()).ratio() >= 0.6):
        return step, {}
    return dataclasses.replace(step, input=step.input[:m.start(2)] + quote), {found: quote}


# a quoted SQL literal after "=", "LIKE" or "IN (": its text, '' for a quote inside it
_SQL_LITERAL = re.compile(r"(?i)(?:=|\blike|\bin\s*\(|,)\s*'((?:[^'\n]|'')*)'")


def ground_held_values(step: Step, holds: tuple[tuple[str, str], ...]) -> tuple[Step, dict[str, str]]:
    """``step`` with the values its tool holds (``holds``: ``(tool, value)`` pairs the task names,
    :func:`pipeline.formats.toolprior.task_holdings`) written as the data writes them in its SQL
    literals; and ``{as written: as held}``. A value with a quote in it is doubled inside its literal
    (``'Schindler's List'`` breaks the statement); a literal that is not a held value but has the
    same words as exactly one (case, spacing and "the/of/a" aside: ``' Greta Gerwig'``, ``'Part
    Two of Dune'`` for "Dune: Part Two"), or else some of the words of exactly one (``'Dune'``),
    becomes it. A pattern (``'%Nolan%'``) and another tool's step are left as they are."""
    values = [v for tool, v in holds if tool == step.tool]
    if not values:
        return step, {}
    text, fixes = step.input, {}
    for value in values:
        if "'" in value and f"'{value}'" in text:
            text = text.replace(f"'{value}'", "'" + value.replace("'", "''") + "'")
            fixes[value] = value.replace("'", "''")

    def literal(m: re.Match) -> str:
        found = m.group(1).replace("''", "'")
        words = value_words(found)
        if found in values or not words or "%" in found:
            return m.group(0)
        same = [v for v in values if value_words(v) == words]
        if not same:  # a part of one ('Dune' for "Dune: Part Two"): it matches no row as written
            same = [v for v in values if words < value_words(v)]
        if len(same) != 1:
            return m.group(0)
        fixes[found] = same[0]
        return m.group(0)[:m.start(1) - m.start(0)] + same[0].replace("'", "''") + "'"

    text = _SQL_LITERAL.sub(literal, text)
    if text == step.input:
        return step, {}
    return dataclasses.replace(step, input=text), fixes


class RepeatedSteps:
    """The steps of one planning round, each taken as it is planned (streamed or not): a step whose
    tool and input (whitespace aside, its variables read as renamed) are an earlier kept step's is
    dropped, and its variable then stands for that step's; the kept steps are numbered from
    ``first`` on without gaps, and the inputs that follow use the new numbers.

        repeats = RepeatedSteps()
        kept = [s for s in (repeats.take(step) for step in plan) if s is not None]
        repeats.dropped  # {"#E4": "#E3"}: the planned variable, and the kept one it repeats
    """

    def __init__(self, first: int = 1):
        self.next = first
        self.renamed: dict[str, str] = {}  # planned variable -> the variable it runs as
        self.dropped: dict[str, str] = {}  # planned variable of a dropped step -> the kept one
        self._seen: dict[tuple[str, str], str] = {}

    def take(self, step: Step) -> Step | None:
        """``step`` renumbered, with its input's variables renamed; None when it repeats a kept step."""
        text = substitute(step.input, self.renamed)
        key = (step.tool, " ".join(text.split()))
        if key in self._seen:
            self.renamed[step.var] = self.dropped[step.var] = self._seen[key]
            return None
        var = f"#E{self.next}"
        self.next += 1
        self.renamed[step.var] = self._seen[key] = var
        if var == step.var and text == step.input:
            return step
        return dataclasses.replace(step, var=var, input=text, deps=tuple(references(text)))

    def plan(self, plan: Plan) -> Plan:
        """``plan``'s steps, each taken in turn: the whole plan without its repeats."""
        kept = tuple(s for s in (self.take(step) for step in plan.steps) if s is not None)
        return plan if kept == plan.steps else Plan(kept)


def plan_constraint(tool_names: list[str], max_new_tokens: int, max_steps: int = 6, first: int = 1,
                    tool_prior: ToolPrior | None = None) -> Constraint:
    return Constraint("grammar", constrain_mod.plan_grammar(tool_names, max_new_tokens, max_steps, first=first),
                      tool_prior)


@dataclass(frozen=True)
class PlannerRequest:
    """One planner call, built once: ``prompt`` is Alpaca text (``template="alpaca"``, sent as a
    completion that stops at the next ``### Instruction:``) or chat messages (``"chat"``, sent as
    a chat call); ``constraint`` is the plan grammar or None; ``specs`` are the toolbox's tool
    specs; ``first`` is the number of the plan's first variable (``#E{first}``)."""

    prompt: Any
    template: str
    max_new_tokens: int
    constraint: Constraint | None
    specs: tuple
    first: int = 1

    @property
    def stop(self) -> list[str] | None:
        return formats.ALPACA_STOP if self.template == "alpaca" else None

    def complete(self, engine: Engine) -> Completion:
        """The whole output at once (labelled ``planner`` in recordings)."""
        with role("planner"):
            if self.template == "alpaca":
                return engine.complete(self.prompt, stop_sequences=self.stop, max_new_tokens=self.max_new_tokens,
                                       constraint=self.constraint)
            return engine.chat(self.prompt, max_new_tokens=self.max_new_tokens, constraint=self.constraint)

    def stream(self, engine: Engine) -> Iterator[str]:
        """The output in pieces as the engine writes it (one piece for engines that do not stream)."""
        with role("planner"):
            if self.template == "alpaca":
                yield from engine.complete_stream(self.prompt, self.stop, self.max_new_tokens, None, self.constraint)
            else:
                yield from engine.chat_stream(self.prompt, None, self.max_new_tokens, None, self.constraint)


def held_values(toolbox: Any) -> dict[str, frozenset[str]]:
    """Each tool's names of its own data (a tool with ``held_values()``: ``query_sql``'s titles
    and names), for the tool prior."""
    tools = toolbox.values() if isinstance(toolbox, Mapping) else toolbox
    return {t.name: t.held_values() for t in tools if callable(getattr(t, "held_values", None))}


def planner_request(task: str, toolbox: Any, engine: Engine, *, template: str = "alpaca", constrain: bool = True,
                    max_new_tokens: int = 512, max_steps: int = 6, examples: str | None = None,
                    history: tuple[Plan, dict[str, str]] | None = None, tool_prior: float = 0.0) -> PlannerRequest:
    """The planner call for ``task`` (see :func:`make_plan` for the arguments)."""
    specs = formats.tool_specs(toolbox)
    done, status = history if history is not None else (Plan(()), {})
    first = len(done) + 1
    constraint = None
    if constrain and engine.supports_constraints:
        # with the prior, the goals the task states and the values of a tool's data it names lean
        # the first plan (a replanning round continues a plan: not read)
        prior = None
        if tool_prior:
            goals = tuple(task_goals(task)) if history is None else ()
            holds = task_holdings(task, held_values(toolbox))[:64] if history is None else ()
            prior = ToolPrior(tuple((s.name, s.description) for s in specs), tool_prior, goals, holds)
        constraint = plan_constraint([s.name for s in specs], max_new_tokens, max_steps, first, prior)
    if history is not None:
        prompt = formats.replan_prompt(task, specs, done.steps, status, template, examples)
    else:
        prompt = formats.planner_prompt(task, specs, template, examples)
    return PlannerRequest(prompt, template, max_new_tokens, constraint, tuple(specs), first)


def make_plan(task: str, toolbox: Any, engine: Engine, *, template: str = "alpaca", constrain: bool = True,
              max_new_tokens: int = 512, max_steps: int = 6, examples: str | None = None,
              history: tuple[Plan, dict[str, str]] | None = None, tool_prior: float = 0.0) -> tuple[Plan, str]:
    """Plan ``task`` with the tools of ``toolbox``; returns the plan and the model's raw text.

    ``history``: ``(plan so far, {var: status})`` for a replanning round; the new steps are
    numbered after it and may use its variables (the prompt is :func:`formats.replan_prompt`).
    ``tool_prior``: with the grammar, each step's tool name leans towards the tools whose name and
    description share words with the step's ``Plan:`` line, by up to this many logits, and a first
    plan follows the goals the task states (``task_goals``: as many steps, each ``Plan:`` line
    towards its goal) by as many (:mod:`pipeline.formats.toolprior`; 0: the model's choice alone).
    """
    req = planner_request(task, toolbox, engine, template=template, constrain=constrain,
                          max_new_tokens=max_new_tokens, max_steps=max_steps, examples=examples, history=history,
                          tool_prior=tool_prior)
    done = history[0] if history is not None else Plan(())
    out = req.complete(engine)
    try:
        plan = formats.parse_planner_output(out.text, list(req.specs), defined=done.vars)
        want = [f"#E{req.first + i}" for i in range(len(plan))]
        if history is not None and plan.vars != want:  # a round continues the numbering
            raise PlanError(f"steps must be numbered {', '.join(want)} in order, not {', '.join(plan.vars)}")
        return plan, out.text
    except PlanError as e:
        err = PlanError(f"the planner's output is not a valid plan: {e.reason}", e.line)
        err.raw_output = out.text
        raise err from e
