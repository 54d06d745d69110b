"""The OpenAI-compatible web app around a backend.

    app = build_app(backend, config)                 # then: uvicorn.run(app, ...)
    app = build_app(backend, config, routes=[add_pipeline_routes])

Routes: ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions`` (with OpenAI ``tools``: ``serve.tools``; ``stream: true`` gives
server-sent events ending in ``data: [DONE]``). Every route is added by a function taking the app
(``add_openai_routes``); more routes, such as ``POST /v1/pipeline/run``, plug in the same way
through ``routes`` and find the backend at ``app.state.backend``. A second model, the agents'
(``build_app(..., agent=backend)``: the base with the agent adapter), is served beside it under its
own id (``app.state.agent_backend``); ``/v1/models`` lists both and each request goes to the model
it names.

Errors always have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 for a
bad request, 401 for a missing or wrong key, 404 for an unknown model or path, 413 for a body over
the limit, 501 for a feature this server lacks. Everything a client can get wrong is decided before
the request is queued (constraints are compiled and probed at admission). A failure after a stream
has started is an ``{"error": ...}`` event followed by ``data: [DONE]``. A bug of ours is a 500 whose
log line holds the exception (capped), never the request body; the connection stays usable.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline import formats
from serve.backends.base import BackendError, Chunk, GenerationRequest, Sampling
from serve import tools as tool_calls
from serve.backends.base import Constraint
from serve.config import ServeConfig
from serve.constraints import constraint_from_request
from serve.metrics import Metrics
from serve.protocol import ChatCompletionRequest, CompletionRequest, error_body

log = logging.getLogger("serve")

MAX_STOP_STRINGS = 16
MAX_PROMPTS = 64  # prompts in one completions request (each is one choice)
OPEN_PATHS = ("/health", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc",
              # the playground's static files (serve.playground): what they do goes through /v1 with the key
              "/ui", "/ui/", "/ui/app.js", "/ui/style.css")
LOG_CHARS = 500  # of an exception message in the log: never a whole request body


def capped(text: Any, n: int = LOG_CHARS) -> str:
    text = str(text)
    return text if len(text) <= n else text[:n] + f"... ({len(text) - n} more characters)"


def _json_bytes(body: dict) -> bytes:
    # ASCII escapes: valid whatever the text holds (a lone surrogate cannot be UTF-8 encoded)
    return json.dumps(body, ensure_ascii=True).encode()


class ErrorResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _json_bytes(content)


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_


# --------------------------------------------------------------------------------------------
# Guard: request size and API key, before FastAPI parses anything
# --------------------------------------------------------------------------------------------

class _BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: 413 for a body over ``max_bytes`` (declared or streamed), 401 without the
    right key (``Authorization: Bearer K`` or ``x-api-key: K``, compared in constant time)."""

    def __init__(self, app, api_key: str | None, max_bytes: int, metrics: Metrics | None = None):
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_bytes = max_bytes
        self.metrics = metrics

    @staticmethod
    async def _reply(send, status: int, body: dict, headers: Sequence[tuple[bytes, bytes]] = ()):
        data = _json_bytes(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(data)).encode()), *headers]})
        await send({"type": "http.response.body", "body": data})

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        given = headers.get(b"x-api-key")
        auth = headers.get(b"authorization", b"")
        if given is None and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        # compare_digest takes the same time whatever the first differing byte
        return given is not None and hmac.compare_digest(given, self.key)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), [0]

        async def recording_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, recording_send)
        finally:
            if self.metrics is not None:
                self.metrics.request_done(scope["path"], status[0] or 499, time.perf_counter() - began)

    async def _guarded(self, scope, receive, send):
        headers = dict(scope["headers"])
        if self.key is not None and scope["path"] not in OPEN_PATHS and not self._authorized(headers):
            return await self._reply(send, 401, error_body(
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'",
                code="invalid_api_key"), [(b"www-authenticate", b"Bearer")])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reply(send, 413, error_body(
                f"request body of {int(declared)} bytes exceeds the limit of {self.max_bytes}",
                code="request_too_large"))
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reply(send, 413, error_body(
                    f"request body exceeds the limit of {self.max_bytes} bytes", code="request_too_large"))
        except Exception as e:  # a bug of ours: answer here, so the server keeps the connection open
            log.error("internal error on %s %s: %s: %s\n%s", scope.get("method"), scope["path"],
                      type(e).__name__, capped(e), "".join(traceback.format_tb(e.__traceback__)))
            if not started:
                await self._reply(send, 500, error_body(f"internal error: {type(e).__name__}", "server_error"))


# --------------------------------------------------------------------------------------------
# Requests -> generation requests
# --------------------------------------------------------------------------------------------

def _stops(value: str | list[str] | None) -> list[str]:
    stops = [value] if isinstance(value, str) else list(value or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise APIError(400, f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}", "stop")
    return [s for s in stops if s]


def _vocab_size(backend) -> int:
    return getattr(backend, "vocab_size", None) or len(backend.tokenizer)


class _Limits:
    def __init__(self, backend, config: ServeConfig):
        self.backend, self.config = backend, config

    def max_tokens(self, asked: int | None, n_prompt: int, default: int) -> int:
        ctx, limit = self.backend.context_length, self.config.max_tokens_limit
        if n_prompt >= ctx:
            raise APIError(400, f"the prompt has {n_prompt} tokens; this model's context is {ctx} tokens, "
                                "so nothing is left to generate. Shorten the prompt.",
                           "messages", "context_length_exceeded")
        if asked is None:
            return min(default, limit, ctx - n_prompt)
        if asked > limit:
            raise APIError(400, f"max_tokens is {asked}; this server allows at most {limit}", "max_tokens")
        if n_prompt + asked > ctx:
            raise APIError(400, f"this model's context is {ctx} tokens; the prompt ({n_prompt}) plus max_tokens "
                                f"({asked}) would be {n_prompt + asked}. Lower max_tokens or shorten the prompt.",
                           "max_tokens", "context_length_exceeded")
        return asked


def backend_for(state, model: str):
    """The backend of the model a request names: the server's (by its id or ``--model``'s path) or
    the agents' (``<id>-agent``); a 404 naming the served ids otherwise."""
    for backend in state.backends:
        if model == backend.model_id:
            return backend
    if model == state.config.model:
        return state.backend
    served = ", ".join(f"'{b.model_id}'" for b in state.backends)
    raise APIError(404, f"the model '{model}' does not exist here; this server serves {served} (see GET /v1/models)",
                   "model", "model_not_found")


def _check_common(body) -> None:
    if body.logprobs:
        raise APIError(400, "logprobs are not supported by this server", "logprobs")


def _sampling(body, max_tokens: int, stop: list[str]) -> Sampling:
    return Sampling(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, seed=body.seed,
                    stop=tuple(stop), ignore_eos=body.ignore_eos)


def _constraint(body):
    try:
        return constraint_from_request(body)
    except BackendError as e:
        raise APIError(e.status, str(e), e.param, e.code) from e


def completion_requests(body: CompletionRequest, backend, config: ServeConfig) -> list[GenerationRequest]:
    _check_common(body)
    if body.echo:
        raise APIError(400, "echo is not supported by this server", "echo")
    prompt = body.prompt
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    if not prompts:
        raise APIError(400, "prompt is empty", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise APIError(400, f"at most {MAX_PROMPTS} prompts per request, got {len(prompts)}", "prompt")
    vocab = _vocab_size(backend)
    limits, stop, constraint = _Limits(backend, config), _stops(body.stop), _constraint(body)
    out = []
    for p in prompts:
        if isinstance(p, str):
            ids = backend.tokenizer(p).input_ids
        else:
            ids = list(p)
            if not ids:
                raise APIError(400, "a token-id prompt is empty", "prompt")
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise APIError(400, f"token ids out of the vocabulary (0..{vocab - 1}): {bad[:5]}", "prompt")
        max_tokens = limits.max_tokens(body.max_tokens, len(ids), 16)  # OpenAI's completions default
        out.append(GenerationRequest(ids, _sampling(body, max_tokens, stop), constraint))
    return out


def chat_prompt_ids(messages, tokenizer) -> tuple[list[int], list[str]]:
    """Token ids of a chat (messages, or an Alpaca text) and the stop strings its template needs:
    the tokenizer's chat template when it has one, else the Alpaca template of
    ``pipeline.formats`` (stops: ``ALPACA_STOP``)."""
    if isinstance(messages, str):
        return tokenizer(messages).input_ids, list(formats.ALPACA_STOP)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False).input_ids, []
    return tokenizer(formats.messages_to_alpaca(messages)).input_ids, list(formats.ALPACA_STOP)


def _messages(body: ChatCompletionRequest) -> list[dict]:
    out = []
    for i, m in enumerate(body.messages):
        content = m.content
        if isinstance(content, list):  # content parts: text only
            if any(not isinstance(p, dict) or p.get("type", "text") != "text" for p in content):
                raise APIError(400, "only text content parts are supported", f"messages[{i}].content")
            content = "".join(str(p.get("text", "")) for p in content)
        msg = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        if m.tool_calls:
            msg["tool_calls"] = m.tool_calls
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        if m.name:
            msg["name"] = m.name
        out.append(msg)
    return out


def chat_request(body: ChatCompletionRequest, backend,
                 config: ServeConfig) -> tuple[GenerationRequest, tool_calls.ToolChoice | None]:
    """The generation request of a chat and, when it offers tools, what it allows."""
    _check_common(body)
    messages = _messages(body)
    try:
        choice = tool_calls.tool_choice_from_request(body)
    except BackendError as e:
        raise APIError(e.status, str(e), e.param, e.code) from e
    constraint = _constraint(body)
    template = "chat" if getattr(backend.tokenizer, "chat_template", None) else "alpaca"
    try:
        if choice is not None:
            if constraint is not None:
                raise APIError(400, "give tools or a structured output (response_format, guided_*), not both",
                               "response_format")
            prompt = tool_calls.prompt_messages(messages, choice, template)
            constraint = Constraint("tools", choice)
        else:
            prompt = formats.plain_messages(messages)
        ids, template_stops = chat_prompt_ids(prompt, backend.tokenizer)
    except BackendError as e:
        raise APIError(e.status, str(e), e.param, e.code) from e
    except ValueError as e:
        raise APIError(400, f"cannot render these messages: {capped(e, 300)}", "messages") from e
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = _Limits(backend, config).max_tokens(asked, len(ids), config.default_max_tokens)
    stop = _stops(body.stop)
    stop += [s for s in template_stops if s not in stop]
    return GenerationRequest(ids, _sampling(body, max_tokens, stop), constraint), choice


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------

async def admit(backend, requests: list[GenerationRequest]) -> list[AsyncIterator[Chunk]]:
    """Open a stream per request, checking each before anything is queued or sent: a constraint
    is compiled and probed here, off the event loop (a pathological one takes seconds)."""
    def open_all():
        return [backend.stream(r) for r in requests]

    try:
        if any(r.constraint is not None for r in requests):
            return await asyncio.to_thread(open_all)
        return open_all()
    except BackendError as e:
        raise APIError(e.status, str(e), e.param, e.code) from e


async def _collect(stream: AsyncIterator[Chunk], metrics: Metrics | None = None) -> Chunk:
    text, last, began, waiting = [], None, time.perf_counter(), metrics is not None
    if waiting:
        metrics.add_waiting(1)
    try:
        async for chunk in stream:
            if waiting:
                metrics.add_waiting(-1)
                metrics.first_token_after(time.perf_counter() - began)
                waiting = False
            text.append(chunk.text)
            last = chunk
    finally:
        if waiting:
            metrics.add_waiting(-1)
    if metrics is not None:
        metrics.tokens(last.prompt_tokens, last.completion_tokens)
    return Chunk("".join(text), last.finish_reason, last.prompt_tokens, last.completion_tokens)


class ClientGone(Exception):
    """The client disconnected before its answer was ready; its generations were cancelled."""


async def _until_disconnect(http: Request, work: asyncio.Future):
    """Await ``work``; cancel it (and so its generations) if the client goes away first."""
    gone = False

    async def watch():
        nonlocal gone
        while True:
            message = await http.receive()
            if message["type"] == "http.disconnect":
                gone = True
                work.cancel()
                return

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            raise ClientGone from None
        raise
    finally:
        watcher.cancel()


def _usage(chunks: Sequence[Chunk]) -> dict:
    prompt = sum(c.prompt_tokens for c in chunks)
    completion = sum(c.completion_tokens for c in chunks)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class SSEResponse(StreamingResponse):
    """Server-sent events whose generator is always closed, so a client that leaves mid-stream
    stops its generation at once."""

    media_type = "text/event-stream"

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _merge(streams: list[AsyncIterator[Chunk]]) -> AsyncIterator[tuple[int, Chunk]]:
    """Chunks of several streams as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for chunk in streams[0]:
            yield 0, chunk
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i, stream):
        try:
            async for chunk in stream:
                await queue.put((i, chunk, None))
        except BaseException as e:  # hand every failure to the consumer, which re-raises it
            await queue.put((i, None, e))
            if isinstance(e, asyncio.CancelledError):
                raise
        finally:
            await queue.put((i, None, StopAsyncIteration()))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        open_ = len(streams)
        while open_:
            i, chunk, err = await queue.get()
            if isinstance(err, StopAsyncIteration):
                open_ -= 1
            elif err is not None:
                raise err
            else:
                yield i, chunk
    finally:
        for t in tasks:
            t.cancel()


def _error_event(e: Exception) -> dict:
    """The ``{"error": ...}`` event that ends a stream which failed after it started (the
    ``openai`` client raises ``APIError`` on it)."""
    if isinstance(e, (BackendError, APIError)):
        message = e.message if isinstance(e, APIError) else str(e)
        return error_body(capped(message), param=e.param, code=e.code)
    log.error("stream failed: %s: %s\n%s", type(e).__name__, capped(e), "".join(traceback.format_tb(e.__traceback__)))
    return error_body(f"internal error: {type(e).__name__}", "server_error")


def _stream(kind: str, rid: str, model: str, streams: list[AsyncIterator[Chunk]], include_usage: bool,
            metrics: Metrics, choice: tool_calls.ToolChoice | None = None) -> SSEResponse:
    created = int(time.time())
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def event(choices: list, usage: dict | None = None) -> str:
        body = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}
        if include_usage:
            body["usage"] = usage
        return _sse(body)

    async def events():
        finals: list[Chunk] = []
        calls = tool_calls.ToolCallStream() if choice is not None else None
        began, waiting = time.perf_counter(), True
        metrics.add_waiting(1)
        try:
            if kind == "chat":
                yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            async for i, chunk in _merge(streams):
                if waiting:
                    metrics.add_waiting(-1)
                    metrics.first_token_after(time.perf_counter() - began)
                    waiting = False
                if chunk.finish_reason is not None:
                    finals.append(chunk)
                    metrics.tokens(chunk.prompt_tokens, chunk.completion_tokens)
                if not chunk.text and chunk.finish_reason is None:
                    continue
                if kind == "chat":
                    deltas = calls.feed(chunk.text) if calls is not None else (
                        [{"content": chunk.text}] if chunk.text else [])
                    reason = chunk.finish_reason
                    if reason == "stop" and calls is not None and calls.calls:
                        reason = "tool_calls"
                    for k, delta in enumerate(deltas):
                        last = k == len(deltas) - 1
                        yield event([{"index": i, "delta": delta, "finish_reason": reason if last else None}])
                    if not deltas and reason is not None:
                        yield event([{"index": i, "delta": {}, "finish_reason": reason}])
                else:
                    yield event([{"index": i, "text": chunk.text, "logprobs": None,
                                  "finish_reason": chunk.finish_reason}])
            if include_usage:
                yield event([], _usage(finals))
        except Exception as e:  # after the 200: say so in the stream, then end it properly
            yield _sse(_error_event(e))
        finally:
            if waiting:
                metrics.add_waiting(-1)
        yield "data: [DONE]\n\n"

    return SSEResponse(events(), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _chat_message(chunk: Chunk, choice: tool_calls.ToolChoice | None) -> tuple[dict, str]:
    if choice is None:
        return {"role": "assistant", "content": chunk.text}, chunk.finish_reason
    content, calls = tool_calls.parse_reply(chunk.text, choice)
    if calls:
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": content}, chunk.finish_reason


# --------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------

def add_openai_routes(app: FastAPI) -> None:
    """``GET /health``, ``GET /metrics``, ``GET /v1/models``, ``POST /v1/completions``,
    ``POST /v1/chat/completions``."""

    @app.get("/health", tags=["server"])
    async def health(request: Request) -> dict:
        state = request.app.state
        out = {"status": "ok", "model": state.backend.model_id, "stats": state.backend.stats.to_dict()}
        if state.agent_backend is not None:
            out["agent"] = {"model": state.agent_backend.model_id, "stats": state.agent_backend.stats.to_dict()}
        return out

    @app.get("/metrics", tags=["server"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        state = request.app.state
        stats = [b.stats for b in state.backends]  # the agents' model's generations count too
        both = SimpleNamespace(**{k: sum(getattr(st, k) for st in stats)
                                  for k in ("completion_tokens", "running", "cancelled")})
        return PlainTextResponse(state.metrics.render(both), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", tags=["openai"])
    async def models(request: Request) -> dict:
        state = request.app.state
        return {"object": "list", "data": [{
            "id": backend.model_id, "object": "model", "created": state.started,
            "owned_by": "rewoo-stack", "max_model_len": backend.context_length} for backend in state.backends]}

    @app.post("/v1/completions", tags=["openai"])
    async def completions(body: CompletionRequest, http: Request):
        state = http.app.state
        backend = backend_for(state, body.model)
        requests = completion_requests(body, backend, state.config)
        rid = f"cmpl-{uuid.uuid4().hex}"
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        streams = await admit(backend, requests)
        if body.stream:
            return _stream("completion", rid, body.model, streams, include_usage, state.metrics)
        work = asyncio.ensure_future(asyncio.gather(*(_collect(s, state.metrics) for s in streams)))
        chunks = await _until_disconnect(http, work)
        return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": body.model,
                "choices": [{"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
                            for i, c in enumerate(chunks)],
                "usage": _usage(chunks)}

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest, http: Request):
        state = http.app.state
        backend = backend_for(state, body.model)
        request, choice = chat_request(body, backend, state.config)
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        streams = await admit(backend, [request])
        if body.stream:
            return _stream("chat", rid, body.model, streams, include_usage, state.metrics, choice)
        chunk = await _until_disconnect(http, asyncio.ensure_future(_collect(streams[0], state.metrics)))
        message, reason = _chat_message(chunk, choice)
        return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": body.model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": reason}],
                "usage": _usage([chunk])}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_, e: APIError):
        return ErrorResponse(error_body(e.message, e.type, e.param, e.code), status_code=e.status)

    @app.exception_handler(BackendError)
    async def backend_error(_, e: BackendError):
        return ErrorResponse(error_body(str(e), param=e.param, code=e.code), status_code=e.status)

    @app.exception_handler(ClientGone)
    async def client_gone(_, e: ClientGone):  # nobody reads this; 499 marks it in the access log
        return Response(status_code=499)

    @app.exception_handler(RequestValidationError)
    async def invalid(_, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if first.get("type") == "json_invalid":
            message = f"the body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}"
        else:
            message = "; ".join(
                f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body') or 'body'}: {err.get('msg')}"
                for err in errors[:5])
        return ErrorResponse(error_body(capped(message, 1000), param=where or None, code="invalid_value"),
                             status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return ErrorResponse(error_body(str(e.detail), param=None, code=code), status_code=e.status_code)


def build_app(backend, config: ServeConfig,
              routes: Sequence[Callable[[FastAPI], None]] = (), agent=None) -> FastAPI:
    """The app serving ``backend`` (and ``agent``, the agents' model, when given: requests name it by
    its own id); ``routes`` are extra ``fn(app)`` route installers."""
    if agent is not None and agent.model_id == backend.model_id:
        raise ValueError(f"the agents' model needs an id of its own, not {backend.model_id!r}")
    backends = (backend,) if agent is None else (backend, agent)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        started = []
        try:
            for b in backends:
                await b.start()
                started.append(b)
            yield
        finally:
            for b in reversed(started):
                await b.stop()

    app = FastAPI(title="rewoo-stack", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible completions and chat for the ReWOO planner and caller.")
    app.state.backend = backend
    app.state.agent_backend = agent
    app.state.backends = backends
    app.state.config = config
    app.state.started = int(time.time())
    app.state.metrics = Metrics()
    _install_error_handlers(app)
    add_openai_routes(app)
    for add in routes:
        add(app)
    app.add_middleware(Guard, api_key=config.api_key, max_bytes=config.max_request_bytes,
                       metrics=app.state.metrics)
    return app
