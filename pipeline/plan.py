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
- Never dropped: a line that looks like a step in another spelling (``#e2 = ...``,
  ``**#E2** = ...``, ``2. #E2 = ...``, a fullwidth ``＃E2 = ...``) is a ``PlanError`` naming
  the line, so a plan never runs with fewer steps than the model wrote; so is a variable of
  more than 6 digits.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["PlanError", "Step", "Plan", "PlanStream", "parse_plan", "substitute", "substitute_code", "references",
           "render_step",
           "CODE_MEDIA_TYPE", "EVIDENCE_NAME"]

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
# Text that looks like a step in another spelling: "#e2 = ...", "**#E2** = ...", "2. #E2 = ...",
# the fullwidth "＃E2 = ...". Such a line is an error, never text to skip.
_STEP_LIKE_RE = re.compile(r"[#＃]\s*[EeＥｅ]\s*[\d０-９]+[\s*_`'\"]*[=＝]")
_MAX_VAR_DIGITS = 6


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


# A tool argument that is source code declares it (JSON Schema ``contentMediaType``): evidence is
# then bound to a variable of the code, never pasted into its text.
CODE_MEDIA_TYPE = "text/x-python"
EVIDENCE_NAME = "EVIDENCE"
_STR_START_RE = re.compile(r"(?i)(rb|br|fr|rf|b|r|u|f)?('''|\"\"\"|'|\")")


def _string_literals(code: str) -> list[tuple[int, int, str, str, bool]]:
    """``(start, end, prefix, quote, closed)`` of each string literal of Python ``code``, found
    by a small lexer that knows comments, prefixes, triple quotes and escapes. A ``#E<n>``
    outside a string is a placeholder here, not a comment."""
    out, i, n = [], 0, len(code)
    while i < n:
        ch = code[i]
        if ch == "#":
            m = VAR_RE.match(code, i)
            if m:
                i = m.end()
                continue
            j = code.find("\n", i)
            i = n if j < 0 else j
            continue
        m = _STR_START_RE.match(code, i)
        if m and (i == 0 or not (code[i - 1].isalnum() or code[i - 1] == "_")):
            prefix, quote = m.group(1) or "", m.group(2)
            j, closed = m.end(), False
            while j < n:
                if code[j] == "\\":
                    j += 2
                    continue
                if code.startswith(quote, j):
                    j, closed = j + len(quote), True
                    break
                if len(quote) == 1 and code[j] == "\n":
                    break
                j += 1
            out.append((i, min(j, n), prefix, quote, closed))
            i = max(j, i + 1)
            continue
        i += 1
    return out


def substitute_code(code: str, evidence: Mapping[str, str], name: str = EVIDENCE_NAME) -> str:
    """Bind evidence into Python ``code`` as data, never as source text.

    The code gets a first line ``EVIDENCE = {"#E1": "<text>", ...}`` (a ``repr``: a literal that
    no evidence text can break out of), and each ``#E<n>`` that ``evidence`` has becomes a read of
    it: bare (``len(#E1)``, where ``#`` would start a comment) as ``EVIDENCE["#E1"]``; inside a
    string (``"#E1"`` or a triple-quoted one) the string becomes a concatenation of its parts and the evidence;
    inside an f-string a replacement field. (Pasting evidence into the source let a tool's output
    close the quotes and run code of its own.) References without evidence stay as written; so
    do bytes literals. Raises ``ValueError`` where a string cannot be split safely.
    """
    used = [r for r in references(code) if r in evidence]
    if not used:
        return code

    def read(var: str, quote: str = '"') -> str:
        return f"{name}[{quote}{var}{quote}]"

    def bare(text: str) -> str:
        return VAR_RE.sub(lambda m: read(m.group(0)) if m.group(0) in evidence else m.group(0), text)

    def literal(src: str, prefix: str, quote: str) -> str:
        body = src[len(prefix) + len(quote):len(src) - len(quote)]
        if "b" in prefix.lower() or not any(r in evidence for r in references(body)):
            return src
        if "f" in prefix.lower():
            inner = "'" if '"' in quote else '"'
            out, depth, k = [], 0, 0
            while k < len(body):
                m = VAR_RE.match(body, k) if body.startswith("#E", k) else None
                if m and m.group(0) in evidence:
                    out.append(read(m.group(0), inner) if depth else "{" + read(m.group(0), inner) + "}")
                    k = m.end()
                    continue
                c = body[k]
                if depth == 0 and body.startswith(("{{", "}}"), k):
                    out.append(body[k:k + 2])
                    k += 2
                    continue
                depth += (c == "{") - (c == "}")
                out.append(c)
                k += 1
            return prefix + quote + "".join(out) + quote
        parts, last = [], 0
        for m in VAR_RE.finditer(body):
            if m.group(0) not in evidence:
                continue
            parts.append(("text", body[last:m.start()]))
            parts.append(("var", m.group(0)))
            last = m.end()
        parts.append(("text", body[last:]))
        pieces = []
        for kind, text in parts:
            if kind == "var":
                pieces.append(read(text))
            elif text:
                if (len(text) - len(text.rstrip("\\"))) % 2:
                    raise ValueError("cannot bind evidence into a string that breaks after a backslash; "
                                     "use the evidence variable outside the string")
                pieces.append(prefix + quote + text + quote)
        return "(" + " + ".join(pieces) + ")"

    pieces, last = [], 0
    for start, end, prefix, quote, closed in _string_literals(code):
        pieces.append(bare(code[last:start]))
        src = code[start:end]
        pieces.append(literal(src, prefix, quote) if closed else src)
        last = end
    pieces.append(bare(code[last:]))
    binding = {r: str(evidence[r]) for r in used}
    return f"{name} = {binding!r}\n" + "".join(pieces)


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


def _scan_input(lines: list[str], row: int, col: int, first_line: int = 0) -> tuple[str, int, int]:
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
    raise PlanError("the '[' that opens the tool input is never closed by a matching ']'", start_row + 1 + first_line)


def parse_plan(text: str, tools: Iterable | Mapping | None = None, defined: Iterable[str] = ()) -> Plan:
    """Parse a planner's output into a :class:`Plan`.

    ``tools``: when given (names, tools with ``.name``, or a mapping such as a Toolbox), every
    step's tool must be one of them. ``defined``: variables of steps that ran before this text
    (a replanning round): its steps may use them and may not define them again. Raises
    :class:`PlanError` for anything the grammar does not allow (see the module docstring);
    never any other exception for any string.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_plan takes the planner's text (str), not {type(text).__name__}")
    known = _tool_names(tools)
    steps = _parse(text, None if known is None else set(known), known, dict.fromkeys(defined, 0))
    if not steps:
        raise PlanError("no step found: a plan needs at least one 'Plan: <text>' followed by "
                        "'#E1 = <tool>[<input>]'")
    return Plan(tuple(steps))


def _parse(text: str, known: set[str] | None, known_list: list[str] | None, defined: dict[str, int],
           first_line: int = 0, ends: list[int] | None = None) -> list[Step]:
    """The steps of ``text`` (maybe none), as :func:`parse_plan` reads them. ``defined``: var ->
    line it is defined on (0: an earlier round), updated with the new steps; ``first_line``:
    lines before ``text`` (added to every line number, for :class:`PlanStream`); ``ends`` gets
    the 0-based row of ``text`` where each step's input closes."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    steps: list[Step] = []
    pending: list[str] | None = None  # description lines of a "Plan:" still waiting for its step
    pending_line = 0
    row = 0
    while row < len(lines):
        raw = lines[row]
        stripped = raw.strip()
        lineno = row + 1 + first_line
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
        elif _STEP_LIKE_RE.search(stripped):
            raise PlanError(f"{stripped[:60]!r} looks like a step but is not written "
                            "'#E<n> = <tool>[<input>]' at the start of its line", lineno)
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
        if len(head.group(1)) > _MAX_VAR_DIGITS:
            raise PlanError(f"variable '#E{head.group(1)[:12]}...' has more than {_MAX_VAR_DIGITS} digits", lineno)
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
        step_input, end_row, end_col = _scan_input(lines, row, bracket, first_line)
        trailing = lines[end_row][end_col:].strip()
        if trailing:
            raise PlanError(f"{var}: unexpected text {trailing[:40]!r} after the ']' that closes "
                            "the tool input", end_row + 1 + first_line)
        if var in defined:
            first = f"line {defined[var]}" if defined[var] else "an earlier round of the plan"
            raise PlanError(f"{var} is defined twice (first in {first})", lineno)
        if known is not None and tool not in known:
            close = difflib.get_close_matches(tool, known_list, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise PlanError(f"{var}: unknown tool '{tool}'.{hint} Known tools: "
                            f"{', '.join(known_list) if known_list else '(none)'}", lineno)
        step_input = step_input.strip()
        deps = references(step_input)
        for dep in deps:
            if dep == var:
                raise PlanError(f"{var} references itself; a step can only use variables "
                                "defined before it", lineno)
            if dep not in defined:
                later = _defined_later(lines, end_row + 1, dep)
                where = f"defined later (line {later + first_line})" if later else "never defined"
                raise PlanError(f"{var} references {dep}, which is {where}; a step can only use "
                                "variables defined before it", lineno)
        description = " ".join(p for p in (pending or []) if p)
        steps.append(Step(var=var, tool=tool, input=step_input, description=description,
                          deps=tuple(deps), line=lineno))
        defined[var] = lineno
        if ends is not None:
            ends.append(end_row)
        pending = None
        row = end_row + 1
    return steps


def _defined_later(lines: list[str], start: int, var: str) -> int | None:
    """The line (1-based) at or after ``start`` where ``var`` is defined, if any (for messages)."""
    pat = re.compile(re.escape(var) + r"(?!\d)\s*=")
    for i in range(start, len(lines)):
        if pat.search(lines[i]):
            return i + 1
    return None


class PlanStream:
    """The steps of a plan while its text is still arriving (streamed dispatch).

        stream = PlanStream(tools)
        for piece in engine.complete_stream(prompt):
            for step in stream.feed(piece):   # each step once, as soon as its line is complete
                start(step)
        plan = stream.close()                 # the whole plan; PlanError as parse_plan raises

    A step is complete when the line after its closing ``]`` has begun (or at ``close``). A
    feed that ends a line holding ``#`` or ``]`` parses the text after the steps already handed
    out, up to its last newline, as :func:`parse_plan` does (each line is parsed about once); a
    text that does not parse yet (a bracket still open, no step so far) yields nothing until it
    does. ``close`` parses the rest: the steps handed out are the plan's first steps by
    construction, and the plan is what :func:`parse_plan` gives for the whole text.
    """

    def __init__(self, tools: Iterable | Mapping | None = None, defined: Iterable[str] = ()):
        self.tools = _tool_names(tools)
        self._known = None if self.tools is None else set(self.tools)
        self.defined = tuple(defined)
        self._defined: dict[str, int] = dict.fromkeys(self.defined, 0)  # and the handed-out steps' lines
        self.text = ""
        self.steps: list[Step] = []
        self._parsed_upto = 0
        self._start = 0  # where the text after the last handed-out step begins (a line start)
        self._start_line = 0  # lines before it

    def _parse_rest(self, upto: int | None = None, ends: list[int] | None = None) -> list[Step]:
        """The steps in the text after those handed out (up to ``upto``); PlanError as parse_plan."""
        defined = dict(self._defined)  # updated only when the steps are handed out
        return _parse(self.text[self._start:upto], self._known, self.tools, defined, self._start_line, ends)

    def feed(self, piece: str) -> list[Step]:
        self.text += piece
        if "\n" not in piece:
            return []
        upto = self.text.rfind("\n")
        if upto <= self._parsed_upto:
            return []
        fresh = self.text[self._parsed_upto:upto]
        self._parsed_upto = upto
        if "#" not in fresh and "]" not in fresh:  # no step line ended here (a description line)
            return []
        ends: list[int] = []
        try:  # only the text after the steps already handed out: each line is parsed about once
            new = self._parse_rest(upto, ends)
        except PlanError:
            return []
        if not new:
            return []
        # the step's input may span lines: the next text starts after the line holding its "]"
        lines_used = ends[-1] + 1
        cut = self._start
        for _ in range(lines_used):
            cut = self.text.index("\n", cut) + 1
        self._start, self._start_line = cut, self._start_line + lines_used
        self._hand_out(new)
        return new

    def _hand_out(self, steps: list[Step]) -> None:
        self.steps += steps
        for st in steps:
            self._defined[st.var] = st.line

    def close(self) -> Plan:
        """The whole plan: the steps handed out, then those of the rest of the text (the last
        step's line may have had no newline after it). PlanError as :func:`parse_plan` raises."""
        rest = self._parse_rest()
        if not self.steps and not rest:
            raise PlanError("no step found: a plan needs at least one 'Plan: <text>' followed by "
                            "'#E1 = <tool>[<input>]'")
        return Plan(tuple(self.steps + rest))
