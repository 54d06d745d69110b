"""JSON schemas as Lark grammars whose every reply closes within a token budget.

    grammar = schema_grammar({"type": "object", "properties": {...}}, max_tokens=256)

llguidance's own JSON-schema compiler bounds nothing: a weak model can write one string until the
token budget runs out, and the reply is cut mid-JSON (what clients see as ``finish_reason:
"length"`` and a ``LengthFinishReasonError``). This module writes the schema as a Lark grammar
instead, with the content of every string a rule capped in tokens (``s3[max_tokens=N]: /.../``;
llguidance ends the lexeme at the cap). The caps come from the budget: the JSON text around the
strings (keys, punctuation, numbers, literals) is counted at its worst case, one token per
character (every ASCII byte is a token of a byte-level vocabulary), and what is left is shared
between the most strings the schema allows at once. Arrays and free-form objects without a bound
of their own get one (8 items, halved until the skeleton fits the budget).

Supported: ``type`` (one or a list), ``properties`` / ``required`` / ``additionalProperties``,
free-form objects, ``items`` / ``minItems`` / ``maxItems``, ``minLength`` / ``maxLength``,
``enum``, ``const``, ``anyOf`` / ``oneOf``, local ``$ref`` (``#/$defs/...``, not recursive),
integer and number ranges (inlined as llguidance ``%json`` scalars). A schema using anything
else (``pattern``, ``format``, ``allOf``, ``patternProperties``, recursion...) raises
:class:`Unsupported`; the caller then falls back to llguidance's compiler with strings bounded
in characters. Known gap: a cap that falls right after a backslash leaves an unfinished escape.

Output is the JSON that ``json.dumps`` writes (separators ``", "`` and ``": "``), so a model
trained on ``formats.render_call`` output is held to exactly that text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

CAP = "__CAP__"  # placeholder in string rules until the budget is known
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
               "readOnly", "writeOnly", "strict", "name", "$defs", "definitions"}
# One JSON string character: anything but '"', '\' and control characters, or an escape.
# (Rust regex syntax inside Lark's /.../; "\/" is a slash.)
_STR_CHAR = r'([^"\\\x00-\x1F]|\\(["\\\/bfnrt]|u[0-9a-fA-F]{4}))'
_KEY = r'[ !#-\[\]-~]{1,24}'  # a free-form object's key: printable ASCII without '"' and '\'
_INT = r"-?(0|[1-9][0-9]{0,11})"  # |x| < 10^12: 13 characters at most
_NUM = r"-?(0|[1-9][0-9]{0,11})(\.[0-9]{1,6})?"  # 20 characters at most
DEFAULT_ITEMS = 8


class Unsupported(ValueError):
    """The schema uses a keyword this compiler does not turn into a bounded grammar."""


class TooSmall(ValueError):
    """Even the JSON text around the strings does not fit the token budget."""


@dataclass
class _Cost:
    skeleton: int = 0  # worst-case characters outside string contents
    strings: int = 0   # most strings present at once

    def __add__(self, o: _Cost) -> _Cost:
        return _Cost(self.skeleton + o.skeleton, self.strings + o.strings)

    def times(self, n: int) -> _Cost:
        return _Cost(self.skeleton * n, self.strings * n)

    def max(self, o: _Cost) -> _Cost:
        return _Cost(max(self.skeleton, o.skeleton), max(self.strings, o.strings))


def lit(text: str) -> str:
    """``text`` as a Lark string literal (non-ASCII characters as themselves)."""
    return json.dumps(text, ensure_ascii=False)


class _Compiler:
    def __init__(self, root: dict, items_bound: int, item_sep: str = ", ", key_sep: str = ": "):
        self.root, self.items_bound = root, items_bound
        self.item_sep, self.key_sep = item_sep, key_sep
        self.rules: list[str] = []
        self.n = 0
        self.refs: list[str] = []

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def _resolve(self, ref: str) -> dict:
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                target = self.root.get(prefix[2:-1], {}).get(ref[len(prefix):])
                if isinstance(target, (dict, bool)):
                    return target
        raise Unsupported(f"$ref {ref!r}: only local #/$defs/... references are supported")

    def node(self, schema, depth: int = 0) -> tuple[str, _Cost]:
        """A Lark expression for ``schema`` and its worst-case cost."""
        if depth > 24:
            raise Unsupported("schema nested deeper than 24 levels")
        if schema is True or schema == {}:
            return self.any_value(depth)
        if not isinstance(schema, dict):
            raise Unsupported("a schema must be an object (or true)")
        if "$ref" in schema:
            if schema["$ref"] in self.refs:
                raise Unsupported("recursive $ref")
            self.refs.append(schema["$ref"])
            try:
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                return self.node({**self._resolve(schema["$ref"]), **rest}, depth + 1)
            finally:
                self.refs.pop()
        if "const" in schema:
            return self.literals([schema["const"]])
        if "enum" in schema:
            if not isinstance(schema["enum"], list) or not schema["enum"]:
                raise Unsupported("enum must be a non-empty list")
            return self.literals(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = schema[key]
                if not isinstance(options, list) or not options:
                    raise Unsupported(f"{key} must be a non-empty list")
                base = {k: v for k, v in schema.items() if k != key}
                return self.alternatives([{**base, **o} if isinstance(o, dict) else o for o in options], depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.alternatives([{**schema, "type": t} for t in kind], depth)
        if kind is None:
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema:
                kind = "array"
            else:
                known = set(schema) - ANNOTATIONS
                if known:
                    raise Unsupported(f"keywords {sorted(known)} without a type")
                return self.any_value(depth)
        method = {"object": self.object, "array": self.array, "string": self.string, "integer": self.integer,
                  "number": self.number, "boolean": self.boolean, "null": self.null}.get(kind)
        if method is None:
            raise Unsupported(f"type {kind!r}")
        return method(schema, depth)

    def _check(self, schema: dict, allowed: set[str]) -> None:
        extra = set(schema) - allowed - ANNOTATIONS - {"type"}
        if extra:
            raise Unsupported(f"keywords {sorted(extra)}")

    def literals(self, values: list) -> tuple[str, _Cost]:
        texts = [json.dumps(v, ensure_ascii=False) for v in values]
        return "(" + " | ".join(lit(t) for t in texts) + ")", _Cost(max(len(t) for t in texts), 0)

    def alternatives(self, options: list, depth: int) -> tuple[str, _Cost]:
        exprs, cost = [], _Cost()
        for o in options:
            e, c = self.node(o, depth + 1)
            exprs.append(e)
            cost = cost.max(c)
        return "(" + " | ".join(exprs) + ")", cost

    def any_value(self, depth: int) -> tuple[str, _Cost]:
        """An untyped value under a budget: a string, an integer or a boolean."""
        return self.alternatives([{"type": "string"}, {"type": "integer"}, {"type": "boolean"}], depth)

    def string(self, schema: dict, depth: int) -> tuple[str, _Cost]:
        self._check(schema, {"minLength", "maxLength"})
        lo, hi = int(schema.get("minLength", 0)), schema.get("maxLength")
        if hi is not None and int(hi) < lo:
            raise Unsupported("maxLength below minLength")
        reps = "*" if (lo == 0 and hi is None) else f"{{{lo},{'' if hi is None else int(hi)}}}"
        rule = self.name("s")
        self.rules.append(f"{rule}[max_tokens={CAP}]: /{_STR_CHAR}{reps}/")
        return f'"\\"" {rule} "\\""', _Cost(2, 1)

    def integer(self, schema: dict, depth: int) -> tuple[str, _Cost]:
        self._check(schema, {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
        if set(schema) & {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}:
            scalar = {k: v for k, v in schema.items() if k not in ANNOTATIONS}
            bound = max((abs(float(schema[k])) for k in ("minimum", "maximum", "exclusiveMinimum",
                                                         "exclusiveMaximum") if k in schema), default=10.0**18)
            return f"%json {json.dumps(scalar)}", _Cost(min(len(str(int(bound))) + 1, 21), 0)
        return f"/{_INT}/", _Cost(13, 0)

    def number(self, schema: dict, depth: int) -> tuple[str, _Cost]:
        self._check(schema, {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
        if set(schema) & {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}:
            scalar = {k: v for k, v in schema.items() if k not in ANNOTATIONS}
            return f"%json {json.dumps(scalar)}", _Cost(40, 0)  # llguidance leaves fraction digits unbounded
        return f"/{_NUM}/", _Cost(20, 0)

    def boolean(self, schema: dict, depth: int) -> tuple[str, _Cost]:
        self._check(schema, set())
        return '("true" | "false")', _Cost(5, 0)

    def null(self, schema: dict, depth: int) -> tuple[str, _Cost]:
        self._check(schema, set())
        return '"null"', _Cost(4, 0)

    def _repeat(self, item: str, cost: _Cost, lo: int, hi: int, open_: str, close: str) -> tuple[str, _Cost]:
        sep = lit(self.item_sep)
        total = _Cost(2, 0) + cost.times(hi) + _Cost(len(self.item_sep) * max(hi - 1, 0), 0)
        if hi == 0:
            return lit(open_ + close), _Cost(2, 0)
        tail = f"({sep} {item}){{{max(lo - 1, 0)},{hi - 1}}}" if hi > 1 else ""
        body = f"{item} {tail}".strip()
        if lo == 0:
            body = f"({body})?"
        return f"{lit(open_)} {body} {lit(close)}", total

    def array(self, schema: dict, depth: int) -> tuple[str, _Cost]:
        self._check(schema, {"items", "minItems", "maxItems"})
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(self.items_bound, lo)))
        if hi < lo:
            raise Unsupported("maxItems below minItems")
        item, cost = self.node(schema.get("items", True), depth + 1)
        rule = self.name("i")
        self.rules.append(f"{rule}: {item}")
        return self._repeat(rule, cost, lo, hi, "[", "]")

    def object(self, schema: dict, depth: int) -> tuple[str, _Cost]:
        self._check(schema, {"properties", "required", "additionalProperties", "minProperties", "maxProperties"})
        props = schema.get("properties") or {}
        required = list(schema.get("required") or [])
        missing = [r for r in required if r not in props]
        if missing and schema.get("additionalProperties") is False:
            raise Unsupported(f"required keys {missing} are not in properties")
        if missing:
            raise Unsupported(f"required keys {missing} without a schema")
        if not props:
            extra = schema.get("additionalProperties", True)
            if extra is False:
                return lit("{}"), _Cost(2, 0)
            lo = int(schema.get("minProperties", 0))
            hi = int(schema.get("maxProperties", max(self.items_bound, lo)))
            value, vcost = self.node(extra if isinstance(extra, dict) else True, depth + 1)
            rule = self.name("kv")
            self.rules.append(f'{rule}: "\\"" /{_KEY}/ {lit(chr(34) + self.key_sep)} {value}')
            return self._repeat(rule, vcost + _Cost(24 + 2 + len(self.key_sep), 0), lo, hi, "{", "}")
        if "minProperties" in schema or "maxProperties" in schema:
            raise Unsupported("minProperties/maxProperties with declared properties")
        members, costs, optional = [], _Cost(), []
        for key, sub in props.items():
            expr, cost = self.node(sub, depth + 1)
            key_text = json.dumps(key, ensure_ascii=False) + self.key_sep
            rule = self.name("p")
            self.rules.append(f"{rule}: {lit(key_text)} {expr}")
            members.append(rule)
            optional.append(key not in required)
            costs = costs + cost + _Cost(len(key_text) + len(self.item_sep), 0)
        # first(i): no member written yet, properties i.. remain; rest(i): some written, i.. remain.
        n = len(members)
        sep = lit(self.item_sep)
        first, rest = [self.name("f") for _ in range(n)], [self.name("r") for _ in range(n)]
        for i in range(n):
            nxt_first = first[i + 1] if i + 1 < n else None
            nxt_rest = rest[i + 1] if i + 1 < n else None
            take = f"{members[i]}{(' ' + nxt_rest) if nxt_rest else ''}"
            first_alts = [take] + ([nxt_first or '""'] if optional[i] else [])
            rest_take = f"{sep} {members[i]}{(' ' + nxt_rest) if nxt_rest else ''}"
            rest_alts = [rest_take] + ([nxt_rest or '""'] if optional[i] else [])
            self.rules.append(f"{first[i]}: {' | '.join(first_alts)}")
            self.rules.append(f"{rest[i]}: {' | '.join(rest_alts)}")
        return f'"{{" {first[0]} "}}"', costs + _Cost(2, 0)


def compile_schema(schema, max_tokens: int, start: str = "start") -> tuple[list[str], int | None]:
    """``(rules, cap)``: the Lark rules of ``schema`` (``start`` first) and the token cap of each
    string's content. Raises :class:`Unsupported` or :class:`TooSmall`."""
    budget = max_tokens - 1  # the EOS token
    items = DEFAULT_ITEMS
    while True:
        c = _Compiler(schema if isinstance(schema, dict) else {}, items)
        try:
            expr, cost = c.node(schema)
        except Unsupported:
            raise
        except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as e:  # a malformed schema
            raise Unsupported(f"malformed schema ({type(e).__name__}: {str(e)[:200]})") from e
        if cost.skeleton <= budget or items == 0:
            break
        items //= 2
    if cost.skeleton > budget:
        raise TooSmall(f"max_tokens={max_tokens} is too small for this schema: its JSON text around the "
                       f"strings alone can take {cost.skeleton} tokens; allow at least {cost.skeleton + 1}")
    cap = (budget - cost.skeleton) // cost.strings if cost.strings else None
    rules = [f"{start}: {expr}"] + c.rules
    return [r.replace(CAP, str(max(cap or 0, 1))) for r in rules], cap


def schema_grammar(schema, max_tokens: int) -> str:
    """A Lark grammar for ``schema`` whose every reply fits ``max_tokens`` (see the module docstring)."""
    rules, _ = compile_schema(schema, max_tokens)
    return "\n".join(rules) + "\n"
