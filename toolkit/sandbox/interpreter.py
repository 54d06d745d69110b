"""An AST-walking Python interpreter for model-written code (the first layer of the sandbox).

    result, printed = evaluate_python_code("import math\\nprint(math.sqrt(16))\\n2 * 21")
    # -> (42, "4.0\\n")
    state = {"x": 2}
    evaluate_python_code("y = x * 21", state=state)   # state -> {"x": 2, "y": 42}

It evaluates the parsed tree itself, node by node, so that only what is allowed can happen:

- imports only from an allow-list (``DEFAULT_AUTHORIZED_IMPORTS`` plus
  ``additional_authorized_imports``; ``"pkg.*"`` also allows pkg's submodules), never
  ``from x import *``; an import gives a *view* of the module, a copy of its allow-listed
  surface: public functions and constants defined by allowed modules, classes defined by allowed
  modules or builtins, never a module or class from elsewhere (``json.tool.Path``,
  ``statistics.sys``) nor a host-state setter (``time.tzset``); ``random``'s functions use a
  private generator, ``decimal``'s shared contexts are copies;
- no attribute whose name starts with ``_`` (which rules out every dunder: ``__class__``,
  ``__subclasses__``, ``__globals__``, ``__self__``, ``__getattribute__``, and private module
  members such as ``random._os``), no frame or code attributes (``gi_frame``, ``f_globals``,
  ``tb_frame``, ``co_code`` ...), no value anywhere that is a module or class outside the allow-list;
- builtins from a safe list only: no ``eval``, ``exec``, ``compile``, ``open``, ``globals``,
  ``getattr``, ``type``, ``__import__``, ``exit``, ``input``, ``breakpoint``;
- ``str.format``/``format_map`` refuse fields that reach attributes or items named ``_...``;
- no ``class``, ``with``, ``yield``, ``global``/``nonlocal``, ``async`` or ``del`` of attributes;
- caps (:class:`Limits`): operations and wall-clock seconds per run, iterations per ``while``
  loop, call depth, nesting depth of the source, the size of a range, a repeated or concatenated
  sequence, a padded or formatted string, an integer result (``**``, ``*``, ``<<``, ``pow``,
  ``math.factorial``/``comb``/``perm``/``prod``/``lcm``), ``decimal`` precision, printed
  characters; C-level iterators (``itertools``, ``iter(f, sentinel)``) count an operation per item;
- no exception other than :class:`InterpreterError` leaves it: ``SystemExit``,
  ``KeyboardInterrupt``, ``GeneratorExit`` and ``MemoryError`` raised under the code become one;
- the host keeps its state: the run has its own ``decimal`` context, module views are copies.

One C call can still run long between two checks (a backtracking regular expression), so this
interpreter is not the security boundary alone: ``toolkit.sandbox.process`` runs it in a
separate process with OS limits and kills it at the wall clock. Errors raise
:class:`InterpreterError` with the line number.
"""

from __future__ import annotations

import ast
import builtins
import copy
import decimal
import fractions
import importlib
import itertools
import math
import operator
import random
import re
import string
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

from toolkit.sandbox.values import CodeRef

__all__ = ["evaluate_python_code", "InterpreterError", "DEFAULT_AUTHORIZED_IMPORTS", "Limits", "code_value_of"]

DEFAULT_AUTHORIZED_IMPORTS = ("math", "random", "statistics", "datetime", "time", "itertools", "collections",
                              "re", "json", "unicodedata", "decimal", "fractions")
# Names code may call without importing anything.
SAFE_BUILTINS = ("abs", "all", "any", "ascii", "bin", "bool", "bytes", "callable", "chr", "complex", "dict",
                 "divmod", "enumerate", "filter", "float", "format", "frozenset", "hash", "hex", "int",
                 "isinstance", "issubclass", "iter", "len", "list", "map", "max", "min", "next", "oct", "ord",
                 "pow", "range", "repr", "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple",
                 "zip", "True", "False", "None",
                 "Exception", "ValueError", "TypeError", "KeyError", "IndexError", "ZeroDivisionError",
                 "ArithmeticError", "LookupError", "RuntimeError", "StopIteration", "AssertionError",
                 "NameError", "AttributeError", "OverflowError", "NotImplementedError")
# Module members that lead back to the host even without an underscore.
_FORBIDDEN_ATTRS = re.compile(r"^(gi|cr|ag|f|tb|co)_|^(mro|format_map|func_globals|im_func|im_self)$")
_FORBIDDEN_VALUES = tuple(getattr(builtins, n) for n in ("eval", "exec", "compile", "open", "globals", "locals",
                                                           "vars", "getattr", "setattr", "delattr", "__import__",
                                                           "breakpoint", "input", "memoryview", "type", "super",
                                                           "object", "classmethod", "staticmethod", "property"))
# Public module members that reach host internals or change host state.
_BLOCKED_MEMBERS = {("functools", "update_wrapper"), ("functools", "wraps"), ("functools", "partialmethod"),
                    ("time", "tzset"), ("time", "clock_settime"), ("time", "clock_settime_ns"),
                    ("time", "pthread_getcpuclockid"), ("re", "purge"), ("decimal", "setcontext")}
# Values of these immutable types may be copied from a module into its view.
_PLAIN_TYPES = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset)


class Limits:
    """The interpreter's caps (the reason for each value beside it)."""

    max_operations = 10_000_000   # AST nodes evaluated per run: ~10 s of pure-Python work
    max_seconds = 30.0            # wall clock per run, checked between operations (the worker kills at its own)
    max_while_iterations = 1_000_000
    max_call_depth = 100          # user-function recursion, well under Python's own limit
    max_nesting = 100             # depth of the source's syntax tree (the parser and this walker recurse)
    max_sequence = 10_000_000     # items in a range, a repeated/concatenated sequence, a padded string
    max_int_bits = 1_000_000      # bits of an integer result (~300k digits): **, *, <<, factorial ...
    max_decimal_prec = 10_000     # digits of a decimal context
    max_print_chars = 100_000


class InterpreterError(Exception):
    """The code did something the interpreter refuses, or raised; the message names the line."""


class _Return(Exception):
    def __init__(self, value):
        self.value = value


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _UserException(Exception):
    """Wraps an exception raised by the evaluated code, so that ``try`` in that code can catch it
    and the interpreter can tell it from its own refusals."""


_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
           ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitOr: operator.or_,
           ast.BitXor: operator.xor, ast.BitAnd: operator.and_, ast.MatMult: operator.matmul}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Is: operator.is_, ast.IsNot: operator.is_not,
           ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_, ast.Invert: operator.invert}


def _check_format_string(fmt: str) -> None:
    for _, field, spec, _ in string.Formatter().parse(fmt):
        for part in (field, spec):
            if part and re.search(r"(^|[.\[])_", part):
                raise InterpreterError(f"format field {part!r} reaches a private attribute; refused")
            if part and "{" in part:
                _check_format_string(part)


def code_value_of(value) -> dict | None:
    """The tagged form of a module view or a top-level function of the code, else None."""
    if isinstance(value, types.ModuleType) and getattr(value, "__rewoo_view__", False):
        return {"$": "module", "v": value.__name__}
    source = getattr(value, "__rewoo_source__", None)
    if isinstance(value, types.FunctionType) and source is not None:
        return {"$": "function", "v": source}
    return None


_SPEC_NUMBERS = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def _int_bits_estimate(name: str, args: tuple) -> float:
    """An upper estimate of the bits of ``math.<name>(*args)`` (log-gamma), computed before it runs."""
    lg2 = lambda n: math.lgamma(n + 1) / math.log(2)  # noqa: E731 - log2(n!)
    ints = [a for a in args if isinstance(a, int)]
    if name == "factorial" and ints:
        return lg2(ints[0]) if ints[0] >= 0 else 0
    if name == "comb" and len(ints) >= 2 and ints[0] >= 0:
        return lg2(ints[0]) - lg2(max(ints[0] - ints[1], 0)) if 0 <= ints[1] <= ints[0] else 0
    if name == "perm" and ints and ints[0] >= 0:
        k = ints[1] if len(ints) > 1 else ints[0]
        return lg2(ints[0]) - lg2(max(ints[0] - k, 0)) if 0 <= k <= ints[0] else 0
    return 0


class _Interpreter:
    def __init__(self, tools: Mapping[str, Callable], authorized_imports: tuple[str, ...], limits: type[Limits],
                 timeout: float | None = None):
        self.authorized = tuple(authorized_imports)
        self.limits = limits
        self.operations = 0
        self.depth = 0
        self.printed: list[str] = []
        self.printed_chars = 0
        self.deadline = time.monotonic() + (limits.max_seconds if timeout is None else timeout)
        self.timeout = limits.max_seconds if timeout is None else timeout
        self.random = random.Random()  # the code's own generator: random.seed() leaves the host's alone
        self.views: dict[str, types.ModuleType] = {}
        self.builtins = {n: getattr(builtins, n) for n in SAFE_BUILTINS if hasattr(builtins, n)}
        self.builtins.update(print=self._print, range=self._range, bytes=self._sized(bytes), pow=self._pow,
                             bytearray=self._sized(bytearray), iter=self._iter, sum=self._sum, format=self._format)
        # the checked constructors stand for their types in isinstance/issubclass
        self.real_types = {id(self.builtins[n]): t for n, t in (("range", range), ("bytes", bytes),
                                                                  ("bytearray", bytearray))}
        self.builtins.update(isinstance=lambda obj, kinds: isinstance(obj, self._types(kinds)),
                             issubclass=lambda cls, kinds: issubclass(self._types(cls), self._types(kinds)))
        self.builtins.update({name: self._tool(name, f) for name, f in tools.items()})
        self.globals: dict[str, Any] = {}

    def _tool(self, name: str, fn: Callable) -> Callable:
        """A tool as the code calls it: its time is the tool's, not the code's (the clock stops)."""
        def call(*args, **kwargs):
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                self.deadline += time.monotonic() - started
        call.__name__ = name
        return call

    # -- helpers --------------------------------------------------------------------------------

    def _print(self, *args, sep=" ", end="\n"):
        text = str(sep).join(str(a) for a in args) + str(end)
        self.printed_chars += len(text)
        if self.printed_chars > self.limits.max_print_chars:
            raise InterpreterError(f"printed output exceeds {self.limits.max_print_chars} characters")
        self.printed.append(text)

    def _types(self, kinds):
        if isinstance(kinds, tuple):
            return tuple(self._types(k) for k in kinds)
        return self.real_types.get(id(kinds), kinds)

    def _too_long(self, n: int, what: str) -> None:
        if n > self.limits.max_sequence:
            raise InterpreterError(f"{what} of {n} items exceeds the limit ({self.limits.max_sequence})")

    def _too_big(self, bits: float, what: str) -> None:
        if bits > self.limits.max_int_bits:
            raise InterpreterError(f"{what} would have about {int(bits)} bits, over the limit "
                                   f"({self.limits.max_int_bits})")

    def _range(self, *args):
        r = range(*args)
        self._too_long(len(r), "a range")
        return r

    def _sized(self, kind):
        def make(*args, **kwargs):
            if args and isinstance(args[0], int):
                self._too_long(args[0], f"{kind.__name__}()")
            return kind(*args, **kwargs)
        make.__name__ = kind.__name__
        return make

    def _pow(self, base, exp, mod=None):
        if mod is None:
            self.check_power(base, exp)
        return pow(base, exp, mod)

    def _iter(self, *args):
        return iter(*args) if len(args) == 1 else self._ticking(iter(*args))

    def _ticking(self, iterator):
        """A C-level iterator as a generator that counts an operation per item."""
        for item in iterator:
            self.tick()
            yield item

    def _sum(self, iterable, start=0):
        if isinstance(start, (list, tuple, str, bytes)):  # concatenation: check the total first
            items = list(iterable)
            self._too_long(len(start) + sum(len(x) for x in items if isinstance(x, (list, tuple, str, bytes))),
                           "a concatenated sequence")
            return sum(items, start)
        return sum(iterable, start)

    def _format(self, value, spec=""):
        self._check_spec(spec)
        return format(value, spec)

    def _check_spec(self, spec) -> None:
        for digits in _SPEC_NUMBERS.findall(str(spec)):
            if len(digits) > 9 or int(digits) > self.limits.max_sequence:
                raise InterpreterError(f"the format width or precision {digits} exceeds the limit "
                                       f"({self.limits.max_sequence})")

    def _safe_format(self, fmt: str, *args, **kwargs):
        _check_format_string(fmt)
        for _, _, spec, _ in string.Formatter().parse(fmt):
            if spec:
                self._check_spec(spec)
        return fmt.format(*args, **kwargs)

    def _string_method(self, obj, name: str, method):
        """``str``/``bytes`` methods whose result can be far larger than their inputs, checked first."""
        limit = self._too_long

        def checked(*args, **kwargs):
            if name in ("ljust", "rjust", "center", "zfill") and args and isinstance(args[0], int):
                limit(args[0], f"{name}()")
            elif name == "expandtabs":
                size = args[0] if args else kwargs.get("tabsize", 8)
                if isinstance(size, int):
                    limit(len(obj) + obj.count("\t" if isinstance(obj, str) else b"\t") * max(size, 0), "expandtabs()")
            elif name == "replace" and len(args) >= 2:
                old, new = args[0], args[1]
                n = obj.count(old) if len(old) else len(obj) + 1
                if len(args) > 2 and isinstance(args[2], int) and args[2] >= 0:
                    n = min(n, args[2])
                limit(len(obj) + n * max(len(new) - len(old), 0), "replace()")
            elif name == "join" and args:
                parts = list(args[0])
                limit(sum(len(p) for p in parts if isinstance(p, (str, bytes))) + len(obj) * len(parts), "join()")
                return method(parts)
            return method(*args, **kwargs)
        return checked

    def _module_ok(self, name: str) -> bool:
        for a in self.authorized:
            if name == a or (a.endswith(".*") and (name == a[:-2] or name.startswith(a[:-1]))):
                return True
        return False

    def _home_ok(self, module_name) -> bool:
        """A class or function defined in an allowed module (or its package) or in builtins."""
        name = module_name or ""
        return name == "builtins" or any(name == a.removesuffix(".*") or name.startswith(a.removesuffix(".*") + ".")
                                         for a in self.authorized)

    def view(self, module: types.ModuleType) -> types.ModuleType:
        """The code's copy of an allowed module: its allow-listed surface only (see the module doc)."""
        name = module.__name__
        if name in self.views:
            return self.views[name]
        view = types.ModuleType(name)
        view.__rewoo_view__ = True
        self.views[name] = view
        for attr in dir(module):
            if attr.startswith("_") or (name, attr) in _BLOCKED_MEMBERS or _FORBIDDEN_ATTRS.search(attr):
                continue
            value = getattr(module, attr)
            if isinstance(value, types.ModuleType):
                if self._module_ok(value.__name__):
                    setattr(view, attr, self.view(value))
            elif name == "itertools" and callable(value):  # C iterators: count an operation per item
                setattr(view, attr, self._wrap_module_function(name, attr, value))
            elif isinstance(value, type):
                if self._home_ok(value.__module__) and not any(value is v for v in _FORBIDDEN_VALUES):
                    setattr(view, attr, value)
            elif callable(value):
                if name == "random" and hasattr(self.random, attr):
                    setattr(view, attr, getattr(self.random, attr))
                elif self._home_ok(getattr(value, "__module__", None)):
                    setattr(view, attr, self._wrap_module_function(name, attr, value))
            elif isinstance(value, decimal.Context):
                setattr(view, attr, copy.copy(value))
            elif isinstance(value, _PLAIN_TYPES) or self._home_ok(type(value).__module__):
                setattr(view, attr, value)
        return view

    def _wrap_module_function(self, module: str, name: str, fn):
        if module == "math" and name in ("factorial", "comb", "perm"):
            def bounded(*args):
                self._too_big(_int_bits_estimate(name, args), f"math.{name}{args}")
                return fn(*args)
        elif module == "math" and name in ("prod", "lcm"):
            def bounded(*args, **kwargs):
                items = list(args[0]) if name == "prod" and args else list(args)
                self._too_long(len(items), f"math.{name}() input")
                extra = [kwargs.get("start", 1)] if name == "prod" else []
                self._too_big(sum(abs(x).bit_length() for x in items + extra if isinstance(x, int)), f"math.{name}()")
                return fn(items, **kwargs) if name == "prod" else fn(*items)
        elif module == "time" and name == "sleep":
            def bounded(seconds):
                if seconds > self.deadline - time.monotonic():
                    raise InterpreterError(f"time.sleep({seconds}) would pass the time limit ({self.timeout:g} s)")
                return fn(seconds)
        elif module == "itertools":
            def bounded(*args, **kwargs):
                return self._ticking(fn(*args, **kwargs))
        else:
            return fn
        bounded.__name__ = name
        return bounded

    def _check_value(self, value, what: str):
        if isinstance(value, types.ModuleType):
            if getattr(value, "__rewoo_view__", False):
                return value
            if not self._module_ok(value.__name__):
                raise InterpreterError(f"{what} is the module {value.__name__!r}, which is not authorized")
            return self.view(value)
        if isinstance(value, type) and not self._home_ok(value.__module__):
            raise InterpreterError(f"{what} is the class {value.__module__}.{value.__qualname__}, which comes from "
                                   "a module that is not authorized")
        if any(value is v for v in _FORBIDDEN_VALUES):
            raise InterpreterError(f"{what} is a forbidden builtin")
        if isinstance(value, decimal.Context) and value.prec > self.limits.max_decimal_prec:
            raise InterpreterError(f"a decimal context with {value.prec} digits exceeds the limit "
                                   f"({self.limits.max_decimal_prec})")
        return value

    def getattr(self, obj, name: str):
        if name.startswith("_"):
            raise InterpreterError(f"access to the private or dunder attribute {name!r} is not allowed")
        if _FORBIDDEN_ATTRS.search(name):
            raise InterpreterError(f"access to the attribute {name!r} is not allowed")
        if isinstance(obj, types.ModuleType) and (obj.__name__, name) in _BLOCKED_MEMBERS:
            raise InterpreterError(f"{obj.__name__}.{name} is not allowed")
        if (isinstance(obj, str) or obj is str) and name in ("format", "format_map"):
            if name == "format_map":
                raise InterpreterError("str.format_map is not allowed; use str.format")
            return (lambda *a, **k: self._safe_format(obj, *a, **k)) if isinstance(obj, str) else self._safe_format
        if isinstance(obj, types.ModuleType) and not hasattr(obj, name):
            raise InterpreterError(f"module {obj.__name__!r} has no attribute {name!r} that code may use")
        value = getattr(obj, name)
        if isinstance(obj, (str, bytes, bytearray)) and name in ("ljust", "rjust", "center", "zfill", "expandtabs",
                                                                  "replace", "join"):
            return self._string_method(obj, name, value)
        return self._check_value(value, f"attribute {name!r}")

    # -- entry -----------------------------------------------------------------------------------

    def parse(self, code: str) -> ast.Module:
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            raise InterpreterError(f"syntax error on line {e.lineno}: {e.msg}") from None
        except (MemoryError, RecursionError):
            raise InterpreterError("the code is nested too deeply to parse") from None
        stack = [(tree, 0)]
        while stack:  # iteratively: a recursive walk is what deep nesting breaks
            node, depth = stack.pop()
            if depth > self.limits.max_nesting:
                raise InterpreterError(f"line {getattr(node, 'lineno', '?')}: the code is nested more than "
                                       f"{self.limits.max_nesting} levels deep")
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
        return tree

    def run(self, code: str):
        tree = self.parse(code)
        result = None
        for node in tree.body:
            result = self.exec_stmt(node, self.globals)
            if not isinstance(node, ast.Expr):
                result = None
        return result

    def restore(self, state: dict) -> list[str]:
        """Rebuild the ``CodeRef`` s of ``state`` in place; returns the names it could not."""
        lost = []
        for name, value in list(state.items()):
            if not isinstance(value, CodeRef):
                continue
            try:
                if value.tag == "module":
                    if not isinstance(value.value, str) or not self._module_ok(value.value):
                        raise InterpreterError(f"module {value.value!r} is not authorized")
                    state[name] = self.view(importlib.import_module(value.value))
                else:
                    node = self.parse(value.value).body[0]
                    node = node.value if isinstance(node, ast.Expr) else node
                    if not isinstance(node, (ast.FunctionDef, ast.Lambda)):
                        raise InterpreterError("not a function")
                    state[name] = self.make_function(node, self.globals)
            except Exception:  # a value that does not come back is reported, not fatal
                del state[name]
                lost.append(name)
        return lost

    # -- statements -----------------------------------------------------------------------------

    def exec_block(self, body, scope):
        for node in body:
            self.exec_stmt(node, scope)

    def exec_stmt(self, node, scope):
        try:
            return self._exec_stmt(node, scope)
        except InterpreterError as e:
            if str(e).startswith("line ") or str(e).startswith("the code exceeded"):
                raise
            raise InterpreterError(f"line {node.lineno}: {e}") from None
        except (_Return, _Break, _Continue, _UserException):
            raise
        except RecursionError:
            raise InterpreterError(f"line {node.lineno}: maximum recursion depth exceeded") from None
        except MemoryError:
            raise InterpreterError(f"line {node.lineno}: out of memory") from None
        except Exception as e:  # an error of the evaluated code itself: catchable by its `try`
            raise _UserException(e) from None
        except BaseException as e:  # SystemExit, KeyboardInterrupt, GeneratorExit: end the run, never the host
            raise InterpreterError(f"line {node.lineno}: the code raised {type(e).__name__}, which ends it "
                                   "here") from None

    def _exec_stmt(self, node, scope):
        self.tick()
        kind = type(node)
        if kind is ast.Expr:
            return self.eval(node.value, scope)
        if kind is ast.Assign:
            value = self.eval(node.value, scope)
            for target in node.targets:
                self.assign(target, value, scope)
            return None
        if kind is ast.AnnAssign:
            if node.value is not None:
                self.assign(node.target, self.eval(node.value, scope), scope)
            return None
        if kind is ast.AugAssign:
            if isinstance(node.target, ast.Name):
                current = self.lookup(node.target.id, scope)
            elif isinstance(node.target, ast.Subscript):
                current = self.eval(node.target.value, scope)[self.eval(node.target.slice, scope)]
            elif isinstance(node.target, ast.Attribute):
                current = self.getattr(self.eval(node.target.value, scope), node.target.attr)
            else:
                raise InterpreterError(f"line {node.lineno}: unsupported augmented assignment target")
            value = self.binop(node.op, current, self.eval(node.value, scope))
            self.assign(node.target, value, scope)
            return None
        if kind is ast.If:
            self.exec_block(node.body if self.eval(node.test, scope) else node.orelse, scope)
            return None
        if kind is ast.For:
            iterable = self.eval(node.iter, scope)
            broke = False
            for item in iterable:
                self.assign(node.target, item, scope)
                try:
                    self.exec_block(node.body, scope)
                except _Break:
                    broke = True
                    break
                except _Continue:
                    continue
            if not broke:
                self.exec_block(node.orelse, scope)
            return None
        if kind is ast.While:
            n = 0
            broke = False
            while self.eval(node.test, scope):
                n += 1
                if n > self.limits.max_while_iterations:
                    raise InterpreterError(f"line {node.lineno}: while loop exceeded "
                                           f"{self.limits.max_while_iterations} iterations")
                try:
                    self.exec_block(node.body, scope)
                except _Break:
                    broke = True
                    break
                except _Continue:
                    continue
            if not broke:
                self.exec_block(node.orelse, scope)
            return None
        if kind is ast.Break:
            raise _Break()
        if kind is ast.Continue:
            raise _Continue()
        if kind is ast.Pass:
            return None
        if kind is ast.Return:
            raise _Return(None if node.value is None else self.eval(node.value, scope))
        if kind is ast.FunctionDef:
            if node.decorator_list:
                raise InterpreterError(f"line {node.lineno}: decorators are not supported")
            scope[node.name] = self.make_function(node, scope)
            return None
        if kind in (ast.Import, ast.ImportFrom):
            return self.do_import(node, scope)
        if kind is ast.Raise:
            if node.exc is None:
                raise InterpreterError(f"line {node.lineno}: bare raise is not supported")
            exc = self.eval(node.exc, scope)
            if isinstance(exc, type) and issubclass(exc, Exception):
                exc = exc()
            if not isinstance(exc, Exception):
                raise InterpreterError(f"line {node.lineno}: can only raise exceptions")
            raise _UserException(exc)
        if kind is ast.Try:
            return self.do_try(node, scope)
        if kind is ast.Assert:
            if not self.eval(node.test, scope):
                msg = self.eval(node.msg, scope) if node.msg else ""
                raise _UserException(AssertionError(msg))
            return None
        if kind is ast.Delete:
            for target in node.targets:
                if isinstance(target, ast.Name):
                    if target.id not in scope:
                        raise InterpreterError(f"line {node.lineno}: name {target.id!r} is not defined")
                    del scope[target.id]
                elif isinstance(target, ast.Subscript):
                    del self.eval(target.value, scope)[self.eval(target.slice, scope)]
                else:
                    raise InterpreterError(f"line {node.lineno}: only names and items can be deleted")
            return None
        names = {ast.ClassDef: "class definitions", ast.With: "with statements", ast.AsyncWith: "async code",
                 ast.AsyncFunctionDef: "async code", ast.AsyncFor: "async code", ast.Global: "global statements",
                 ast.Nonlocal: "nonlocal statements"}
        what = names.get(kind, f"{kind.__name__} statements")
        raise InterpreterError(f"line {node.lineno}: {what} are not supported in the sandbox")

    def do_try(self, node, scope):
        try:
            try:
                self.exec_block(node.body, scope)
            except _UserException as wrapped:
                exc = wrapped.args[0]
                for handler in node.handlers:
                    if handler.type is None:
                        matched = True
                    else:
                        types_ = self.eval(handler.type, scope)
                        types_ = types_ if isinstance(types_, tuple) else (types_,)
                        if not all(isinstance(t, type) and issubclass(t, Exception) for t in types_):
                            raise InterpreterError(f"line {handler.lineno}: except needs exception classes")
                        matched = isinstance(exc, types_)
                    if matched:
                        if handler.name:
                            scope[handler.name] = exc
                        self.exec_block(handler.body, scope)
                        break
                else:
                    raise
            else:
                self.exec_block(node.orelse, scope)
        except InterpreterError:
            raise  # a refusal (a guard, the time limit) ends the run at once: no `finally` runs after it
        except BaseException:  # the code's own exception, return, break, continue: `finally` runs
            self.exec_block(node.finalbody, scope)
            raise
        self.exec_block(node.finalbody, scope)
        return None

    def do_import(self, node, scope):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise InterpreterError(f"line {node.lineno}: relative imports are not allowed")
            module_name = node.module or ""
            if not self._module_ok(module_name):
                raise InterpreterError(f"line {node.lineno}: import of {module_name!r} is not allowed; "
                                       f"authorized modules: {', '.join(self.authorized)}")
            module = self.view(importlib.import_module(module_name))
            for alias in node.names:
                if alias.name == "*":
                    raise InterpreterError(f"line {node.lineno}: 'from {module_name} import *' is not allowed")
                if hasattr(module, alias.name):
                    value = self.getattr(module, alias.name)
                else:
                    submodule = f"{module_name}.{alias.name}"
                    if not self._module_ok(submodule):
                        raise InterpreterError(f"line {node.lineno}: cannot import {alias.name!r} from {module_name!r}")
                    value = self.view(importlib.import_module(submodule))
                scope[alias.asname or alias.name] = value
            return None
        for alias in node.names:
            if not self._module_ok(alias.name):
                raise InterpreterError(f"line {node.lineno}: import of {alias.name!r} is not allowed; "
                                       f"authorized modules: {', '.join(self.authorized)}")
            module = importlib.import_module(alias.name)
            if alias.asname:
                scope[alias.asname] = self.view(module)
            else:
                top = alias.name.split(".")[0]
                if not self._module_ok(top):
                    raise InterpreterError(f"line {node.lineno}: import {alias.name} binds {top!r}, which is not "
                                           f"authorized; write 'import {alias.name} as name'")
                scope[top] = self.view(importlib.import_module(top))
        return None

    def assign(self, target, value, scope):
        if isinstance(target, ast.Name):
            if target.id in self.builtins and callable(self.builtins[target.id]) and target.id not in SAFE_BUILTINS:
                raise InterpreterError(f"line {target.lineno}: cannot assign to {target.id!r}, a tool or builtin")
            scope[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            starred = [i for i, e in enumerate(target.elts) if isinstance(e, ast.Starred)]
            items = list(value)
            if starred:
                i = starred[0]
                after = len(target.elts) - i - 1
                if len(items) < len(target.elts) - 1:
                    raise _UserException(ValueError("not enough values to unpack"))
                head, mid, tail = items[:i], items[i:len(items) - after], items[len(items) - after:]
                for t, v in zip(target.elts[:i], head):
                    self.assign(t, v, scope)
                self.assign(target.elts[i].value, mid, scope)
                for t, v in zip(target.elts[i + 1:], tail):
                    self.assign(t, v, scope)
            else:
                if len(items) != len(target.elts):
                    raise _UserException(ValueError(f"expected {len(target.elts)} values to unpack, got {len(items)}"))
                for t, v in zip(target.elts, items):
                    self.assign(t, v, scope)
        elif isinstance(target, ast.Subscript):
            obj = self.eval(target.value, scope)
            if isinstance(obj, types.ModuleType):
                raise InterpreterError(f"line {target.lineno}: modules cannot be changed")
            obj[self.eval(target.slice, scope)] = value
        elif isinstance(target, ast.Attribute):
            obj = self.eval(target.value, scope)
            if target.attr.startswith("_") or isinstance(obj, (types.ModuleType, type)):
                raise InterpreterError(f"line {target.lineno}: assigning attribute {target.attr!r} here is not allowed")
            if (isinstance(obj, decimal.Context) and target.attr == "prec" and isinstance(value, int)
                    and value > self.limits.max_decimal_prec):
                raise InterpreterError(f"line {target.lineno}: a decimal precision of {value} digits exceeds the "
                                       f"limit ({self.limits.max_decimal_prec})")
            setattr(obj, target.attr, value)
        else:
            raise InterpreterError(f"line {target.lineno}: unsupported assignment target {type(target).__name__}")

    def make_function(self, node, scope):
        interp = self
        args = node.args
        if args.vararg or args.kwarg or args.posonlyargs or args.kwonlyargs:
            if args.posonlyargs:
                raise InterpreterError(f"line {node.lineno}: positional-only parameters are not supported")
        defaults = [self.eval(d, scope) for d in args.defaults]
        kw_defaults = {a.arg: self.eval(d, scope) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}
        params = [a.arg for a in args.args]
        closure = scope
        is_lambda = isinstance(node, ast.Lambda)
        name = "<lambda>" if is_lambda else node.name
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Yield, ast.YieldFrom, ast.Await)):
                raise InterpreterError(f"line {sub.lineno}: generators (yield) are not supported")

        def function(*call_args, **call_kwargs):
            if interp.depth >= interp.limits.max_call_depth:
                raise InterpreterError(f"call depth exceeds {interp.limits.max_call_depth} (recursion too deep)")
            local = _Scope(closure)
            if len(call_args) > len(params) and not args.vararg:
                raise TypeError(f"{name}() takes {len(params)} positional arguments but {len(call_args)} were given")
            for p, v in zip(params, call_args):
                local[p] = v
            if args.vararg:
                local[args.vararg.arg] = tuple(call_args[len(params):])
            extra = {}
            for k, v in call_kwargs.items():
                if k in params or k in kw_defaults or any(a.arg == k for a in args.kwonlyargs):
                    if k in local.own_names():
                        raise TypeError(f"{name}() got multiple values for argument {k!r}")
                    local[k] = v
                elif args.kwarg:
                    extra[k] = v
                else:
                    raise TypeError(f"{name}() got an unexpected keyword argument {k!r}")
            if args.kwarg:
                local[args.kwarg.arg] = extra
            for p, d in zip(params[len(params) - len(defaults):], defaults):
                if p not in local.own_names():
                    local[p] = d
            for k, d in kw_defaults.items():
                if k not in local.own_names():
                    local[k] = d
            missing = [p for p in params + [a.arg for a in args.kwonlyargs] if p not in local.own_names()]
            if missing:
                raise TypeError(f"{name}() missing arguments {missing}")
            interp.depth += 1
            try:
                if is_lambda:
                    return interp.eval(node.body, local)
                try:
                    interp.exec_block(node.body, local)
                except _Return as r:
                    return r.value
                return None
            finally:
                interp.depth -= 1

        function.__name__ = name
        if closure is interp.globals:  # a top-level function can be defined again in a later run
            function.__rewoo_source__ = ast.unparse(node)
        return function

    # -- expressions ----------------------------------------------------------------------------

    def tick(self):
        self.operations += 1
        if self.operations > self.limits.max_operations:
            raise InterpreterError(f"the code exceeded {self.limits.max_operations} operations")
        if not self.operations & 255 and time.monotonic() > self.deadline:
            raise InterpreterError(f"the code exceeded its time limit ({self.timeout:g} s)")

    def check_power(self, a, b) -> None:
        if isinstance(b, int) and b > 1:
            if isinstance(a, int) and abs(a) > 1:
                self._too_big(a.bit_length() * b, f"the power {a}**{b}")
            elif isinstance(a, fractions.Fraction) and abs(a) != 1:
                self._too_big((abs(a.numerator).bit_length() + a.denominator.bit_length()) * b, f"the power {a}**{b}")

    def lookup(self, name: str, scope):
        if name in scope:
            return scope[name]
        if name in self.globals:
            return self.globals[name]
        if name in self.builtins:
            return self.builtins[name]
        raise InterpreterError(f"name {name!r} is not defined (forbidden builtins such as eval, open, exit, "
                               "type and getattr are not available)")

    def binop(self, op, a, b):
        kind = type(op)
        if kind is ast.Mult:
            for seq, n in ((a, b), (b, a)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * n > self.limits.max_sequence:
                    raise InterpreterError(f"a repeated sequence of {len(seq) * n} items exceeds the limit "
                                           f"({self.limits.max_sequence})")
        if kind is ast.Mult and isinstance(a, int) and isinstance(b, int):
            self._too_big(a.bit_length() + b.bit_length(), "the product")
        if kind is ast.Add and isinstance(a, (str, bytes, list, tuple)) and isinstance(b, (str, bytes, list, tuple)):
            self._too_long(len(a) + len(b), "a concatenated sequence")
        if kind is ast.Pow:
            self.check_power(a, b)
        if kind is ast.LShift and isinstance(a, int) and isinstance(b, int) and a:
            self._too_big(a.bit_length() + b, f"the shift by {b}")
        if kind is ast.Mod and isinstance(a, (str, bytes)):
            self._check_percent(a, b)
        if kind not in _BINOPS:
            raise InterpreterError(f"unsupported operator {kind.__name__}")
        return _BINOPS[kind](a, b)

    def _check_percent(self, fmt, args) -> None:
        text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
        values = args if isinstance(args, tuple) else (args,)
        for width, precision in _PERCENT_SPEC.findall(text):
            for part in (width, precision):
                if part == "*":
                    for v in values:
                        if isinstance(v, int):
                            self._check_spec(str(abs(v)))
                elif part:
                    self._check_spec(part)

    def eval(self, node, scope):
        self.tick()
        kind = type(node)
        if kind is ast.Constant:
            return node.value
        if kind is ast.Name:
            return self.lookup(node.id, scope)
        if kind is ast.BinOp:
            return self.binop(node.op, self.eval(node.left, scope), self.eval(node.right, scope))
        if kind is ast.UnaryOp:
            return _UNARY[type(node.op)](self.eval(node.operand, scope))
        if kind is ast.BoolOp:
            if isinstance(node.op, ast.And):
                value = True
                for v in node.values:
                    value = self.eval(v, scope)
                    if not value:
                        return value
                return value
            value = False
            for v in node.values:
                value = self.eval(v, scope)
                if value:
                    return value
            return value
        if kind is ast.Compare:
            left = self.eval(node.left, scope)
            for op, comp in zip(node.ops, node.comparators):
                right = self.eval(comp, scope)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if kind is ast.IfExp:
            return self.eval(node.body if self.eval(node.test, scope) else node.orelse, scope)
        if kind is ast.Attribute:
            return self.getattr(self.eval(node.value, scope), node.attr)
        if kind is ast.Subscript:
            return self.eval(node.value, scope)[self.eval(node.slice, scope)]
        if kind is ast.Slice:
            return slice(*(None if p is None else self.eval(p, scope) for p in (node.lower, node.upper, node.step)))
        if kind is ast.Call:
            return self.call(node, scope)
        if kind in (ast.List, ast.Tuple, ast.Set):
            items = []
            for e in node.elts:
                if isinstance(e, ast.Starred):
                    items.extend(self.eval(e.value, scope))
                else:
                    items.append(self.eval(e, scope))
            return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[kind](items)
        if kind is ast.Dict:
            out = {}
            for k, v in zip(node.keys, node.values):
                if k is None:
                    out.update(self.eval(v, scope))
                else:
                    out[self.eval(k, scope)] = self.eval(v, scope)
            return out
        if kind in (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp):
            return self.comprehension(node, scope)
        if kind is ast.JoinedStr:
            parts = []
            for v in node.values:
                if isinstance(v, ast.Constant):
                    parts.append(v.value)
                else:
                    value = self.eval(v.value, scope)
                    if v.conversion == ord("r"):
                        value = repr(value)
                    elif v.conversion == ord("s"):
                        value = str(value)
                    elif v.conversion == ord("a"):
                        value = ascii(value)
                    spec = self.eval(v.format_spec, scope) if v.format_spec else ""
                    self._check_spec(spec)
                    parts.append(format(value, spec))
            return "".join(parts)
        if kind is ast.FormattedValue:
            return format(self.eval(node.value, scope))
        if kind is ast.Lambda:
            return self.make_function(node, scope)
        if kind is ast.NamedExpr:
            value = self.eval(node.value, scope)
            self.assign(node.target, value, scope)
            return value
        what = {ast.Yield: "yield", ast.YieldFrom: "yield", ast.Await: "await"}.get(kind, kind.__name__)
        raise InterpreterError(f"line {getattr(node, 'lineno', '?')}: {what} expressions are not supported")

    def call(self, node, scope):
        func = self.eval(node.func, scope)
        args = []
        for a in node.args:
            if isinstance(a, ast.Starred):
                args.extend(self.eval(a.value, scope))
            else:
                args.append(self.eval(a, scope))
        kwargs = {}
        for k in node.keywords:
            if k.arg is None:
                kwargs.update(self.eval(k.value, scope))
            else:
                kwargs[k.arg] = self.eval(k.value, scope)
        self._check_value(func, "the called object")
        result = func(*args, **kwargs)
        return self._check_value(result, "the call's result")

    def comprehension(self, node, scope):
        local = _Scope(scope)
        out_list = []

        def loop(generators):
            if not generators:
                if isinstance(node, ast.DictComp):
                    out_list.append((self.eval(node.key, local), self.eval(node.value, local)))
                else:
                    out_list.append(self.eval(node.elt, local))
                return
            gen = generators[0]
            for item in self.eval(gen.iter, local):
                self.assign(gen.target, item, local)
                if all(self.eval(cond, local) for cond in gen.ifs):
                    loop(generators[1:])

        loop(node.generators)
        if isinstance(node, ast.DictComp):
            return dict(out_list)
        if isinstance(node, ast.SetComp):
            return set(out_list)
        if isinstance(node, ast.GeneratorExp):
            return iter(out_list)
        return out_list


class _Scope(dict):
    """A function's local names over its enclosing scope (read-through, write-local)."""

    def __init__(self, parent):
        super().__init__()
        self.parent = parent

    def own_names(self):
        return dict.keys(self)

    def __contains__(self, key):
        return dict.__contains__(self, key) or key in self.parent

    def __getitem__(self, key):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return self.parent[key]


def evaluate_python_code(code: str, tools: Mapping[str, Callable] | None = None, state: dict | None = None,
                         authorized_imports: tuple[str, ...] | list[str] = DEFAULT_AUTHORIZED_IMPORTS,
                         additional_authorized_imports: tuple[str, ...] | list[str] = (),
                         limits: type[Limits] = Limits, timeout: float | None = None) -> tuple[Any, str]:
    """Run ``code``; return ``(value of the last expression statement or None, printed text)``.

    ``tools`` are callables the code may call by name. ``state`` is the code's global variables,
    updated in place (so a later run sees them); ``toolkit.sandbox.values.CodeRef`` s in it are rebuilt first
    (one that cannot be is dropped). ``timeout``: wall-clock seconds (default ``limits.max_seconds``). Any
    refusal, limit, or exception of the code raises :class:`InterpreterError` (with the printed
    text so far in ``.printed``); nothing else leaves this function, and host state (the
    ``decimal`` context, the ``random`` generator, modules) is as it was.
    """
    interp = _Interpreter(tools or {}, tuple(authorized_imports) + tuple(additional_authorized_imports), limits,
                          timeout)
    if state is not None:
        interp.globals = state

    def failed(message: str) -> InterpreterError:
        err = InterpreterError(message)
        err.printed = "".join(interp.printed)
        return err

    try:
        with decimal.localcontext():  # the code's own context: getcontext().prec = 1 stays in the run
            interp.restore(interp.globals)
            value = interp.run(code)
    except _UserException as e:
        exc = e.args[0]
        raise failed(f"{type(exc).__name__}: {exc}") from None
    except (_Break, _Continue):
        raise failed("'break' or 'continue' outside a loop") from None
    except _Return:
        raise failed("'return' outside a function") from None
    except InterpreterError as e:
        e.printed = "".join(interp.printed)
        raise
    except RecursionError:
        raise failed("maximum recursion depth exceeded") from None
    except MemoryError:
        raise failed("out of memory") from None
    except BaseException as e:  # anything else under the code (SystemExit ...) ends the run, not the host
        raise failed(f"the code raised {type(e).__name__}: {e}") from None
    return value, "".join(interp.printed)
