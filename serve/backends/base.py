"""What every backend takes and gives: a generation request in, a stream of text chunks out.

A backend (``serve.backends.hf.TransformersBackend``, ``serve.backends.exl2.ExLlamaV2Backend``)
owns a model, a tokenizer and a batching loop on its own thread. The web app only ever awaits
:meth:`Backend.stream`, so the event loop never blocks on generation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class BackendError(Exception):
    """The backend cannot serve a request as asked (the client's fault: a 4xx)."""

    def __init__(self, message: str, status: int = 400, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


@dataclass(frozen=True)
class Constraint:
    """Constrained decoding for one request.

    ``kind`` is ``json_schema`` (``value``: a schema dict), ``regex`` (a pattern), ``grammar``
    (a Lark grammar) or ``plan`` (``value``: the tool names; the ReWOO plan grammar).
    ``tool_prior``: a ``pipeline.formats.toolprior.ToolPrior`` on a plan's tool names, or None.
    """

    kind: str
    value: Any
    tool_prior: Any = None


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens. ``temperature == 0`` is greedy; ``seed`` makes sampling repeatable
    whatever else shares the batch."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    sampling: Sampling
    constraint: Constraint | None = None


@dataclass
class Chunk:
    """One step of a stream: new text (never part of a stop string) and, on the last chunk,
    ``finish_reason`` (``stop`` or ``length``) and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Stats:
    """Counters a backend keeps; ``/health`` reports them and the tests read them."""

    submitted: int = 0
    finished: int = 0
    cancelled: int = 0
    running: int = 0
    completion_tokens: int = 0
    last_cancelled_tokens: list[int] = field(default_factory=list)  # tokens made by recent cancelled requests

    def to_dict(self) -> dict:
        return {"submitted": self.submitted, "finished": self.finished, "cancelled": self.cancelled,
                "running": self.running, "completion_tokens": self.completion_tokens}


class Backend(Protocol):
    model_id: str
    context_length: int
    tokenizer: Any
    stats: Stats

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Chunks until the last one carries ``finish_reason``. Closing the iterator early
        (``aclose()``, a cancelled task) stops the generation and frees its cache."""
        ...


class TextStream:
    """Turns a growing list of generated token ids into text deltas, holding back any tail that
    could still become a stop string or an incomplete UTF-8 character.

    ``push(ids)`` takes every token generated so far and returns ``(delta, stopped)``; once
    ``stopped``, the text is cut before the stop string. ``flush()`` returns the held-back tail
    at the end.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self._hold = max((len(s) for s in self.stop), default=1) - 1
        self.text = ""      # decoded text so far
        self.sent = 0       # characters already returned
        self.stopped = False

    def push(self, ids: Sequence[int]) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        # Search from where a stop string could first overlap the new text.
        start = max(0, min(len(self.text), self.sent) - self._hold)
        self.text = text
        cut = min((i for i in (text.find(s, start) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            delta, self.sent = text[self.sent:cut], max(self.sent, cut)
            return delta, True
        safe = len(text) - self._hold
        if text.endswith("\ufffd"):  # the last token ends inside a multi-byte character
            safe = min(safe, len(text) - 1)
        if safe <= self.sent:
            return "", False
        delta, self.sent = text[self.sent:safe], safe
        return delta, False

    def flush(self) -> str:
        if self.stopped:
            return ""
        delta, self.sent = self.text[self.sent:], len(self.text)
        return delta
