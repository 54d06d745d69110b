"""ReWOO plans: parse, validate, order as a DAG, substitute evidence.

    >>> from pipeline.plan import parse_plan
    >>> plan = parse_plan('''Plan: Find the director.
    ... #E1 = search_wiki[Killers of the Flower Moon]
    ... Plan: List his films.
    ... #E2 = llm[Which films did the director in #E1 make?]''')
    >>> [s.var for s in plan.steps], plan.steps[1].deps
    (['#E1', '#E2'], ('#E1',))

The grammar (DESIGN.md, "Plan grammar"):

    Plan: <what this step does, free text>
    #E<n> = <tool>[<input>]

- ``<n>`` is any positive integer: ``#E10`` is one variable, never ``#E1`` followed by ``0``.
- ``<input>`` may reference earlier variables, may contain balanced brackets, and ends at the
  ``]`` that closes the opening ``[``. An input whose brackets are still open at the end of a line
  continues on the next line (code for ``python_interpreter`` spans lines).
- Errors (``PlanError``, a ``ValueError``, naming the line): a reference to an undefined or later
  variable, a variable defined twice, an unknown tool (when tools are given; the message lists the
  known ones), a malformed ``#E`` line, a ``Plan:`` that another ``Plan:`` follows before its step,
  and a text with no step at all.
- Tolerated, because models write them: indentation, ``#E1=tool[x]`` without spaces, CRLF or CR
  line ends, an empty input ``tool[]``, a step on the same line as its ``Plan:``, a step with no
  ``Plan:`` before it (empty description), description text continued on further lines, text
  before the first ``Plan:``, and text after the last step (a trailing ``Plan:`` with no step
  included).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["PlanError", "Step", "Plan", "parse_plan", "substitute", "references", "render_step"]

# A whole evidence variable: "#E" then digits, and never followed by another digit, so "#E1"
# does not match inside "#E10".
VAR_RE = re.compile(r"#E(\d+)(?!\d)")
# Start of a step line: "#E<n>", optional spaces, "=", optional spaces, the tool name.
_CALL_HEAD_RE = re.compile(r"#E(\d+)\s*=\s*")
_TOOL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_PLAN_RE = re.compile(r"plan\s*:", re.IGNORECASE)
# A step written on the same line as its "Plan:", e.g. "Plan: find it. #E1 = search[x]".
_INLINE_CALL_RE = re.compile(r"#E\d+\s*=")
# A line that means to be a step: "#E" then a digit, a space or "=". ("#Example" is just text.)
_STEP_START_RE = re.compile(r"#E[\d\s=]|#E$")


class PlanError(ValueError):
    """A plan text that breaks the grammar.

    ``line`` is the 1-based line of the text where the problem is (None when it concerns the
    whole text), ``reason`` the problem in words a model or a person can act on.
    """

    def __init__(self, reason: str, line: int | None = None):
        self.reason = reason
        self.line = line
        super().__init__(f"line {line}: {reason}" if line is not None else reason)


@dataclass(frozen=True)
class Step:
    """One step of a plan: ``var = tool[input]``, what it is for, and what it waits on.

    ``deps`` are the variables that ``input`` references, in order of first appearance and
    without repeats; ``line`` is the 1-based line of the ``#E`` in the parsed text (0 when built
    by hand).
    """

    var: str
    tool: str
    input: str
    description: str = ""
    deps: tuple[str, ...] = ()
    line: int = 0

    def render(self) -> str:
        return render_step(self.var, self.tool, self.input, self.description)

    def to_dict(self) -> dict:
        """``{"var", "tool", "input", "description"}``: the shape ``pipeline.run --json`` prints."""
        return {"var": self.var, "tool": self.tool, "input": self.input, "description": self.description}


@dataclass(frozen=True)
class Plan:
    """A parsed plan: its steps in text order, which is a valid execution order."""

    steps: tuple[Step, ...]
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", {s.var: s for s in self.steps})

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def __getitem__(self, var: str) -> Step:
        return self._index[var]

    @property
    def vars(self) -> list[str]:
        return [s.var for s in self.steps]

    @property
    def tools(self) -> list[str]:
        """The tools the plan calls, in step order, with repeats (a multiset)."""
        return [s.tool for s in self.steps]

    def levels(self) -> list[list[Step]]:
        """Topological levels: each level's steps depend only on earlier levels, so run together.

        Level 0 holds the steps without dependencies; a step sits one level above its deepest
        dependency. Within a level, steps keep their text order.
        """
        depth: dict[str, int] = {}
        for step in self.steps:  # text order is a topological order (validated at parse time)
            depth[step.var] = 1 + max((depth[d] for d in step.deps), default=-1)
        out: list[list[Step]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for step in self.steps:
            out[depth[step.var]].append(step)
        return out

    def dependants(self, var: str) -> list[Step]:
        """Steps that need ``var``, directly or through other steps."""
        needed, out = {var}, []
        for step in self.steps:
            if needed.intersection(step.deps):
                needed.add(step.var)
                out.append(step)
        return out

    def render(self) -> str:
        """The plan as text in the grammar; ``parse_plan(plan.render())`` gives the plan back."""
        return "\n".join(s.render() for s in self.steps)

    def to_list(self) -> list[dict]:
        return [s.to_dict() for s in self.steps]


def render_step(var: str, tool: str, input: str, description: str = "") -> str:
    """Two lines of the grammar: ``Plan: <description>`` then ``#E<n> = <tool>[<input>]``."""
    return f"Plan: {description}\n{var} = {tool}[{input}]"


def references(text: str) -> list[str]:
    """The whole ``#E<n>`` tokens in ``text``, in order of first appearance, without repeats."""
    return list(dict.fromkeys(f"#E{m.group(1)}" for m in VAR_RE.finditer(text)))


def substitute(text: str, evidence: Mapping[str, str]) -> str:
    """Replace each whole ``#E<n>`` token that ``evidence`` has with its text.

    Tokens without evidence stay as they are. ``#E1`` never touches ``#E10``, and substituted
    evidence is not searched again (evidence that itself contains ``#E2`` stays literal).
    """
    def repl(m: re.Match) -> str:
        return str(evidence.get(m.group(0), m.group(0)))
    return VAR_RE.sub(repl, text)


def _tool_names(tools) -> list[str] | None:
    """Tool names from a mapping (a Toolbox), an iterable of names or of objects with ``.name``."""
    if tools is None:
        return None
    if isinstance(tools, Mapping):
        return [str(k) for k in tools.keys()]
    if isinstance(tools, str):
        raise TypeError("tools must be a collection of tool names or tools, not one string")
    names = []
    for t in tools:
        names.append(t if isinstance(t, str) else getattr(t, "name"))
    return names


def _scan_input(lines: list[str], row: int, col: int) -> tuple[str, int, int]:
    """Read a bracketed input that opens at ``lines[row][col] == '['``.

    Returns ``(input, end_row, end_col)`` where ``end_col`` is just past the closing ``]``.
    Brackets nest; an input still open at the end of a line continues on the next one.
    """
    depth, start_row, parts = 0, row, []
    start = col + 1
    while row < len(lines):
        text = lines[row]
        for i in range(col, len(text)):
            ch = text[i]
            if ch == "[":
                depth += 1
            elif ch == "]":
                depth -= 1
                if depth == 0:
                    parts.append(text[start:i])
                    return "\n".join(parts), row, i + 1
        parts.append(text[start:])
        row, col, start = row + 1, 0, 0
    raise PlanError("the '[' that opens the tool input is never closed by a matching ']'", start_row + 1)


def parse_plan(text: str, tools: Iterable | Mapping | None = None) -> Plan:
    """Parse a planner's output into a :class:`Plan`.

    ``tools``: when given (names, tools with ``.name``, or a mapping such as a Toolbox), every
    step's tool must be one of them. Raises :class:`PlanError` for anything the grammar does not
    allow (see the module docstring); never any other exception for any string.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_plan takes the planner's text (str), not {type(text).__name__}")
    known = _tool_names(tools)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")

    steps: list[Step] = []
    defined: dict[str, int] = {}  # var -> line it is defined on
    pending: list[str] | None = None  # description lines of a "Plan:" still waiting for its step
    pending_line = 0
    row = 0
    while row < len(lines):
        raw = lines[row]
        stripped = raw.strip()
        lineno = row + 1
        call_at = None
        if _PLAN_RE.match(stripped):
            if pending is not None:
                raise PlanError(
                    f"a new 'Plan:' starts before the plan on line {pending_line} got its step "
                    "'#E<n> = <tool>[<input>]'", lineno)
            body_at = (len(raw) - len(raw.lstrip())) + _PLAN_RE.match(stripped).end()
            body = raw[body_at:]
            inline = _INLINE_CALL_RE.search(body)
            if inline:  # "Plan: ... #E1 = tool[x]" on one line
                pending, pending_line = [body[:inline.start()].strip()], lineno
                call_at = body_at + inline.start()
            else:
                pending, pending_line = [body.strip()], lineno
                row += 1
                continue
        elif _STEP_START_RE.match(stripped):
            call_at = len(raw) - len(raw.lstrip())
        elif pending is not None:
            if stripped:
                pending.append(stripped)  # description continues on this line
            row += 1
            continue
        else:
            row += 1  # text before the first step or between/after steps
            continue

        # A step: "#E<n> = <tool>[<input>]" starting at raw[call_at].
        head = _CALL_HEAD_RE.match(raw, call_at)
        if head is None:
            raise PlanError(
                f"malformed step {stripped[:60]!r}: expected '#E<n> = <tool>[<input>]'", lineno)
        var = f"#E{int(head.group(1))}"
        if head.group(1) != str(int(head.group(1))) or int(head.group(1)) == 0:
            raise PlanError(f"variable '#E{head.group(1)}' must be numbered 1, 2, 3, ... "
                            "without leading zeros", lineno)
        tool_m = _TOOL_RE.match(raw, head.end())
        if tool_m is None:
            raise PlanError(f"{var}: expected a tool name after '=', found "
                            f"{raw[head.end():head.end() + 30]!r}", lineno)
        tool = tool_m.group(0)
        after_tool = raw[tool_m.end():]
        if not after_tool.lstrip().startswith("["):
            raise PlanError(f"{var}: expected '[' after the tool name '{tool}' "
                            f"(write {var} = {tool}[<input>])", lineno)
        bracket = tool_m.end() + (len(after_tool) - len(after_tool.lstrip()))
        step_input, end_row, end_col = _scan_input(lines, row, bracket)
        trailing = lines[end_row][end_col:].strip()
        if trailing:
            raise PlanError(f"{var}: unexpected text {trailing[:40]!r} after the ']' that closes "
                            "the tool input", end_row + 1)
        if var in defined:
            raise PlanError(f"{var} is defined twice (first on line {defined[var]})", lineno)
        if known is not None and tool not in known:
            close = difflib.get_close_matches(tool, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise PlanError(f"{var}: unknown tool '{tool}'.{hint} Known tools: "
                            f"{', '.join(known) if known else '(none)'}", lineno)
        step_input = step_input.strip()
        deps = references(step_input)
        for dep in deps:
            if dep == var:
                raise PlanError(f"{var} references itself; a step can only use variables "
                                "defined before it", lineno)
            if dep not in defined:
                later = _defined_later(lines, end_row + 1, dep)
                where = f"defined later (line {later})" if later else "never defined"
                raise PlanError(f"{var} references {dep}, which is {where}; a step can only use "
                                "variables defined before it", lineno)
        description = " ".join(p for p in (pending or []) if p)
        steps.append(Step(var=var, tool=tool, input=step_input, description=description,
                          deps=tuple(deps), line=lineno))
        defined[var] = lineno
        pending = None
        row = end_row + 1

    if not steps:
        raise PlanError("no step found: a plan needs at least one 'Plan: <text>' followed by "
                        "'#E1 = <tool>[<input>]'")
    return Plan(tuple(steps))


def _defined_later(lines: list[str], start: int, var: str) -> int | None:
    """The line (1-based) at or after ``start`` where ``var`` is defined, if any (for messages)."""
    pat = re.compile(re.escape(var) + r"(?!\d)\s*=")
    for i in range(start, len(lines)):
        if pat.search(lines[i]):
            return i + 1
    return None
