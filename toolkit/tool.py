"""``Tool``, the ``@tool`` decorator, ``ToolError`` and argument validation.

A tool is what a worker calls with a plan step's input:

    class Shout(Tool):
        name = "shout"
        description = "Upper-case a text."
        inputs = {"text": {"type": "string", "description": "the text to shout"}}
        output_type = "string"

        def forward(self, text):
            return text.upper()

    Shout()(text="hi")  # -> "HI"

or, from a typed function with a Google-style docstring:

    @tool
    def shout(text: str) -> str:
        '''Upper-case a text.

        Args:
            text: the text to shout
        '''
        return text.upper()

Both are checked when they are defined (name, description, input types, ``forward``'s signature
against ``inputs``), and every call is checked against ``inputs`` before ``forward`` runs. A
``forward`` that raises becomes a :class:`ToolError` naming the tool and its arguments.
"""

from __future__ import annotations

import inspect
import json
import keyword
import re
import threading
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "Tool", "tool", "ToolError", "ToolArgumentError", "ToolDefinitionError",
    "validate_arguments", "INPUT_TYPES", "OUTPUT_TYPES",
]

# The transformers-Agents input types. "any" accepts every value.
INPUT_TYPES = ("string", "integer", "number", "boolean", "array", "object", "any")
# A tool may also return nothing ("null", from a ``-> None`` hint).
OUTPUT_TYPES = INPUT_TYPES + ("null",)
# The JSON Schema type of each input type; "any" has none (no constraint). The same mapping as
# pipeline.formats, so a tool's own schema and the prompt's schema agree.
_JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
               "array": "array", "object": "object", "any": None, "null": "null"}
# Keys an ``inputs`` entry may carry besides "type" and "description".
_OPTIONAL_INPUT_KEYS = ("nullable", "enum", "items", "default", "contentMediaType")


class ToolDefinitionError(TypeError):
    """A tool is defined wrongly (raised when the class or ``@tool`` function is defined)."""


class ToolError(RuntimeError):
    """A tool call failed. ``tool`` is the tool's name, ``arguments`` what it was called with;
    the original exception is ``__cause__``."""

    def __init__(self, tool: str, arguments: Mapping[str, Any], message: str):
        self.tool = tool
        self.arguments = dict(arguments)
        self.message = message
        super().__init__(f"tool {tool!r} failed with arguments {_short_repr(self.arguments)}: {message}")


class ToolArgumentError(ToolError, ValueError):
    """The arguments do not fit the tool's inputs; raised before the tool runs. ``schema`` is the
    tool's JSON Schema for its arguments, also quoted in the message."""

    def __init__(self, tool: str, arguments: Mapping[str, Any], problems: list[str], schema: dict):
        self.problems = list(problems)
        self.schema = schema
        msg = "; ".join(problems) + f". Expected arguments as in {json.dumps(schema, ensure_ascii=False)}"
        super().__init__(tool, arguments, msg)


def _short_repr(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...}"


# --------------------------------------------------------------------------------------------
# Validation of definitions
# --------------------------------------------------------------------------------------------

def _check_definition(cls: type) -> None:
    """Every problem of a Tool subclass, collected, in one ToolDefinitionError."""
    where = f"tool class {cls.__qualname__}"
    problems: list[str] = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        problems.append(f"`name` must be a Python identifier such as 'search_wiki', got {name!r}")
    desc = getattr(cls, "description", None)
    if not isinstance(desc, str) or not desc.strip():
        problems.append("`description` must be a non-empty string that says what the tool does")
    out = getattr(cls, "output_type", None)
    if out not in OUTPUT_TYPES:
        problems.append(f"`output_type` must be one of {', '.join(OUTPUT_TYPES)}, got {out!r}")
    inputs = getattr(cls, "inputs", None)
    if not isinstance(inputs, Mapping):
        problems.append("`inputs` must be a dict {argument: {'type': ..., 'description': ...}}, "
                        f"got {type(inputs).__name__}")
        inputs = {}
    for arg, spec in inputs.items():
        if not isinstance(arg, str) or not arg.isidentifier() or keyword.iskeyword(arg):
            problems.append(f"input name {arg!r} is not a Python identifier")
            continue
        if not isinstance(spec, Mapping):
            problems.append(f"input {arg!r} must be a dict with 'type' and 'description', got {spec!r}")
            continue
        if spec.get("type") not in INPUT_TYPES:
            problems.append(f"input {arg!r} has type {spec.get('type')!r}; use one of {', '.join(INPUT_TYPES)}")
        if not isinstance(spec.get("description"), str) or not spec["description"].strip():
            problems.append(f"input {arg!r} needs a non-empty 'description'")
        unknown = sorted(set(spec) - {"type", "description", *_OPTIONAL_INPUT_KEYS})
        if unknown:
            problems.append(f"input {arg!r} has unknown keys {unknown}; allowed: type, description, "
                            + ", ".join(_OPTIONAL_INPUT_KEYS))
        if "nullable" in spec and not isinstance(spec["nullable"], bool):
            problems.append(f"input {arg!r}: 'nullable' must be True or False")
    forward = getattr(cls, "forward", None)
    if forward is None or forward is Tool.forward:
        problems.append("define `forward(self, ...)` with one parameter per input")
    else:
        problems += _check_forward(forward, inputs)
    if problems:
        raise ToolDefinitionError(f"{where} is invalid:\n- " + "\n- ".join(problems))


def _check_forward(forward: Callable, inputs: Mapping) -> list[str]:
    sig = inspect.signature(forward)
    params = [p for p in sig.parameters.values()][1:]  # drop self
    problems = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            problems.append(f"`forward` may not take *{p.name} or **{p.name}; name each input")
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    missing = [a for a in inputs if a not in names]
    extra = [n for n in names if n not in inputs]
    if missing:
        problems.append(f"`forward` lacks parameters for inputs {missing}")
    if extra:
        problems.append(f"`forward` has parameters {extra} that `inputs` does not describe")
    for p in params:
        spec = inputs.get(p.name)
        if not isinstance(spec, Mapping):
            continue
        optional = spec.get("nullable", False) or "default" in spec
        if optional and p.default is p.empty:
            problems.append(f"input {p.name!r} is nullable; give `forward`'s parameter a default")
        if not optional and p.default is not p.empty:
            problems.append(f"`forward`'s parameter {p.name!r} has a default; mark the input "
                            "'nullable': True so callers may leave it out")
    return problems


# --------------------------------------------------------------------------------------------
# Validation of calls
# --------------------------------------------------------------------------------------------

def _type_ok(value: Any, type_name: str) -> bool:
    if type_name == "any":
        return True
    if type_name == "string":
        return isinstance(value, str)
    if type_name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "boolean":
        return isinstance(value, bool)
    if type_name == "array":
        return isinstance(value, (list, tuple))
    if type_name == "object":
        return isinstance(value, Mapping)
    return False


def validate_arguments(tool: Any, arguments: Mapping[str, Any]) -> dict:
    """Check ``arguments`` against ``tool.inputs``; return them as a dict.

    Refused (one :class:`ToolArgumentError` listing every problem, with the tool's JSON Schema):
    a missing required argument, an unknown argument, a value of the wrong type (``True`` is not
    an integer), ``None`` for an input that is not nullable, a value outside an ``enum``.
    """
    if not isinstance(arguments, Mapping):
        raise ToolArgumentError(tool.name, {}, [f"arguments must be a dict, got {type(arguments).__name__}"],
                                parameters_schema(tool.inputs))
    args = dict(arguments)
    problems = []
    for arg, spec in tool.inputs.items():
        if arg not in args:
            if not (spec.get("nullable") or "default" in spec):
                problems.append(f"missing required argument {arg!r} ({spec['type']})")
            continue
        value = args[arg]
        if value is None:
            if not spec.get("nullable"):
                problems.append(f"argument {arg!r} may not be None")
            continue
        if not _type_ok(value, spec["type"]):
            problems.append(f"argument {arg!r} must be {spec['type']}, got {type(value).__name__} {_short_repr(value, 60)}")
        elif "enum" in spec and value not in spec["enum"]:
            problems.append(f"argument {arg!r} must be one of {spec['enum']}, got {value!r}")
    unknown = [a for a in args if a not in tool.inputs]
    if unknown:
        problems.append(f"unknown arguments {unknown}; {tool.name} takes {list(tool.inputs) or 'no arguments'}")
    if problems:
        raise ToolArgumentError(tool.name, args, problems, parameters_schema(tool.inputs))
    return args


def parameters_schema(inputs: Mapping[str, Mapping]) -> dict:
    """The JSON Schema object of a tool's arguments (as ``pipeline.formats`` builds it)."""
    props, required = {}, []
    for arg, spec in inputs.items():
        prop: dict[str, Any] = {}
        jtype = _JSON_TYPES.get(spec.get("type", "any"), spec.get("type"))
        if jtype:
            prop["type"] = jtype
        if spec.get("description"):
            prop["description"] = spec["description"]
        for key in ("enum", "items", "default", "contentMediaType"):
            if key in spec:
                prop[key] = spec[key]
        props[arg] = prop
        if not spec.get("nullable", False) and "default" not in spec:
            required.append(arg)
    return {"type": "object", "properties": props, "required": required}


def tool_output_text(value: Any) -> str:
    """A tool's output as text: strings as they are, JSON for data, ``str`` otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple, int, float, bool)) or value is None:
        try:
            return json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            pass
    return str(value)


# --------------------------------------------------------------------------------------------
# Tool
# --------------------------------------------------------------------------------------------

class Tool:
    """Base class of every tool. Subclasses set the class attributes and define ``forward``.

    - ``name``: a Python identifier; the planner writes it as ``name[input]``.
    - ``description``: what the tool does and returns, for the prompts.
    - ``inputs``: ``{arg: {"type": one of INPUT_TYPES, "description": str, "nullable"?: bool,
      "enum"?: [...]}}``; ``forward`` takes exactly these parameters (nullable ones with a default).
    - ``output_type``: one of OUTPUT_TYPES.
    - ``setup()``: expensive preparation, run once, lazily, before the first call (thread-safe).

    A class meant only to be subclassed further declares ``class Base(Tool, abstract=True)``.
    """

    name: str = ""
    description: str = ""
    inputs: dict[str, dict[str, Any]] = {}
    output_type: str = "string"

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(**kwargs)
        if not abstract:
            _check_definition(cls)

    def __init__(self) -> None:
        self.is_initialized = False
        self._setup_lock = threading.Lock()

    def setup(self) -> None:
        """Override for one-time preparation (open an index, load a model). Runs before the
        first call, not at construction."""

    def forward(self, *args, **kwargs):  # pragma: no cover - replaced by every concrete tool
        raise NotImplementedError

    def _ensure_setup(self) -> None:
        if self.is_initialized:
            return
        lock = self.__dict__.get("_setup_lock")
        if lock is None:  # a subclass __init__ that did not call super().__init__()
            lock = self.__dict__.setdefault("_setup_lock", threading.Lock())
        with lock:
            if not getattr(self, "is_initialized", False):
                self.setup()
                self.is_initialized = True

    def __call__(self, *args, **kwargs):
        """Call the tool: ``tool(**inputs)``, or ``tool(value)`` for a tool with one input (or
        one required input).

        Arguments are validated first (:class:`ToolArgumentError`); an exception raised by
        ``setup`` or ``forward`` becomes a :class:`ToolError` naming this tool and the arguments.
        """
        if args:
            required = [a for a, spec in self.inputs.items() if not (spec.get("nullable") or "default" in spec)]
            if len(args) == 1 and not kwargs and (len(self.inputs) == 1 or len(required) == 1):
                kwargs = {(required or list(self.inputs))[0]: args[0]}
            else:
                raise ToolArgumentError(self.name, {"args": list(args), **kwargs},
                                        ["call a tool with keyword arguments, tool(arg=value, ...)"],
                                        parameters_schema(self.inputs))
        arguments = validate_arguments(self, kwargs)
        try:
            self._ensure_setup()
            return self.forward(**arguments)
        except ToolError as e:
            if e.tool == self.name:
                raise
            raise ToolError(self.name, arguments, str(e)) from e
        except Exception as e:
            raise ToolError(self.name, arguments, f"{type(e).__name__}: {e}") from e

    # -- descriptions --------------------------------------------------------------------------

    def parameters_schema(self) -> dict:
        """JSON Schema of the arguments: ``{"type": "object", "properties", "required"}``."""
        return parameters_schema(self.inputs)

    def to_openai_schema(self) -> dict:
        """The OpenAI function-calling form, equal to ``pipeline.formats.tool_spec(tool).to_openai()``."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": self.parameters_schema()}}

    def to_json_schema(self) -> dict:
        """``{"name", "description", "parameters"}``."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters_schema()}

    def rewoo_line(self) -> str:
        """The planner's tool line ``name[input]: description`` (one line). For tools with several
        or non-string inputs ``pipeline.formats.tool_line`` also lists the arguments."""
        return f"{self.name}[input]: {' '.join(self.description.split())}"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}: {v['type']}" for k, v in self.inputs.items())
        return f"<{type(self).__name__} {self.name}({args}) -> {self.output_type}>"


# --------------------------------------------------------------------------------------------
# @tool
# --------------------------------------------------------------------------------------------

_SECTION_RE = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Return|Yields|Raises|Examples?|Notes?)\s*:\s*$")
_ARG_RE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """``(description, {arg: description})`` from a Google-style docstring."""
    lines = inspect.cleandoc(doc).splitlines()
    description, args = [], {}
    section = None
    arg_indent = None
    current = None
    for line in lines:
        m = _SECTION_RE.match(line)
        if m:
            section = m.group(1)
            arg_indent, current = None, None
            continue
        if section is None:
            description.append(line)
        elif section in ("Args", "Arguments", "Parameters"):
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            am = _ARG_RE.match(line)
            if am and (arg_indent is None or indent <= arg_indent):
                arg_indent = indent
                current = am.group(1).lstrip("*")
                args[current] = am.group(3).strip()
            elif current is not None:
                args[current] = (args[current] + " " + line.strip()).strip()
    return "\n".join(description).strip(), args


def _input_type(hint: Any, where: str) -> tuple[str, bool, list | None]:
    """``(input type, nullable, enum)`` of a type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(hint))
        if len(members) == 1:
            t, _, enum = _input_type(members[0], where)
            return t, nullable, enum
        if all(m in (int, float) for m in members):
            return "number", nullable, None
        return "any", nullable, None
    if origin is typing.Literal:
        values = list(typing.get_args(hint))
        kinds = {_input_type(type(v), where)[0] for v in values}
        return (kinds.pop() if len(kinds) == 1 else "any"), False, values
    if hint is Any:
        return "any", False, None
    base = origin or hint
    table = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
             tuple: "array", set: "array", dict: "object"}
    if base in table:
        return table[base], False, None
    if isinstance(base, type) and issubclass(base, Mapping):
        return "object", False, None
    raise ToolDefinitionError(f"{where} has type hint {hint!r}, which has no tool input type; use "
                              "str, int, float, bool, list, dict, Any, a Literal or Optional of these")


def tool(fn: Callable | None = None, *, name: str | None = None) -> Tool:
    """Make a :class:`Tool` from a typed function with a Google-style docstring.

    The docstring's text before ``Args:`` is the description; ``Args:`` has one ``arg: what it
    is`` line per parameter. Every parameter and the return value need a type hint. A parameter
    with a default (or an ``Optional`` hint with a default) is nullable.

    ``@tool`` or ``@tool(name="other_name")``.
    """
    if fn is None:
        return lambda f: tool(f, name=name)  # type: ignore[return-value]
    if not callable(fn) or not hasattr(fn, "__code__"):
        raise ToolDefinitionError(f"@tool decorates a function, got {fn!r}")
    where = f"@tool function {fn.__qualname__}"
    problems = []
    doc = inspect.getdoc(fn)
    if not doc:
        raise ToolDefinitionError(f"{where} has no docstring; add one that says what the tool does, "
                                  "with an `Args:` section naming each parameter")
    description, arg_docs = _parse_docstring(doc)
    if not description:
        problems.append("its docstring has no description before `Args:`")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as e:
        raise ToolDefinitionError(f"{where}: cannot resolve its type hints ({e})") from e
    if "return" not in hints:
        problems.append("it has no return type hint; add one, e.g. `-> str`")
    sig = inspect.signature(fn)
    inputs: dict[str, dict] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            problems.append(f"it takes *{p.name}/**{p.name}; a tool names each of its inputs")
            continue
        if p.name not in hints:
            problems.append(f"parameter {p.name!r} has no type hint; add one, e.g. `{p.name}: str`")
            continue
        if p.name not in arg_docs or not arg_docs[p.name]:
            problems.append(f"its docstring has no `Args:` entry for {p.name!r}; add a line "
                            f"`{p.name}: <what it is>` under `Args:`")
            continue
        try:
            itype, nullable, enum = _input_type(hints[p.name], f"{where}, parameter {p.name!r},")
        except ToolDefinitionError as e:
            problems.append(str(e))
            continue
        spec: dict[str, Any] = {"type": itype, "description": arg_docs[p.name]}
        if enum is not None:
            spec["enum"] = enum
        if p.default is not p.empty:
            spec["nullable"] = True
        elif nullable:
            problems.append(f"parameter {p.name!r} is Optional; give it a default (e.g. `= None`)")
        inputs[p.name] = spec
    stale = [a for a in arg_docs if a not in sig.parameters]
    if stale:
        problems.append(f"its `Args:` section documents {stale}, which are not parameters")
    output_type = "any"
    if "return" in hints:
        ret = hints["return"]
        if ret is None or ret is type(None):
            output_type = "null"
        else:
            try:
                output_type = _input_type(ret, f"{where}, return value,")[0]
            except ToolDefinitionError as e:
                problems.append(str(e))
    if problems:
        raise ToolDefinitionError(f"{where} cannot be a tool:\n- " + "\n- ".join(problems))

    func = fn
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + list(sig.parameters.values())

    def forward(self, **kwargs):
        return func(**kwargs)

    forward.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    attrs = {"name": name or fn.__name__, "description": description, "inputs": inputs,
             "output_type": output_type, "forward": forward, "__doc__": fn.__doc__,
             "__module__": fn.__module__}
    cls = type(f"{fn.__name__}_Tool", (Tool,), attrs)
    instance = cls()
    instance.__wrapped__ = fn  # type: ignore[attr-defined]
    return instance
