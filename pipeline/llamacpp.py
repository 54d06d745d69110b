"""llama.cpp in process: one GGUF model decoding many requests together, on a CPU.

    from pipeline.llamacpp import LlamaCppModel, Job
    model = LlamaCppModel("planner-Q8_0.gguf", slots=4, cache_tokens=8192)
    model.submit(Job(prompt_ids, max_tokens=64, pick=greedy, on_token=..., on_end=...))

Both the server's ``--backend llamacpp`` (:mod:`serve.backends.llamacpp`) and the pipeline's
:class:`pipeline.engines.LlamaCppEngine` run on this. It uses the ``llama-cpp-python`` binding's
low-level API (its model, context and batch objects), not ``Llama.generate``, for two reasons:

- **Requests share the model in one batch.** The context holds ``slots`` sequences in a unified
  KV cache; one thread builds each step's ``llama_batch`` from every running request (prompt
  chunks and one new token per decoding request) and calls ``llama_decode`` once. ``Llama``
  itself decodes one sequence per context, which would queue concurrent requests.
- **Tokens are picked here**, from the logits, by the same code as on the transformers path
  (``pick(logits) -> token``): greedy, or :class:`pipeline.sampling.RowControl` with its
  temperature, top-p, per-request seed and llguidance constraint. One grammar source, one
  sampler, whatever the backend.

A finished request leaves its tokens' KV in its slot; the next request goes to the free slot
sharing the longest prefix with its prompt, and when another slot (running or not) holds a longer
prefix, its cells are shared into the new slot (``llama_memory_seq_cp``); a request whose prefix is
still being evaluated for another waits for it. The planner's long tool list is evaluated once,
however many requests carry it.
A request is admitted only when the cache can hold its prompt plus ``max_tokens`` next to the
running ones, so a decode never runs out of cache mid-way.

The tokenizer is the model's own: ``tokenizer.json`` beside the GGUF (:class:`TokenizerFolder`,
without transformers), else as transformers reads it from the GGUF. Ids are llama.cpp's, and prompts
and chat templates render exactly as on the other backends.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("rewoo.llamacpp")

SHARE_MIN = 16  # a shared prefix shorter than this is evaluated again rather than copied or waited for

INSTALL_HINT = ("the llama.cpp backend needs the binding: run `make install-llamacpp` (or `pip install "
                "llama-cpp-python==0.3.36 sentencepiece`; it builds llama.cpp from source, about 5 min on 2 cores)")


class LlamaCppError(RuntimeError):
    """The GGUF or the binding cannot be used; the message says what to do."""


def available() -> bool:
    """Whether the binding imports (without loading its library twice)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def import_binding():
    try:
        import llama_cpp
        from llama_cpp import _internals  # noqa: F401
    except ImportError as e:
        raise LlamaCppError(INSTALL_HINT) from e
    except OSError as e:  # the shared library failed to load
        raise LlamaCppError(f"the llama.cpp library does not load ({e}); reinstall: {INSTALL_HINT}") from e
    return llama_cpp


_BACKEND_READY = False
_BACKEND_LOCK = threading.Lock()


def _quiet_backend(llama_cpp, verbose: bool) -> None:
    """Initialise llama.cpp once; its C log goes nowhere unless ``verbose``."""
    global _BACKEND_READY
    with _BACKEND_LOCK:
        if not _BACKEND_READY:
            from llama_cpp._logger import set_verbose

            set_verbose(verbose)
            llama_cpp.llama_backend_init()
            _BACKEND_READY = True


@functools.cache
def built_with_amx(llama_cpp) -> bool:
    """Whether the binding's ggml was compiled with AMX kernels (``ggml_cpu_has_amx_int8``: a
    compile-time answer). Such a build died with "Illegal instruction" at its first tile load on
    2-core cloud VMs whose CPU lists amx_tile (2026-12-01); `make install-llamacpp` builds without it."""
    import ctypes

    for lib in sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu.*")):
        try:
            return bool(ctypes.CDLL(str(lib)).ggml_cpu_has_amx_int8())
        except (OSError, AttributeError):
            continue
    return False


def model_params(llama_cpp):
    """llama.cpp's model parameters for this machine: the extra buffer types (AMX, weight
    repacking) off when the library has AMX kernels, unless REWOO_LLAMACPP_AMX=1 says this CPU runs
    them (a process killed by SIGILL cannot fall back, so it is decided before loading)."""
    params = llama_cpp.llama_model_default_params()
    if built_with_amx(llama_cpp) and os.environ.get("REWOO_LLAMACPP_AMX") != "1":
        params.use_extra_bufts = False
    return params


def is_gguf(path: str | Path) -> bool:
    """A file that starts with the GGUF magic."""
    p = Path(path).expanduser()
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(4) == b"GGUF"


class TokenizerFolder:
    """A ``tokenizer.json`` + ``tokenizer_config.json`` folder read with the ``tokenizers`` library
    alone: what the llama.cpp path asks of a tokenizer (encode, decode, EOS, llguidance's view
    through ``backend_tokenizer``, the chat template's text) without importing transformers, which
    imports torch: about 4 s of a cold command's start on 2 cores (2026-12-02). The same calls as
    a transformers fast tokenizer of the folder, and the same ids (a test compares them).
    :meth:`apply_chat_template` loads that transformers tokenizer on its first call."""

    def __init__(self, folder: str | Path):
        import json

        from tokenizers import Tokenizer

        self.folder = Path(folder)
        self.backend_tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        config = json.loads((self.folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.eos_token_id = None if self.eos_token is None else self.backend_tokenizer.token_to_id(self.eos_token)
        self.pad_token = _token_text(config.get("pad_token"))
        self.pad_token_id = None if self.pad_token is None else self.backend_tokenizer.token_to_id(self.pad_token)
        template_file = self.folder / "chat_template.jinja"
        self.chat_template = (template_file.read_text(encoding="utf-8") if template_file.is_file()
                              else config.get("chat_template"))
        self._with_templates = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> Encoding:
        return Encoding(input_ids=self.encode(text, add_special_tokens=add_special_tokens))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend_tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def apply_chat_template(self, *args, **kwargs):
        if self._with_templates is None:  # jinja with transformers' own extensions and checks
            from transformers import AutoTokenizer

            self._with_templates = AutoTokenizer.from_pretrained(str(self.folder))
        return self._with_templates.apply_chat_template(*args, **kwargs)


class Encoding(dict):
    """``{"input_ids": [...]}``, also read as ``.input_ids`` (as transformers' ``BatchEncoding``)."""

    @property
    def input_ids(self) -> list[int]:
        return self["input_ids"]


def _token_text(token) -> str | None:
    """A special token of ``tokenizer_config.json``: a string or an ``{"content": ...}`` object."""
    return token.get("content") if isinstance(token, dict) else token


_FOLDERS: dict[str, TokenizerFolder] = {}
_FOLDERS_LOCK = threading.Lock()


def _tokenizer_folder(folder: Path) -> TokenizerFolder:
    """One :class:`TokenizerFolder` per content: the default planner's and caller's GGUFs carry the
    same tokenizer, which is then read once and gets one llguidance view (~1 s to build). Sharing
    it between threads is safe: encoding and decoding only read the ``tokenizers`` object."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        f = folder / name
        digest.update(name.encode() + b"\0" + (f.read_bytes() if f.is_file() else b"") + b"\0")
    key = digest.hexdigest()
    with _FOLDERS_LOCK:
        if key not in _FOLDERS:
            _FOLDERS[key] = TokenizerFolder(folder)
        return _FOLDERS[key]


def tokenizer_dir(path: Path) -> Path:
    """Where the tokenizer files of GGUF ``path`` go: ``<name>.tokenizer/`` beside it (every
    :func:`serve.gguf.export` writes it)."""
    return path.with_name(path.stem + ".tokenizer")


def load_tokenizer(path: Path):
    """The model's tokenizer: ``tokenizer.json`` beside the GGUF (``<name>.tokenizer/`` or the
    same folder) as a :class:`TokenizerFolder` when present, else transformers' fast tokenizer
    read from the GGUF itself."""
    for folder in (tokenizer_dir(path), path.parent):
        if (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file():
            return _tokenizer_folder(folder)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        raise LlamaCppError(f"cannot read the tokenizer of {path} ({type(e).__name__}: {str(e)[:200]}); put "
                            f"tokenizer.json and tokenizer_config.json in {tokenizer_dir(path)}/") \
            from e


def greedy(logits: np.ndarray) -> int:
    return int(logits.argmax())


@dataclass
class Job:
    """One generation. ``pick(logits) -> token`` chooses each token from the float32 logits (a
    view, valid only during the call). ``on_token(token) -> bool`` runs on the decoding thread
    for each token (return False to stop: a stop string, a client gone). ``on_end(reason,
    error)`` runs once: reason ``stop`` (an EOS or ``on_token`` said stop), ``length``,
    ``cancelled`` or ``error``."""

    prompt_ids: list[int]
    max_tokens: int
    pick: Callable[[np.ndarray], int] = greedy
    on_token: Callable[[int], bool] = lambda _t: True
    on_end: Callable[[str, BaseException | None], None] = lambda _r, _e: None
    ignore_eos: bool = False
    # filled in by the model
    generated: list[int] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV sits in this sequence
    job: Job | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    next_token: int | None = None                     # sampled, to evaluate next step
    last_used: int = 0                                # admission counter: least recently used goes first


class LlamaCppModel:
    """A GGUF loaded once; :meth:`submit` jobs from any thread. See the module docstring."""

    def __init__(self, path: str | Path, slots: int = 4, cache_tokens: int = 8192, context_length: int | None = None,
                 threads: int | None = None, n_batch: int = 512, verbose: bool = False, tokenizer=None):
        path = Path(path).expanduser()
        if not path.is_file():
            raise LlamaCppError(f"GGUF file {path} does not exist")
        if not is_gguf(path):
            raise LlamaCppError(f"{path} is not a GGUF file (no GGUF magic); make one with "
                                "scripts/quantize.sh IN OUT.gguf --format gguf --type Q8_0")
        llama_cpp = import_binding()
        from llama_cpp import _internals as internals

        _quiet_backend(llama_cpp, verbose)
        self._llama_cpp = llama_cpp
        self.path = path
        threads = threads or _default_threads()
        mparams = model_params(llama_cpp)
        try:
            self._model = internals.LlamaModel(path_model=str(path), params=mparams, verbose=verbose)
        except ValueError as e:
            raise LlamaCppError(f"llama.cpp cannot load {path}: {e}") from e
        self.vocab_size = self._model.n_vocab()
        self.n_ctx_train = self._model.n_ctx_train()
        self.context_length = min(context_length or self.n_ctx_train, self.n_ctx_train)
        self.slots_n = max(1, slots)
        self.cache_tokens = max(cache_tokens, self.context_length)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.cache_tokens
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = self.slots_n
        cparams.kv_unified = True
        # As the binding's own Llama (measured on this CPU: 41.0 tok/s disabled, 38.1 with "auto").
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.n_threads = cparams.n_threads_batch = threads
        from llama_cpp._utils import suppress_stdout_stderr

        # A unified cache larger than the training context draws a warning per context
        # ("n_ctx_seq > n_ctx_train"); each request stays within context_length <= n_ctx_train.
        with suppress_stdout_stderr(disable=verbose):
            self._ctx = internals.LlamaContext(model=self._model, params=cparams, verbose=verbose)
        self._batch = internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1, verbose=verbose)
        self.n_batch = n_batch
        self.threads = threads
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(path)
        eos = {self._model.token_eos()}
        if self.tokenizer.eos_token_id is not None:
            eos.add(int(self.tokenizer.eos_token_id))
        self.eos_ids = eos
        self._slots = [_Slot(i) for i in range(self.slots_n)]
        self.prompt_tokens_evaluated = 0  # prompt tokens decoded (not found in a slot's cache)
        self.prompt_tokens_shared = 0     # prompt tokens whose cache was copied from another slot
        self._admitted = 0
        self.steps = 0                    # llama_decode calls
        self._inbox: queue.Queue[Job] = queue.Queue()
        self._waiting: list[Job] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llamacpp-decode", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public

    def submit(self, job: Job) -> Job:
        if not job.prompt_ids:
            raise ValueError("the prompt is empty")
        if len(job.prompt_ids) + job.max_tokens > self.context_length:
            raise ValueError(f"prompt ({len(job.prompt_ids)} tokens) plus max_tokens ({job.max_tokens}) exceeds "
                             f"the context length {self.context_length}")
        if self._stop.is_set():
            raise LlamaCppError("the model is closed")
        self._inbox.put(job)
        self._wake.set()
        return job

    def cancel(self, job: Job) -> None:
        job.cancelled.set()
        self._wake.set()

    def close(self) -> None:
        """Stop the decoding thread (running requests end as cancelled) and free the model."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake.set()
        self._thread.join(30)
        if not self._thread.is_alive():
            for part in (self._batch, self._ctx, self._model):
                part.close()

    # ------------------------------------------------------------------ the decoding thread

    def _used(self) -> int:
        return sum(len(s.job.prompt_ids) + s.job.max_tokens for s in self._slots if s.job is not None)

    def _admit(self) -> None:
        while True:
            try:
                self._waiting.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        still = []
        for job in self._waiting:
            if job.cancelled.is_set():
                self._finish_job(job, "cancelled", None)
                continue
            free = [s for s in self._slots if s.job is None]
            need = len(job.prompt_ids) + job.max_tokens
            if not free or self._used() + need > self.cache_tokens:
                still.append(job)
                continue
            # Where the longest prefix of this prompt lies: in a slot's evaluated cache (shared by a
            # copy of its cells), or still pending in a running slot's prompt (wait a step or two
            # for it rather than evaluate the same tokens twice).
            best, best_n, waiting_for = None, 0, 0
            for s in self._slots:
                n_cached = _common_prefix(s.cached, job.prompt_ids)
                if n_cached > best_n:
                    best, best_n = s, n_cached
                if s.job is not None and s.pending:
                    waiting_for = max(waiting_for, _common_prefix(s.cached + s.pending, job.prompt_ids))
            if waiting_for >= max(best_n + SHARE_MIN, SHARE_MIN):
                still.append(job)
                continue
            # The free slot holding the longest prefix of this prompt; with none, the least recently
            # used one, so that two prompt families (the planner's, the solver's) keep their caches.
            def fit(s: _Slot) -> tuple[int, int]:
                n = _common_prefix(s.cached, job.prompt_ids)
                return (n if n >= SHARE_MIN else 0), -s.last_used

            slot = max(free, key=fit)
            self._admitted += 1
            slot.last_used = self._admitted
            keep = min(_common_prefix(slot.cached, job.prompt_ids), len(job.prompt_ids) - 1)
            share = min(best_n, len(job.prompt_ids) - 1)
            if best is not None and best is not slot and share >= keep + SHARE_MIN:
                self._ctx.kv_cache_seq_rm(slot.seq, 0, -1)
                self._ctx.kv_cache_seq_cp(best.seq, slot.seq, 0, share)
                slot.cached = best.cached[:share]
                self.prompt_tokens_shared += share
                keep = share
            elif not self._ctx.kv_cache_seq_rm(slot.seq, keep, -1):
                self._ctx.kv_cache_seq_rm(slot.seq, 0, -1)
                keep = 0
            slot.cached = slot.cached[:keep]
            slot.pending = list(job.prompt_ids[keep:])
            slot.next_token = None
            slot.job = job
        self._waiting = still

    def _finish(self, slot: _Slot, reason: str, error: BaseException | None = None) -> None:
        job, slot.job = slot.job, None
        slot.pending, slot.next_token = [], None
        if reason == "error":  # the sequence's cache may be half-written
            self._ctx.kv_cache_seq_rm(slot.seq, 0, -1)
            slot.cached = []
        if job is not None:
            self._finish_job(job, reason, error)

    @staticmethod
    def _finish_job(job: Job, reason: str, error: BaseException | None) -> None:
        try:
            job.on_end(reason, error)
        except Exception:  # noqa: BLE001 - a callback's failure must not stop the loop
            log.exception("on_end callback failed")

    def _loop(self) -> None:
        llama_cpp = self._llama_cpp
        while not self._stop.is_set():
            self._admit()
            active = [s for s in self._slots if s.job is not None]
            for s in active:
                if s.job.cancelled.is_set():
                    self._finish(s, "cancelled")
            active = [s for s in self._slots if s.job is not None]
            if not active:
                self._wake.wait(0.1)
                self._wake.clear()
                continue
            # One batch: each decoding request's new token, then prompt chunks while room lasts.
            b = self._batch.batch
            n = 0
            rows: list[tuple[_Slot, int]] = []  # (slot, batch index whose logits it samples from)

            def add(slot: _Slot, tokens: list[int], want_logits: bool) -> None:
                nonlocal n
                pos0 = len(slot.cached)
                for i, t in enumerate(tokens):
                    b.token[n] = t
                    b.pos[n] = pos0 + i
                    b.n_seq_id[n] = 1
                    b.seq_id[n][0] = slot.seq
                    b.logits[n] = want_logits and i == len(tokens) - 1
                    n += 1
                slot.cached.extend(tokens)
                if want_logits:
                    rows.append((slot, n - 1))

            for s in active:
                if s.next_token is not None:
                    add(s, [s.next_token], True)
                    s.next_token = None
            for s in active:
                if s.pending and n < self.n_batch:
                    take = s.pending[:self.n_batch - n]
                    s.pending = s.pending[len(take):]
                    add(s, take, not s.pending)
                    self.prompt_tokens_evaluated += len(take)
            b.n_tokens = n
            self.steps += 1
            try:
                self._ctx.decode(self._batch)
            except Exception as e:  # noqa: BLE001 - every request in the batch ends with it
                for s in active:
                    self._finish(s, "error", RuntimeError(f"llama.cpp decode failed: {e}"))
                continue
            for slot, index in rows:
                job = slot.job
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx.ctx, index),
                                               shape=(self.vocab_size,))
                try:
                    token = int(job.pick(logits))
                except Exception as e:  # noqa: BLE001 - a failed pick (a broken constraint) ends this request
                    self._finish(slot, "error", e)
                    continue
                eos = token in self.eos_ids and not job.ignore_eos
                if not eos:
                    job.generated.append(token)
                    try:
                        go_on = job.on_token(token)
                    except Exception as e:  # noqa: BLE001
                        self._finish(slot, "error", e)
                        continue
                else:
                    go_on = False
                if eos or not go_on:
                    self._finish(slot, "stop")
                elif len(job.generated) >= job.max_tokens:
                    self._finish(slot, "length")
                else:
                    slot.next_token = token
        for s in self._slots:
            if s.job is not None:
                self._finish(s, "cancelled")

    # ------------------------------------------------------------------ convenience

    def generate(self, prompt_ids: list[int], max_tokens: int, pick: Callable[[np.ndarray], int] = greedy,
                 on_token: Callable[[int], bool] = lambda _t: True, ignore_eos: bool = False,
                 timeout: float | None = None) -> tuple[list[int], str]:
        """Blocking: ``(generated ids, finish reason)``; raises the job's error."""
        done = threading.Event()
        box: dict = {}

        def on_end(reason, error):
            box["reason"], box["error"] = reason, error
            done.set()

        job = self.submit(Job(list(prompt_ids), max_tokens, pick, on_token, on_end, ignore_eos))
        if not done.wait(timeout):
            self.cancel(job)
            done.wait(30)
            raise TimeoutError(f"generation took over {timeout} s")
        if box["error"] is not None:
            raise box["error"]
        return job.generated, box["reason"]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _default_threads() -> int:
    """``$REWOO_LLAMACPP_THREADS``, else every core this process may use. Unlike torch's (1 on
    <= 2 cores, FACTS.md), llama.cpp's threads scale here: on this 2-core machine, 2 threads
    against 1 gave prefill 212-255 vs 143-146 tok/s and decode 44-46 vs 28-30 tok/s (Q8_0, 135M)."""
    env = os.environ.get("REWOO_LLAMACPP_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
