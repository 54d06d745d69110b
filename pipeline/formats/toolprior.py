"""A retrieval prior on the planner's tool choice: each step's tool leans towards the tools whose
name and description share words with the step's own ``Plan:`` line.

    from pipeline.formats.toolprior import ToolIndex, ToolPriorProcessor
    index = ToolIndex({"detect_language": "Detect the language a text is written in.", ...})
    index.scores("Detect the language of the result.")  # {"detect_language": 1.0, ...}
    prior = ToolPrior((("detect_language", "Detect the language a text is written in."), ...), weight=4.0)
    proc = ToolPriorProcessor(tokenizer.decode, [prior], inner=grammar_processor)  # one prior per batch row

A ReWOO step is written ``Plan: <description>`` and then ``#En = <tool>[<input>]``: the planner
says what the step does before it names the tool. A small planner tuned on a few tools names the
tools it was trained on for steps that another tool of the list does better ("Get the latest
results of New York Yankees." then ``llm``, beside ``sports_scores`` in the list). The processor
reads the description the model has just written, scores every listed tool on it (words of the
tool's name and description, weighted by how few tools share them: IDF over this list), and adds
``weight * score / best score`` to the logits of the tokens that spell a tool, while the model
writes the name. The model's own preference still counts: the prior adds at most ``weight``
logits, and nothing where no tool shares a word with the description.

With ``goals`` (:func:`task_goals`: the goals the task's joining words state, "; also", "then",
"Next, ...", each from its verb on), a plan that has fewer steps gets the same ``weight`` on going
on after each step rather than ending there (a small planner ends a plan a goal short: "Get the
details of Spirited Away; also find the local time in Oslo, please." planned in one step); and, for
two goals or more, step ``k``'s ``Plan:`` line leans towards goal ``k``: its first word, and a "."
once the goal's last words are written (it skipped a goal, or wrote two as one step: "Get the
details of Inception, and translate it into French.").

With ``holds`` (:func:`task_holdings`: the values of a tool's own data the task names, such as a
title or a name in the team's database, ``QuerySQLTool.held_values``), a ``Plan:`` line that opens
"Use" leans towards that tool until a step has written a word of the value, unless the task's words
around it fit another tool better (:attr:`ToolPrior.leads`), and a plan that has not yet written one
goes on after a step: a small planner sends "When was Martin Scorsese born?" to the encyclopedia, and
cannot learn which of the people it reads about the database holds.

It sits on top of the plan grammar (:func:`pipeline.formats.constrain.plan_grammar`), which
decides where a name starts and which tokens may spell one; the processor only shifts the
scores of the tokens the grammar allows there. It works on every in-process engine (torch
tensors from ``generate()``, numpy rows from :class:`pipeline.sampling.RowControl`) and in this
project's server (``serve.constraints``: a request's ``tool_prior`` field, which the HTTP engine
sends); other OpenAI-compatible servers get the grammar alone.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ToolIndex", "ToolPrior", "ToolPriorProcessor", "count_goals", "task_goals", "task_holdings", "value_words",
           "words"]

# Words that say nothing about which tool: function words, the verbs every tool's description
# opens on, and the words plans use to point at evidence ("the result", "what you found").
STOPWORDS = frozenset("""
a an the of in on at to for from by with and or but as is are be been it its this that these those there
what which who whom how when where why do does did can could would should will shall may might must
i you he she we they me my your our their them his her us please then next also after before first
into about over than via per each every some any all one two no not only just very so too
get find search look check use using used tool tools return returns give tell show make
step result results found evidence output input answer task plan
""".split())
_WORD = re.compile(r"[a-z]+")
_ALNUM = re.compile(r"[a-z0-9]+")
_FILLER = frozenset("a an the of".split())  # words a held value's other words tell apart


def value_words(text: str) -> frozenset[str]:
    """A held value's words (letters and numbers, case aside), without "a", "an", "the", "of":
    "Dune: Part Two" and "Part Two of Dune" have the same ones."""
    return frozenset(_ALNUM.findall(text.casefold())) - _FILLER


def _stem(word: str) -> str:
    # one suffix off, then the first 6 letters: "names"/"named"/"name" -> "nam",
    # "summarize"/"summarise"/"summary" -> "summar", "translate" and "transcribe" stay apart
    for suffix, keep in (("ing", 3), ("ies", 3), ("ed", 3), ("es", 3), ("s", 4), ("e", 3), ("y", 3)):
        if word.endswith(suffix) and len(word) - len(suffix) >= keep:  # ("news" keeps its s)
            word = word[: -len(suffix)]
            break
    return word[:6]


def words(text: str) -> set[str]:
    """The stemmed content words of ``text`` (``snake_case`` names split into their words)."""
    return {_stem(w) for w in _WORD.findall(text.lower().replace("_", " ")) if w not in STOPWORDS and len(w) > 1}


# -- how many goals a task states ------------------------------------------------------------------
# Verbs that open a goal when they follow "and" ("..., and translate it into French"); "and" before
# anything else joins the parts of one goal ("France and Germany", "compare the results and say").
GOAL_VERBS = frozenset("""
add book calculate check compute convert count create describe detect divide draft email explain extract
fetch find get list look multiply notify open post pull put read record remind reply run save schedule
search send set show store subtract summarise summarize tell translate write
""".split())
# A sentence that opens on one of these states another goal ("Next, ..."); any other goes on with
# the one before ("Can you check?", "How much is the tip?", "List one of them.").
_OPENERS = frozenset("next then also after afterwards finally lastly once second secondly third thirdly".split())
_JOINS = re.compile(r";|\s--\s|,?\s+(?:and\s+)?then\b|\bafter that\b|\bas well as\b|\bfollowed by\b"
                    r"|\balongside\b|\bin parallel\b", re.I)
# The items of a numbered list ("1) find videos about X 2) tell me the time"): its first, and the next ones
_FIRST_ITEM = re.compile(r"(?:^|\s)\(?1\)\s")
_NEXT_ITEM = re.compile(r"\s\(?[2-9]\)\s")
# An item of a list of goals before its ", and <verb>" ("Find the year, subtract it from 2025, and save it")
_COMMA_VERB = re.compile(r",\s*([A-Za-z]+)")
_AND_VERB = re.compile(r"(?:,\s*|\s)and\s+(?:also\s+)?([A-Za-z]+)")
# What an "and <verb>" part says when it goes on with the goal before: "... and read it", "Create the
# file quote.txt and write 'Hi' in it".
_SAME_GOAL = re.compile(r"^\W*and\s+read\s+(?:it|them)\W*$|^\W*and\s+(?:write|put)\b.*\b(?:in|into) it\W*$", re.I)
_JOIN_WORDS = frozenset("and then after that as well followed by alongside in parallel also next first please".split())
_SENTENCE = re.compile(r"[.?!]\s+([A-Z][a-z]*)")


def task_goals(task: str) -> list[str]:
    """The goals ``task`` states, each as the task words it from its verb on ("Next, add 12 to it"
    -> "add 12 to it"), read from the words that join them: ";", "then", "after that", "as well
    as", "and" before a verb ("..., and translate it"; with the list's earlier ", <verb>" items:
    "Find the year, subtract it from 2025, and save it"), a new sentence that opens on "Next",
    "Then", "Second", "Once", ..., and the items of a numbered list ("1) ... 2) ..."). Meant to miss
    rather than split: "and" between nouns or before "read it", and a sentence that goes on with the
    goal before ("List one of them."), join nothing. Empty for an empty task.

    >>> task_goals("Convert 999.99 USD to CNY. Next, add 12 to it and find a hotel in Lima, please.")
    ['Convert 999.99 USD to CNY', 'add 12 to it', 'find a hotel in Lima']
    >>> task_goals("Who is older, Martin Scorsese or Greta Gerwig?")
    ['Who is older, Martin Scorsese or Greta Gerwig']
    >>> task_goals("I'd like you to open notes.md and read it, and pull out the names mentioned in it")
    ['open notes.md and read it', 'pull out the names mentioned in it']
    """
    text = task.strip().rstrip(".?! ")
    cuts = {m.start() for m in _JOINS.finditer(text)}
    if _FIRST_ITEM.search(text):
        cuts |= {m.start() for m in _NEXT_ITEM.finditer(text)}
    cuts |= {m.start() for m in _SENTENCE.finditer(text) if m.group(1).lower() in _OPENERS}
    ands = {m.start() for m in _AND_VERB.finditer(text) if m.group(1).lower() in GOAL_VERBS}
    for start in ands:  # an "and <verb>" part runs to the next join of any kind
        end = min([c for c in cuts | ands if c > start], default=len(text))
        if not _SAME_GOAL.search(text[start:end]):
            cuts.add(start)
            if text[start] == ",":  # the last item of a list: its sentence's earlier ", <verb>" items
                sentence = max((m.end() for m in re.finditer(r"[.?!]\s", text[:start])), default=0)
                cuts |= {sentence + m.start() for m in _COMMA_VERB.finditer(text[sentence:start])
                         if m.group(1).lower() in GOAL_VERBS}
    bounds = [0, *sorted(cuts), len(text)]
    goals = []
    for part in (text[i:j] for i, j in zip(bounds, bounds[1:])):
        # a part between two joins that stand together ("; after that,") states nothing
        if set(_WORD.findall(part.lower())) - _JOIN_WORDS:
            goals.append(_goal_text(part))
    return goals


def _goal_text(part: str) -> str:
    """A goal from its verb on when a verb comes within its first words ("Task: first book a table"
    -> "book a table"), else without its joining words; no "please" or end punctuation."""
    part = re.sub(r"[\s,.;:?!-]*\bplease\W*$", "", part.strip(), flags=re.I).strip(" ,.;:?!-")
    found = list(re.finditer(r"[A-Za-z']+", part))
    for m in found[:6]:
        if m.group(0).lower() in GOAL_VERBS:
            return part[m.start():]
    while found and found[0].group(0).lower() in _JOIN_WORDS:
        found.pop(0)
    return part[found[0].start():] if found else part


def count_goals(task: str) -> int:
    """How many goals ``task`` states (:func:`task_goals`); at least 1.

    >>> count_goals("Get the details of Spirited Away; also find the local time in Oslo, please.")
    2
    """
    return max(1, len(task_goals(task)))


# A value matched whatever its case when it is long (a user writes "jurassic park"); a short one
# ("Get Out", "Hero", "Silence") only as the data writes it, so that everyday words do not match.
_CASELESS_CHARS = 10


def task_holdings(task: str, held: Mapping[str, Iterable[str]]) -> tuple[tuple[str, str], ...]:
    """The values of a tool's data that ``task`` names, as ``(tool, value)`` pairs in the task's
    order (a value inside a longer one counts once: "The Dark Knight Rises", not "The Dark
    Knight"). ``held``: each tool's names (``QuerySQLTool.held_values``). A value matches on word
    bounds; one of fewer than 10 characters only with the data's own case.

    >>> task_holdings("When was Martin Scorsese born?", {"query_sql": {"Martin Scorsese", "Hero"}})
    (('query_sql', 'Martin Scorsese'),)
    >>> task_holdings("Who was the hero of the film?", {"query_sql": {"Hero"}})
    ()
    """
    spans: list[tuple[int, int, str, str]] = []
    folded = task.casefold()
    for tool, values in held.items():
        for value in values:
            key = value if len(value) < _CASELESS_CHARS else value.casefold()
            hay = task if len(value) < _CASELESS_CHARS else folded
            start = hay.find(key)
            while start >= 0:
                end = start + len(key)
                if not (hay[start - 1:start].isalnum() or hay[end:end + 1].isalnum()):
                    spans.append((start, end, tool, value))
                    break
                start = hay.find(key, start + 1)
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    found: list[tuple[str, str]] = []
    reach = -1
    for start, end, tool, value in spans:
        if end <= reach:  # inside a longer value already found
            continue
        found.append((tool, value))
        reach = max(reach, end)
    return tuple(dict.fromkeys(found))


class ToolIndex:
    """The listed tools' words (name and description) and, for each word, how many tools have it."""

    def __init__(self, tools: Mapping[str, str]):
        if not tools:
            raise ValueError("a ToolIndex needs at least one tool")
        self.docs = {name: words(name) | words(description or "") for name, description in tools.items()}
        df = Counter(w for doc in self.docs.values() for w in doc)
        n = len(self.docs)
        self.idf = {w: math.log((n + 1) / count) for w, count in df.items()}

    def scores(self, description: str) -> dict[str, float]:
        """Each tool's share of the words of ``description``, IDF-weighted, scaled so the best tool
        scores 1.0; all 0.0 where no tool shares a word with it."""
        query = words(description)
        raw = {name: sum(self.idf[w] for w in query & doc) for name, doc in self.docs.items()}
        best = max(raw.values())
        return {name: (s / best if best > 0 else 0.0) for name, s in raw.items()}


# A step's head, ``\n#E<n> =``, and what follows it so far: the name, with the space before it (a
# tokenizer may write " search" as one token). The description is the ``Plan:`` line before it
# (at the text's start for a replanned round's first step).
_HEAD = re.compile(r"(?:^|\n)Plan: ?([^\n]*)\n#E\d+ =( ?[A-Za-z0-9_.\-]*)$")


# A Plan: line being written (not yet closed by its "\n#E<n> = ").
_DESCRIPTION = re.compile(r"(?:^|\n)Plan: ?([^\n]*)$")

# A step just closed: its head and its tool input's "]" (where the plan may end or go on).
_STEP_END = re.compile(r"\n#E\d+ = [A-Za-z0-9_.\-]+\[[^\[\]\n]*\]$")


@dataclass(frozen=True)
class ToolPrior:
    """The prior of one request: the listed tools (``(name, description)`` pairs, in the prompt's
    order), the most logits it adds (``weight``; 0 turns it off) and the goals the task states
    (``goals``, :func:`task_goals`; empty: not read). Until the plan has as many steps as goals,
    going on after a step gets ``weight`` logits over ending there; and where the task states two
    goals or more, ending gets them once it has, and step ``k``'s ``Plan:`` line leans towards goal
    ``k``: its first word (when the goal opens on a verb), and ending the line where it has written
    the goal's last words. (One goal may take several steps: "Who is older, A or B?") ``holds``:
    ``(tool, value)`` pairs, values of a listed tool's own data that the task names
    (:func:`task_holdings`); a ``Plan:`` line that opens "Use" leans towards the tool of one no step
    has written a word of yet (:attr:`leads`), and so does going on after a step."""

    tools: tuple[tuple[str, str], ...]
    weight: float
    goals: tuple[str, ...] = ()
    holds: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"the tool prior's weight must be a number >= 0, not {self.weight!r}")
        if not (isinstance(self.goals, tuple) and len(self.goals) <= 64 and all(isinstance(g, str) for g in self.goals)):
            raise ValueError(f"the tool prior's goals must be a tuple of at most 64 texts, not {self.goals!r}")
        names = {name for name, _ in self.tools}

        def pair(h) -> bool:
            return isinstance(h, tuple) and len(h) == 2 and h[0] in names and isinstance(h[1], str) and bool(h[1].strip())

        if not (isinstance(self.holds, tuple) and len(self.holds) <= 64 and all(pair(h) for h in self.holds)):
            raise ValueError("the tool prior's holds must be a tuple of at most 64 (tool, value) pairs naming "
                             f"listed tools, not {self.holds!r}")

    @functools.cached_property
    def index(self) -> ToolIndex:
        return ToolIndex(dict(self.tools))

    @functools.cached_property
    def leads(self) -> tuple[tuple[str, str], ...]:
        """The ``holds`` pairs a step is led by: those whose goal (the one that names the value;
        the whole task's goals when none does) no other tool's words fit better. "Look up Hayao
        Miyazaki in the encyclopedia" stays with the encyclopedia though the film database holds
        the name; "When was Martin Scorsese born?" shares no word with any tool and goes to it."""
        kept = []
        for tool, value in self.holds:
            goal = next((g for g in self.goals if value.casefold() in g.casefold()), " ".join(self.goals))
            match = self.index.scores(goal or value)
            if not any(s > match[tool] for name, s in match.items() if name != tool):
                kept.append((tool, value))
        return tuple(kept)

    @functools.cached_property
    def lead_words(self) -> tuple[tuple[str, frozenset[str]], ...]:
        """Each of :attr:`leads` as ``(tool, the value's words)``: read at every decoding step."""
        return tuple((tool, value_words(value)) for tool, value in self.leads)


class ToolPriorProcessor:
    """A logits processor (``(input_ids, scores) -> scores``, torch or numpy, batch rows) that runs
    ``inner`` (the plan grammar's processor) and then, in the rows that are writing a tool name,
    adds their :class:`ToolPrior` to the tokens that continue a listed name; with goals, also where
    a step ends (go on or end) and where a ``Plan:`` line starts or reaches its goal's last words. ``decode``: token ids
    to text (the model's tokenizer). ``priors``: one per batch row, or one for all (None: none).
    Single use, like ``inner``: the first call's ``input_ids`` are the prompts."""

    def __init__(self, decode, priors: list[ToolPrior | None], inner=None):
        self.decode = decode
        self.priors = list(priors)
        self.inner = inner
        self.prompt_len: int | None = None
        self._pieces: dict[int, str] = {}
        # {(row, where the step starts): (its description, the tool it matches best)}: the names shifted
        self.shifted: dict[tuple[int, int], tuple[str, str]] = {}

    def _piece(self, token: int) -> str:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.decode([token])
        return piece

    def __call__(self, input_ids, scores):
        if self.inner is not None:
            scores = self.inner(input_ids, scores)
        if self.prompt_len is None:
            self.prompt_len = int(input_ids.shape[1])
            if len(self.priors) not in (1, int(input_ids.shape[0])):
                raise ValueError(f"{len(self.priors)} tool priors for a batch of {int(input_ids.shape[0])}")
        for row in range(int(input_ids.shape[0])):
            prior = self.priors[row if len(self.priors) > 1 else 0]
            if prior is None or prior.weight == 0:
                continue
            generated = [int(t) for t in input_ids[row, self.prompt_len:]]
            if not generated:
                continue
            text = self.decode(generated)
            if (prior.goals or prior.leads) and _STEP_END.search(text):
                steps = text.count("\n#E")
                if steps < len(prior.goals) or self._unwritten(prior, text):
                    self._go_on(scores, row, prior.weight)
                elif len(prior.goals) > 1:  # every goal has its step: going on costs as much
                    self._go_on(scores, row, -prior.weight)
                continue
            line = _DESCRIPTION.search(text)
            if line is not None:
                if len(prior.goals) > 1:
                    self._follow_goal(scores, row, prior, line.group(1), text.count("\n#E"), text.endswith(" "))
                if prior.leads:
                    self._lead_to_holder(scores, row, prior, text[:line.start()], line.group(1))
                continue
            head = _HEAD.search(text)
            if head is None:
                continue
            description, written = head.group(1), head.group(2)
            match = prior.index.scores(description)
            if not any(match.values()):
                continue
            self.shifted[(row, head.start())] = (description, max(match, key=match.get))
            self._shift(scores, row, written, match, prior.weight)
        return scores

    @staticmethod
    def _allowed(values) -> list[int]:
        if isinstance(values, np.ndarray):
            return np.flatnonzero(np.isfinite(values)).tolist()
        return values.isfinite().nonzero().flatten().tolist()  # a torch row

    def _follow_goal(self, scores, row: int, prior: ToolPrior, written: str, done: int, spaced: bool) -> None:
        """Step ``done + 1`` is writing its ``Plan:`` line, ``written`` so far: towards its goal's
        first word at the start, towards a "." where the line ends on the goal's last words."""
        if done >= len(prior.goals):
            return
        goal = prior.goals[done]
        values = scores[row]
        if not written:
            first = re.match(r"[A-Za-z']+", goal)
            if first is None or first.group(0).lower() not in GOAL_VERBS:
                return  # a goal that does not open on a verb is left to the model's words
            word = first.group(0)[:1].upper() + first.group(0)[1:]
            for token in self._allowed(values):
                piece = self._piece(int(token))
                if not spaced:  # after "Plan:" a token may bring the space with the word (" Get")
                    piece = piece[1:] if piece.startswith(" ") else ""
                if piece.strip() and word.startswith(piece):
                    values[token] += prior.weight
            return
        # the goal's last three words (numbers too: "... from 2026-01-18" ends on "2026 01 18"), just written
        tail = _ALNUM.findall(goal.lower())[-3:]
        if tail and _ALNUM.findall(written.lower())[-len(tail):] == tail and re.search(r"\w$", written):
            for token in self._allowed(values):
                if self._piece(int(token)).startswith("."):
                    values[token] += prior.weight

    @staticmethod
    def _unwritten(prior: ToolPrior, text: str) -> set[str]:
        """The tools of the held values the task names (``ToolPrior.leads``) of which ``text`` has not
        written a word ("the", "of", "a" aside: a plan that wrote 'Dune' for "Dune: Part Two" has
        asked for it, and the pipeline grounds the rest, ``planner.ground_held_values``)."""
        seen = set(_ALNUM.findall(text.casefold()))
        return {tool for tool, held in prior.lead_words if not held & seen}

    def _lead_to_holder(self, scores, row: int, prior: ToolPrior, before: str, written: str) -> None:
        """A ``Plan:`` line that opens "Use <tool>" leans towards a tool that holds a value the task
        names and no earlier step has written (``ToolPrior.leads``): the tokens that spell on
        into its name get ``weight``."""
        m = re.fullmatch(r"Use( ?)([A-Za-z0-9_.\-]*)", written)
        if m is None:
            return
        spaced, partial = bool(m.group(1)), m.group(2)
        names = [n for n in self._unwritten(prior, before) if n.startswith(partial) and n != partial]
        if not names:
            return
        values = scores[row]
        for token in self._allowed(values):
            piece = self._piece(int(token))
            if not spaced and not partial:  # after "Use" the token brings the space (" query")
                if not piece.startswith(" "):
                    continue
                piece = piece[1:]
            spelt = partial + piece
            if piece and any(n.startswith(spelt) or spelt.startswith(n + " ") for n in names):
                values[token] += prior.weight

    def _go_on(self, scores, row: int, weight: float) -> None:
        # after a step's "]" the grammar allows the next step's "\n" or the end (EOS, whose piece is
        # empty or a special token's name): the tokens that open on "\n" go on
        values = scores[row]
        for token in self._allowed(values):
            if self._piece(int(token)).startswith("\n"):
                values[token] += weight

    def _shift(self, scores, row: int, written: str, match: dict[str, float], weight: float) -> None:
        values = scores[row]
        for token in self._allowed(values):
            piece = self._piece(int(token))
            if not piece:
                continue
            # what the name would read with this token (the space before it aside: a SentencePiece
            # token decoded alone drops its leading space, a byte-level one keeps it)
            spelt = (written + piece).lstrip(" ")
            if not spelt:  # the space alone says nothing of the name: left to the model, so that the
                continue   # prior does not trade the model's own spelling (" llm") for " " + "l" + "lm"
            # the tools this token keeps possible: it spells on into a name, or ends one ("llm[")
            fits = [s for name, s in match.items() if name.startswith(spelt) or spelt.startswith(name + "[")]
            if fits:
                values[token] += weight * max(fits)
