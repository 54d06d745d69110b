"""The exllamav2 backend (CUDA only): an EXL2 folder served with exllamav2's dynamic generator.

    python -m serve --model models/planner-exl2-2.5bpw --backend exllamav2

The dynamic generator batches jobs itself (paged cache, requests joining and leaving each step)
and handles stop strings and seeds per job. One thread runs ``generator.iterate()``; requests
reach it through a queue and get their results back on the event loop. exllamav2 compiles CUDA
code when imported, so it is imported here, lazily, and any failure (it raises OSError without
CUDA) becomes a clear refusal. Constrained output is not offered on this backend (a 400).
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator
from pathlib import Path

from serve.backends.base import BackendError, Chunk, GenerationRequest, Stats


def import_exllamav2():
    """The exllamav2 module, or a RuntimeError saying why this machine cannot run it."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError("the exllamav2 backend needs a CUDA GPU, and torch sees none; "
                           "use --backend transformers on this machine")
    try:
        import exllamav2
        import exllamav2.generator  # noqa: F401
    except Exception as e:  # OSError without CUDA_HOME, ImportError when absent, build errors
        raise RuntimeError(f"cannot import exllamav2 ({type(e).__name__}: {e}); install the GPU extra: "
                           "pip install 'rewoo-stack[gpu]'") from e
    return exllamav2


class ExLlamaV2Backend:
    """See :class:`serve.backends.base.Backend`. ``cache_tokens`` is the paged cache shared by all
    jobs (a multiple of 256, exllamav2's page size)."""

    def __init__(self, model_dir: str, model_id: str, context_length: int | None = None,
                 max_batch_size: int = 16, cache_tokens: int = 32768):
        ex = import_exllamav2()
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
        from exllamav2.generator import ExLlamaV2DynamicGenerator

        if not (Path(model_dir) / "config.json").is_file():
            raise ValueError(f"--model {model_dir}: no config.json; give an EXL2 folder (scripts/quantize.sh makes one)")
        config = ExLlamaV2Config(model_dir)
        if context_length:
            config.max_seq_len = min(context_length, config.max_seq_len)
        self.model = ExLlamaV2(config)
        cache_tokens = max(256, (max(cache_tokens, config.max_seq_len) + 255) // 256 * 256)
        self.cache = ExLlamaV2Cache(self.model, max_seq_len=cache_tokens, lazy=True)
        self.model.load_autosplit(self.cache)
        self.tokenizer_ex = ExLlamaV2Tokenizer(config)
        self.generator = ExLlamaV2DynamicGenerator(model=self.model, cache=self.cache, tokenizer=self.tokenizer_ex,
                                                   max_batch_size=max_batch_size)
        self._ex = ex
        # The HF tokenizer from the same folder: chat templates and prompt ids as on the other backend.
        from transformers import AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model_id = model_id
        self.context_length = config.max_seq_len
        self.vocab_size = config.vocab_size
        self.stats = Stats()
        self._inbox: queue.Queue = queue.Queue()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_config(cls, cfg) -> ExLlamaV2Backend:
        return cls(cfg.model, cfg.served_model_name or Path(cfg.model).name, cfg.context_length,
                   cfg.max_batch_size, cfg.cache_tokens)

    async def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="exl2-generator", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
            self._thread = None

    def _loop(self) -> None:
        """The generator thread: take new jobs and cancellations, iterate, hand results back."""
        jobs = {}  # identifier -> (job, loop, deliver)
        while not self._stop.is_set():
            idle = not jobs
            try:
                while True:
                    op, ident, payload = self._inbox.get(timeout=0.1 if idle else 0)
                    idle = False
                    if op == "add":
                        job, loop, deliver = payload
                        jobs[ident] = payload
                        self.generator.enqueue(job)
                    elif ident in jobs:  # cancel
                        self.generator.cancel(jobs.pop(ident)[0])
            except queue.Empty:
                pass
            if not jobs:
                continue
            for result in self.generator.iterate():
                ident = result.get("identifier")
                if ident not in jobs or result.get("stage") != "streaming":
                    continue
                _, loop, deliver = jobs[ident]
                loop.call_soon_threadsafe(deliver, result)
                if result.get("eos"):
                    jobs.pop(ident, None)

    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        if request.constraint is not None:
            raise BackendError("constrained output is not available on the exllamav2 backend; "
                               "serve the model with --backend transformers for it", code="unsupported_on_backend")
        return self._run(request)

    async def _run(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        import torch
        from exllamav2.generator import ExLlamaV2DynamicJob, ExLlamaV2Sampler

        s = request.sampling
        settings = ExLlamaV2Sampler.Settings()
        settings.temperature = s.temperature
        settings.top_p = s.top_p
        settings.top_k = 0
        settings.token_repetition_penalty = 1.0
        if s.temperature == 0:
            settings = ExLlamaV2Sampler.Settings.greedy()
        stop_conditions = list(s.stop) + ([] if s.ignore_eos else [self.tokenizer_ex.eos_token_id])
        ident = next(self._ids)
        job = ExLlamaV2DynamicJob(input_ids=torch.tensor([request.prompt_ids], dtype=torch.long),
                                  max_new_tokens=s.max_tokens, gen_settings=settings, seed=s.seed,
                                  stop_conditions=stop_conditions, identifier=ident)
        results: asyncio.Queue = asyncio.Queue()
        self._inbox.put(("add", ident, (job, asyncio.get_running_loop(), results.put_nowait)))
        self.stats.submitted += 1
        self.stats.running += 1
        n_tokens, done = 0, False
        try:
            while True:
                result = await results.get()
                ids = result.get("token_ids")
                n_tokens += 0 if ids is None else ids.shape[-1]
                text = result.get("text", "")
                if result.get("eos"):
                    reason = "length" if result.get("eos_reason") == "max_new_tokens" else "stop"
                    done = True
                    yield Chunk(text, reason, len(request.prompt_ids), result.get("new_tokens", n_tokens))
                    return
                if text:
                    yield Chunk(text)
        finally:
            self.stats.running -= 1
            self.stats.completion_tokens += n_tokens
            if done:
                self.stats.finished += 1
            else:
                self._inbox.put(("cancel", ident, None))
                self.stats.cancelled += 1
