"""LLM engines: the transformers Agents protocol with token accounting.

    from pipeline.engines import load_engine
    engine = load_engine("path/to/model")            # transformers, in process (CPU or GPU)
    engine = load_engine("http://127.0.0.1:8000/v1")  # any OpenAI-compatible server
    engine = load_engine("planner-Q8_0.gguf")         # llama.cpp, in process (CPU)
    engine([{"role": "user", "content": "Hi"}], stop_sequences=["\\n"])   # -> str
    engine.complete("### Instruction:\\n...\\n\\n### Response:\\n")        # -> Completion

Every engine is a callable ``engine(messages, stop_sequences=None, **kw) -> str`` (the
transformers Agents protocol) and also has:

- ``complete(prompt, stop_sequences=None, max_new_tokens=None, temperature=None,
  constraint=None) -> Completion``: the completion form, for Alpaca prompts;
- ``chat(messages, ...) -> Completion``;
- ``complete_batch(prompts, constraints=None, ...) -> list[Completion]``: several prompts at once
  (the transformers engine pads them into one ``generate``);
- ``complete_stream(prompt, ...)`` / ``chat_stream(messages, ...) -> Iterator[str]``: the text in
  pieces as it is generated (``streams`` says whether the engine really streams: transformers with
  a ``TextIteratorStreamer``, OpenAI-compatible servers over SSE; the others yield the text once);
- ``usage``: totals of calls and tokens since creation.

A :class:`Completion` carries ``text``, ``prompt_tokens``, ``completion_tokens``,
``finish_reason`` ("stop" or "length") and ``seconds``. Each call is also appended to the
current :func:`recording` list, if one is open in this context; that is how a pipeline run
collects its trace, even from worker threads (which copy the context).

Constraints (``constraint=``) are ``Constraint("grammar" | "regex" | "json_schema", value)``;
the transformers engine enforces them with llguidance, the HTTP engine sends them as
vLLM-style ``guided_grammar`` / ``guided_regex`` / ``guided_json`` fields.
"""

from __future__ import annotations

import contextlib
import copy
import contextvars
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import formats

__all__ = ["Completion", "Constraint", "Engine", "EngineError", "FunctionEngine", "LazyEngine", "TransformersEngine",
           "OpenAIEngine", "ExLlamaV2Engine", "LlamaCppEngine", "as_engine", "load_engine", "recording", "Usage"]


class EngineError(RuntimeError):
    """An engine cannot serve: a missing model, an unreachable endpoint, a refused request."""


@dataclass(frozen=True)
class Constraint:
    """What the output must match: a Lark ``grammar``, a ``regex`` or a ``json_schema`` (dict).

    ``tool_prior``: a plan grammar's :class:`pipeline.formats.toolprior.ToolPrior`, which leans each
    step's tool name towards the tools its ``Plan:`` line describes. The in-process engines apply it
    (transformers, llama.cpp); the HTTP engine sends it as a ``tool_prior`` field, which this
    project's server applies (``serve.constraints``) and other servers ignore."""

    kind: str
    value: Any
    tool_prior: Any = None

    def __post_init__(self):
        if self.kind not in ("grammar", "regex", "json_schema"):
            raise ValueError(f"unknown constraint kind {self.kind!r}: use grammar, regex or json_schema")


@dataclass
class Completion:
    """One generation: the text (stop sequence excluded) and what it cost."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"
    seconds: float = 0.0


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, c: Completion) -> None:
        with self._lock:
            self.calls += 1
            self.prompt_tokens += c.prompt_tokens or 0
            self.completion_tokens += c.completion_tokens or 0


class _Recordings(tuple):
    """The recordings open in a context; a call is appended to each (they nest)."""

    def append(self, entry: dict) -> None:
        for calls in self:
            calls.append(entry)


_RECORDING: contextvars.ContextVar[_Recordings | None] = contextvars.ContextVar("rewoo_engine_recording",
                                                                               default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[dict]]:
    """Collect every engine call made in this context (and in threads started with a copy of
    it) as ``{"role", "engine", "prompt", "output", "prompt_tokens", "completion_tokens",
    "finish_reason", "seconds", "t_end"}`` dicts, in completion order. Recordings nest: an
    outer one also sees the calls of an inner one."""
    calls: list[dict] = []
    token = _RECORDING.set(_Recordings((*(_RECORDING.get() or ()), calls)))
    try:
        yield calls
    finally:
        _RECORDING.reset(token)


_ROLE: contextvars.ContextVar[str] = contextvars.ContextVar("rewoo_engine_role", default="llm")
# A transformers streamer for the one generation started in this context (complete_stream).
_STREAMER: contextvars.ContextVar[Any] = contextvars.ContextVar("rewoo_engine_streamer", default=None)


def _stream_text(pieces: Iterator[str], stops: Sequence[str] | None) -> Iterator[str]:
    """``pieces`` passed on until the text holds a stop sequence (the text before it is the
    last piece). A piece that could be the start of a stop sequence is held back until known."""
    stops = [s for s in (stops or ()) if s]
    sent, text = 0, ""
    for piece in pieces:
        text += piece
        cut, found = _cut(text, stops)
        if found:
            if len(cut) > sent:
                yield cut[sent:]
            return
        hold = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        if len(text) - hold > sent:
            yield text[sent:len(text) - hold]
            sent = len(text) - hold
    if len(text) > sent:
        yield text[sent:]


@contextlib.contextmanager
def role(name: str) -> Iterator[None]:
    """Label the engine calls made inside (planner, caller, solver, tool:llm) in recordings."""
    token = _ROLE.set(name)
    try:
        yield
    finally:
        _ROLE.reset(token)


def render_messages(messages: Sequence[dict], tokenizer=None, template: str = "auto", name: str = "the model") -> str:
    """Chat messages as one prompt, as an in-process engine renders a chat call: the tokenizer's
    chat template when ``template`` is "auto" or "chat" and it has one, else Alpaca. (Training
    rows recorded from an agent render with this too, so they are the prompts of run time.)"""
    if template in ("auto", "chat") and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    if template == "chat":
        raise EngineError(f"{name} has no chat template; use template='alpaca'")
    return formats.messages_to_alpaca(messages)


def _render_with_template(engine, messages: Sequence[dict]) -> str:
    return render_messages(messages, engine.tokenizer, engine.template, engine.name)


def _with_tool_prior(proc, decode: Callable[[list[int]], str], constraints: Sequence[Constraint]):
    """``proc`` (a grammar's logits processor), wrapped to apply the constraints' tool priors, if
    any has one; ``decode``: token ids to text, with the engine's tokenizer."""
    if all(c.tool_prior is None for c in constraints):
        return proc
    from pipeline.formats.toolprior import ToolPriorProcessor

    return ToolPriorProcessor(decode, [c.tool_prior for c in constraints], inner=proc)


def _cut(text: str, stops: Sequence[str] | None) -> tuple[str, bool]:
    cut = len(text)
    for s in stops or ():
        i = text.find(s)
        if 0 <= i < cut:
            cut = i
    return text[:cut], cut < len(text)


class Engine:
    """Base of the engines: the protocol, accounting and recording around ``_generate``.

    Subclasses implement ``_generate(prompts: list[str], stop, max_new_tokens, temperature,
    constraints) -> list[Completion]`` and ``_render(messages) -> str``.
    """

    name = "engine"

    def __init__(self, max_new_tokens: int = 256, temperature: float = 0.0):
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.usage = Usage()

    # -- the protocol -------------------------------------------------------------------------
    def __call__(self, messages, stop_sequences: list[str] | None = None, **kw) -> str:
        if isinstance(messages, str):
            return self.complete(messages, stop_sequences, **kw).text
        return self.chat(messages, stop_sequences, **kw).text

    def chat(self, messages: Sequence[dict], stop_sequences: list[str] | None = None, **kw) -> Completion:
        return self.complete(self._render(messages), stop_sequences, **kw)

    def complete(self, prompt: str, stop_sequences: list[str] | None = None, max_new_tokens: int | None = None,
                 temperature: float | None = None, constraint: Constraint | None = None) -> Completion:
        return self.complete_batch([prompt], stop_sequences, max_new_tokens, temperature,
                                   None if constraint is None else [constraint])[0]

    # Whether complete_stream yields text while it is generated (else: the whole text at once).
    streams = False

    def complete_stream(self, prompt: str, stop_sequences: list[str] | None = None, max_new_tokens: int | None = None,
                        temperature: float | None = None, constraint: Constraint | None = None) -> Iterator[str]:
        """The text of one completion in pieces, as it is generated (cut at the first stop
        sequence); the finished call is accounted and recorded as :meth:`complete` does.
        Engines that cannot stream yield the whole text once."""
        yield self.complete(prompt, stop_sequences, max_new_tokens, temperature, constraint).text

    def chat_stream(self, messages: Sequence[dict], stop_sequences: list[str] | None = None,
                    max_new_tokens: int | None = None, temperature: float | None = None,
                    constraint: Constraint | None = None) -> Iterator[str]:
        """:meth:`complete_stream` for chat messages (the engine's chat rendering, as :meth:`chat`)."""
        yield from self.complete_stream(self._render(messages), stop_sequences, max_new_tokens, temperature,
                                        constraint)

    def complete_batch(self, prompts: Sequence[str], stop_sequences: list[str] | None = None,
                       max_new_tokens: int | None = None, temperature: float | None = None,
                       constraints: Sequence[Constraint | None] | None = None) -> list[Completion]:
        if constraints is not None and len(constraints) != len(prompts):
            raise ValueError(f"{len(constraints)} constraints for {len(prompts)} prompts")
        t0 = time.perf_counter()
        outs = self._generate(list(prompts), list(stop_sequences or []),
                              max_new_tokens or self.max_new_tokens,
                              self.temperature if temperature is None else temperature,
                              list(constraints) if constraints is not None else [None] * len(prompts))
        seconds = (time.perf_counter() - t0) / max(len(prompts), 1)
        for p, c in zip(prompts, outs):
            c.seconds = c.seconds or seconds
            self._account(p, c)
        return outs

    def _account(self, prompt: str, c: Completion) -> None:
        """Count one finished call, and add it to every open :func:`recording`."""
        self.usage.add(c)
        rec = _RECORDING.get()
        if rec is not None:
            rec.append({"role": _ROLE.get(), "engine": self.name, "prompt": prompt, "output": c.text,
                        "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                        "finish_reason": c.finish_reason, "seconds": round(c.seconds, 4),
                        "t_end": time.perf_counter()})

    # -- for subclasses -----------------------------------------------------------------------
    def _render(self, messages: Sequence[dict]) -> str:
        return formats.messages_to_alpaca(messages)

    def _generate(self, prompts, stop, max_new_tokens, temperature, constraints) -> list[Completion]:
        raise NotImplementedError(f"{type(self).__name__} must implement _generate")

    @property
    def supports_constraints(self) -> bool:
        return False


class LazyEngine(Engine):
    """An engine made on first use: ``factory()`` runs once, under a lock, when a call first needs
    the model; until then nothing is loaded. The default function caller is one: most tasks never
    call it, and loading its model cost every run ~0.5 s (llama.cpp) before the plan's first token.

    A ``factory`` that raises :class:`EngineError` raises it at that call, and again at the next
    (nothing half-made is kept). Calls, accounting and recordings are the made engine's own.
    """

    def __init__(self, factory: Callable[[], Engine], name: str):
        self._factory = factory
        self.name = name
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                engine = self._factory()
                self._engine, self.name = engine, engine.name
            return self._engine

    # Settings and counts read before the first call must not load the model.
    @property
    def usage(self) -> Usage:
        return self._engine.usage if self._engine is not None else Usage()

    @property
    def max_new_tokens(self) -> int:
        return self.engine.max_new_tokens

    @property
    def temperature(self) -> float:
        return self.engine.temperature

    @property
    def streams(self) -> bool:  # type: ignore[override]
        return self.engine.streams

    @property
    def supports_constraints(self) -> bool:
        return self.engine.supports_constraints

    def chat(self, messages, stop_sequences=None, **kw) -> Completion:
        return self.engine.chat(messages, stop_sequences, **kw)

    def complete(self, prompt, stop_sequences=None, max_new_tokens=None, temperature=None,
                 constraint=None) -> Completion:
        return self.engine.complete(prompt, stop_sequences, max_new_tokens, temperature, constraint)

    def complete_batch(self, prompts, stop_sequences=None, max_new_tokens=None, temperature=None,
                       constraints=None) -> list[Completion]:
        return self.engine.complete_batch(prompts, stop_sequences, max_new_tokens, temperature, constraints)

    def complete_stream(self, prompt, stop_sequences=None, max_new_tokens=None, temperature=None,
                        constraint=None) -> Iterator[str]:
        return self.engine.complete_stream(prompt, stop_sequences, max_new_tokens, temperature, constraint)

    def chat_stream(self, messages, stop_sequences=None, max_new_tokens=None, temperature=None,
                    constraint=None) -> Iterator[str]:
        return self.engine.chat_stream(messages, stop_sequences, max_new_tokens, temperature, constraint)

    def _render(self, messages) -> str:
        return self.engine._render(messages)

    def __getattr__(self, attr: str):  # tokenizer, model, template, ... of the made engine
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.engine, attr)


class FunctionEngine(Engine):
    """Any ``fn(messages, stop_sequences=None, **kw) -> str`` as an :class:`Engine`.

    Token counts come from the callable's ``last_input_token_count`` /
    ``last_output_token_count`` (transformers Agents engines set them) or its running
    ``prompt_tokens`` / ``completion_tokens`` totals when it has them; otherwise they are
    unknown (None) and counted as 0. Constraints are not enforced: the output is parsed as is.
    """

    def __init__(self, fn: Callable, name: str | None = None):
        super().__init__()
        self.fn = fn
        self.name = name or getattr(fn, "__name__", type(fn).__name__)
        self._lock = threading.Lock()

    def _render(self, messages):  # keep messages: the callable takes them as they are
        return messages

    def chat(self, messages, stop_sequences=None, **kw) -> Completion:
        return self._call_recorded(list(messages), stop_sequences)

    def complete_batch(self, prompts, stop_sequences=None, max_new_tokens=None, temperature=None,
                       constraints=None) -> list[Completion]:
        return [self._call_recorded(p, stop_sequences) for p in prompts]

    def _call_recorded(self, prompt, stop) -> Completion:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        t0 = time.perf_counter()
        with self._lock:  # token totals are read around the call
            before = (getattr(self.fn, "prompt_tokens", None), getattr(self.fn, "completion_tokens", None))
            text = self.fn(messages, stop_sequences=stop)
            pt = getattr(self.fn, "last_input_token_count", None)
            ct = getattr(self.fn, "last_output_token_count", None)
            if pt is None and before[0] is not None:
                pt = self.fn.prompt_tokens - before[0]
                ct = self.fn.completion_tokens - before[1]
        if not isinstance(text, str):
            raise EngineError(f"engine {self.name} returned {type(text).__name__}, not str")
        text, _ = _cut(text, stop)
        c = Completion(text, pt, ct, "stop", time.perf_counter() - t0)
        self._account(prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False), c)
        return c


def as_engine(obj: Any) -> Engine:
    """An :class:`Engine` from an engine, a callable, or a spec string (see :func:`load_engine`)."""
    if isinstance(obj, Engine):
        return obj
    if isinstance(obj, (str, Path)):
        return load_engine(str(obj))
    if callable(obj):
        return FunctionEngine(obj)
    raise TypeError(f"not an engine: {obj!r} (give a model path, a model name, an http(s) base URL or a callable)")


# ------------------------------------------------------------------------------------------------
# transformers, in process
# ------------------------------------------------------------------------------------------------

class TransformersEngine(Engine):
    """A causal LM loaded with transformers, in this process.

    ``model``: a local folder or a model name (``from_pretrained``). ``device``: "auto" (CUDA
    when present, else CPU), "cpu", "cuda", "cuda:1". ``dtype``: "auto" (bf16 on a GPU that has
    it, else fp32), or a torch dtype name. ``load_in_4bit``: bitsandbytes NF4 (works on CPU
    too). ``template``: "auto" uses the tokenizer's chat template when it has one for chat
    calls, else Alpaca. Generation runs under a lock: one ``generate`` at a time per model;
    batches go through :meth:`complete_batch`.

    ``model`` may also be a PEFT adapter folder (``adapter_config.json``): its base is loaded
    (a key of ``pipeline.defaults.BASES`` or a path/name) and the adapter put on it.
    ``adapter`` loads an adapter onto ``model`` under ``adapter_name``; :meth:`with_adapter`
    adds another adapter to the same base and returns an engine that generates with it (one
    base in memory, the adapter switched per call under the shared lock).
    """

    def __init__(self, model: str | Path, device: str = "auto", dtype: str = "auto", load_in_4bit: bool = False,
                 adapter: str | None = None, max_new_tokens: int = 256, temperature: float = 0.0,
                 template: str = "auto", seed: int | None = 0, adapter_name: str = "default"):
        super().__init__(max_new_tokens, temperature)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name = str(model)
        self.template = template
        self.seed = seed
        self.adapter_name: str | None = None
        path = Path(str(model)).expanduser()
        looks_local = str(model).startswith((".", "/", "~")) or path.exists()
        if looks_local and not path.exists():
            raise EngineError(f"model path {model} does not exist")
        if adapter is None and (path / "adapter_config.json").is_file():
            adapter, model = str(path), adapter_base(path)
            path = Path(model)
            looks_local = True
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if load_in_4bit:
            from transformers import BitsAndBytesConfig
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch_dtype)
            kwargs["device_map"] = device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path if looks_local else model))
            self.model = AutoModelForCausalLM.from_pretrained(str(path if looks_local else model), **kwargs)
        except OSError as e:
            raise EngineError(f"cannot load model {model!r}: {str(e).splitlines()[0]}") from e
        if adapter:
            from peft import PeftModel
            try:
                self.model = PeftModel.from_pretrained(self.model, adapter, adapter_name=adapter_name)
            except (OSError, ValueError) as e:
                raise EngineError(f"cannot load adapter {adapter}: {str(e).splitlines()[0]}") from e
            self.adapter_name = adapter_name
        if not load_in_4bit:
            self.model.to(device)
        self.model.eval()
        self.device = device
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.vocab_size = self.model.config.get_text_config().vocab_size
        self._lock = threading.Lock()

    @property
    def supports_constraints(self) -> bool:
        return True

    streams = True

    def complete_stream(self, prompt, stop_sequences=None, max_new_tokens=None, temperature=None, constraint=None):
        """Text as ``generate`` writes it (transformers ``TextIteratorStreamer``): the generation
        runs in a thread, under the model's lock, and is accounted like :meth:`complete`."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        box: dict = {}

        def generate():
            _STREAMER.set(streamer)
            try:
                box["completion"] = self.complete(prompt, stop_sequences, max_new_tokens, temperature, constraint)
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
                box["error"] = e
                streamer.end()

        thread = threading.Thread(target=contextvars.copy_context().run, args=(generate,), daemon=True,
                                  name="rewoo-stream")
        thread.start()
        yield from _stream_text(iter(streamer), stop_sequences)
        thread.join()
        if "error" in box:
            raise box["error"]

    def with_adapter(self, adapter: str | Path, name: str) -> "TransformersEngine":
        """An engine over the same base (same weights, tokenizer and lock) that generates with
        the adapter at ``adapter``, loaded under ``name``. Needs an engine made with an adapter."""
        if self.adapter_name is None:
            raise EngineError(f"{self.name} has no adapter: load it with adapter=... before adding others")
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise EngineError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
        with self._lock:
            self.model.load_adapter(str(adapter), adapter_name=name)
        other = copy.copy(self)
        other.usage = Usage()
        other.adapter_name = name
        other.name = f"{self.name}+{name}"
        return other

    def _render(self, messages):
        return _render_with_template(self, messages)

    def _processor(self, constraints):
        from pipeline.formats import constrain
        if all(c is None for c in constraints):
            return None
        rows = []
        for c in constraints:
            if c is None:
                raise ValueError("in a batch, either every prompt has a constraint or none has")
            rows.append({c.kind: c.value})
        return _with_tool_prior(constrain.batch_logits_processor(self.tokenizer, self.vocab_size, rows),
                                self.tokenizer.decode, constraints)

    def _generate(self, prompts, stop, max_new_tokens, temperature, constraints):
        import torch

        tok = self.tokenizer
        with self._lock:
            if self.adapter_name is not None:
                self.model.set_adapter(self.adapter_name)
            tok.padding_side = "left"
            batch = tok(prompts, return_tensors="pt", padding=True).to(self.model.device)
            prompt_lens = batch["attention_mask"].sum(dim=1).tolist()
            gen: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id}
            if temperature and temperature > 0:
                gen.update(do_sample=True, temperature=temperature, top_k=0)
                if self.seed is not None:
                    torch.manual_seed(self.seed)
            else:
                gen.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            proc = self._processor(constraints)
            if proc is not None:
                gen["logits_processor"] = [proc]
            if _STREAMER.get() is not None and len(prompts) == 1:
                gen["streamer"] = _STREAMER.get()
            if stop:
                gen.update(stop_strings=list(stop), tokenizer=tok)
            with torch.no_grad():
                out = self.model.generate(**batch, **gen)
        new = out[:, batch["input_ids"].shape[1]:]
        results = []
        for row, plen in zip(new, prompt_lens):
            ids = row.tolist()
            ended = tok.eos_token_id in ids
            if ended:
                ids = ids[:ids.index(tok.eos_token_id)]
            while ids and ids[-1] == tok.pad_token_id:
                ids.pop()
            text, stopped = _cut(tok.decode(ids, skip_special_tokens=True), stop)
            reason = "stop" if (ended or stopped) else ("length" if len(ids) >= max_new_tokens else "stop")
            results.append(Completion(text, int(plen), len(ids) + int(ended), reason))
        return results


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP endpoint
# ------------------------------------------------------------------------------------------------

class OpenAIEngine(Engine):
    """Any OpenAI-compatible server: ours (``python -m serve``), vLLM, TabbyAPI, llama.cpp.

    ``base_url`` ends in ``/v1``. ``api_key``: else ``$REWOO_API_KEY``, else ``$OPENAI_API_KEY``.
    ``model``: else the first of ``GET /v1/models``. Connection errors, 429 and 5xx are retried
    ``retries`` times with exponential backoff and jitter; then, and for any other 4xx, an
    :class:`EngineError` says what the server answered.

    It streams (``streams = True``): ``complete_stream`` / ``chat_stream`` send ``"stream": true``
    with ``stream_options.include_usage`` and the same ``guided_*`` fields and stop strings as the
    whole-answer calls, and read the server-sent events as they come; an ``{"error": ...}`` event
    or a stream that breaks off is an :class:`EngineError`.
    """

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 max_new_tokens: int = 256, temperature: float = 0.0, timeout: float = 120.0, retries: int = 3,
                 backoff: float = 0.5):
        super().__init__(max_new_tokens, temperature)
        import httpx

        self.base_url = base_url.rstrip("/")
        key = api_key or os.environ.get("REWOO_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self._key_source = ("the api_key given" if api_key else "$REWOO_API_KEY" if os.environ.get("REWOO_API_KEY")
                            else "$OPENAI_API_KEY" if key else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.retries, self.backoff = retries, backoff
        self.model = model or self._first_model()
        self.name = f"{self.base_url} ({self.model})"

    @property
    def supports_constraints(self) -> bool:
        return True

    def _refusal(self, path: str, r) -> str:
        """What the server answered with an error status, and what to do about a 401."""
        detail = r.text[:300]
        try:
            detail = r.json().get("error", {}).get("message", detail)
        except (ValueError, AttributeError):
            pass
        last = f"{self.base_url}{path} answered {r.status_code}: {detail}"
        if r.status_code == 401:
            last += (f" (the key from {self._key_source} was refused: set $REWOO_API_KEY to the server's key)"
                     if self._key_source else
                     " (no key was sent: set $REWOO_API_KEY to the server's --api-key)")
        return last

    def _request(self, method: str, path: str, body: dict | None = None, stream: bool = False):
        """The answer's JSON (or, with ``stream``, the open response once the status is 2xx: the
        caller reads and closes it). Connection errors, 429 and 5xx are retried; then, and for
        any other status >= 400, an :class:`EngineError`."""
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            try:
                r = self.client.send(self.client.build_request(method, path, json=body), stream=stream)
            except httpx.HTTPError as e:
                last = f"cannot reach {self.base_url}{path}: {type(e).__name__}: {e}"
            else:
                if r.status_code < 400:
                    return r if stream else r.json()
                if stream:
                    r.read()
                    r.close()
                last = self._refusal(path, r)
                if r.status_code != 429 and r.status_code < 500:
                    raise EngineError(last)
            if attempt < self.retries:
                time.sleep(self.backoff * (2 ** attempt) * (1 + random.random()))
        raise EngineError(last)

    def _first_model(self) -> str:
        data = self._request("GET", "/models").get("data") or []
        if not data:
            raise EngineError(f"{self.base_url}/models lists no model; pass model=")
        return data[0]["id"]

    @staticmethod
    def _guided(c: Constraint | None) -> dict:
        if c is None:
            return {}
        if c.kind == "json_schema":
            return {"guided_json": c.value}
        body = {f"guided_{c.kind}": c.value}
        if c.tool_prior is not None:  # this project's server applies it (serve.constraints); others ignore it
            body["tool_prior"] = {"tools": [{"name": n, "description": d} for n, d in c.tool_prior.tools],
                                  "weight": c.tool_prior.weight, "goals": list(c.tool_prior.goals),
                                  "holds": [{"tool": t, "value": v} for t, v in c.tool_prior.holds]}
        return body

    def _body(self, payload: dict, stop_sequences, max_new_tokens, temperature, constraint) -> dict:
        body = {"model": self.model, **payload, "max_tokens": max_new_tokens or self.max_new_tokens,
                "temperature": self.temperature if temperature is None else temperature, **self._guided(constraint)}
        if stop_sequences:
            body["stop"] = list(stop_sequences)
        return body

    def _post(self, path: str, payload: dict, shown_prompt: str, stop_sequences, max_new_tokens, temperature,
              constraint) -> Completion:
        """One request to ``path`` (``payload``: the prompt or the messages); accounted and recorded."""
        body = self._body(payload, stop_sequences, max_new_tokens, temperature, constraint)
        t0 = time.perf_counter()
        data = self._request("POST", path, body)
        choice = data["choices"][0]
        text = choice["message"].get("content") if "message" in choice else choice.get("text")
        usage = data.get("usage") or {}
        c = Completion(_cut(text or "", stop_sequences)[0], usage.get("prompt_tokens"), usage.get("completion_tokens"),
                       choice.get("finish_reason") or "stop", time.perf_counter() - t0)
        self._account(shown_prompt, c)
        return c

    # -- streaming: server-sent events ---------------------------------------------------------
    streams = True

    def _events(self, r, path: str, end: dict) -> Iterator[str]:
        """The text pieces of an OpenAI SSE stream (``data: {json}`` lines until ``data: [DONE]``);
        the finish reason and usage land in ``end``. An ``{"error": ...}`` event is an EngineError."""
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, ": keep-alive" comments, "event:" lines
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError as e:
                raise EngineError(f"{self.base_url}{path} sent an event that is not JSON: {data[:200]!r}") from e
            if not isinstance(event, dict):
                raise EngineError(f"{self.base_url}{path} sent an event that is not a JSON object: {data[:200]!r}")
            if event.get("error"):
                err = event["error"]
                message = err.get("message", err) if isinstance(err, dict) else err
                raise EngineError(f"{self.base_url}{path} failed after the stream began: {message}")
            if event.get("usage"):
                end["usage"] = event["usage"]
            for choice in event.get("choices") or ():
                if choice.get("finish_reason"):
                    end["reason"] = choice["finish_reason"]
                text = choice["text"] if "text" in choice else (choice.get("delta") or {}).get("content")
                if text:
                    yield text

    def _stream(self, path: str, payload: dict, shown_prompt: str, stop_sequences, max_new_tokens, temperature,
                constraint) -> Iterator[str]:
        """One ``"stream": true`` request: its text in pieces (cut at the first stop sequence),
        accounted with the usage the server reports (``stream_options.include_usage``) when the
        stream ends. Closing the generator early closes the HTTP response, which stops the
        generation on our server (and on any server that watches for disconnects); a call closed
        before its end is not accounted."""
        import httpx

        body = self._body(payload, stop_sequences, max_new_tokens, temperature, constraint)
        body.update(stream=True, stream_options={"include_usage": True})
        t0 = time.perf_counter()
        r = self._request("POST", path, body, stream=True)
        end: dict = {}
        parts: list[str] = []
        try:
            for piece in _stream_text(self._events(r, path, end), stop_sequences):
                parts.append(piece)
                yield piece
        except httpx.HTTPError as e:
            raise EngineError(f"{self.base_url}{path}: the stream broke off: {type(e).__name__}: {e}") from e
        finally:
            r.close()
        usage = end.get("usage") or {}
        c = Completion("".join(parts), usage.get("prompt_tokens"), usage.get("completion_tokens"),
                       end.get("reason") or "stop", time.perf_counter() - t0)
        self._account(shown_prompt, c)

    def complete_stream(self, prompt, stop_sequences=None, max_new_tokens=None, temperature=None, constraint=None):
        """``POST /completions`` with ``"stream": true``: the text as the server sends it."""
        return self._stream("/completions", {"prompt": prompt}, prompt, stop_sequences, max_new_tokens, temperature,
                            constraint)

    def chat_stream(self, messages, stop_sequences=None, max_new_tokens=None, temperature=None, constraint=None):
        """``POST /chat/completions`` with ``"stream": true``: the reply's content as it is sent."""
        messages = list(messages)
        return self._stream("/chat/completions", {"messages": messages}, json.dumps(messages, ensure_ascii=False),
                            stop_sequences, max_new_tokens, temperature, constraint)

    def chat(self, messages, stop_sequences=None, max_new_tokens=None, temperature=None, constraint=None):
        messages = list(messages)
        return self._post("/chat/completions", {"messages": messages}, json.dumps(messages, ensure_ascii=False),
                          stop_sequences, max_new_tokens, temperature, constraint)

    def complete_batch(self, prompts, stop_sequences=None, max_new_tokens=None, temperature=None,
                       constraints=None) -> list[Completion]:
        constraints = list(constraints) if constraints is not None else [None] * len(prompts)
        # one request each: the server batches concurrent requests itself
        return [self._post("/completions", {"prompt": p}, p, stop_sequences, max_new_tokens, temperature, con)
                for p, con in zip(prompts, constraints)]


# ------------------------------------------------------------------------------------------------
# exllamav2, in process, GPU only
# ------------------------------------------------------------------------------------------------

class ExLlamaV2Engine(Engine):
    """An EXL2-quantized model with exllamav2's dynamic generator (CUDA only).

    exllamav2 compiles its CUDA extension at import and raises ``OSError`` without CUDA, so it
    is imported here, lazily, and any failure becomes an :class:`EngineError`. Constraints are
    not enforced on this engine (plans are validated by the parser instead).
    """

    def __init__(self, model_dir: str | Path, max_seq_len: int = 4096, max_new_tokens: int = 256,
                 temperature: float = 0.0):
        super().__init__(max_new_tokens, temperature)
        try:
            from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config, ExLlamaV2Tokenizer
            from exllamav2.generator import ExLlamaV2DynamicGenerator, ExLlamaV2Sampler
        except Exception as e:  # OSError without CUDA, ImportError when not installed
            raise EngineError(f"exllamav2 is unavailable here ({type(e).__name__}: {e}); it needs a CUDA GPU "
                              "and `pip install -e .[gpu]`") from e
        if not Path(model_dir).is_dir():
            raise EngineError(f"EXL2 model folder {model_dir} does not exist")
        self.name = f"exl2:{model_dir}"
        config = ExLlamaV2Config(str(model_dir))
        config.max_seq_len = max_seq_len
        self.model = ExLlamaV2(config)
        self.cache = ExLlamaV2Cache(self.model, max_seq_len=max_seq_len, lazy=True)
        self.model.load_autosplit(self.cache)
        self.tokenizer = ExLlamaV2Tokenizer(config)
        self.generator = ExLlamaV2DynamicGenerator(model=self.model, cache=self.cache, tokenizer=self.tokenizer)
        self._sampler = ExLlamaV2Sampler
        self._lock = threading.Lock()

    def _generate(self, prompts, stop, max_new_tokens, temperature, constraints):
        settings = self._sampler.Settings()
        if temperature and temperature > 0:
            settings.temperature = temperature
        else:
            settings = self._sampler.Settings.greedy()
        stops = list(stop) + [self.tokenizer.eos_token_id]
        with self._lock:
            texts = self.generator.generate(prompt=list(prompts), max_new_tokens=max_new_tokens,
                                            stop_conditions=stops, gen_settings=settings, add_bos=True,
                                            completion_only=True)
        outs = []
        for p, t in zip(prompts, texts):
            text, _ = _cut(t, stop)
            outs.append(Completion(text, len(self.tokenizer.encode(p)[0]) + 1,
                                   len(self.tokenizer.encode(t)[0]) if t else 0))
        return outs



# ------------------------------------------------------------------------------------------------
# llama.cpp, in process
# ------------------------------------------------------------------------------------------------

class LlamaCppEngine(Engine):
    """A GGUF file run by llama.cpp in this process (:class:`pipeline.llamacpp.LlamaCppModel`).

    Prompts of one :meth:`complete_batch` decode together (``slots`` sequences share one
    batch), and so do calls from several threads (the distributor's workers). Tokens are picked
    by :class:`pipeline.sampling.RowControl` (temperature, a fixed ``seed``) and constraints are
    the same llguidance grammars as on :class:`TransformersEngine`. ``template``: "auto" uses the
    GGUF's chat template for chat calls, else Alpaca. :meth:`complete_stream` streams tokens as
    they are decoded.
    """

    streams = True

    def __init__(self, model: str | Path, max_new_tokens: int = 256, temperature: float = 0.0,
                 template: str = "auto", seed: int | None = 0, slots: int = 4, context_length: int = 4096,
                 threads: int | None = None, llama_model=None):
        super().__init__(max_new_tokens, temperature)
        from pipeline.llamacpp import LlamaCppError, LlamaCppModel

        self.name = f"gguf:{Path(str(model)).name}"
        self.template = template
        self.seed = seed
        if llama_model is None:
            try:
                llama_model = LlamaCppModel(model, slots=slots, cache_tokens=slots * context_length,
                                            context_length=context_length, threads=threads)
            except LlamaCppError as e:
                raise EngineError(str(e)) from e
        self.model = llama_model
        self.tokenizer = llama_model.tokenizer
        self.vocab_size = llama_model.vocab_size
        self._tok_lock = threading.Lock()  # a fast tokenizer shared by threads ("Already borrowed")

    def _decode(self, ids) -> str:
        with self._tok_lock:
            return self.tokenizer.decode(ids, skip_special_tokens=True)

    @property
    def supports_constraints(self) -> bool:
        return True

    def _render(self, messages):
        return _render_with_template(self, messages)

    def _job(self, prompt: str, stop, max_new_tokens, temperature, constraint, on_text=None):
        """A submitted job for ``prompt`` and the box its result lands in."""
        from pipeline.formats import constrain
        from pipeline.llamacpp import Job, greedy
        from pipeline.sampling import MIN_TEMPERATURE, RowControl

        with self._tok_lock:
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        proc = None
        if constraint is not None:
            proc = _with_tool_prior(constrain.logits_processor(self.tokenizer, self.vocab_size,
                                                               **{constraint.kind: constraint.value}),
                                    self._decode, [constraint])
        control = None
        if proc is not None or (temperature or 0) >= MIN_TEMPERATURE:
            control = RowControl(ids, temperature or 0.0, 1.0, self.seed, proc,
                                 min(self.model.eos_ids))
        box: dict = {"done": threading.Event(), "stopped": False}
        text_so_far = [""]
        pick = greedy if control is None else control.pick

        def on_token(_token) -> bool:
            if not stop and on_text is None:
                return True
            text = self._decode(job.generated)
            if on_text is not None and len(text) > len(text_so_far[0]) and not text.endswith("\ufffd"):
                on_text(text[len(text_so_far[0]):])
                text_so_far[0] = text
            if stop and _cut(text, stop)[1]:
                box["stopped"] = True
                return False
            return True

        def on_end(reason, error):
            box["reason"], box["error"] = reason, error
            box["done"].set()

        job = Job(ids, max_new_tokens, pick, on_token, on_end)
        try:
            self.model.submit(job)
        except ValueError as e:
            raise EngineError(f"{self.name}: {e}") from e
        return job, box

    def _result(self, job, box, stop) -> Completion:
        box["done"].wait()
        if box["error"] is not None:
            raise EngineError(f"{self.name}: generation failed: {box['error']}") from box["error"]
        text, stopped = _cut(self._decode(job.generated), stop)
        reason = "length" if box["reason"] == "length" and not stopped else "stop"
        return Completion(text, len(job.prompt_ids), len(job.generated) + (box["reason"] == "stop" and not stopped),
                          reason)

    def _generate(self, prompts, stop, max_new_tokens, temperature, constraints):
        jobs = [self._job(p, stop, max_new_tokens, temperature, c) for p, c in zip(prompts, constraints)]
        return [self._result(job, box, stop) for job, box in jobs]

    def complete_stream(self, prompt, stop_sequences=None, max_new_tokens=None, temperature=None, constraint=None):
        """Text pieces as llama.cpp decodes them; the finished call is accounted like :meth:`complete`."""
        import queue as queue_mod

        pieces: queue_mod.Queue = queue_mod.Queue()
        stop = list(stop_sequences or [])
        t0 = time.perf_counter()
        job, box = self._job(prompt, stop, max_new_tokens or self.max_new_tokens,
                             self.temperature if temperature is None else temperature, constraint,
                             on_text=pieces.put)

        def drain():
            while not (box["done"].is_set() and pieces.empty()):
                try:
                    yield pieces.get(timeout=0.05)
                except queue_mod.Empty:
                    continue

        try:
            yield from _stream_text(drain(), stop)
        finally:
            if not box["done"].is_set():
                self.model.cancel(job)
        c = self._result(job, box, stop)
        c.seconds = time.perf_counter() - t0
        self._account(prompt, c)

# ------------------------------------------------------------------------------------------------

def adapter_base(adapter: str | Path) -> str:
    """The base model of a PEFT adapter folder: a key of ``pipeline.defaults.BASES`` becomes its
    converted folder (converted on first use), anything else is a path or model name as is."""
    from pipeline import defaults

    try:
        base = json.loads((Path(adapter) / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as e:
        raise EngineError(f"{adapter}/adapter_config.json does not name its base model: {e}") from e
    if base in defaults.BASES:
        try:
            return str(defaults.base_dir(base))
        except defaults.DefaultModelError as e:
            raise EngineError(str(e)) from e
    return base


def load_engine(spec: str, max_new_tokens: int = 256, temperature: float = 0.0, **kw) -> Engine:
    """An engine from a spec: an ``http(s)://host:port/v1`` base URL (OpenAI-compatible), a
    ``.gguf`` file (llama.cpp), an EXL2 folder (has ``*.safetensors`` and an exllamav2
    ``job_new.json`` or ``quantization_config`` of type exl2), or a local model path / model
    name (transformers)."""
    if spec.startswith(("http://", "https://")):
        return OpenAIEngine(spec, max_new_tokens=max_new_tokens, temperature=temperature, **kw)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf") or path.is_file():
        from pipeline.llamacpp import is_gguf
        if not path.is_file():
            raise EngineError(f"GGUF file {spec} does not exist")
        if not is_gguf(path):
            raise EngineError(f"{spec} is a file but not a GGUF model; give a model folder, a .gguf file or a URL")
        allowed = {k: v for k, v in kw.items() if k in ("template", "seed", "threads", "slots", "context_length")}
        return LlamaCppEngine(path, max_new_tokens=max_new_tokens, temperature=temperature, **allowed)
    if path.is_dir() and _is_exl2(path):
        return ExLlamaV2Engine(path, max_new_tokens=max_new_tokens, temperature=temperature)
    return TransformersEngine(spec, max_new_tokens=max_new_tokens, temperature=temperature, **kw)


def _is_exl2(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.exists():
        return False
    try:
        q = json.loads(cfg.read_text()).get("quantization_config") or {}
    except ValueError:
        return False
    return str(q.get("quant_method", "")).lower() == "exl2"
