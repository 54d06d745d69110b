"""Constrained decoding: the format contract compiled into a logits constraint (llguidance).

    from pipeline.formats import constrain
    grammar = constrain.plan_grammar(["search_wiki", "llm"], max_new_tokens=256)
    proc = constrain.logits_processor(tokenizer, model.config.vocab_size, grammar=grammar)
    model.generate(**batch, logits_processor=[proc], max_new_tokens=256)  # every row parses

- :func:`plan_grammar` turns the plan grammar of DESIGN.md, with the current tool names, into a
  Lark grammar. It is *bounded in tokens*: each description and each input carries an llguidance
  ``max_tokens`` cap, and the step count and caps are chosen from ``max_new_tokens`` so that the
  longest plan the grammar allows still fits. Caps in tokens, not characters, never cut what a
  good model writes short of its budget (a character cap derived from one character per token
  cut a tuned planner's SQL at 22 characters: exact answers fell from 0.909 to 0.136).
  Variables are numbered #E1, #E2, ... and an input may reference only earlier ones, so a
  constrained plan always passes ``parse_plan(text, tools)``. Without a bound, a weak model can
  wander inside free text until the token budget runs out and leave an unfinished plan
  (measured: FACTS.md, 0/20 stopped).
- :func:`call_grammar` is the function caller's output for one tool as a Lark grammar,
  ``{"name": <that tool>, "arguments": <its parameters>}``, its strings bounded in tokens the same
  way (:mod:`pipeline.formats.jsonlark`); :func:`call_schema` is the same call as a JSON schema
  (strings bounded in characters), for the schemas that compiler does not take.
- :func:`logits_processor` builds a transformers ``LogitsProcessor`` for a Lark grammar, a regex
  or a JSON schema. It is single-use: make a new one per ``generate()`` call. Batched and
  left-padded inputs work; finished rows are held to EOS.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PlanBounds", "plan_bounds", "plan_grammar", "call_grammar", "call_schema", "logits_processor", "batch_logits_processor",
           "GrammarLogitsProcessor", "lark_literal"]

# Printable ASCII without '#', '[' and ']': '#' only ever starts a variable, brackets only
# delimit the input. (Inside a regex character class.)
_TEXT_CHARS = r" -\"$-Z\\^-~"
# The same without digits: what may follow a variable, so that "#E1" never grows into "#E10".
_TEXT_NO_DIGIT = r" -\"$-\/:-Z\\^-~"  # ("\/": a bare "/" would end Lark's /regex/)
# Description characters: printable ASCII but '#' (a "#E" there would read as a step) and the
# brackets (an unbalanced one on a Plan: line reads as an unclosed tool input).
_DESC_CHARS = _TEXT_CHARS


@dataclass(frozen=True)
class PlanBounds:
    """The longest plan a constrained planner may write: at most ``max_steps`` steps, each
    description at most ``max_description`` tokens and each input at most ``max_input`` tokens."""

    max_steps: int
    max_description: int
    max_input: int


def plan_bounds(max_new_tokens: int, tool_names: list[str], max_steps: int = 6, first: int = 1) -> PlanBounds:
    """Bounds whose worst case fits ``max_new_tokens``.

    The fixed text of a step (``"Plan: "``, ``"\\n#E<n> = "``, the longest tool name, ``"[]"``
    and the newline between steps) is counted one token per character, its worst case with a
    byte-level tokenizer (the model may spell it in any tokens the grammar allows); what is
    left of the step's share goes 1:2 to the description and the input (inputs, SQL or code,
    are the longer). Steps are dropped until each keeps at least 24 free tokens; a budget too
    small even for one such step is an error.
    """
    longest_tool = max((len(t) for t in tool_names), default=1)
    if max_new_tokens < 2:
        raise ValueError("plan_bounds needs max_new_tokens >= 2")
    budget = max_new_tokens - 1  # (- 1: the EOS token)
    for steps in range(max_steps, 0, -1):
        fixed = len("Plan: ") + len(f"\n#E{first + steps - 1} = ") + longest_tool + len("[]") + 1
        free = budget // steps - fixed
        if free >= 24:
            desc = free // 3
            return PlanBounds(steps, desc, free - desc)
    raise ValueError(f"max_new_tokens={max_new_tokens} is too small for even one constrained plan "
                     f"step with these tools (the longest name has {longest_tool} characters); "
                     "allow more new tokens")


def lark_literal(text: str) -> str:
    """``text`` as a Lark string literal."""
    return json.dumps(text)


def _var_alternatives(n: int) -> str:
    # "#E1" ... "#E{n}" as one regex group; longest first so "#E12" is tried before "#E1".
    # (Plain groups: llguidance's Lark lexer rejects "(?:".)
    return "(" + "|".join(f"#E{i}" for i in sorted(range(1, n + 1), reverse=True)) + ")"


def plan_grammar(tool_names: list[str], max_new_tokens: int = 256, max_steps: int = 6,
                 bounds: PlanBounds | None = None, first: int = 1) -> str:
    """A Lark grammar for a whole plan over ``tool_names`` that fits ``max_new_tokens``.

    Step ``k`` is ``Plan: <description>`` then ``#Ek = <tool>[<input>]``; an input of step ``k``
    may contain ``#E1`` .. ``#E{k-1}`` (never followed by a digit) and otherwise printable ASCII
    without ``#``, ``[`` and ``]``. After any step the text may end. Descriptions and inputs are
    capped in tokens (llguidance's ``rule[max_tokens=N]``): at the cap the grammar allows only
    what closes the field. ``first``: the number of the first step (a replanning round continues
    the numbering; its inputs may use the earlier rounds' variables).
    """
    if first < 1:
        raise ValueError("the first step number must be >= 1")
    if not tool_names:
        raise ValueError("plan_grammar needs at least one tool name")
    bad = [t for t in tool_names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", t)]
    if bad:
        raise ValueError(f"tool names must match the plan grammar's [A-Za-z_][A-Za-z0-9_.-]*: {bad}")
    b = bounds or plan_bounds(max_new_tokens, tool_names, max_steps, first)
    last = first + b.max_steps - 1
    lines = []
    # start: s1 (s2 (s3 ...)?)?  -- step k exists only after step k-1.
    nested = ""
    for k in range(last, first, -1):
        nested = f"(s{k}{(' ' + nested) if nested else ''})?"
    lines.append(f"start: s{first}{(' ' + nested) if nested else ''}")
    lines.append("tool: " + " | ".join(lark_literal(t) for t in tool_names))
    lines.append(f"desc[max_tokens={b.max_description}]: /[{_DESC_CHARS}]*/")
    for k in range(first, last + 1):
        sep = '"\\n"' if k > first else ""
        head = lark_literal(f"\n#E{k} = ")
        lines.append(f's{k}: {sep} "Plan: " desc {head} tool "[" input{k} "]"')
        if k == 1:
            pattern = f"[{_TEXT_CHARS}]*"
        else:
            ref = _var_alternatives(k - 1)
            # plain characters, or a variable followed by a non-digit; a variable may end the input
            pattern = f"([{_TEXT_CHARS}]|{ref}[{_TEXT_NO_DIGIT}])*{ref}?"
        # The input lexeme may end anywhere and the step's "]" follows it: at its token cap
        # llguidance ends the lexeme wherever it stands (checked) and allows only that "]". So no
        # brackets inside a constrained input: a cap reached inside a nested "[...]" would leave
        # it unbalanced, and the plan unparseable.
        lines.append(f"input{k}[max_tokens={b.max_input}]: /{pattern}/")
    return "\n".join(lines) + "\n"


def _scalar(max_string: int) -> dict:
    """What an untyped value may be under a budget: a bounded string, a number or a boolean."""
    return {"anyOf": [{"type": "string", "maxLength": max_string}, {"type": "integer", "minimum": -10**9,
                                                                     "maximum": 10**9}, {"type": "boolean"}]}


def _bound_strings(schema: Any, max_string: int) -> Any:
    """Bound every part of a JSON schema whose text could otherwise grow without end: strings
    (``maxLength``), integers and numbers (``|x| <= 1e9``), arrays (``maxItems=8``, items bounded;
    items of no declared type become scalars), objects without declared properties (at most 8
    keys of at most 24 characters, scalar values) and untyped values (scalars)."""
    if isinstance(schema, list):
        return [_bound_strings(v, max_string) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_bound_strings(v, max_string) if k in ("properties", "items", "anyOf", "oneOf", "allOf") else v)
           for k, v in schema.items()}
    if "properties" in out:
        out["properties"] = {k: _bound_strings(v, max_string) for k, v in schema["properties"].items()}
    kind = out.get("type")
    if kind is None and not any(k in out for k in ("enum", "const", "anyOf", "oneOf", "allOf", "$ref")):
        return {**out, **_scalar(max_string)}
    if kind == "string" and "maxLength" not in out and "enum" not in out:
        out["maxLength"] = max_string
    if kind in ("integer", "number") and "maximum" not in out and "minimum" not in out:
        out["minimum"], out["maximum"] = -10**9, 10**9
    if kind == "array":
        out.setdefault("maxItems", 8)
        out["items"] = _bound_strings(schema.get("items", {}), max_string)
    if kind == "object" and not out.get("properties"):
        out.setdefault("maxProperties", 8)
        out["propertyNames"] = {"maxLength": 24}
        out["additionalProperties"] = _scalar(max_string)
    return out


def call_schema(spec, max_string: int | None = 200) -> dict:
    """JSON schema of a call to one tool: ``{"name": <spec.name>, "arguments": {...}}``.

    ``spec`` is a ``formats.ToolSpec`` (or anything ``formats.tool_spec`` accepts). Arguments
    follow the tool's parameters with no extra keys, every part bounded (see ``_bound_strings``)
    so that a call completes within the caller's budget. One gap: llguidance 1.9 does not bound
    a ``number``'s fractional digits (and its ``multipleOf`` rejects valid decimals such as
    1.125), so a model can still run out of tokens inside a float; the distributor then
    records a caller error on that step.
    """
    from pipeline.formats import tool_spec

    spec = tool_spec(spec)
    params = dict(spec.parameters)
    params.setdefault("type", "object")
    params.setdefault("additionalProperties", False)
    if max_string is not None:
        params = _bound_strings(params, max_string)
    return {"type": "object",
            "properties": {"name": {"const": spec.name}, "arguments": params},
            "required": ["name", "arguments"], "additionalProperties": False}


def call_grammar(spec, max_new_tokens: int = 256) -> str:
    """A Lark grammar of a call to one tool, :func:`call_schema` unbounded compiled by
    :mod:`pipeline.formats.jsonlark`: spaced as ``formats.render_call`` writes the caller's training
    data, every string capped in tokens so that the call closes within ``max_new_tokens``. A
    character bound sized for the worst case (four tokens a character, :func:`call_schema`) held a
    call to save_file to 22 characters of content at the caller's 256 tokens: the tuned caller's
    "Simplicity is the soul of efficiency" was saved as "Simplicity is the soul", valid and silently
    cut. Raises ``jsonlark.Unsupported`` for a schema outside that compiler (``pattern``,
    ``format``, ...) and ``jsonlark.TooSmall`` when the call's fixed text alone does not fit."""
    from pipeline.formats.jsonlark import schema_grammar

    return schema_grammar(call_schema(spec, max_string=None), max_new_tokens)


# --------------------------------------------------------------------------------------------
# The logits processor
# --------------------------------------------------------------------------------------------

_LLTOK_CACHE: dict[tuple[int, int], Any] = {}
_LLTOK_LOCK = threading.Lock()


def lltokenizer(tokenizer, vocab_size: int):
    """llguidance's view of a fast tokenizer (~1 s to build; cached per tokenizer and size): a
    transformers fast tokenizer or :class:`pipeline.llamacpp.TokenizerFolder`, anything with a
    ``tokenizers`` ``backend_tokenizer`` and an ``eos_token_id``. Built as ``llguidance.hf`` builds
    it, without importing transformers (which imports torch)."""
    import copy

    import llguidance

    key = (id(tokenizer), vocab_size)
    with _LLTOK_LOCK:
        if key not in _LLTOK_CACHE:
            eos = tokenizer.eos_token_id
            if eos is None:
                raise ValueError("constrained decoding needs a tokenizer with an EOS token")
            backend = getattr(tokenizer, "backend_tokenizer", None)
            if backend is None:
                raise ValueError("constrained decoding needs a fast tokenizer (tokenizer.json)")
            backend = copy.copy(backend)  # the JSON llguidance reads: without padding and truncation
            backend.no_padding()
            backend.no_truncation()
            _LLTOK_CACHE[key] = (tokenizer, llguidance.LLTokenizer(backend.to_str(), n_vocab=vocab_size,
                                                                   eos_token=eos))
        return _LLTOK_CACHE[key][1]


def _compile(lltok, grammar: str | None, regex: str | None, json_schema: dict | str | None) -> str:
    import llguidance

    given = [x is not None for x in (grammar, regex, json_schema)]
    if sum(given) != 1:
        raise ValueError("give exactly one of grammar= (Lark), regex= or json_schema=")
    if grammar is not None:
        text = llguidance.grammar_from("lark", grammar)
    elif regex is not None:
        text = llguidance.grammar_from("regex", regex)
    else:
        schema = json_schema if isinstance(json_schema, str) else json.dumps(json_schema)
        # Fixed whitespace: with flexible whitespace a weak model pads JSON with spaces until the
        # budget runs out (measured: 2/20 greedy runs stopped). The separators are those of
        # formats.render_call, which writes the caller's training data.
        from pipeline import formats

        text = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={
            "whitespace_flexible": False, "item_separator": formats.CALL_ITEM_SEPARATOR,
            "key_separator": formats.CALL_KEY_SEPARATOR})
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(text, lltok)
    if is_error:
        raise ValueError(f"invalid constraint: {'; '.join(messages)}")
    return text


# The token bitmask, done here rather than with llguidance.torch: that module's mask kernel is
# decorated with torch.compile, so importing it loads TorchDynamo and Inductor (3.3 s) and its first
# call compiles the kernel (5.2 s more), measured on a 2-core AVX2 EPYC (2026-12-02), in the first
# constrained call of every new process (CLI run, server, eval): the CLI's one task took 8-12 s
# where later tasks take 1-2.

def allocate_bitmask(batch: int, vocab_size: int) -> np.ndarray:
    """``(batch, ceil(vocab_size / 32))`` int32 words, every token allowed."""
    return np.full((batch, (vocab_size + 31) // 32), -1, dtype=np.int32)


def fill_bitmask(matcher, bitmask: np.ndarray, row: int = 0) -> None:
    """Write ``matcher``'s next-token mask into row ``row`` of a bitmask (llguidance's call)."""
    if not isinstance(bitmask, np.ndarray) or bitmask.dtype != np.int32 or bitmask.ndim != 2:
        raise ValueError("the bitmask must be a 2-D int32 numpy array (allocate_bitmask)")
    words = bitmask[row]
    if not words.flags["C_CONTIGUOUS"]:
        raise ValueError("the bitmask's rows must be contiguous")
    matcher.unsafe_compute_mask_ptr(words.ctypes.data, words.nbytes)


def apply_bitmask(scores, bitmask, vocab_size: int | None = None) -> None:
    """Set to -inf, in place, every logit of ``scores`` (B, V) whose bit is 0 in ``bitmask`` (B, W)
    int32 words, llguidance's layout: token ``32 w + j`` is bit ``j`` of word ``w``; tokens from
    ``32 W`` (or ``vocab_size``, the tokenizer's, when smaller) on are forbidden too (what
    ``llguidance.torch.apply_token_bitmask_inplace`` does). ``scores``: a numpy array or a torch
    tensor on any device; ``bitmask``: numpy or a CPU tensor. The bits are unpacked with numpy
    (about 0.1 ms for 49k tokens), then moved to the logits' device."""
    if not isinstance(bitmask, np.ndarray):
        bitmask = bitmask.cpu().numpy()
    words = bitmask.astype("<i4", copy=False)
    bits = np.unpackbits(words.view(np.uint8), axis=1, bitorder="little")  # (B, 32 W): token order
    width = min(scores.shape[-1], bits.shape[1], vocab_size or bits.shape[1])
    forbidden = bits[:, :width] == 0
    if isinstance(scores, np.ndarray):
        scores[:, :width][forbidden] = -np.inf
    else:
        import torch  # noqa: PLC0415 - only a torch caller gets here, with torch imported

        scores[:, :width].masked_fill_(torch.from_numpy(forbidden).to(scores.device), float("-inf"))
    if scores.shape[-1] > width:
        scores[:, width:] = float("-inf")


class GrammarLogitsProcessor:
    """A transformers ``LogitsProcessor`` that masks every token the constraint forbids: called
    with ``input_ids`` (B, T) and ``scores`` (B, V), torch tensors (``generate()``) or numpy
    arrays (:class:`pipeline.sampling.RowControl`).

    ``grammars`` are compiled llguidance grammars: one for the whole batch, or one per row
    (a batch of calls to different tools). One matcher per row, created on the first call (the
    prompt is not consumed). Each later call first feeds every live row's last token to its
    matcher. A row whose matcher has accepted its end is held to EOS. Single use: make a new
    processor per ``generate()``.
    """

    def __init__(self, tokenizer, vocab_size: int, grammars: list[str]):
        self.lltok = lltokenizer(tokenizer, vocab_size)
        self.grammars = grammars
        self.vocab_size = vocab_size
        self.matchers: list | None = None
        self.bitmask = None

    def __call__(self, input_ids, scores):
        import llguidance

        batch = input_ids.shape[0]  # input_ids: (B, T), scores: (B, V)
        if self.matchers is None:
            if len(self.grammars) not in (1, batch):
                raise ValueError(f"{len(self.grammars)} constraints for a batch of {batch}")
            grammars = self.grammars * batch if len(self.grammars) == 1 else self.grammars
            self.matchers = [llguidance.LLMatcher(self.lltok, g) for g in grammars]
            for m in self.matchers:
                if m.is_error():
                    raise ValueError(f"invalid constraint: {m.get_error()}")
            self.bitmask = allocate_bitmask(batch, self.lltok.vocab_size)
        else:
            if len(self.matchers) != batch:
                raise RuntimeError("GrammarLogitsProcessor is single-use: the batch changed size; "
                                   "make a new processor per generate() call")
            for i, m in enumerate(self.matchers):
                if m.is_stopped():
                    continue  # finished: later tokens are padding
                if not m.consume_token(int(input_ids[i, -1])):
                    raise RuntimeError(f"row {i}: the sampled token broke the constraint: {m.get_error()}")
        for i, m in enumerate(self.matchers):
            fill_bitmask(m, self.bitmask, i)
        apply_bitmask(scores, self.bitmask, self.lltok.vocab_size)  # ids beyond the tokenizer: never allowed
        return scores


def logits_processor(tokenizer, vocab_size: int, *, grammar: str | None = None, regex: str | None = None,
                     json_schema: dict | str | None = None) -> GrammarLogitsProcessor:
    """A single-use logits processor for a Lark ``grammar``, a ``regex`` or a ``json_schema``.

    ``vocab_size`` is the model's logits width (``model.config.vocab_size``), which may exceed
    the tokenizer's length. Raises ``ValueError`` for a constraint llguidance cannot compile.
    """
    lltok = lltokenizer(tokenizer, vocab_size)
    return GrammarLogitsProcessor(tokenizer, vocab_size, [_compile(lltok, grammar, regex, json_schema)])


def batch_logits_processor(tokenizer, vocab_size: int, rows: list[dict]) -> GrammarLogitsProcessor:
    """A single-use processor with one constraint per batch row; each row is a dict with one
    key, ``grammar``, ``regex`` or ``json_schema``."""
    lltok = lltokenizer(tokenizer, vocab_size)
    compiled = []
    for row in rows:
        unknown = set(row) - {"grammar", "regex", "json_schema"}
        if unknown:
            raise ValueError(f"unknown constraint keys {sorted(unknown)}: use grammar, regex or json_schema")
        compiled.append(_compile(lltok, row.get("grammar"), row.get("regex"), row.get("json_schema")))
    return GrammarLogitsProcessor(tokenizer, vocab_size, compiled)
