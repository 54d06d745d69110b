"""``POST /v1/pipeline/run``: the whole agent in one REST call, whole or streamed as server-sent events.

    python -m serve --model ./planner-merged --port 8000
    curl -s http://127.0.0.1:8000/v1/pipeline/run -H 'Content-Type: application/json' \\
         -d '{"task": "Who directed the film Oppenheimer?", "tools": ["search_wiki", "llm"]}'
    curl -sN http://127.0.0.1:8000/v1/pipeline/run -H 'Content-Type: application/json' \\
         -d '{"task": "Who directed the film Oppenheimer?", "stream": true}'
    curl -s http://127.0.0.1:8000/v1/pipeline/tools

The served model is the planner and the solver (``mode: "rewoo"``, the default), or the model of a
ReAct agent (``"react"``: Thought / JSON action / Observation; ``"code"``: Thought / code run in the
isolated sandbox); a server with an agents' model (``python -m serve --agent-adapter``, which
``rewoo serve --model default`` passes the demo's agent adapter) runs the agents on that one. The
pipeline reaches it through this server's own OpenAI-compatible endpoint on loopback (with the
server's key), so its calls are batched with every other client's and
constrained the same way (``guided_grammar`` for the plan); the planner streams, so each step
starts as soon as it is written. Tools whose one input is a string are called directly; a tool
with several arguments takes a JSON-object input (this route runs without a function caller). The
toolbox is the one ``python -m serve --tools`` loaded (``app.state.pipeline_toolbox``), else the
offline default one (``default_toolbox``), limited to ``tools`` when given. ``GET
/v1/pipeline/tools`` lists it: ``{"object": "list", "data": [{"name", "description", "parameters"}],
"modes": [...]}``.

Request: ``{"task": str, "tools": [str]?, "max_new_tokens": int?, "constrain": bool?, "stream": bool?,
"mode": "rewoo" | "react" | "code"?}`` (``max_new_tokens``: the planner's budget, or each agent
output's).

Response without ``stream``: the object of ``python -m pipeline.run --json``: ``task``, ``plan``,
``evidence``, ``answer``, ``stats``. A plan that does not parse (``constrain: false``) is a 422 whose
message holds the model's raw output; an unknown or repeated tool name, an empty tool list, a
budget too small for a constrained plan and a planner prompt over the context are 400s, decided
before the pipeline runs; a later request the model server refuses is a 400 too, an unreachable
one a 502.

With ``"stream": true`` the same validation answers 4xx JSON before anything runs; then a 200 with
``text/event-stream``: each event is one line ``data: {json}`` and a blank line, the object's
``"event"`` says which (``t``: seconds since the run began):

- ``{"event": "step", "var", "tool", "input", "description", "round"}``: a step, as soon as the
  planner has written it (``round`` 1, then 2, 3 ... for replanning rounds);
- ``{"event": "plan", "round", "steps": [{"var", "tool", "input", "description"}]}``: a round's
  plan is complete (its steps may still be running);
- ``{"event": "start", "var", "t"}``: a step started;
- ``{"event": "done", "var", "tool", "status": "ok" | "error" | "skipped", "evidence", "seconds",
  "t", "error"?}``: a step ended (a timeout is an ``error``; ``error`` says why);
- ``{"event": "agent_step", "n", "thought"?, "action"?, "observation"?, "error"?}`` (modes react and
  code, instead of the step events): one step of the agent (``action``: ``{"tool_name",
  "tool_arguments"}``, the code for ``code``);
- ``{"event": "answer", "answer", "stats"}``, then ``{"event": "result", "task", "plan",
  "evidence", "answer", "stats"}`` (the object of the non-stream answer);
- ``{"event": "error", "error": {"message", "type", "code"}}`` when the run fails after the stream
  began (``invalid_plan``, ``pipeline_request_refused``, ``engine_error``, ``internal_error``);
- ``data: [DONE]`` always ends the stream.

A client that disconnects stops the run at its next event (tools already running finish in the
background; their results are dropped).

This is the one place where ``serve`` uses the pipeline runtime; it is imported when the route runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI, Request
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pipeline import formats
from serve.app import APIError, SSEResponse, capped
from serve.protocol import _Request

log = logging.getLogger("serve")

MODES = ("rewoo", "react", "code")


class PipelineRunRequest(_Request):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=4000, description="the task for the agent")
    tools: list[str] | None = Field(None, min_length=1, max_length=64,
                                    description="limit the toolbox to these of its tools")
    max_new_tokens: int = Field(512, ge=32, le=4096, description="the planner's token budget (each agent output's)")
    constrain: bool = Field(True, description="decode the plan with the plan grammar (mode rewoo)")
    tool_prior: float | None = Field(None, ge=0.0, le=100.0, allow_inf_nan=False,
                                     description="lean each step's tool towards the tools its Plan: line describes, "
                                                 "by up to this many logits (mode rewoo, with the grammar); "
                                                 "default: the server's --tool-prior")
    stream: bool = Field(False, description="send server-sent events as the run goes (see the route's docs)")
    mode: Literal["rewoo", "react", "code"] = Field("rewoo", description="rewoo: plan, work, solve; react: "
                                                    "ReAct with JSON actions; code: ReAct with code actions")


class _Cancelled(Exception):
    """The client of a streamed run went away: raised from the next event to stop the run."""


def _event_bytes(event: dict) -> str:
    # ASCII escapes: valid whatever the evidence holds (a lone surrogate cannot be UTF-8 encoded)
    return f"data: {json.dumps(event, ensure_ascii=True, default=str)}\n\n"


def _step(st, round_: int | None = None) -> dict:
    out = {"var": st.var, "tool": st.tool, "input": st.input, "description": st.description}
    return out if round_ is None else {"event": "step", **out, "round": round_}


class RewooEvents:
    """``Pipeline.run``'s ``on_event`` turned into the route's events, handed to ``emit``."""

    def __init__(self, emit: Callable[[dict], None]):
        self.emit = emit
        self.round = 1
        self.sent: set[str] = set()
        self.t0 = time.perf_counter()
        self._lock = threading.Lock()  # steps arrive from the planner's thread, the rest from the workers'

    def _plan_step(self, st) -> None:
        with self._lock:
            if st.var in self.sent:
                return
            self.sent.add(st.var)
        self.emit(_step(st, self.round))

    def __call__(self, kind: str, payload: Any) -> None:
        if kind == "step":
            self._plan_step(payload)
        elif kind in ("plan", "replan"):
            if kind == "replan":
                self.round += 1
            for st in payload:  # not streamed (a replanning round): its steps now
                self._plan_step(st)
            self.emit({"event": "plan", "round": self.round, "steps": [_step(st) for st in payload]})
        elif kind == "start":
            self.emit({"event": "start", "var": payload, "t": round(time.perf_counter() - self.t0, 4)})
        elif kind == "done":
            ev = {"event": "done", "var": payload.var, "tool": payload.tool,
                  "status": payload.status if payload.status in ("ok", "skipped") else "error",
                  "evidence": payload.text, "seconds": round(payload.seconds, 4),
                  "t": round(time.perf_counter() - self.t0, 4)}
            if payload.error:
                ev["error"] = payload.error
            self.emit(ev)


def agent_step_event(n: int, step_log: dict) -> dict:
    """One ReAct step's log (``pipeline.agents``) as an ``agent_step`` event."""
    ev: dict[str, Any] = {"event": "agent_step", "n": n}
    for key, name in (("rationale", "thought"), ("tool_call", "action"), ("observation", "observation")):
        if step_log.get(key) not in (None, ""):
            ev[name] = step_log[key]
    if step_log.get("error") is not None:
        ev["error"] = str(step_log["error"])
    if "final_answer" in step_log:
        ev["final_answer"] = step_log["final_answer"]
    return ev


def _failure(e: BaseException) -> APIError:
    """What a failed run answers: the same status, message and code streamed or not."""
    from pipeline.engines import EngineError
    from pipeline.plan import PlanError

    if isinstance(e, PlanError):
        raw = getattr(e, "raw_output", "")
        return APIError(422, f"{e}; the planner wrote: {raw!r}", "task", "invalid_plan")
    if isinstance(e, EngineError):
        if " answered 4" in str(e):  # the model server refused one of the pipeline's requests
            return APIError(400, f"the model server refused a request of the pipeline: {e}", "task",
                            "pipeline_request_refused")
        return APIError(502, f"the pipeline could not reach the model: {e}", None, "engine_error", "server_error")
    log.error("pipeline run failed: %s: %s\n%s", type(e).__name__, capped(e),
              "".join(traceback.format_tb(e.__traceback__)))
    return APIError(500, f"internal error: {type(e).__name__}", None, "internal_error", "server_error")


def add_pipeline_routes(app: FastAPI) -> None:
    """Install ``POST /v1/pipeline/run`` and ``GET /v1/pipeline/tools`` on ``app`` (see the module
    docstring)."""

    def server_toolbox(request: Request):
        from toolkit import default_toolbox
        return getattr(request.app.state, "pipeline_toolbox", None) or default_toolbox()

    @app.get("/v1/pipeline/tools", tags=["pipeline"])
    async def pipeline_tools(request: Request) -> dict:
        specs = formats.tool_specs(server_toolbox(request))
        return {"object": "list", "modes": list(MODES),
                "data": [{"name": s.name, "description": s.description, "parameters": s.parameters} for s in specs]}

    @app.post("/v1/pipeline/run", tags=["pipeline"])
    async def pipeline_run(body: PipelineRunRequest, request: Request):
        from pipeline.engines import OpenAIEngine
        from pipeline.formats import constrain as constrain_mod

        config, backend = request.app.state.config, request.app.state.backend
        toolbox = server_toolbox(request)
        if body.tools is not None:
            unknown = [t for t in body.tools if t not in toolbox]
            if unknown:
                raise APIError(400, f"unknown tools {unknown}; the server's tools: {', '.join(toolbox)}", "tools")
            twice = sorted({t for t in body.tools if body.tools.count(t) > 1})
            if twice:
                raise APIError(400, f"tools lists {twice} more than once; name each tool once", "tools")
            toolbox = toolbox.subset(body.tools)
        if body.mode == "rewoo":
            if body.constrain:
                try:
                    constrain_mod.plan_bounds(body.max_new_tokens, list(toolbox))
                except ValueError as e:
                    raise APIError(400, str(e), "max_new_tokens") from e
            n_prompt = len(backend.tokenizer(formats.planner_prompt(body.task, toolbox)).input_ids)
            if n_prompt + body.max_new_tokens > backend.context_length:
                raise APIError(400, f"the planner prompt has {n_prompt} tokens and max_new_tokens is "
                                    f"{body.max_new_tokens}; this model's context is {backend.context_length} tokens. "
                                    "Shorten the task, give fewer tools or lower max_new_tokens.", "task",
                               "context_length_exceeded")
        port = request.scope["server"][1]
        agent = request.app.state.agent_backend
        # the agents run on the agents' model when the server has one (the demo's agent adapter)
        model_id = agent.model_id if body.mode != "rewoo" and agent is not None else backend.model_id

        def execute(emit: Callable[[dict], None] | None) -> dict:
            engine = OpenAIEngine(f"http://127.0.0.1:{port}/v1", model=model_id, api_key=config.api_key or "none",
                                  retries=1)
            if "llm" in toolbox:
                toolbox["llm"].engine = engine
            if body.mode == "rewoo":
                from pipeline.rewoo import Pipeline

                prior = config.tool_prior if body.tool_prior is None else body.tool_prior
                pipe = Pipeline(engine, None, engine, toolbox, constrain=body.constrain,
                                planner_max_new_tokens=body.max_new_tokens, tool_prior=prior)
                return pipe.run(body.task, on_event=None if emit is None else RewooEvents(emit)).to_dict()
            from pipeline.agents import make_agent

            steps = [0]

            def on_step(step_log: dict) -> None:
                steps[0] += 1
                emit(agent_step_event(steps[0], step_log))

            agent = make_agent(body.mode, engine, toolbox, max_new_tokens=body.max_new_tokens,
                               step_callbacks=[] if emit is None else [on_step])
            return agent.to_dict(agent.run(body.task))

        if not body.stream:
            try:
                return await run_in_threadpool(execute, None)
            except Exception as e:
                raise _failure(e) from e
        return SSEResponse(_stream_run(execute), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream_run(execute: Callable):
    """The events of one run (``execute(emit)`` in a worker thread), then ``data: [DONE]``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()
    end = object()

    def emit(event: dict) -> None:
        if gone.is_set():
            raise _Cancelled("the client went away")
        loop.call_soon_threadsafe(queue.put_nowait, event)

    work = asyncio.ensure_future(run_in_threadpool(execute, emit))
    def ended(_):  # after every event the run emitted
        queue.put_nowait(end)
        if not work.cancelled():
            work.exception()  # retrieved here too, for a run whose client left

    work.add_done_callback(ended)
    try:
        while (event := await queue.get()) is not end:
            yield _event_bytes(event)
        try:
            out = work.result()
        except Exception as e:  # after the 200: an error event, then [DONE]
            err = _failure(e)
            yield _event_bytes({"event": "error", "error": {"message": capped(err.message, 4000), "type": err.type,
                                                            "code": err.code}})
        else:
            yield _event_bytes({"event": "answer", "answer": out["answer"], "stats": out["stats"]})
            yield _event_bytes({"event": "result", **out})
        yield "data: [DONE]\n\n"
    finally:
        gone.set()
