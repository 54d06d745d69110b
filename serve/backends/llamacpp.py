"""The llama.cpp backend (CPU, and any device llama.cpp was built for): a GGUF file served with the
``llama-cpp-python`` binding.

    python -m serve --model planner-Q4_K_M.gguf            # a .gguf picks this backend
    python -m serve --model planner.gguf --backend llamacpp --max-batch-size 8

The model runs in :class:`pipeline.llamacpp.LlamaCppModel`: concurrent requests decode together
in one ``llama_batch`` (``--max-batch-size`` sequences in a unified KV cache of
``--cache-tokens``), and each token is picked by :class:`pipeline.sampling.RowControl`, the same
sampler and llguidance constraints as the transformers backend (``rewoo_plan``, JSON schemas,
regexes, tool calls). Stop strings and text deltas go through the same
:class:`serve.backends.base.TextStream`. Closing a stream cancels its request at the next token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from serve.backends.base import BackendError, Chunk, Constraint, GenerationRequest, Stats, TextStream
from serve.constraints import ConstraintFailed

log = logging.getLogger("serve")


class LlamaCppBackend:
    """See :class:`serve.backends.base.Backend`."""

    def __init__(self, model, model_id: str,
                 constraint_factory: Callable[[Constraint, Any, int, int], Any] | None = None):
        self.model = model
        self.tokenizer = model.tokenizer
        self.model_id = model_id
        self.context_length = model.context_length
        self.vocab_size = model.vocab_size
        self.eos_ids = sorted(model.eos_ids)
        self.constraint_factory = constraint_factory
        self.stats = Stats()

    @classmethod
    def from_config(cls, cfg) -> LlamaCppBackend:
        from pipeline.llamacpp import LlamaCppError, LlamaCppModel
        from serve.constraints import build_processor

        try:
            model = LlamaCppModel(cfg.model, slots=cfg.max_batch_size, cache_tokens=cfg.cache_tokens,
                                  context_length=cfg.context_length, threads=cfg.threads,
                                  n_batch=cfg.max_batch_tokens)
        except LlamaCppError as e:
            raise ValueError(str(e)) from e
        return cls(model, cfg.served_model_name or Path(cfg.model).stem, constraint_factory=build_processor)

    async def start(self) -> None:
        if self.constraint_factory is not None:
            await asyncio.to_thread(self._warm_constraints)

    def _warm_constraints(self) -> None:
        from serve.constraints import warm_up
        warm_up(self.constraint_factory, self.tokenizer, self.vocab_size, log)

    async def stop(self) -> None:
        await asyncio.to_thread(self.model.close)

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        from pipeline.sampling import MIN_TEMPERATURE, RowControl

        s = request.sampling
        constraint = None
        if request.constraint is not None:
            if self.constraint_factory is None:
                raise BackendError("constrained decoding is not configured on this server", 400)
            constraint = self.constraint_factory(request.constraint, self.tokenizer, self.vocab_size, s.max_tokens)
        control = None
        if constraint is not None or s.temperature >= MIN_TEMPERATURE:
            control = RowControl(request.prompt_ids, s.temperature, s.top_p, s.seed, constraint,
                                 self.eos_ids[0] if self.eos_ids else None)
        return self._run(request, control)

    async def _run(self, request: GenerationRequest, control) -> AsyncIterator[Chunk]:
        from pipeline.llamacpp import Job, greedy

        s = request.sampling
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        text = TextStream(self.tokenizer, s.stop)

        pick = greedy if control is None else control.pick

        def on_token(token: int) -> bool:
            loop.call_soon_threadsafe(events.put_nowait, ("token", token))
            return True

        def on_end(reason: str, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ("end", (reason, error)))

        job = Job(list(request.prompt_ids), s.max_tokens, pick, on_token, on_end, s.ignore_eos)
        try:
            self.model.submit(job)
        except ValueError as e:
            raise BackendError(str(e), code="context_length_exceeded") from e
        self.stats.submitted += 1
        self.stats.running += 1
        generated: list[int] = []
        finished = False
        try:
            while True:
                kind, value = await events.get()
                if kind == "token":
                    generated.append(value)
                    delta, stopped = text.push(generated)
                    if stopped:
                        finished = True
                        yield Chunk(delta, "stop", len(request.prompt_ids), len(generated))
                        return
                    if delta:
                        yield Chunk(delta)
                    continue
                reason, error = value
                if error is not None:
                    if isinstance(error, ConstraintFailed):
                        raise BackendError(f"the constraint failed while decoding: {error}",
                                           code="constraint_failed") from error
                    raise RuntimeError(f"generation failed: {str(error)[:500]}") from error
                finished = reason in ("stop", "length")
                yield Chunk(text.flush(), "length" if reason == "length" else "stop", len(request.prompt_ids),
                            len(generated))
                return
        finally:
            self.stats.running -= 1
            self.stats.completion_tokens += len(generated)
            if finished:
                self.stats.finished += 1
            else:
                self.stats.cancelled += 1
                self.stats.last_cancelled_tokens = (self.stats.last_cancelled_tokens + [len(generated)])[-16:]
            self.model.cancel(job)  # a no-op when it already ended; else it stops at the next token
