"""Constrained output over REST: the request fields that ask for it, and the logits processor
that enforces it.

Accepted fields (at most one per request):

- ``response_format``: ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema":
  {"name": ..., "schema": {...}}}`` (OpenAI);
- ``guided_json`` (schema dict or JSON text), ``guided_regex``, ``guided_grammar`` (Lark),
  ``guided_choice`` (list of strings): vLLM's names before 0.12;
- ``structured_outputs``: ``{"json" | "regex" | "grammar" | "choice": ...}``: vLLM's names since 0.12;
- ``rewoo_plan``: ``{"tools": ["search_wiki", ...]}``: the ReWOO plan grammar with those tools.

Beside a plan grammar, ``tool_prior``: ``{"tools": [{"name", "description"}], "weight": W, "goals": [...]}``
leans each step's tool name towards the tools its ``Plan:`` line describes, by up to ``W`` logits, and,
with the goals the task states (texts, none by default), the plan towards a step per goal, each
``Plan:`` line towards its goal, and with ``"holds": [{"tool", "value"}]`` (values of a listed tool's
own data that the task names), a step about one of them towards that tool
(``pipeline.formats.toolprior``, as the in-process engines do).

The plan grammar comes from ``pipeline.formats.constrain``, the same code the in-process engines
use, so a plan constrained here parses with ``pipeline.plan.parse_plan``. JSON schemas (and the
tool calls of ``serve.tools``) become token-bounded Lark grammars (``pipeline.formats.jsonlark``), so that a
JSON reply closes within ``max_tokens``.

:func:`build_processor` compiles a constraint and probes it (first mask, a few first tokens) under
llguidance resource limits before the request is queued: a constraint that does not compile or
breaks a limit at its first token is a 400 then, not a failed generation. One that breaks later
raises :class:`ConstraintFailed` while decoding; the request ends with that error.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import numpy as np

from pipeline.formats import constrain
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
    """The one constraint a request body (a pydantic model) asks for, or None, with the body's
    ``tool_prior`` on it.

    Raises :class:`BackendError` (400) when two are given or one is malformed, or when a tool prior
    comes without a grammar for it to lean.
    """
    constraint = _constraint(body)
    prior = getattr(body, "tool_prior", None)
    if prior is None:
        return constraint
    if constraint is None or constraint.kind not in ("grammar", "plan"):
        raise BackendError("tool_prior leans a plan's tool names: give it with rewoo_plan or a plan grammar "
                           "(guided_grammar, structured_outputs.grammar)", param="tool_prior")
    from pipeline.formats.toolprior import ToolPrior

    unknown = sorted({h.tool for h in prior.holds} - {t.name for t in prior.tools})
    if unknown:
        raise BackendError(f"tool_prior.holds names tools that tool_prior.tools does not list: {', '.join(unknown)}",
                           param="tool_prior")
    return dataclasses.replace(constraint, tool_prior=ToolPrior(tuple((t.name, t.description) for t in prior.tools),
                                                                prior.weight, tuple(prior.goals),
                                                                tuple((h.tool, h.value) for h in prior.holds)))


def _constraint(body) -> Constraint | None:
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


# --------------------------------------------------------------------------------------------
# Compiling a constraint, checking it at admission, enforcing it per request
# --------------------------------------------------------------------------------------------

# Resource limits of every matcher: errors stay short (no parser state, which can hold the whole
# grammar, in messages or logs), and a regex or grammar that explodes fails fast.
LIMITS = dict(verbose_errors=False, initial_lexer_fuel=200_000, step_lexer_fuel=200_000,
              max_lexer_states=100_000)
PROBE_TOKENS = 3  # allowed first tokens tried at admission
MESSAGE_CHARS = 300  # of llguidance's error messages, in replies and logs


def _cap(text: str, n: int = MESSAGE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n] + f"... ({len(text) - n} more characters)"


def _limits():
    import llguidance
    return llguidance.LLParserLimits(**LIMITS)


def lltokenizer(tokenizer, vocab_size: int):
    """llguidance's view of the model's tokenizer (:func:`pipeline.formats.constrain.lltokenizer`,
    cached there); a tokenizer without an EOS token is a 501."""
    if tokenizer.eos_token_id is None:
        raise BackendError("constrained decoding needs a tokenizer with an EOS token", status=501,
                           code="not_implemented")
    return constrain.lltokenizer(tokenizer, vocab_size)


def _json_grammar(schema: dict, max_tokens: int, param: str) -> tuple[str, str]:
    """``(format, text)``: the schema as a token-bounded Lark grammar, or (for schemas outside
    ``pipeline.formats.jsonlark``) llguidance's JSON compiler with strings bounded in characters."""
    from pipeline.formats.jsonlark import TooSmall, Unsupported, schema_grammar

    try:
        return "lark", schema_grammar(schema, max_tokens)
    except TooSmall as e:
        raise BackendError(str(e), param="max_tokens", code="invalid_value") from e
    except Unsupported:
        # A character in a byte-level vocabulary costs up to 4 tokens.
        try:
            bounded = constrain._bound_strings(schema, max(1, (max_tokens - 1) // 8))
            return "json", json.dumps(bounded)
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            raise BackendError(f"{param} is not a usable JSON schema: {_cap(e)}", param=param,
                               code="invalid_constraint") from e


def grammar_text(constraint: Constraint, max_tokens: int) -> tuple[str, str]:
    """``(format, text)`` for llguidance: ``lark``, ``regex`` or ``json``."""
    if constraint.kind == "json_schema":
        return _json_grammar(constraint.value, max_tokens, "response_format")
    if constraint.kind == "regex":
        return "regex", constraint.value
    if constraint.kind == "grammar":
        return "lark", constraint.value
    if constraint.kind == "plan":
        try:
            return "lark", constrain.plan_grammar(constraint.value, max_tokens)
        except ValueError as e:
            raise BackendError(f"cannot build the plan grammar: {e}", param="rewoo_plan",
                               code="invalid_constraint") from e
    if constraint.kind == "tools":
        from serve.tools import tool_grammar
        return "lark", tool_grammar(constraint.value, max_tokens)
    raise ValueError(f"unknown constraint kind {constraint.kind!r}")


class ConstraintFailed(RuntimeError):
    """The constraint broke while decoding (llguidance hit a resource limit, or a token it had
    allowed was refused): the request ends with this error."""


class ServedConstraint:
    """One request's constraint: an llguidance matcher under :data:`LIMITS`, called as a logits
    processor with ``input_ids`` (1, T) and ``scores`` (1, V) (see ``serve.backends.rows``).

    Built by :func:`build_processor`, which also probes it (:meth:`probe`) before the request is
    queued, so that a constraint failing at its first token is a 400, not a failed generation.
    """

    def __init__(self, lltok, grammar: str, vocab_size: int):
        import llguidance

        self.lltok, self.vocab_size = lltok, vocab_size
        self.matcher = llguidance.LLMatcher(lltok, grammar, log_level=0, limits=_limits())
        if self.matcher.is_error():
            raise BackendError(f"cannot use this constraint: {_cap(self.matcher.get_error())}",
                               code="invalid_constraint")
        self.bitmask = constrain.allocate_bitmask(1, lltok.vocab_size)
        self.started = False

    def _fill(self, matcher) -> None:
        constrain.fill_bitmask(matcher, self.bitmask, 0)
        if matcher.is_error():
            raise ConstraintFailed(_cap(matcher.get_error()))

    def probe(self) -> None:
        """Compute the first mask and feed a few allowed first tokens to copies of the matcher."""
        self._fill(self.matcher)
        bits = self.bitmask[0]  # int32 words, bit j of word w = token 32 * w + j
        allowed = []
        for word in np.flatnonzero(bits).tolist():
            value = int(bits[word]) & 0xFFFFFFFF
            allowed += [32 * word + j for j in range(32) if value >> j & 1]
            if len(allowed) > 4 * PROBE_TOKENS:
                break
        allowed = [t for t in allowed if t not in self.lltok.eos_tokens and t < self.vocab_size]
        if not allowed:
            return
        step = max(1, len(allowed) // PROBE_TOKENS)
        for token in allowed[::step][:PROBE_TOKENS]:
            copy = self.matcher.deep_copy()
            if not copy.consume_token(token) or copy.is_error():
                raise ConstraintFailed(_cap(copy.get_error()))
            self._fill(copy)

    def __call__(self, input_ids, scores):
        if self.started and not self.matcher.is_stopped():
            if not self.matcher.consume_token(int(input_ids[0, -1])):
                raise ConstraintFailed(_cap(self.matcher.get_error()))
        self.started = True
        if self.matcher.is_stopped():  # accepted its end: only EOS
            scores[:, :] = float("-inf")
            for eos in self.lltok.eos_tokens:
                if eos < scores.shape[-1]:
                    scores[:, eos] = 0.0
            return scores
        self._fill(self.matcher)
        constrain.apply_bitmask(scores, self.bitmask, self.lltok.vocab_size)  # not llguidance's: it torch.compiles on first use
        return scores


def build_processor(constraint: Constraint, tokenizer, vocab_size: int, max_tokens: int) -> ServedConstraint:
    """A fresh :class:`ServedConstraint` for one request, compiled and probed.

    Every problem of the constraint itself (it does not compile, it exceeds llguidance's limits at
    its first token, the budget cannot hold it) is the client's: a :class:`BackendError` (400).
    Slow for a pathological constraint (up to seconds): call it off the event loop.
    """
    try:
        import llguidance
    except ImportError as e:
        raise BackendError("constrained decoding is not available: llguidance is not installed",
                           status=501, code="not_implemented") from e
    lltok = lltokenizer(tokenizer, vocab_size)
    fmt, text = grammar_text(constraint, max_tokens)
    what = constraint.kind.replace("_", " ")
    try:
        if fmt == "json":
            grammar = llguidance.LLMatcher.grammar_from_json_schema(text, defaults={"whitespace_flexible": False})
        else:
            grammar = llguidance.grammar_from(fmt, text)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, lltok, limits=_limits())
    except (ValueError, TypeError, RuntimeError) as e:
        raise BackendError(f"cannot compile the {what} constraint: {_cap(e)}", code="invalid_constraint") from e
    if is_error:
        raise BackendError(f"cannot compile the {what} constraint: {_cap('; '.join(messages))}",
                           code="invalid_constraint")
    processor = ServedConstraint(lltok, grammar, vocab_size)
    try:
        processor.probe()
    except ConstraintFailed as e:
        raise BackendError(f"the {what} constraint fails at its first token ({e}); simplify it",
                           code="invalid_constraint") from e
    if constraint.tool_prior is not None:
        from pipeline.formats.toolprior import ToolPriorProcessor

        return ToolPriorProcessor(tokenizer.decode, [constraint.tool_prior], inner=processor)
    return processor


def warm_up(constraint_factory, tokenizer, vocab_size: int, log) -> None:
    """Build llguidance's view of the tokenizer now (about a second, cached), not inside the first
    constrained request on the event loop. Unavailable constrained decoding is logged; such
    requests get its 501."""
    try:
        constraint_factory(Constraint("regex", "a"), tokenizer, vocab_size, 1)
    except BackendError as e:
        log.warning("constrained decoding unavailable: %s", e)
