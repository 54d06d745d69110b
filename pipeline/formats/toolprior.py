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
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["ToolIndex", "ToolPrior", "ToolPriorProcessor", "words"]

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


@dataclass(frozen=True)
class ToolPrior:
    """The prior of one request: the listed tools (``(name, description)`` pairs, in the prompt's
    order) and the most logits it adds (``weight``; 0 turns it off)."""

    tools: tuple[tuple[str, str], ...]
    weight: float

    def __post_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"the tool prior's weight must be a number >= 0, not {self.weight!r}")

    @functools.cached_property
    def index(self) -> ToolIndex:
        return ToolIndex(dict(self.tools))


class ToolPriorProcessor:
    """A logits processor (``(input_ids, scores) -> scores``, torch or numpy, batch rows) that runs
    ``inner`` (the plan grammar's processor) and then, in the rows that are writing a tool name,
    adds their :class:`ToolPrior` to the tokens that continue a listed name. ``decode``: token ids
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
            head = _HEAD.search(self.decode(generated))
            if head is None:
                continue
            description, written = head.group(1), head.group(2)
            match = prior.index.scores(description)
            if not any(match.values()):
                continue
            self.shifted[(row, head.start())] = (description, max(match, key=match.get))
            self._shift(scores, row, written, match, prior.weight)
        return scores

    def _shift(self, scores, row: int, written: str, match: dict[str, float], weight: float) -> None:
        values = scores[row]
        if isinstance(values, np.ndarray):
            allowed = np.flatnonzero(np.isfinite(values)).tolist()
        else:  # a torch row
            allowed = values.isfinite().nonzero().flatten().tolist()
        for token in allowed:
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
