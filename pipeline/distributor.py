"""The distributor: decides how each plan step calls its tool, before any tool runs.

    from pipeline.distributor import distribute
    calls = distribute(plan, toolbox, caller_engine)   # {var: Call}

- A tool whose one input is a string is called directly with the step's input (no model call).
- A tool without inputs is called with none.
- Any other tool needs arguments: all such steps of the plan go to the function caller in one
  batch (``formats.caller_prompt`` per step, each constrained to its tool's call schema when the
  engine enforces constraints). ``#E`` placeholders stay in the arguments; the workers fill them.
- Without a caller, a step whose input is a JSON object of arguments uses it, and a tool with
  exactly one required argument gets the input as that argument; anything else is an error on
  that step.

Arguments are checked against the tool's schema here (names, required keys; types where the
value holds no placeholder). A step whose call cannot be made carries ``error``; the workers
record it as that step's evidence and the run goes on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema

from pipeline import formats
from pipeline.engines import Constraint, Engine, EngineError, role
from pipeline.formats import constrain as constrain_mod
from pipeline.plan import CODE_MEDIA_TYPE, VAR_RE, Plan, Step, substitute, substitute_code


@dataclass
class Call:
    """How one step calls its tool. ``via``: "direct", "none" (no inputs), "caller", "json" or
    "input" (see the module docstring); ``error`` is set when no valid call could be made."""

    var: str
    tool: str
    arguments: dict
    via: str
    error: str | None = None
    raw: str | None = None  # the function caller's output, when it was asked

    def to_dict(self) -> dict:
        return {"var": self.var, "tool": self.tool, "arguments": self.arguments, "via": self.via,
                "error": self.error}


def _has_ref(value: Any) -> bool:
    if isinstance(value, str):
        return VAR_RE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_ref(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_ref(v) for v in value)
    return False


def check_arguments(arguments: dict, parameters: dict) -> list[str]:
    """Schema problems of ``arguments``, ignoring type errors of values that still hold ``#E``
    placeholders (they are strings until the workers substitute them)."""
    problems = []
    for err in jsonschema.Draft202012Validator(parameters).iter_errors(arguments):
        if err.validator == "type" and _has_ref(err.instance):
            continue
        where = "/".join(str(p) for p in err.absolute_path) or "(arguments)"
        problems.append(f"{where}: {err.message}")
    return problems


def _coerce(value: Any, schema: dict) -> Any:
    """After substitution, a value that was only a placeholder is text; turn it into the type the
    schema asks for when the text says so ("42" for an integer)."""
    want = schema.get("type")
    if isinstance(value, str) and want in ("integer", "number", "boolean", "array", "object"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        ok = {"integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict}[want]
        if isinstance(parsed, ok) and not (want in ("integer", "number") and isinstance(parsed, bool)):
            return parsed
    return value


def fill_arguments(arguments: dict, evidence: dict[str, str], parameters: dict | None = None) -> dict:
    """Substitute whole ``#E`` tokens in every string of ``arguments`` (nested too) with
    evidence, then coerce placeholders-only values to their schema type. Substitution works on
    the parsed values, never on JSON text; an argument whose schema says it is Python source
    (``contentMediaType: text/x-python``) gets the evidence bound to a variable instead
    (``plan.substitute_code``), so evidence cannot become code. Raises ``ValueError`` when
    that binding is impossible."""
    props = (parameters or {}).get("properties", {})

    def walk(v):
        if isinstance(v, str):
            return substitute(v, evidence)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v
    filled = {k: (substitute_code(v, evidence) if isinstance(v, str) and isinstance(props.get(k), dict)
                  and props[k].get("contentMediaType") == CODE_MEDIA_TYPE else walk(v))
              for k, v in arguments.items()}
    return {k: _coerce(v, props.get(k, {})) for k, v in filled.items()}


def _without_caller(step: Step, spec: formats.ToolSpec) -> tuple[dict | None, str, str | None]:
    text = step.input.strip()
    if text.startswith("{"):
        try:
            args = json.loads(text)
        except ValueError:
            args = None
        if isinstance(args, dict):
            return args, "json", None
    required = spec.parameters.get("required", [])
    if len(required) == 1:
        return {required[0]: step.input}, "input", None
    args = ", ".join(spec.parameters.get("properties", {}))
    return None, "caller", (f"tool {spec.name} takes several arguments ({args}); give a function caller "
                            f"(--caller) or write the input as a JSON object of arguments")


def string_budget(spec: formats.ToolSpec, max_new_tokens: int) -> int:
    """The longest string argument a constrained call may hold so that the whole call fits
    ``max_new_tokens``, in characters: the JSON skeleton costs one token per character at worst,
    and a string character up to 4 (a 4-byte UTF-8 character in a byte-level vocabulary). Arrays
    count as 8 strings (``constrain.call_schema`` bounds them to 8 items). Only for the schemas
    that ``constrain.call_grammar`` cannot bound in tokens."""
    props = spec.parameters.get("properties", {})
    skeleton = len(formats.render_call(spec.name, {k: "" for k in props}))
    slots = sum(8 if p.get("type") == "array" else 1 for p in props.values()) or 1
    return max(1, (max_new_tokens - 1 - skeleton - 8 * len(props)) // (4 * slots))


def call_constraint(spec: formats.ToolSpec, max_new_tokens: int) -> Constraint:
    """The constraint of a call to ``spec``: a grammar with strings bounded in tokens
    (``constrain.call_grammar``); for a schema that grammar compiler does not take (``pattern``,
    ``format``, ...) or a budget it finds too small, a JSON schema with strings bounded in
    characters. (The character bound alone held save_file's content to 22 characters at 256 tokens.)"""
    from pipeline.formats.jsonlark import TooSmall, Unsupported

    try:
        return Constraint("grammar", constrain_mod.call_grammar(spec, max_new_tokens))
    except (Unsupported, TooSmall):
        return Constraint("json_schema", constrain_mod.call_schema(spec, string_budget(spec, max_new_tokens)))


def _call_caller(caller: Engine, needs_caller: list[tuple[Step, formats.ToolSpec]], template: str,
                 constrain: bool, max_new_tokens: int) -> list:
    """The caller's completions for the steps that need it, in order (one batch on Alpaca)."""
    use_constraint = constrain and caller.supports_constraints
    constraints = [call_constraint(spec, max_new_tokens) for _, spec in needs_caller] if use_constraint else None
    with role("caller"):
        if template == "alpaca":
            return caller.complete_batch([formats.caller_prompt(step, [spec]) for step, spec in needs_caller],
                                         stop_sequences=formats.ALPACA_STOP, max_new_tokens=max_new_tokens,
                                         constraints=constraints)
        return [caller.chat(formats.caller_prompt(step, [spec], "chat"), max_new_tokens=max_new_tokens,
                            constraint=None if constraints is None else constraints[i])
                for i, (step, spec) in enumerate(needs_caller)]


def distribute(plan: Plan, toolbox: Any, caller: Engine | None = None, *, template: str = "alpaca",
               constrain: bool = True, max_new_tokens: int = 256) -> dict[str, Call]:
    """A :class:`Call` for every step of ``plan``, in plan order."""
    calls: dict[str, Call] = {}
    needs_caller: list[tuple[Step, formats.ToolSpec]] = []
    for step in plan:
        spec = formats.tool_spec(toolbox[step.tool])
        props = spec.parameters.get("properties", {})
        if not props:
            calls[step.var] = Call(step.var, step.tool, {}, "none")
        elif formats.takes_one_string(spec):
            calls[step.var] = Call(step.var, step.tool, {next(iter(props)): step.input}, "direct")
        elif caller is None:
            args, via, error = _without_caller(step, spec)
            calls[step.var] = Call(step.var, step.tool, args or {}, via, error)
        else:
            calls[step.var] = None  # placeholder keeps plan order
            needs_caller.append((step, spec))

    if needs_caller:
        try:
            outs = _call_caller(caller, needs_caller, template, constrain, max_new_tokens)
        except EngineError as e:  # the caller failed (or could not load): each of its steps says so, the run goes on
            for step, _ in needs_caller:
                calls[step.var] = Call(step.var, step.tool, {}, "caller", f"function caller: {e}")
            needs_caller, outs = [], []
        for (step, spec), out in zip(needs_caller, outs):
            try:
                call = formats.parse_call(out.text, [spec])
            except formats.CallError as e:
                calls[step.var] = Call(step.var, step.tool, {}, "caller", f"function caller: {e}", out.text)
                continue
            calls[step.var] = Call(step.var, step.tool, call.arguments, "caller", None, out.text)

    for call in calls.values():
        if call.error is None:
            spec = formats.tool_spec(toolbox[call.tool])
            problems = check_arguments(call.arguments, spec.parameters)
            if problems:
                call.error = (f"arguments for {call.tool} do not fit its schema: {'; '.join(problems)}; "
                              f"schema: {json.dumps(spec.parameters)}")
    return calls
