"""Values that cross the sandbox boundary: tool arguments, tool results, code results, variables.

    data = encode({"a": (1, 2)})      # -> {"a": {"$": "tuple", "v": [1, 2]}}, JSON-ready
    decode(data)                       # -> {"a": (1, 2)}

Only data crosses, never objects: ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``,
``bytes``, ``list``, ``tuple``, ``set``, ``frozenset``, ``dict``, the ``collections`` containers
``Counter``, ``OrderedDict``, ``deque`` and ``defaultdict`` (with a builtin type as factory),
``Decimal``, ``Fraction``, and ``datetime``'s ``date``, ``time``, ``datetime``, ``timedelta``
and fixed-offset ``timezone``. Anything else raises :class:`ValueNotSendable` naming the type.

The host decodes what the sandbox sends with :func:`decode`, which builds only those types
(no pickle: unpickling what untrusted code wrote runs code). The sandbox alone may also keep
modules and its own functions between steps (``allow_code=True``): a module travels as its name
and is imported again from the allow-list, a function as its source and is defined again.

A JSON object is a dict with string keys; a tagged value is an object ``{"$": tag, "v": ...}``.
A dict that has a ``"$"`` key or a non-string key is sent as a tagged list of pairs.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import decimal
import fractions
import math
from collections.abc import Callable
from typing import Any

__all__ = ["encode", "decode", "ValueNotSendable", "CodeRef", "MAX_DEPTH"]

MAX_DEPTH = 64            # nesting of containers; json's C decoder recurses per level
_BIG_INT_BITS = 12_000    # ~3600 digits: below CPython's 4300-digit str() limit, so send as hex
_FACTORIES = {int: "int", float: "float", list: "list", set: "set", dict: "dict", str: "str", tuple: "tuple"}
_FACTORY_BY_NAME = {v: k for k, v in _FACTORIES.items()}


class ValueNotSendable(TypeError):
    """A value that cannot cross the sandbox boundary (not data, too deep, or cyclic)."""


class CodeRef:
    """A module or function the sandboxed code keeps between runs, held as its name or source.
    The host stores it opaquely and sends it back; only the sandbox's interpreter rebuilds it."""

    def __init__(self, tag: str, value: str):
        if tag not in ("module", "function") or not isinstance(value, str):
            raise ValueError(f"bad code value {tag!r}")
        self.tag, self.value = tag, value

    def encoded(self) -> dict:
        return {"$": self.tag, "v": self.value}

    def __repr__(self) -> str:
        return f"<{self.tag} kept in the sandbox: {self.value.splitlines()[0][:60]}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, CodeRef) and (self.tag, self.value) == (other.tag, other.value)

    __hash__ = None


def encode(value: Any, allow_code: Callable[[Any], Any] | None = None) -> Any:
    """``value`` as JSON-ready data. ``allow_code(obj)`` may turn a module or a function into
    a tagged value (the sandbox's own variables); it returns None to refuse."""
    return _encode(value, allow_code, 0, set())


def _encode(v: Any, allow_code, depth: int, path: set) -> Any:
    t = type(v)
    if v is None or t is bool or t is str:
        return v
    if t is int:
        return v if v.bit_length() < _BIG_INT_BITS else {"$": "int", "v": hex(v)}
    if t is float:
        return v if math.isfinite(v) else {"$": "float", "v": repr(v)}
    if depth >= MAX_DEPTH:
        raise ValueNotSendable(f"the value is nested more than {MAX_DEPTH} levels deep")
    if t in (list, tuple, set, frozenset, dict, collections.deque, collections.Counter, collections.OrderedDict,
             collections.defaultdict):
        if id(v) in path:
            raise ValueNotSendable("the value contains itself (a cycle)")
        path.add(id(v))
        try:
            return _encode_container(v, t, allow_code, depth + 1, path)
        finally:
            path.discard(id(v))
    if t is complex:
        return {"$": "complex", "v": [_encode(v.real, None, depth, path), _encode(v.imag, None, depth, path)]}
    if t is bytes:
        return {"$": "bytes", "v": base64.b64encode(v).decode()}
    if t is decimal.Decimal:
        return {"$": "decimal", "v": str(v)}
    if t is fractions.Fraction:
        return {"$": "fraction", "v": [_encode(v.numerator, None, depth, path), _encode(v.denominator, None, depth, path)]}
    if t is dt.timedelta:
        return {"$": "timedelta", "v": [v.days, v.seconds, v.microseconds]}
    if t in (dt.date, dt.datetime, dt.time):
        tz = v.utcoffset() if t is not dt.date else None
        if tz is not None and not isinstance(v.tzinfo, dt.timezone):
            raise ValueNotSendable(f"a {t.__name__} with a {type(v.tzinfo).__name__} time zone cannot be sent; "
                                   "convert it to a fixed offset or to text")
        return {"$": t.__name__, "v": v.isoformat()}
    if t is dt.timezone:
        return {"$": "timezone", "v": [v.utcoffset(None).total_seconds(), v.tzname(None)]}
    if t is CodeRef:
        return v.encoded()
    if allow_code is not None and depth == 0:  # only a variable itself, never inside a container
        tagged = allow_code(v)
        if tagged is not None:
            return tagged
    raise ValueNotSendable(f"a {t.__name__} object is not data (send str, numbers, lists, dicts ...)")


def _encode_container(v, t, allow_code, depth, path):
    if t is list:
        return [_encode(x, allow_code, depth, path) for x in v]
    if t in (tuple, set, frozenset, collections.deque):
        tag = {tuple: "tuple", set: "set", frozenset: "frozenset", collections.deque: "deque"}[t]
        items = [_encode(x, allow_code, depth, path) for x in v]
        if t is collections.deque and v.maxlen is not None:
            return {"$": tag, "v": items, "maxlen": v.maxlen}
        return {"$": tag, "v": items}
    pairs = [(_encode(k, allow_code, depth, path), _encode(x, allow_code, depth, path)) for k, x in v.items()]
    if t is dict and all(type(k) is str for k in v) and "$" not in v:
        return dict(pairs)
    tag = {dict: "dict", collections.Counter: "counter", collections.OrderedDict: "odict",
           collections.defaultdict: "defaultdict"}[t]
    out = {"$": tag, "v": [list(p) for p in pairs]}
    if t is collections.defaultdict:
        if v.default_factory is not None and v.default_factory not in _FACTORIES:
            raise ValueNotSendable("a defaultdict whose factory is not a builtin type cannot be sent")
        out["factory"] = _FACTORIES.get(v.default_factory)
    return out


def decode(data: Any, allow_code: bool = False) -> Any:
    """What :func:`encode` made, back as values. Anything malformed raises ValueError.
    With ``allow_code``, a top-level ``module`` or ``function`` tag becomes a :class:`CodeRef`
    (a variable's value); elsewhere it is refused."""
    return _decode(data, allow_code, 0)


def _decode(d: Any, allow_code, depth: int) -> Any:
    t = type(d)
    if d is None or t in (bool, int, float, str):
        return d
    if depth >= MAX_DEPTH + 2:
        raise ValueError("the value is nested too deeply")
    if t is list:
        return [_decode(x, allow_code, depth + 1) for x in d]
    if t is not dict:
        raise ValueError(f"unexpected {t.__name__} in an encoded value")
    if "$" not in d:
        return {k: _decode(x, allow_code, depth + 1) for k, x in d.items()}
    tag, v = d["$"], d.get("v")
    sub = lambda x: _decode(x, allow_code, depth + 1)  # noqa: E731
    if tag in ("tuple", "set", "frozenset", "deque"):
        items = [sub(x) for x in _list(v)]
        if tag == "deque":
            maxlen = d.get("maxlen")
            if maxlen is not None and type(maxlen) is not int:
                raise ValueError("bad deque maxlen")
            return collections.deque(items, maxlen)
        return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag in ("dict", "counter", "odict", "defaultdict"):
        pairs = [(sub(k), sub(x)) for k, x in (_pair(p) for p in _list(v))]
        if tag == "defaultdict":
            factory = d.get("factory")
            if factory is not None and factory not in _FACTORY_BY_NAME:
                raise ValueError(f"bad defaultdict factory {factory!r}")
            return collections.defaultdict(_FACTORY_BY_NAME.get(factory), pairs)
        return {"dict": dict, "counter": collections.Counter, "odict": collections.OrderedDict}[tag](pairs)
    if tag == "int":
        return int(_str(v), 16)
    if tag == "float":
        if v not in ("nan", "inf", "-inf"):
            raise ValueError(f"bad float {v!r}")
        return float(v)
    if tag == "complex":
        re_, im = _pair(v)
        return complex(float(sub(re_)), float(sub(im)))
    if tag == "bytes":
        return base64.b64decode(_str(v), validate=True)
    if tag == "decimal":
        return decimal.Decimal(_str(v))
    if tag == "fraction":
        n, m = (sub(x) for x in _pair(v))
        if type(n) is not int or type(m) is not int:
            raise ValueError("bad fraction")
        return fractions.Fraction(n, m)
    if tag == "timedelta":
        days, seconds, micro = _list(v)
        return dt.timedelta(days=int(days), seconds=int(seconds), microseconds=int(micro))
    if tag in ("date", "datetime", "time"):
        return {"date": dt.date, "datetime": dt.datetime, "time": dt.time}[tag].fromisoformat(_str(v))
    if tag == "timezone":
        seconds, name = _pair(v)
        return dt.timezone(dt.timedelta(seconds=float(seconds)), None if name is None else _str(name))
    if tag in ("module", "function") and allow_code and depth == 0:
        return CodeRef(tag, _str(v))
    raise ValueError(f"unknown value tag {tag!r}")


def _list(v) -> list:
    if type(v) is not list:
        raise ValueError("expected a list in an encoded value")
    return v


def _pair(v) -> list:
    if type(v) is not list or len(v) != 2:
        raise ValueError("expected a pair in an encoded value")
    return v


def _str(v) -> str:
    if type(v) is not str:
        raise ValueError("expected a string in an encoded value")
    return v
