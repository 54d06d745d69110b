"""An AST-walking Python interpreter for model-written code (the first layer of the sandbox).

    result, printed = evaluate_python_code("import math\\nprint(math.sqrt(16))\\n2 * 21")
    # -> (42, "4.0\\n")

It evaluates the parsed tree itself, node by node, so that only what is allowed can happen:

- imports only from an allow-list (``DEFAULT_AUTHORIZED_IMPORTS`` plus
  ``additional_authorized_imports``), never ``from x import *``;
- no attribute whose name starts with ``_`` (which rules out every dunder: ``__class__``,
  ``__subclasses__``, ``__globals__``, ``__self__``, ``__getattribute__``, and private module
  members such as ``random._os``), no frame or code attributes (``gi_frame``, ``f_globals``,
  ``tb_frame``, ``co_code`` ...), no attribute that leads to a module not on the allow-list;
- builtins from a safe list only: no ``eval``, ``exec``, ``compile``, ``open``, ``globals``,
  ``getattr``, ``type``, ``__import__``, ``exit``, ``input``, ``breakpoint``;
- ``str.format``/``format_map`` refuse fields that reach attributes or items named ``_...``;
- no ``class``, ``with``, ``yield``, ``global``/``nonlocal``, ``async`` or ``del`` of attributes;
- caps: operations per run, iterations per ``while`` loop, call depth, the size of a repeated
  sequence or a power, and printed characters.

An AST allow-list alone has been escaped many times, so ``toolkit.sandbox.process`` runs this
interpreter in a separate process with OS limits. Errors raise :class:`InterpreterError` with the
line number.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import math
import operator
import re
import string
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["evaluate_python_code", "InterpreterError", "DEFAULT_AUTHORIZED_IMPORTS", "Limits"]

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
# Public module members that reach host internals.
_BLOCKED_MEMBERS = {("functools", "update_wrapper"), ("functools", "wraps"), ("functools", "partialmethod")}


class Limits:
    """The interpreter's caps (the reason for each value beside it)."""

    max_operations = 10_000_000   # AST nodes evaluated per run: ~10 s of pure-Python work
    max_while_iterations = 1_000_000
    max_call_depth = 100          # user-function recursion, well under Python's own limit
    max_sequence = 10_000_000     # items in a repeated str/list/bytes ("a" * n)
    max_int_bits = 1_000_000      # bits of a power or shift result (~300k digits)
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


def _safe_format(fmt: str, *args, **kwargs):
    _check_format_string(fmt)
    return fmt.format(*args, **kwargs)


class _Interpreter:
    def __init__(self, tools: Mapping[str, Callable], authorized_imports: tuple[str, ...], limits: type[Limits]):
        self.authorized = tuple(authorized_imports)
        self.limits = limits
        self.operations = 0
        self.depth = 0
        self.printed: list[str] = []
        self.printed_chars = 0
        self.builtins = {n: getattr(builtins, n) for n in SAFE_BUILTINS if hasattr(builtins, n)}
        self.builtins["print"] = self._print
        self.builtins.update(tools)
        self.globals: dict[str, Any] = {}

    # -- helpers --------------------------------------------------------------------------------

    def _print(self, *args, sep=" ", end="\n"):
        text = str(sep).join(str(a) for a in args) + str(end)
        self.printed_chars += len(text)
        if self.printed_chars > self.limits.max_print_chars:
            raise InterpreterError(f"printed output exceeds {self.limits.max_print_chars} characters")
        self.printed.append(text)

    def _module_ok(self, name: str) -> bool:
        return any(name == a or name.startswith(a + ".") for a in self.authorized)

    def _check_value(self, value, what: str):
        if isinstance(value, types.ModuleType) and not self._module_ok(value.__name__):
            raise InterpreterError(f"{what} is the module {value.__name__!r}, which is not authorized")
        if any(value is v for v in _FORBIDDEN_VALUES):
            raise InterpreterError(f"{what} is a forbidden builtin")
        return value

    def getattr(self, obj, name: str):
        if name.startswith("_"):
            raise InterpreterError(f"access to the private or dunder attribute {name!r} is not allowed")
        if _FORBIDDEN_ATTRS.search(name):
            raise InterpreterError(f"access to the attribute {name!r} is not allowed")
        if isinstance(obj, types.ModuleType) and (obj.__name__, name) in _BLOCKED_MEMBERS:
            raise InterpreterError(f"{obj.__name__}.{name} is not allowed")
        if (isinstance(obj, str) or obj is str) and name == "format":
            return (lambda *a, **k: _safe_format(obj, *a, **k)) if isinstance(obj, str) else _safe_format
        value = getattr(obj, name)
        return self._check_value(value, f"attribute {name!r}")

    # -- entry -----------------------------------------------------------------------------------

    def run(self, code: str):
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            raise InterpreterError(f"syntax error on line {e.lineno}: {e.msg}") from None
        result = None
        for node in tree.body:
            result = self.exec_stmt(node, self.globals)
            if not isinstance(node, ast.Expr):
                result = None
        return result

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
        finally:
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
            module = importlib.import_module(module_name)
            for alias in node.names:
                if alias.name == "*":
                    raise InterpreterError(f"line {node.lineno}: 'from {module_name} import *' is not allowed")
                try:
                    value = self.getattr(module, alias.name)
                except AttributeError:
                    submodule = f"{module_name}.{alias.name}"
                    if not self._module_ok(submodule):
                        raise InterpreterError(f"line {node.lineno}: cannot import {alias.name!r} from {module_name!r}") from None
                    value = importlib.import_module(submodule)
                scope[alias.asname or alias.name] = value
            return None
        for alias in node.names:
            if not self._module_ok(alias.name):
                raise InterpreterError(f"line {node.lineno}: import of {alias.name!r} is not allowed; "
                                       f"authorized modules: {', '.join(self.authorized)}")
            module = importlib.import_module(alias.name)
            if alias.asname:
                scope[alias.asname] = module
            else:
                top = alias.name.split(".")[0]
                scope[top] = importlib.import_module(top)
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
        return function

    # -- expressions ----------------------------------------------------------------------------

    def tick(self):
        self.operations += 1
        if self.operations > self.limits.max_operations:
            raise InterpreterError(f"the code exceeded {self.limits.max_operations} operations")

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
        if kind is ast.Pow and isinstance(a, int) and isinstance(b, int) and b > 0:
            if max(a.bit_length(), 1) * b > self.limits.max_int_bits and abs(a) > 1:
                raise InterpreterError(f"the power {a}**{b} is too large")
        if kind is ast.LShift and isinstance(b, int) and b > self.limits.max_int_bits:
            raise InterpreterError(f"the shift by {b} is too large")
        if kind not in _BINOPS:
            raise InterpreterError(f"unsupported operator {kind.__name__}")
        return _BINOPS[kind](a, b)

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


def evaluate_python_code(code: str, tools: Mapping[str, Callable] | None = None,
                         authorized_imports: tuple[str, ...] | list[str] = DEFAULT_AUTHORIZED_IMPORTS,
                         additional_authorized_imports: tuple[str, ...] | list[str] = (),
                         limits: type[Limits] = Limits) -> tuple[Any, str]:
    """Run ``code``; return ``(value of the last expression statement or None, printed text)``.

    ``tools`` are callables the code may call by name. Any refusal, limit, or exception of the
    code raises :class:`InterpreterError` (with the printed text so far in ``.printed``).
    """
    interp = _Interpreter(tools or {}, tuple(authorized_imports) + tuple(additional_authorized_imports), limits)
    try:
        value = interp.run(code)
    except _UserException as e:
        exc = e.args[0]
        err = InterpreterError(f"{type(exc).__name__}: {exc}")
        err.printed = "".join(interp.printed)
        raise err from None
    except (_Break, _Continue):
        err = InterpreterError("'break' or 'continue' outside a loop")
        err.printed = "".join(interp.printed)
        raise err from None
    except _Return:
        err = InterpreterError("'return' outside a function")
        err.printed = "".join(interp.printed)
        raise err from None
    except InterpreterError as e:
        e.printed = "".join(interp.printed)
        raise
    return value, "".join(interp.printed)
