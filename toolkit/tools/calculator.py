"""``calculator(expression)``: exact arithmetic by walking the expression's AST (never ``eval``).

Numbers are exact fractions: ``0.1 + 0.2`` is ``0.3`` and ``1/3 * 3`` is ``1``. Functions such
as ``sqrt`` and ``sin`` give floats. Sizes are capped so that ``9**9**9`` is refused, not computed.
Operators may be written in words ("2 to the 16th", "15 percent of 80", "7 squared"), as users and
small planners write them.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from decimal import Decimal
from fractions import Fraction

from toolkit.tool import Tool

MAX_EXPRESSION_CHARS = 1000
# Results beyond this many bits are refused (a 10k-bit integer has ~3000 digits).
MAX_RESULT_BITS = 10_000

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: None}
_FUNCS = {"sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
          "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
          "atan": math.atan, "abs": abs, "round": round, "floor": math.floor, "ceil": math.ceil,
          "factorial": math.factorial, "min": min, "max": max}
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


class CalculatorError(ValueError):
    """The expression is not arithmetic the calculator evaluates."""


def _bits(x) -> int:
    if isinstance(x, Fraction):
        return max(abs(x.numerator).bit_length(), x.denominator.bit_length())
    return 64


def _pow(base, exp):
    if isinstance(exp, Fraction) and exp.denominator == 1 and isinstance(base, Fraction):
        e = exp.numerator
        if abs(e) * max(_bits(base), 1) > MAX_RESULT_BITS:
            raise CalculatorError(f"the result of a power with exponent {e} is too large")
        if base == 0 and e < 0:
            raise CalculatorError("division by zero (0 to a negative power)")
        return base ** e
    result = float(base) ** float(exp)
    if isinstance(result, complex):
        raise CalculatorError("the result is a complex number")
    return result


def _eval(node):
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise CalculatorError(f"only numbers are allowed, got {v!r}")
        return Fraction(v) if isinstance(v, int) else Fraction(Decimal(repr(v)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval(node.operand)
        return v if isinstance(node.op, ast.UAdd) else -v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            result = _pow(a, b)
        else:
            if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and b == 0:
                raise CalculatorError("division by zero")
            result = _BINOPS[type(node.op)](a, b)
        if _bits(result) > MAX_RESULT_BITS:
            raise CalculatorError("the result is too large")
        return result
    if isinstance(node, ast.Name):
        if node.id in _CONSTS:
            return _CONSTS[node.id]
        raise CalculatorError(f"unknown name {node.id!r}; constants: {', '.join(_CONSTS)}")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        fn = _FUNCS.get(node.func.id)
        if fn is None:
            raise CalculatorError(f"unknown function {node.func.id!r}; functions: {', '.join(_FUNCS)}")
        args = [_eval(a) for a in node.args]
        if fn is math.factorial:
            if len(args) != 1 or not isinstance(args[0], Fraction) or args[0].denominator != 1 or not 0 <= args[0] <= 1000:
                raise CalculatorError("factorial takes one whole number from 0 to 1000")
            return Fraction(math.factorial(int(args[0])))
        if fn in (abs, round, min, max, math.floor, math.ceil):
            out = fn(*args)
            return Fraction(out) if isinstance(out, (int, Fraction)) else out
        try:
            return fn(*(float(a) for a in args))
        except (ValueError, OverflowError) as e:
            raise CalculatorError(f"{node.func.id}: {e}") from e
    raise CalculatorError(f"unsupported syntax {type(node).__name__}; use numbers, + - * / // % **, "
                          "parentheses, and the functions " + ", ".join(_FUNCS))


def _terminates(q: int) -> bool:
    for p in (2, 5):
        while q % p == 0:
            q //= p
    return q == 1


def format_number(value) -> str:
    """An exact decimal when there is one, else the nearest float and the exact fraction."""
    if isinstance(value, float):
        return repr(value)
    if value.denominator == 1:
        return str(value.numerator)
    if _terminates(value.denominator):
        text = format(Decimal(value.numerator) / Decimal(value.denominator), "f")
        # Decimal's default precision (28) is enough: a 2^a*5^b denominator within the bit cap
        # might still need more, so fall back to the fraction when it does not fit.
        if Fraction(Decimal(text)) == value:
            return text
    return f"{float(value)!r} (= {value.numerator}/{value.denominator})"


# The operators written in words, as users and small planners write them ("2 to the 16th", "15
# percent of 80"), each as the symbol it stands for; a number's "%" stays Python's remainder.
_NUMBER = r"(\d+(?:\.\d+)?)"
_WORDS = [(re.compile(p, re.I), r) for p, r in (
    (rf"\b(?:the )?square root of {_NUMBER}", r"sqrt(\1)"),
    (rf"\b{_NUMBER}\s*(?:%|percent) of\b", r"(\1/100) *"),
    (r"\bto the power of\b|\braised to(?: the power of)?\b", "**"),
    (r"\bto the (\d+)(?:st|nd|rd|th)(?: power)?\b", r"** \1"),
    (r"\bsquared\b", "** 2"), (r"\bcubed\b", "** 3"),
    (r"\bmultiplied by\b|\btimes\b", "*"), (r"\bdivided by\b", "/"),
    (r"\bplus\b", "+"), (r"\bminus\b", "-"), (r"\bmod(?:ulo)?\b", "%"),
)]


def _symbols(expr: str) -> str:
    """``expr`` with its operator words as symbols and a question's "?" or a trailing "=" dropped."""
    for pattern, symbol in _WORDS:
        expr = pattern.sub(symbol, expr)
    return expr.strip().rstrip("?=").strip()


def calculate(expression: str) -> str:
    """Evaluate ``expression`` exactly and format the result. Operators may be written in words:
    "2 to the 16th", "7 squared", "15 percent of 80", "10 divided by 4", "the square root of 2"."""
    expr = _symbols(expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/"))
    if not expr:
        raise CalculatorError("the expression is empty")
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"the expression is longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise CalculatorError(f"not an arithmetic expression: {expression!r} ({e.msg})") from e
    return format_number(_eval(tree))


class CalculatorTool(Tool):
    name = "calculator"
    # Short on purpose: every planner prompt (training rows and each run) carries each tool's line.
    description = ("Evaluate an arithmetic expression exactly, e.g. (3 + 4.5) * 2 or 2**10 - sqrt(16); "
                   "also pi, e, log, sin, cos, round, factorial.")
    inputs = {"expression": {"type": "string", "description": "the arithmetic expression"}}
    output_type = "string"

    def forward(self, expression: str) -> str:
        return calculate(expression)
