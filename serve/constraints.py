"""Constrained output over REST: the request fields that ask for it, and the logits processor
that enforces it.

Accepted fields (at most one per request):

- ``response_format``: ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema":
  {"name": ..., "schema": {...}}}`` (OpenAI);
- ``guided_json`` (schema dict or JSON text), ``guided_regex``, ``guided_grammar`` (Lark),
  ``guided_choice`` (list of strings): vLLM's names before 0.12;
- ``structured_outputs``: ``{"json" | "regex" | "grammar" | "choice": ...}``: vLLM's names since 0.12;
- ``rewoo_plan``: ``{"tools": ["search_wiki", ...]}``: the ReWOO plan grammar with those tools.

The grammars themselves come from ``pipeline.formats.constrain`` (llguidance), the same code the
in-process engines use, so a plan constrained here parses with ``pipeline.plan.parse_plan``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from serve.backends.base import BackendError, Constraint

FIELDS = ("response_format", "guided_json", "guided_regex", "guided_grammar", "guided_choice",
          "structured_outputs", "rewoo_plan")


def _schema(value: Any, param: str) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise BackendError(f"{param} is not valid JSON: {e.msg} at character {e.pos}", param=param) from e
    if not isinstance(value, dict):
        raise BackendError(f"{param} must be a JSON schema object", param=param)
    return value


def _choice_regex(choices: Any, param: str) -> str:
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise BackendError(f"{param} must be a non-empty list of strings", param=param)
    return "(" + "|".join(re.escape(c) for c in choices) + ")"


def constraint_from_request(body) -> Constraint | None:
    """The one constraint a request body (a pydantic model) asks for, or None.

    Raises :class:`BackendError` (400) when two are given or one is malformed.
    """
    given = [name for name in FIELDS if getattr(body, name, None) is not None]
    rf = getattr(body, "response_format", None)
    if rf is not None and rf.type == "text":
        given.remove("response_format")
    if len(given) > 1:
        raise BackendError(f"give at most one of {', '.join(given)}: each constrains the whole output",
                           param=given[1])
    if not given:
        return None
    name = given[0]
    value = getattr(body, name)
    if name == "response_format":
        if value.type == "json_object":
            return Constraint("json_schema", {"type": "object"})
        if value.json_schema is None or value.json_schema.schema_ is None:
            raise BackendError("response_format json_schema needs json_schema.schema",
                               param="response_format.json_schema")
        return Constraint("json_schema", _schema(value.json_schema.schema_, "response_format.json_schema.schema"))
    if name == "guided_json":
        return Constraint("json_schema", _schema(value, name))
    if name == "guided_regex":
        return Constraint("regex", value)
    if name == "guided_grammar":
        return Constraint("grammar", value)
    if name == "guided_choice":
        return Constraint("regex", _choice_regex(value, name))
    if name == "rewoo_plan":
        return Constraint("plan", list(value.tools))
    # structured_outputs
    keys = [k for k in ("json", "regex", "grammar", "choice") if value.get(k) is not None]
    if len(keys) != 1:
        raise BackendError("structured_outputs takes exactly one of json, regex, grammar, choice",
                           param="structured_outputs")
    key = keys[0]
    if key == "json":
        return Constraint("json_schema", _schema(value["json"], "structured_outputs.json"))
    if key == "choice":
        return Constraint("regex", _choice_regex(value["choice"], "structured_outputs.choice"))
    if not isinstance(value[key], str):
        raise BackendError(f"structured_outputs.{key} must be a string", param=f"structured_outputs.{key}")
    return Constraint(key, value[key])


def build_processor(constraint: Constraint, tokenizer, vocab_size: int, max_tokens: int):
    """A fresh transformers ``LogitsProcessor`` enforcing ``constraint`` for one request.

    Compile errors (a bad regex, grammar or schema) are the client's: a 400.
    """
    try:
        from pipeline.formats import constrain
    except ImportError as e:
        raise BackendError("constrained decoding is not available: this build lacks "
                           "pipeline.formats.constrain", status=501, code="not_implemented") from e
    kwargs: dict[str, Any]
    if constraint.kind == "json_schema":
        kwargs = {"json_schema": constraint.value}
    elif constraint.kind == "regex":
        kwargs = {"regex": constraint.value}
    elif constraint.kind == "grammar":
        kwargs = {"grammar": constraint.value}
    elif constraint.kind != "plan":
        raise ValueError(f"unknown constraint kind {constraint.kind!r}")
    try:
        if constraint.kind == "plan":
            kwargs = {"grammar": constrain.plan_grammar(constraint.value, max_tokens)}
        return constrain.logits_processor(tokenizer, vocab_size, **kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        raise BackendError(f"cannot compile the {constraint.kind.replace('_', ' ')} constraint: {e}",
                           code="invalid_constraint") from e
