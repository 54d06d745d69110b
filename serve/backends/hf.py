"""The transformers backend: a local checkpoint (optionally with a LoRA adapter) served with
transformers' continuous batching, on a CPU or a GPU.

One continuous-batching manager lives as long as the server; its thread runs the model, and
requests join and leave the running batch token by token. Its KV cache is always sized
(``cache_tokens``): left alone it reserves 60% of the machine's memory. Per-request sampling,
seeds and constraints go through :mod:`serve.backends.rows`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import torch

from serve.backends.base import BackendError, Chunk, Constraint, GenerationRequest, Stats, TextStream
from serve.backends.rows import SLOT_KWARG, RequestRows, RowControl, install
from serve.constraints import ConstraintFailed

log = logging.getLogger("serve")


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to torch; use --device cpu")
    return device


def _resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def load_model(path: str, adapter: str | None = None, dtype: str = "auto", device: str = "auto"):
    """``(model, tokenizer)`` from a local folder or a model name (the Hugging Face cache or hub, as
    ``pipeline.run`` takes one); a LoRA ``adapter`` is merged into the weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(path).expanduser()
    if path.startswith((".", "/", "~")) or local.exists():
        if not local.exists():
            raise ValueError(f"--model {path} does not exist; give a local transformers model folder or a model name")
        if not (local / "config.json").is_file():
            raise ValueError(f"--model {path}: no config.json there; give a local transformers model folder "
                             "(for an EXL2 folder use --backend exllamav2)")
        path = str(local)
    device = _resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_resolve_dtype(dtype, device),
                                                 attn_implementation="sdpa")
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model.to(device).eval(), tokenizer


async def _next(queue: asyncio.Queue, timeout: float):
    """The next item of ``queue``, or None after ``timeout`` seconds.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as the item
    does (measured: 4 of 15 disconnected requests ran to their end), and a cancelled request must
    stop. ``asyncio.wait`` never swallows one.
    """
    getter = asyncio.ensure_future(queue.get())
    try:
        done, _ = await asyncio.wait((getter,), timeout=timeout)
    except BaseException:
        getter.cancel()
        raise
    if not done:
        getter.cancel()
        return None
    return getter.result()


def page_field(config_class: type | None = None) -> str:
    """The name transformers gives the KV-cache block size: ``block_size`` in older releases (the
    GPU machine's 5.17, where ``page_size=`` stopped the server at start-up), ``page_size`` in
    newer ones (5.25); the server's ``--page-size`` fills either."""
    import dataclasses

    if config_class is None:
        from transformers import ContinuousBatchingConfig as config_class

    names = {f.name for f in dataclasses.fields(config_class)}
    return "page_size" if "page_size" in names else "block_size"


class TransformersBackend:
    """Serves one model with continuous batching. See :class:`serve.backends.base.Backend`."""

    def __init__(self, model, tokenizer, model_id: str, context_length: int | None = None,
                 max_batch_size: int = 16, cache_tokens: int = 32768, page_size: int = 64,
                 max_batch_tokens: int = 512,
                 constraint_factory: Callable[[Constraint, Any, int, int], Any] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = model_id
        model_ctx = getattr(model.config, "max_position_embeddings", None) or 2048
        self.context_length = min(context_length or model_ctx, model_ctx)
        self.vocab_size = model.config.vocab_size
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self.max_batch_size = max_batch_size
        self.cache_tokens = max(cache_tokens, self.context_length)  # one full-length request must fit
        self.page_size = page_size
        self.max_batch_tokens = max_batch_tokens
        self.constraint_factory = constraint_factory
        self.stats = Stats()
        self._rows = RequestRows()
        self._manager = None
        self._ids = itertools.count()

    @classmethod
    def from_config(cls, cfg) -> TransformersBackend:
        model, tokenizer = load_model(cfg.model, cfg.adapter, cfg.dtype, cfg.device)
        from serve.constraints import build_processor
        return cls(model, tokenizer, cfg.served_model_name or Path(cfg.model).name, cfg.context_length,
                   cfg.max_batch_size, cfg.cache_tokens, cfg.page_size, cfg.max_batch_tokens,
                   constraint_factory=build_processor)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._manager is not None:
            return
        from transformers import ContinuousBatchingConfig, GenerationConfig

        generation_config = GenerationConfig(
            do_sample=False,  # RequestRows picks sampled tokens; the manager's argmax keeps them
            max_new_tokens=16, eos_token_id=self.eos_ids or None,
            pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else
            (self.eos_ids[0] if self.eos_ids else 0))
        cb_config = ContinuousBatchingConfig(
            num_blocks=math.ceil(self.cache_tokens / self.page_size), **{page_field(): self.page_size},
            max_batch_tokens=self.max_batch_tokens, max_requests_per_batch=self.max_batch_size)
        manager = self.model.init_continuous_batching(generation_config=generation_config,
                                                      continuous_batching_config=cb_config)
        install(manager, self._rows, self.max_batch_size)
        manager.start()
        self._manager = manager
        if self.constraint_factory is not None:
            await asyncio.to_thread(self._warm_constraints)

    def _warm_constraints(self) -> None:
        from serve.constraints import warm_up
        warm_up(self.constraint_factory, self.tokenizer, self.vocab_size, log)

    async def stop(self) -> None:
        if self._manager is None:
            return
        manager, self._manager = self._manager, None
        await asyncio.to_thread(manager.stop, block=True)

    # ------------------------------------------------------------------ generation

    def _control(self, request: GenerationRequest) -> RowControl | None:
        s = request.sampling
        constraint = None
        if request.constraint is not None:
            if self.constraint_factory is None:
                raise BackendError("constrained decoding is not configured on this server", 400)
            constraint = self.constraint_factory(request.constraint, self.tokenizer, self.vocab_size, s.max_tokens)
        if s.temperature == 0 and constraint is None:
            return None  # greedy, unconstrained: the manager's own argmax
        return RowControl(request.prompt_ids, s.temperature, s.top_p, s.seed, constraint,
                          self.eos_ids[0] if self.eos_ids else None)

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Checks the request now (a bad grammar raises :class:`BackendError` before any response
        starts), then returns the async iterator of its chunks."""
        if self._manager is None:
            raise RuntimeError("backend not started: await backend.start() first")
        return self._run(request, self._control(request))

    async def _run(self, request: GenerationRequest, control: RowControl | None) -> AsyncIterator[Chunk]:
        manager = self._manager
        s = request.sampling
        request_id = f"cmpl-{next(self._ids)}"
        slot = self._rows.new_slot()
        if control is not None:
            self._rows.controls[slot] = control
        outputs: asyncio.Queue = asyncio.Queue()
        manager.register_result_handler(request_id, outputs.put_nowait)
        manager.add_request(request.prompt_ids, request_id=request_id, max_new_tokens=s.max_tokens,
                            streaming=True, eos_token_id=[] if s.ignore_eos else self.eos_ids,
                            **{SLOT_KWARG: slot})
        self.stats.submitted += 1
        self.stats.running += 1
        text = TextStream(self.tokenizer, s.stop)
        n_prompt, generated = len(request.prompt_ids), []
        done = False
        try:
            while True:
                out = await _next(outputs, 5.0)
                if out is None:
                    if not manager.is_running():
                        raise RuntimeError("the continuous-batching loop has stopped")
                    continue
                if out.error:
                    raise RuntimeError(f"generation failed: {str(out.error)[:500]}")
                if control is not None and control.error is not None:
                    if isinstance(control.error, ConstraintFailed):
                        raise BackendError(f"the constraint failed while decoding: {control.error}",
                                           code="constraint_failed") from control.error
                    raise RuntimeError(f"generation failed: {str(control.error)[:500]}") from control.error
                generated = out.generated_tokens
                delta, stopped = text.push(generated)
                finished = out.is_finished()
                if stopped or finished:
                    if not stopped:
                        delta += text.flush()
                    ended_on_eos = bool(generated) and generated[-1] in self.eos_ids and not s.ignore_eos
                    reason = "length" if (not stopped and not ended_on_eos and len(generated) >= s.max_tokens) \
                        else "stop"
                    done = finished
                    yield Chunk(delta, reason, n_prompt, len(generated))
                    return
                if delta:
                    yield Chunk(delta)
        finally:
            self._rows.controls.pop(slot, None)
            self.stats.running -= 1
            self.stats.completion_tokens += len(generated)
            if done:
                self.stats.finished += 1
            else:  # stop string, client gone, or an error: free the request's cache now
                manager.cancel_request(request_id)
                with manager.output_router._lock:
                    manager.output_router.result_handlers.pop(request_id, None)
                if text.stopped:
                    self.stats.finished += 1
                else:
                    self.stats.cancelled += 1
                    self.stats.last_cancelled_tokens = (self.stats.last_cancelled_tokens + [len(generated)])[-16:]
