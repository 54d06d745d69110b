"""The OpenAI request bodies we accept, as pydantic models (they also make the OpenAPI schema).

Unknown fields are ignored, as OpenAI-compatible servers do: clients (the ``openai`` package,
LangChain) send fields a local server has no use for (``user``, ``presence_penalty``...).
Fields we cannot honour (``n > 1``, ``logprobs``) are refused with a 400 rather than ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """Where ``value`` (parsed JSON) holds a lone UTF-16 surrogate (``"\\ud800"``), or None.
    Such text cannot be encoded as UTF-8: the tokenizer and every reply would fail on it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            where = _surrogate_path(k, path) or _surrogate_path(v, f"{path}.{k}" if path else str(k))
            if where:
                return where
    elif isinstance(value, list):
        for i, v in enumerate(value):
            where = _surrogate_path(v, f"{path}[{i}]")
            if where:
                return where
    return None


class _Request(_Body):
    @model_validator(mode="before")
    @classmethod
    def _no_surrogates(cls, data: Any) -> Any:
        where = _surrogate_path(data)
        if where:
            raise ValueError(f"{where.encode('ascii', 'backslashreplace').decode()} holds a lone UTF-16 "
                             "surrogate (such as \\ud800), which is not text; send valid Unicode")
        return data


class StreamOptions(_Body):
    include_usage: bool = False


class JsonSchemaFormat(_Body):
    name: str = "output"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class RewooPlan(_Body):
    tools: list[str] = Field(..., min_length=1, description="tool names the plan may call")


class ToolPriorTool(_Body):
    name: str = Field(..., min_length=1, max_length=64)
    description: str = Field("", max_length=4000)


class ToolPriorHold(_Body):
    tool: str = Field(..., min_length=1, max_length=64)
    value: str = Field(..., min_length=1, max_length=200)


class ToolPriorBody(_Body):
    """The planner's tool prior (``pipeline.formats.toolprior``): the listed tools, the most
    logits it adds to a step's tool name, the goals the task states (the plan leans towards a
    step per goal, each ``Plan:`` line towards its goal) and the values of a tool's data the task
    names (a ``Plan:`` line that opens "Use" leans towards that tool)."""

    tools: list[ToolPriorTool] = Field(..., min_length=1, max_length=256)
    weight: float = Field(..., ge=0.0, le=100.0, allow_inf_nan=False, description="logits at most")
    goals: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=64, description="the goals the task states (task_goals); none: not read")
    holds: list[ToolPriorHold] = Field(
        default_factory=list, max_length=64,
        description="values of a tool's own data the task names (task_holdings): a step about one leans to its tool")


class _Sampling(_Request):
    model: str
    max_tokens: int | None = Field(None, ge=1, description="tokens to generate at most")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stop: str | list[str] | None = Field(None, description="up to 16 stop strings; the output ends before one")
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=1, description="only 1 is supported")
    logprobs: Any = None
    ignore_eos: bool = Field(False, description="vLLM extension: keep generating past EOS")
    # Constrained output (serve.constraints): at most one.
    response_format: ResponseFormat | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    guided_choice: list[str] | None = None
    structured_outputs: dict[str, Any] | None = None
    rewoo_plan: RewooPlan | None = None
    # With a plan grammar (rewoo_plan, guided_grammar or structured_outputs.grammar): each step's
    # tool name leans towards the tools its Plan: line describes (pipeline.formats.toolprior).
    tool_prior: ToolPriorBody | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str] | list[list[int]] = Field(
        ..., description="text, token ids, or a list of either (one choice each)")
    echo: bool = False


class ChatMessage(_Body):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = Field(None, description="an assistant's calls (OpenAI shape)")
    tool_call_id: str | None = Field(None, description="the call a tool message answers")


class FunctionDef(_Body):
    name: str = Field(..., min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments (an object)")
    strict: bool | None = None


class ToolDef(_Body):
    type: Literal["function"]
    function: FunctionDef


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="newer name of max_tokens")
    tools: list[ToolDef] | None = Field(None, description="functions the model may call (serve.tools)")
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
