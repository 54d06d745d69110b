"""OpenAI function calling on ``/v1/chat/completions``: ``tools``, ``tool_choice``,
``parallel_tool_calls``, and ``tool_calls`` in the reply (whole or streamed).

The prompt is the function-caller format of ``pipeline.formats`` (``caller_prompt`` of
``caller_conversation(messages)``), so a caller trained by ``scripts/train_caller.sh`` sees exactly
its training prompt when a client sends one user message holding a plan step. Its output, one
``formats.render_call`` object per call (one per line when calls run in parallel), becomes OpenAI
``tool_calls``.

``tool_choice``:

- ``"none"``: no tools offered; the chat prompt as without tools (tool traffic in the history
  written out as text by ``formats.plain_messages``);
- ``"auto"`` (the default): text or calls; decoding follows a grammar with both branches, so a
  reply that starts with ``{`` is a valid call;
- ``"required"``: one or more calls to any of the tools; ``{"type": "function", "function":
  {"name": N}}``: calls to N only. Both are constrained to the tools' JSON schemas.

Every string of a call is capped in tokens (``pipeline.formats.jsonlark``), so a call closes within
``max_tokens``.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from pipeline import formats
from serve.backends.base import BackendError
from pipeline.formats.jsonlark import TooSmall, Unsupported, compile_schema

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
MAX_TOOLS = 128
PARALLEL_CALLS = 4  # most calls in one parallel reply (when the budget allows; else fewer)


@dataclass(frozen=True)
class ToolChoice:
    """What a request allows: ``mode`` is ``auto`` or ``required`` (``specs`` are then the tools
    a call may name: all, or the one named by ``tool_choice``); ``offered`` are all the tools
    the prompt lists."""

    offered: tuple
    specs: tuple
    mode: str
    parallel: bool


def _error(message: str, param: str) -> BackendError:
    return BackendError(message, param=param, code="invalid_value")


def tool_choice_from_request(body) -> ToolChoice | None:
    """The tools a chat request offers, or None (no tools, or ``tool_choice: "none"``).

    Raises :class:`BackendError` (400) for a malformed tool list or choice.
    """
    tools, choice = body.tools, body.tool_choice
    if tools is None or len(tools) == 0:
        if tools is not None and len(tools) == 0:
            raise _error("tools is empty; leave it out or give at least one function", "tools")
        if choice not in (None, "none", "auto"):
            raise _error("tool_choice needs tools", "tool_choice")
        return None
    if len(tools) > MAX_TOOLS:
        raise _error(f"at most {MAX_TOOLS} tools, got {len(tools)}", "tools")
    specs, seen = [], set()
    for i, t in enumerate(tools):
        fn = t.function
        if not NAME_RE.match(fn.name):
            raise _error(f"tools[{i}].function.name {fn.name[:80]!r} must be 1-64 letters, digits, '_' or '-'",
                         f"tools[{i}].function.name")
        if fn.name in seen:
            raise _error(f"two tools are named {fn.name!r}; names must be unique", f"tools[{i}].function.name")
        seen.add(fn.name)
        params = fn.parameters if fn.parameters is not None else {"type": "object", "properties": {}}
        if params.get("type", "object") != "object":
            raise _error(f"tools[{i}].function.parameters must be an object schema", f"tools[{i}].function.parameters")
        specs.append(formats.tool_spec({"name": fn.name, "description": fn.description or "", "parameters": params}))
    if choice is None or choice == "auto":
        mode, allowed = "auto", specs
    elif choice == "none":
        return None
    elif choice == "required":
        mode, allowed = "required", specs
    elif isinstance(choice, dict):
        fn = choice.get("function") if choice.get("type") == "function" else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise _error('tool_choice must be "none", "auto", "required" or {"type": "function", '
                         '"function": {"name": ...}}', "tool_choice")
        allowed = [s for s in specs if s.name == name]
        if not allowed:
            raise _error(f"tool_choice names {name[:80]!r}, which is not among the tools "
                         f"({', '.join(s.name for s in specs)})", "tool_choice")
        mode = "required"
    else:
        raise _error('tool_choice must be "none", "auto", "required" or {"type": "function", '
                     '"function": {"name": ...}}', "tool_choice")
    parallel = body.parallel_tool_calls is not False
    return ToolChoice(tuple(specs), tuple(allowed), mode, parallel)


def _call_schema(spec) -> dict:
    params = dict(spec.parameters)
    params.setdefault("type", "object")
    params.setdefault("properties", {})
    if "additionalProperties" not in params:
        params["additionalProperties"] = False
    return {"type": "object", "properties": {"name": {"const": spec.name}, "arguments": params},
            "required": ["name", "arguments"]}


def tool_grammar(choice: ToolChoice, max_tokens: int) -> str:
    """A Lark grammar for the reply: calls to ``choice.specs`` (one per line, up to
    ``PARALLEL_CALLS`` when parallel), or in ``auto`` mode also free text not starting with
    ``{``. Strings in calls are capped in tokens so that the calls fit ``max_tokens``."""
    schema = {"anyOf": [_call_schema(s) for s in choice.specs]}
    counts = [n for n in (PARALLEL_CALLS, 2) if choice.parallel] + [1]
    problem = None
    for n in counts:
        try:
            rules, cap = compile_schema(schema, max_tokens // n, start="call")
        except TooSmall as e:
            problem = e
            continue
        except Unsupported as e:
            raise BackendError(f"a tool's parameters use JSON Schema this server cannot constrain: {e}",
                               param="tools", code="invalid_value") from e
        if n > 1 and cap is not None and cap < 32:
            continue  # parallel calls only while each string keeps a useful length
        calls = "call" if n == 1 else f'call ("\\n" call){{0,{n - 1}}}'
        start = f"start: {calls}" + (" | TEXT\nTEXT: /[^{](.|\\n)*/" if choice.mode == "auto" else "")
        return start + "\n" + "\n".join(rules) + "\n"
    raise BackendError(f"{problem} (for a call to these tools)", param="max_tokens", code="invalid_value")


def prompt_messages(messages: list[dict], choice: ToolChoice, template: str):
    """The caller prompt for a conversation: Alpaca text (``template="alpaca"``) or chat messages."""
    try:
        step = formats.caller_conversation(messages)
    except ValueError as e:
        raise BackendError(f"cannot render these messages: {e}", param="messages") from e
    return formats.caller_prompt(step, list(choice.offered), template)


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _openai_calls(calls: list[formats.ToolCall]) -> list[dict]:
    return [{"id": _call_id(), "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in calls]


def parse_reply(text: str, choice: ToolChoice) -> tuple[str | None, list[dict] | None]:
    """``(content, tool_calls)`` of a finished reply: calls when the text is one or more calls to
    the allowed tools, else the text as content."""
    if not text.lstrip().startswith("{"):
        return text, None
    try:
        calls = formats.parse_calls(text, list(choice.specs))
    except formats.CallError:
        return text, None  # cut by max_tokens (or unconstrained): the client sees the text
    return None, _openai_calls(calls)


class ToolCallStream:
    """Turns streamed reply text into OpenAI chat deltas: ``{"content": ...}`` for text, or
    ``{"tool_calls": [{"index", "id", "type", "function": {"name", "arguments"}}]}`` first for a
    call (name, empty arguments) and then ``{"tool_calls": [{"index", "function": {"arguments":
    piece}}]}`` as its arguments grow, as OpenAI streams them.

    The reply is a call if its first non-blank character is ``{`` (the grammar forces a call
    then); calls are ``{"name": "...", "arguments": {...}}``, one per line.
    """

    _HEAD = re.compile(r'\s*\{"name": "((?:[^"\\]|\\.)*)", "arguments": ')

    def __init__(self):
        self.text = ""
        self.mode: str | None = None  # "text" or "calls"
        self.index = -1          # current call
        self.call_start = 0      # where the current call's object starts
        self.args_start: int | None = None
        self.args_sent = 0
        self.decoder = json.JSONDecoder()
        self.calls = 0

    def feed(self, piece: str) -> list[dict]:
        self.text += piece
        if self.mode is None:
            stripped = self.text.lstrip()
            if not stripped:
                return []
            self.mode = "calls" if stripped.startswith("{") else "text"
            if self.mode == "text":
                return [{"content": self.text}]
            return self._calls()
        if self.mode == "text":
            return [{"content": piece}] if piece else []
        return self._calls()

    def _calls(self) -> list[dict]:
        out = []
        while True:
            if self.args_start is None:  # waiting for the next call's name
                rest = self.text[self.call_start:]
                if not rest.strip():
                    return out
                m = self._HEAD.match(rest)
                if m is None:
                    return out
                self.index += 1
                self.calls += 1
                name = json.loads(f'"{m.group(1)}"')
                out.append({"tool_calls": [{"index": self.index, "id": _call_id(), "type": "function",
                                            "function": {"name": name, "arguments": ""}}]})
                self.args_start = self.call_start + m.end()
                self.args_sent = self.args_start
            try:
                _, end = self.decoder.raw_decode(self.text, self.text.index("{", self.call_start))
            except (json.JSONDecodeError, ValueError):
                end = None
            # Arguments so far: all but the last character, which may be the call's closing brace.
            stop = end - 1 if end is not None else len(self.text) - 1
            if stop > self.args_sent:
                out.append({"tool_calls": [{"index": self.index,
                                            "function": {"arguments": self.text[self.args_sent:stop]}}]})
                self.args_sent = stop
            if end is None:
                return out
            self.call_start, self.args_start = end, None
