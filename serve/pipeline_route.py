"""``POST /v1/pipeline/run``: the whole ReWOO agent in one REST call.

    python -m serve --model ./planner-merged --port 8000
    curl -s http://127.0.0.1:8000/v1/pipeline/run -H 'Content-Type: application/json' \\
         -d '{"task": "Who directed the film Oppenheimer?", "tools": ["search_wiki", "llm"]}'

The served model is the planner and the solver. The pipeline reaches it through this server's own
OpenAI-compatible endpoint on loopback (with the server's key), so its calls are batched with every
other client's and constrained the same way (``guided_grammar`` for the plan). Tools whose one input
is a string are called directly; a tool with several arguments takes a JSON-object input (this
route runs without a function caller). The toolbox is the one ``python -m serve --tools`` loaded
(``app.state.pipeline_toolbox``), else the offline default one (``default_toolbox``), limited to
``tools`` when given.

Request: ``{"task": str, "tools": [str]?, "max_new_tokens": int?, "constrain": bool?}``.
Response: the object of ``python -m pipeline.run --json``: ``task``, ``plan``, ``evidence``,
``answer``, ``stats``. A plan that does not parse (``constrain: false``) is a 422 whose message
holds the model's raw output; an unknown or repeated tool name, an empty tool list, a budget too
small for a constrained plan and a planner prompt over the context are 400s, decided before the
pipeline runs; a later request the model server refuses is a 400 too, an unreachable one a 502.

This is the one place where ``serve`` uses the pipeline runtime; it is imported when the route runs.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from pydantic import ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from pipeline import formats
from serve.app import APIError
from serve.protocol import _Request


class PipelineRunRequest(_Request):
    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=4000, description="the task for the agent")
    tools: list[str] | None = Field(None, min_length=1, max_length=64,
                                    description="limit the toolbox to these of its tools")
    max_new_tokens: int = Field(512, ge=32, le=4096, description="the planner's token budget")
    constrain: bool = Field(True, description="decode the plan with the plan grammar")


def add_pipeline_routes(app: FastAPI) -> None:
    """Install ``POST /v1/pipeline/run`` on ``app`` (see the module docstring)."""

    @app.post("/v1/pipeline/run", tags=["pipeline"])
    async def pipeline_run(body: PipelineRunRequest, request: Request) -> dict:
        from pipeline.engines import EngineError, OpenAIEngine
        from pipeline.plan import PlanError
        from pipeline.rewoo import Pipeline
        from toolkit import default_toolbox

        from pipeline.formats import constrain as constrain_mod

        config, backend = request.app.state.config, request.app.state.backend
        toolbox = getattr(request.app.state, "pipeline_toolbox", None) or default_toolbox()
        if body.tools is not None:
            unknown = [t for t in body.tools if t not in toolbox]
            if unknown:
                raise APIError(400, f"unknown tools {unknown}; the server's tools: {', '.join(toolbox)}", "tools")
            twice = sorted({t for t in body.tools if body.tools.count(t) > 1})
            if twice:
                raise APIError(400, f"tools lists {twice} more than once; name each tool once", "tools")
            toolbox = toolbox.subset(body.tools)
        if body.constrain:
            try:
                constrain_mod.plan_bounds(body.max_new_tokens, list(toolbox))
            except ValueError as e:
                raise APIError(400, str(e), "max_new_tokens") from e
        n_prompt = len(backend.tokenizer(formats.planner_prompt(body.task, toolbox)).input_ids)
        if n_prompt + body.max_new_tokens > backend.context_length:
            raise APIError(400, f"the planner prompt has {n_prompt} tokens and max_new_tokens is {body.max_new_tokens}; "
                                f"this model's context is {backend.context_length} tokens. Shorten the task, "
                                "give fewer tools or lower max_new_tokens.", "task", "context_length_exceeded")
        port = request.scope["server"][1]
        model_id = backend.model_id

        def run() -> dict:
            engine = OpenAIEngine(f"http://127.0.0.1:{port}/v1", model=model_id, api_key=config.api_key or "none",
                                  retries=1)
            if "llm" in toolbox:
                toolbox["llm"].engine = engine
            pipe = Pipeline(engine, None, engine, toolbox, constrain=body.constrain,
                            planner_max_new_tokens=body.max_new_tokens)
            return pipe.run(body.task).to_dict()

        try:
            return await run_in_threadpool(run)
        except PlanError as e:
            raw = getattr(e, "raw_output", "")
            raise APIError(422, f"{e}; the planner wrote: {raw!r}", "task", "invalid_plan") from e
        except EngineError as e:
            if " answered 4" in str(e):  # the model server refused one of the pipeline's requests
                raise APIError(400, f"the model server refused a request of the pipeline: {e}", "task",
                               "pipeline_request_refused") from e
            raise APIError(502, f"the pipeline could not reach the model: {e}", None, "engine_error",
                           "server_error") from e
