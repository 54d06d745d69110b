"""Every prompt template and output parser of the stack: the format contract.

Data generation, training, serving and the pipeline all import this module, so that what a model
is trained on is exactly what it is prompted with. A format exists here once.

Three roles, each an *instruction* text that a template wraps:

- planner:  ``planner_instruction(task, tools)``  -> the model writes a plan (``pipeline.plan``)
- caller:   ``caller_instruction(step, tools)``   -> one JSON object ``{"name", "arguments"}``
- solver:   ``solver_instruction(task, steps, evidence)`` -> the answer

Two templates wrap an instruction:

- Alpaca (the default, as the planner and caller are trained):
  ``"### Instruction:\\n{instruction}\\n\\n### Response:\\n"``, the response follows;
- chat: ``[{"role": "user", "content": instruction}]`` for a tokenizer's chat template.

Tools are described by :class:`ToolSpec` (name, description, JSON-schema parameters);
:func:`tool_spec` builds one from a toolkit ``Tool`` (``name``/``description``/``inputs``), an
OpenAI function schema, or a catalog entry, so this module imports nothing but the plan parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.plan import Plan, PlanError, Step, parse_plan, render_step

__all__ = [
    "ToolSpec", "tool_spec", "tool_specs", "tool_line", "takes_one_string",
    "ALPACA_TEMPLATE", "ALPACA_STOP", "alpaca", "chat", "messages_to_alpaca", "split_alpaca",
    "PLANNER_INTRO", "planner_instruction", "planner_prompt", "parse_planner_output",
    "ToolCall", "CallError", "caller_instruction", "caller_prompt", "render_call", "parse_call",
    "render_calls", "parse_calls", "caller_conversation", "plain_messages",
    "solver_instruction", "solver_prompt", "parse_answer",
    "Plan", "PlanError", "Step", "parse_plan",
]

# --------------------------------------------------------------------------------------------
# Tools as the prompts see them
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolSpec:
    """What the prompts need to know of a tool.

    ``parameters`` is a JSON Schema object: ``{"type": "object", "properties": {...},
    "required": [...]}``.
    """

    name: str
    description: str
    parameters: dict = field(default_factory=lambda: {"type": "object", "properties": {}, "required": []})
    output_type: str = "string"

    def to_openai(self) -> dict:
        """The OpenAI function-calling form: ``{"type": "function", "function": {...}}``."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": self.parameters}}

    def to_json_schema(self) -> dict:
        """``{"name", "description", "parameters"}``: the form the caller prompt lists."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def _parameters_from_inputs(inputs: Mapping[str, Mapping]) -> dict:
    # One conversion for the whole stack: the toolkit's (toolkit imports nothing of ours).
    from toolkit.tool import parameters_schema
    return parameters_schema(inputs)


def tool_spec(tool: Any) -> ToolSpec:
    """A :class:`ToolSpec` from a toolkit Tool, an OpenAI function schema or a catalog dict.

    Accepted: a ToolSpec; an object with ``name``, ``description`` and ``inputs``
    (``{arg: {"type", "description", "nullable"?}}``, the transformers Agents form) and optional
    ``output_type``; a dict ``{"type": "function", "function": {...}}``; a dict with ``name``,
    ``description`` and ``parameters`` (JSON Schema) or ``inputs``.
    """
    if isinstance(tool, ToolSpec):
        return tool
    if isinstance(tool, Mapping):
        d = tool["function"] if tool.get("type") == "function" and "function" in tool else tool
        if "name" not in d:
            raise ValueError(f"a tool schema needs a 'name'; got keys {sorted(d)}")
        if "parameters" in d:
            params = dict(d["parameters"])
        else:
            params = _parameters_from_inputs(d.get("inputs", {}))
        params.setdefault("type", "object")
        params.setdefault("properties", {})
        return ToolSpec(d["name"], d.get("description", ""), params, d.get("output_type", "string"))
    if hasattr(tool, "name") and hasattr(tool, "inputs"):
        return ToolSpec(tool.name, getattr(tool, "description", "") or "",
                        _parameters_from_inputs(tool.inputs), getattr(tool, "output_type", "string"))
    raise TypeError(f"cannot describe {tool!r} as a tool: give a Tool (name, description, inputs), "
                    "an OpenAI function schema or a dict with name/description/parameters")


def tool_specs(tools: Any) -> list[ToolSpec]:
    """Specs for a collection of tools: a Toolbox or mapping (its values), or an iterable."""
    if isinstance(tools, Mapping) and "name" not in tools:
        tools = tools.values()
    return [tool_spec(t) for t in tools]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def takes_one_string(spec: ToolSpec) -> bool:
    """True when the tool's only input is one string: the distributor then calls it directly
    with the step's input, without the function caller."""
    props = spec.parameters.get("properties", {})
    if len(props) != 1:
        return False
    (prop,) = props.values()
    return prop.get("type") == "string"


def tool_line(tool: Any) -> str:
    """``name[input]: description`` on one line, the planner prompt's tool line.

    A tool that takes more than one string also names its arguments, so the planner writes an
    input the function caller can map: ``save_file[input]: Save a file. Arguments: path
    (string), content (string).``
    """
    spec = tool_spec(tool)
    line = f"{spec.name}[input]: {_one_line(spec.description)}"
    props = spec.parameters.get("properties", {})
    if props and not takes_one_string(spec):
        args = ", ".join(f"{k} ({v.get('type', 'any')})" for k, v in props.items())
        line += f" Arguments: {args}."
    return line


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------

ALPACA_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
# Where a model trained on Alpaca starts a new turn of its own accord; engines stop there.
ALPACA_STOP = ["\n### Instruction:", "\n### Response:"]


def alpaca(instruction: str) -> str:
    """Wrap an instruction in the Alpaca template; the model's response follows the result."""
    return ALPACA_TEMPLATE.format(instruction=instruction)


def chat(instruction: str) -> list[dict]:
    """The chat form of an instruction: one user message, for a tokenizer's chat template."""
    return [{"role": "user", "content": instruction}]


def messages_to_alpaca(messages: Sequence[Mapping[str, str]]) -> str:
    """Render chat messages in the Alpaca template (for models without a chat template).

    System and user messages of a turn join into its instruction; an assistant message is the
    response of the turn before it. The text ends ready for the next response, or inside the
    last assistant message when the messages end with one.
    """
    out, pending = [], []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
        if role in ("system", "user", "tool"):
            pending.append(content)
        elif role == "assistant":
            out.append(alpaca("\n\n".join(pending)) + content)
            pending = []
        else:
            raise ValueError(f"unknown message role {role!r}: expected system, user, assistant or tool")
    if pending or not out:
        out.append(alpaca("\n\n".join(pending)))
    # Ending on an assistant message leaves its text open: the model continues it (a prefill).
    return "\n\n".join(out)


def split_alpaca(text: str) -> tuple[str, str]:
    """``(instruction, response)`` from one Alpaca-formatted example (the inverse of
    ``alpaca(instruction) + response``)."""
    head, sep, response = text.partition("\n\n### Response:\n")
    if not sep or not head.startswith("### Instruction:\n"):
        raise ValueError("not an Alpaca example: expected '### Instruction:\\n...\\n\\n### Response:\\n...'")
    return head[len("### Instruction:\n"):], response


def _wrap(instruction: str, template: str):
    if template == "alpaca":
        return alpaca(instruction)
    if template == "chat":
        return chat(instruction)
    raise ValueError(f"unknown template {template!r}: use 'alpaca' or 'chat'")


def _cut_at_stop(text: str) -> str:
    for stop in ALPACA_STOP:
        i = text.find(stop)
        if i >= 0:
            text = text[:i]
    return text


# --------------------------------------------------------------------------------------------
# Planner
# --------------------------------------------------------------------------------------------

PLANNER_INTRO = (
    "For the following tasks, make plans that can solve the problem step-by-step. "
    "For each plan, indicate which external tool together with tool input to retrieve evidence. "
    "You can store the evidence into a variable #E that can be called by later tools. "
    "(Plan, #E1, Plan, #E2, Plan, ...)"
)
PLANNER_RULES = (
    "Write each step as two lines: 'Plan: <what the step does>' and then "
    "'#E<n> = <tool>[<input>]', numbering #E1, #E2, ... An input may use the evidence of "
    "earlier steps by their variables, such as #E1."
)


def planner_instruction(task: str, tools: Any, examples: str | None = None) -> str:
    """The ReWOO planner instruction: intro, one ``name[input]: description`` line per tool,
    optional worked examples, the step format, then the task."""
    parts = [PLANNER_INTRO, "Tools can be one of the following:"]
    parts += [tool_line(t) for t in tool_specs(tools)]
    text = "\n".join(parts)
    if examples:
        text += "\n\nFor example:\n" + examples.strip()
    return f"{text}\n\n{PLANNER_RULES}\n\nTask: {task.strip()}"


def planner_prompt(task: str, tools: Any, template: str = "alpaca", examples: str | None = None):
    """The planner prompt: Alpaca text (default) or chat messages (``template="chat"``)."""
    return _wrap(planner_instruction(task, tools, examples), template)


def replan_instruction(task: str, tools: Any, steps: Sequence[Any], status: Mapping[str, str],
                       examples: str | None = None) -> str:
    """The planner instruction for another round after steps failed: the usual instruction, then
    each step that ran with its status only (``done``, ``failed: <error>``, ``skipped: ...``),
    then where the numbering continues. The text of successful evidence is never shown, so no
    tool output can rewrite the plan; an error message is shown, cut to 200 characters."""
    base = planner_instruction(task, tools, examples)
    lines = []
    for st in steps:
        state = " ".join(str(status.get(st.var, "not run")).split())
        lines.append(f"{st.var} = {st.tool}[{st.input}]: {state[:200]}")
    nxt = len(steps) + 1
    return (f"{base}\n\nThese steps already ran:\n" + "\n".join(lines)
            + f"\n\nWrite only new steps, numbered from #E{nxt}, that get what the failed steps could not "
            f"(another tool or another input). They may use the variables of the steps that are done.")


def replan_prompt(task: str, tools: Any, steps: Sequence[Any], status: Mapping[str, str], template: str = "alpaca",
                  examples: str | None = None):
    """:func:`replan_instruction` as Alpaca text or chat messages."""
    return _wrap(replan_instruction(task, tools, steps, status, examples), template)


def parse_planner_output(text: str, tools: Any = None, defined: Iterable[str] = ()) -> Plan:
    """The plan in a planner's output (text after an Alpaca stop marker is ignored)."""
    names = None if tools is None else [s.name for s in tool_specs(tools)]
    return parse_plan(_cut_at_stop(text), names, defined)


# --------------------------------------------------------------------------------------------
# Function caller
# --------------------------------------------------------------------------------------------

CALLER_INTRO = "You are a function caller. These functions are available, as JSON schemas:"
CALLER_RULES = (
    "Call the one function that carries out the step below. Respond immediately and only with "
    'one JSON object of the form {"name": "<function name>", "arguments": {"<argument>": <value>, '
    '...}}. Leave evidence variables such as #E1 as they are inside argument values; they are '
    "filled in before the call runs."
)


@dataclass(frozen=True)
class ToolCall:
    """One function call: the caller's output, and what the distributor sends to a worker."""

    name: str
    arguments: dict

    def to_dict(self) -> dict:
        return {"name": self.name, "arguments": self.arguments}


class CallError(ValueError):
    """The function caller's output is not one JSON object ``{"name", "arguments"}``."""


def _step_text(step: Step | Mapping | str) -> str:
    if isinstance(step, str):
        return step.strip()
    if isinstance(step, Mapping):
        step = Step(step["var"], step["tool"], step["input"], step.get("description", ""))
    return step.render()


def caller_instruction(step: Step | Mapping | str, tools: Any) -> str:
    """The function-caller instruction: the tools' JSON schemas, the output rule, one plan step
    (``Plan: ...`` and ``#E<n> = tool[input]``)."""
    schemas = "\n".join(json.dumps(s.to_json_schema(), ensure_ascii=False) for s in tool_specs(tools))
    return f"{CALLER_INTRO}\n{schemas}\n\n{CALLER_RULES}\n\nStep:\n{_step_text(step)}"


def caller_prompt(step: Step | Mapping | str, tools: Any, template: str = "alpaca"):
    return _wrap(caller_instruction(step, tools), template)


# How a call's JSON is spaced, in training data and under constrained decoding alike (a constraint
# that forced compact JSON held the tuned caller to a spacing it never saw).
CALL_ITEM_SEPARATOR, CALL_KEY_SEPARATOR = ", ", ": "


def render_call(name: str, arguments: Mapping) -> str:
    """The caller's target output, exactly as training data writes it."""
    return json.dumps({"name": name, "arguments": dict(arguments)}, ensure_ascii=False,
                      separators=(CALL_ITEM_SEPARATOR, CALL_KEY_SEPARATOR))


_FENCE_RE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)


def parse_call(text: str, tools: Any = None) -> ToolCall:
    """The first JSON object ``{"name": str, "arguments": object}`` in the caller's output.

    Tolerated: text or a code fence around the object, ``"function"`` for ``"name"``,
    ``"arguments"`` given as a JSON string (as OpenAI's API returns it), no ``"arguments"`` for a
    function without any. With ``tools``, the name must be one of them. Anything else raises
    :class:`CallError` with what was wrong and a piece of the text.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_call takes the caller's text (str), not {type(text).__name__}")
    candidates = [m.group(1) for m in _FENCE_RE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    found: dict | None = None
    problem = "no JSON object found"
    for chunk in candidates:
        for i, ch in enumerate(chunk):
            if ch != "{":
                continue
            try:
                obj, _ = decoder.raw_decode(chunk, i)
            except json.JSONDecodeError as e:
                problem = f"invalid JSON ({e.msg} at character {e.pos})"
                continue
            if isinstance(obj, dict) and ("name" in obj or "function" in obj):
                found = obj
                break
            problem = "a JSON object without a 'name' key"
        if found is not None:
            break
    snippet = _one_line(text)[:120]
    if found is None:
        raise CallError(f"the function caller's output is not a call: {problem}. Expected one "
                        f'JSON object {{"name": ..., "arguments": {{...}}}}; got {snippet!r}')
    name = found.get("name", found.get("function"))
    if not isinstance(name, str) or not name:
        raise CallError(f"the call's 'name' must be a non-empty string, got {name!r} in {snippet!r}")
    args = found.get("arguments", found.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise CallError(f"the call's 'arguments' is a string that is not JSON: {args[:80]!r}") from e
    if not isinstance(args, dict):
        raise CallError(f"the call's 'arguments' must be a JSON object, got {type(args).__name__} "
                        f"in {snippet!r}")
    if tools is not None:
        names = [s.name for s in tool_specs(tools)]
        if name not in names:
            raise CallError(f"the call names an unknown function {name!r}; known: {', '.join(names)}")
    return ToolCall(name, args)


# --------------------------------------------------------------------------------------------
# Function calling over a chat (the OpenAI ``tools`` API): the caller format, fed a conversation
# --------------------------------------------------------------------------------------------

def render_calls(calls: Iterable[ToolCall | Mapping]) -> str:
    """Several calls, one :func:`render_call` object per line (parallel tool calls)."""
    out = []
    for c in calls:
        name, args = (c.name, c.arguments) if isinstance(c, ToolCall) else (c["name"], c.get("arguments", {}))
        out.append(render_call(name, args))
    return "\n".join(out)


def _message_text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


def _openai_call(call: Mapping) -> ToolCall:
    """A ToolCall from an OpenAI ``tool_calls`` entry (``{"id", "type", "function": {"name",
    "arguments": "<JSON text>"}}``); ValueError when it is not one."""
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError("a tool call needs function.name (a string)")
    args = fn.get("arguments", "{}")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"the arguments of tool call {fn['name']!r} are not JSON: {e.msg}") from e
    if not isinstance(args, Mapping):
        raise ValueError(f"the arguments of tool call {fn['name']!r} must be a JSON object")
    return ToolCall(fn["name"], dict(args))


def plain_messages(messages: Sequence[Mapping]) -> list[dict]:
    """OpenAI messages with tool traffic written out as text, for templates that know only system,
    user and assistant turns: an assistant's ``tool_calls`` become :func:`render_calls` lines after
    its text; a ``tool`` message becomes a user turn ``Result of <name>: <content>``."""
    names: dict[str, str] = {}
    out = []
    for m in messages:
        role, text = m.get("role"), _message_text(m.get("content"))
        if role == "developer":
            role = "system"
        if role == "assistant" and m.get("tool_calls"):
            calls = [_openai_call(c) for c in m["tool_calls"]]
            for raw, call in zip(m["tool_calls"], calls):
                if raw.get("id"):
                    names[raw["id"]] = call.name
            text = "\n".join(t for t in (text.strip(), render_calls(calls)) if t)
        elif role == "tool":
            name = names.get(m.get("tool_call_id") or "", m.get("name") or "the tool")
            role, text = "user", f"Result of {name}: {text}"
        out.append({"role": role, "content": text})
    return out


def caller_conversation(messages: Sequence[Mapping]) -> str:
    """The step text the function caller reads for a conversation (the OpenAI ``tools`` API).

    A conversation of system and user messages only is their texts joined by blank lines, so one
    user message ``"Plan: ...\\n#E1 = tool[input]"`` gives exactly the prompt the caller was
    trained on (``caller_prompt(step, tools)``). A conversation with assistant turns, tool calls
    or tool results is a transcript: ``User: ...``, ``Assistant: ...``, ``Call: {...}`` (one
    :func:`render_call` per call) and ``Result of <name>: ...`` lines.
    """
    if all(m.get("role") in ("system", "developer", "user") for m in messages):
        return "\n\n".join(_message_text(m.get("content")).strip() for m in messages).strip()
    names: dict[str, str] = {}
    lines = []
    for m in messages:
        role, text = m.get("role"), _message_text(m.get("content")).strip()
        if role in ("system", "developer"):
            lines.append(f"System: {text}")
        elif role == "user":
            lines.append(f"User: {text}")
        elif role == "assistant":
            if text:
                lines.append(f"Assistant: {text}")
            for raw in m.get("tool_calls") or []:
                call = _openai_call(raw)
                if raw.get("id"):
                    names[raw["id"]] = call.name
                lines.append(f"Call: {render_call(call.name, call.arguments)}")
        elif role == "tool":
            name = names.get(m.get("tool_call_id") or "", m.get("name") or "the tool")
            lines.append(f"Result of {name}: {text}")
        else:
            raise ValueError(f"unknown message role {role!r}: expected system, user, assistant or tool")
    return "\n".join(lines)


def parse_calls(text: str, tools: Any = None) -> list[ToolCall]:
    """Every call in a caller's output of one or more :func:`render_call` objects (whitespace
    between them). Raises :class:`CallError` when the text holds anything else."""
    decoder, calls, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise CallError(f"not a complete call at character {i}: {e.msg}") from e
        calls.append(parse_call(json.dumps(obj), tools))
        i = end
    if not calls:
        raise CallError("no call in the output")
    return calls


# --------------------------------------------------------------------------------------------
# Solver
# --------------------------------------------------------------------------------------------

SOLVER_INTRO = (
    "Solve the following task or problem. To help you, here are plans and the evidence each "
    "one retrieved. Some evidence may be noisy or wrong, so use it with care."
)
SOLVER_RULES = "Now solve the task or problem. Respond with the answer directly, with no extra words."
# Evidence beyond this many characters is cut (marked "..."), so a long page cannot push the
# task out of a small model's context.
SOLVER_EVIDENCE_CHARS = 1500


def solver_instruction(task: str, steps: Iterable[Step | Mapping], evidence: Mapping[str, str],
                       max_evidence_chars: int = SOLVER_EVIDENCE_CHARS) -> str:
    """The ReWOO solver instruction: the task, each plan with its step and evidence, the task again.

    ``steps`` are the plan's steps (or dicts with ``var``, ``tool``, ``input``,
    ``description``); ``evidence`` maps each variable to its text (a missing one shows as
    ``(no evidence)``).
    """
    blocks = []
    for step in steps:
        if isinstance(step, Mapping):
            step = Step(step["var"], step["tool"], step["input"], step.get("description", ""))
        ev = str(evidence.get(step.var, "(no evidence)")).strip()
        if len(ev) > max_evidence_chars:
            ev = ev[:max_evidence_chars].rstrip() + " ..."
        blocks.append(f"{render_step(step.var, step.tool, step.input, step.description)}\n"
                      f"Evidence: {ev}")
    body = "\n".join(blocks) if blocks else "(no plans)"
    return f"{SOLVER_INTRO}\n\nTask: {task.strip()}\n\n{body}\n\n{SOLVER_RULES}\n\nTask: {task.strip()}"


def solver_prompt(task: str, steps: Iterable[Step | Mapping], evidence: Mapping[str, str],
                  template: str = "alpaca"):
    return _wrap(solver_instruction(task, steps, evidence), template)


_ANSWER_PREFIX_RE = re.compile(r"^\s*(?:final answer|answer|the answer is)\s*[:\-]\s*", re.IGNORECASE)


# A plan step (``#E3 = tool[...]``, maybe after its ``Plan:`` line) opening a line of the solver's
# output: the solver went on writing the plan, which is never part of an answer.
_PLAN_STEP_LINE_RE = re.compile(r"^[ \t]*(?:Plan:[^\n]*\n\s*)?#E\d+\s*=", re.MULTILINE)


def parse_answer(text: str) -> str:
    """The solver's answer: its output up to a following Alpaca turn or plan step, without an
    ``Answer:`` prefix or surrounding whitespace."""
    text = _cut_at_stop(text)
    step = _PLAN_STEP_LINE_RE.search(text)
    return _ANSWER_PREFIX_RE.sub("", text[:step.start()] if step else text).strip()
