"""Tool catalogs for dataset generation: load, validate, fill placeholders.

A catalog is what the generator knows about a toolbox: each tool's :class:`~pipeline.formats.ToolSpec`
(name, description, JSON-schema parameters) plus, optionally, *examples*: a goal phrase and the
arguments that carry it out, with ``{slot}`` placeholders drawn from the catalog's ``slots`` and
``{ref}`` where the step uses the evidence of an earlier step::

    {"goal": "translate {ref} into {language}", "takes": "text", "gives": "text",
     "args": {"text": "{ref}", "target_language": "{language}"}}

``gives`` names what the example's evidence is (``text`` when absent) and ``takes`` what its
``{ref}`` must be (``any`` when absent), so the generator chains a step only onto evidence that
fits it (:func:`fits`): the coordinates of *a city*, never "the latest results of the current time".

Sources (``load_catalog``):

- ``data/catalog/tools.json``: ``{"slots": {...}, "tools": [...]}`` (the shipped catalog);
- a JSON list or a JSONL file of tool dicts (OpenAI function schemas or name/description/parameters);
- ``FILE.py:NAME`` or ``module:NAME``: a user's own toolbox (a ``toolkit.Toolbox``, a mapping or a
  list of tools with ``name``/``description``/``inputs``).

Tools without examples get examples synthesised from their schema (:func:`schema_examples`), so a
user's toolbox needs nothing beyond what ``formats.tool_spec`` reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from pipeline import formats

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
REF = "ref"  # the placeholder for earlier evidence

# Slot values used when a catalog brings none (a user toolbox) or lacks a slot a schema asks for.
DEFAULT_SLOTS: dict[str, list] = {
    "topic": ["solar power", "the Roman Empire", "machine translation", "volcanoes", "jazz history",
              "electric cars", "deep sea fish", "the stock market"],
    "person": ["Marie Curie", "Alan Turing", "Ada Lovelace", "Nelson Mandela", "Hayao Miyazaki"],
    "city": ["Paris", "Tokyo", "Nairobi", "Lima", "Toronto", "Berlin"],
    "country": ["France", "Japan", "Kenya", "Peru", "Canada"],
    "film": ["Oppenheimer", "Spirited Away", "Parasite", "Inception"],
    "file": ["notes.txt", "report.md", "out/result.txt"],
    "url": ["https://example.com/page", "https://example.org/docs"],
    "date": ["2025-03-14", "2025-06-01", "2025-09-22"],
    "time": ["09:00", "13:30", "18:45"],
    "email": ["alex@example.com", "team@example.org"],
    "language": ["French", "Japanese", "Spanish"],
    "symbol": ["NVDA", "AAPL", "MSFT"],
    "currency": ["USD", "EUR", "JPY"],
}
# Argument-name hints -> slot, for tools without examples.
_NAME_HINTS = [
    (("city", "town"), "city"), (("country", "nation"), "country"), (("path", "file", "filename"), "file"),
    (("url", "link", "href"), "url"), (("date", "day"), "date"), (("time",), "time"),
    (("email", "recipient", "to"), "email"), (("lang", "language"), "language"),
    (("person", "author", "name", "who"), "person"), (("title", "movie", "film"), "film"),
    (("symbol", "ticker"), "symbol"), (("currency",), "currency"),
]


# What evidence fits an input that asks for a type, beyond the type itself: a ``text`` input takes a
# list too (a summary of search results), a ``place`` a city, a country or an address, a
# ``subject`` (something to look up or search for) any named thing. ``any`` takes everything.
ACCEPTS: dict[str, frozenset] = {
    "text": frozenset({"list"}),
    "place": frozenset({"city", "country", "address"}),
    "subject": frozenset({"person", "city", "country", "company", "film", "topic"}),
}
TYPE_RE = re.compile(r"[a-z][a-z_]*")


def fits(takes: str, gives: str) -> bool:
    """True when evidence of type ``gives`` can be the ``{ref}`` of an input that ``takes``."""
    return takes == "any" or takes == gives or gives in ACCEPTS.get(takes, ())


class CatalogError(ValueError):
    """A catalog that cannot be used; the message names the source and the tool."""


@dataclass(frozen=True)
class Example:
    """One way to use a tool: a goal phrase and its arguments, both with placeholders."""

    goal: str
    args: dict
    gives: str = "text"  # the type of the evidence this use returns
    takes: str = "any"   # the type its {ref} must be (examples that use earlier evidence)

    @property
    def uses_ref(self) -> bool:
        """True when the example consumes an earlier step's evidence (``{ref}``)."""
        return REF in PLACEHOLDER_RE.findall(self.goal + json.dumps(self.args))


@dataclass(frozen=True)
class CatalogTool:
    """A tool as the generator sees it."""

    spec: formats.ToolSpec
    examples: tuple[Example, ...]
    domain: str = "general"
    builtin: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Catalog:
    """Tools (in a stable order) and the slot values their placeholders draw from."""

    tools: list[CatalogTool]
    slots: dict[str, list] = field(default_factory=dict)
    source: str = ""
    # Slots drawn together (the same position in each list): ["unit_from", "unit_to"] pairs miles
    # with kilometers, never with celsius.
    linked: list[list[str]] = field(default_factory=list)

    def __post_init__(self):
        names = [t.name for t in self.tools]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise CatalogError(f"{self.source}: tools defined more than once: {', '.join(dupes)}")
        merged = dict(DEFAULT_SLOTS)
        merged.update(self.slots)
        self.slots = merged
        for group in self.linked:
            if not (isinstance(group, list) and len(group) > 1 and all(g in self.slots for g in group)):
                raise CatalogError(f"{self.source}: linked_slots {group!r} must list two or more known slots")
            if len({len(self.slots[g]) for g in group}) != 1:
                raise CatalogError(f"{self.source}: linked_slots {group!r} must have lists of the same length")

    def __getitem__(self, name: str) -> CatalogTool:
        for t in self.tools:
            if t.name == name:
                return t
        raise KeyError(f"no tool {name!r} in the catalog; known: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tools]

    def merged(self, other: "Catalog") -> "Catalog":
        """This catalog's tools, then ``other``'s, with both catalogs' slots and linked slots."""
        return Catalog(self.tools + other.tools, {**self.slots, **other.slots}, f"{self.source} + {other.source}",
                       self.linked + other.linked)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def load_catalog(source: str | Path) -> Catalog:
    """A :class:`Catalog` from a JSON/JSONL file or a ``FILE.py:NAME`` / ``module:NAME`` toolbox."""
    text_src = str(source)
    path = Path(text_src)
    if path.suffix in (".json", ".jsonl") or path.exists():
        if not path.exists():
            raise CatalogError(f"tool catalog {text_src} does not exist")
        return _load_file(path)
    if ":" in text_src:
        return _load_toolbox(text_src)
    raise CatalogError(f"cannot read tools from {text_src!r}: give a .json/.jsonl catalog or "
                       "FILE.py:NAME / module:NAME naming a toolbox")


def _load_file(path: Path) -> Catalog:
    entries: list[tuple[str, Any]] = []  # (where, entry)
    slots: dict = {}
    linked: list = []
    if path.suffix == ".jsonl":
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entries.append((f"{path}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise CatalogError(f"{path}:{lineno}: not JSON ({e.msg})") from e
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CatalogError(f"{path}:{e.lineno}: not JSON ({e.msg})") from e
        if isinstance(data, Mapping) and "tools" in data:
            slots = dict(data.get("slots", {}))
            linked = list(data.get("linked_slots", []))
            data = data["tools"]
        if not isinstance(data, list):
            raise CatalogError(f"{path}: expected a list of tools or {{'slots', 'tools'}}")
        entries = [(f"{path} tool #{i + 1}", e) for i, e in enumerate(data)]
    tools = [_catalog_tool(entry, where) for where, entry in entries]
    return Catalog(tools, slots, str(path), linked)


def _catalog_tool(entry: Any, where: str) -> CatalogTool:
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where}: a tool must be a JSON object, got {type(entry).__name__}")
    try:
        spec = formats.tool_spec(entry)
        jsonschema.Draft202012Validator.check_schema(spec.parameters)
    except (ValueError, TypeError, jsonschema.SchemaError) as e:
        raise CatalogError(f"{where}: {getattr(e, 'message', e)}") from e
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", spec.name):
        raise CatalogError(f"{where}: tool name {spec.name!r} cannot appear in a plan "
                           "(letters, digits, '_', '.', '-'; not starting with a digit)")
    raw = entry.get("examples") or []
    examples = []
    for j, ex in enumerate(raw):
        if not isinstance(ex, Mapping) or "goal" not in ex or not isinstance(ex.get("args", {}), Mapping):
            raise CatalogError(f"{where} ({spec.name}): example #{j + 1} needs 'goal' (text) and "
                               "'args' (an object)")
        unknown = set(ex.get("args", {})) - set(spec.parameters.get("properties", {}))
        if unknown:
            raise CatalogError(f"{where} ({spec.name}): example #{j + 1} has arguments "
                               f"{sorted(unknown)} that the schema lacks; valid: "
                               f"{sorted(spec.parameters.get('properties', {}))}")
        types = {k: ex.get(k, d) for k, d in (("gives", "text"), ("takes", "any"))}
        bad = {k: v for k, v in types.items() if not (isinstance(v, str) and TYPE_RE.fullmatch(v))}
        if bad:
            raise CatalogError(f"{where} ({spec.name}): example #{j + 1} has type {bad} that is not a "
                               "lower-case word (such as 'city', 'number', 'text')")
        example = Example(ex["goal"], dict(ex.get("args", {})), **types)
        if "takes" in ex and not example.uses_ref:
            raise CatalogError(f"{where} ({spec.name}): example #{j + 1} says what it 'takes' but "
                               "uses no {ref}")
        examples.append(example)
    if not examples:
        examples = schema_examples(spec)
    builtin = bool(entry.get("builtin"))
    if builtin:
        spec = _toolbox_spec(spec)
    return CatalogTool(spec, tuple(examples), entry.get("domain", "general"), builtin)


def _toolbox_spec(spec: formats.ToolSpec) -> formats.ToolSpec:
    """A built-in tool as the toolbox describes it (name, description, parameters), so generated
    rows list it exactly as the pipeline's prompts will; the catalog entry keeps only its examples.
    An entry marked built-in whose name the toolbox lacks keeps its own spec."""
    from toolkit import default_toolbox  # noqa: PLC0415
    from toolkit.toolbox import BUILTIN_TOOL_NAMES  # noqa: PLC0415

    if spec.name not in BUILTIN_TOOL_NAMES:
        return spec
    return formats.tool_spec(default_toolbox(tools=[spec.name])[spec.name])


def _load_toolbox(spec: str) -> Catalog:
    from toolkit import load_toolbox  # noqa: PLC0415  (the stack's one way to name a toolbox)

    try:
        box = load_toolbox(spec)
    except ValueError as e:
        raise CatalogError(str(e)) from e
    tools = [CatalogTool(s, tuple(schema_examples(s))) for s in formats.tool_specs(box)]
    if not tools:
        raise CatalogError(f"{spec}: the toolbox has no tools")
    return Catalog(tools, {}, spec)


# --------------------------------------------------------------------------------------------
# Examples from a schema, and filling placeholders
# --------------------------------------------------------------------------------------------

def _slot_for(arg: str) -> str:
    low = arg.lower()
    for keys, slot in _NAME_HINTS:
        if any(k == low or low.endswith("_" + k) or low.startswith(k + "_") or (len(k) > 3 and k in low)
               for k in keys):
            return slot
    return "topic"


def schema_examples(spec: formats.ToolSpec) -> list[Example]:
    """Examples for a tool that brings none: one from fresh values, one on earlier evidence.

    Goals read ``use <tool> on <value>``; arguments take a slot chosen by the argument's name
    (``city`` -> a city, ``path`` -> a file) or a typed placeholder (``{int:1:10}``, enums).
    """
    props = spec.parameters.get("properties", {})
    required = spec.parameters.get("required", list(props))
    if not props:
        return [Example(f"use {spec.name}", {})]
    fresh, on_ref = {}, {}
    ref_taken = False
    for arg, schema in props.items():
        if arg not in required:
            continue
        kind = schema.get("type", "string")
        if "enum" in schema:
            value = "{enum}"
        elif kind == "integer":
            value = f"{{int:{schema.get('minimum', 1)}:{min(schema.get('maximum', 10), schema.get('minimum', 1) + 20)}}}"
        elif kind == "number":
            value = "{number}"
        elif kind == "boolean":
            value = "{bool}"
        elif kind == "array":
            value = "{list}"
        elif kind == "object":
            value = "{object}"
        else:
            value = "{" + _slot_for(arg) + "}"
        fresh[arg] = value
        if kind == "string" and "enum" not in schema and not ref_taken:
            on_ref[arg], ref_taken = "{ref}", True
        else:
            on_ref[arg] = value
    first = next((v for v in fresh.values() if PLACEHOLDER_RE.fullmatch(v)), "")
    examples = [Example(f"use {spec.name} on {first}".strip() if first else f"use {spec.name}", fresh)]
    if ref_taken:
        examples.append(Example(f"use {spec.name} on {{ref}}", on_ref))
    return examples


def _typed_value(key: str, schema: Mapping, rng) -> Any:
    if key == "enum":
        return rng.choice(schema["enum"])
    if key.startswith("int:"):
        lo, hi = (int(x) for x in key.split(":")[1:])
        return rng.randint(lo, hi)
    if key == "number":
        return rng.choice([1.5, 10, 42, 99.9, 250])
    if key == "bool":
        return rng.random() < 0.5
    if key == "list":
        item = schema.get("items", {}).get("type", "string")
        return [rng.randint(1, 9) for _ in range(2)] if item in ("integer", "number") else rng.sample(DEFAULT_SLOTS["topic"], 2)
    if key == "object":
        return {}
    raise KeyError(key)


_TYPED_RE = re.compile(r"\{(enum|int:-?\d+:-?\d+|number|bool|list|object)\}")


def fill_example(example: Example, spec: formats.ToolSpec, slots: Mapping[str, list], rng,
                 ref_args: str | None, ref_goal: str = "it", distinct: bool = False,
                 linked: list[list[str]] = ()) -> tuple[str, dict]:
    """``(goal, args)`` with every placeholder filled: ``{slot}`` by one value per slot (the same
    in goal and args), ``{ref}`` by ``ref_args`` in arguments (an evidence variable such as
    ``#E1``) and by ``ref_goal`` in the goal. An argument that is only ``{slot}`` keeps the slot
    value's JSON type; an integer or number argument written as text is converted. The filled
    arguments are validated against the tool's schema (``jsonschema.ValidationError`` otherwise).

    ``distinct``: values that make sense together: slots in a ``linked`` group are drawn at one
    position, and no two arguments get the same text ("convert 20 EUR to EUR" is drawn again).
    """
    for _ in range(50):
        goal, args = _fill(example, spec, slots, rng, ref_args, ref_goal, linked if distinct else ())
        texts = [str(v).lower() for v in args.values() if isinstance(v, str) and v != ref_args]
        if not distinct or len(texts) == len(set(texts)):
            break
    jsonschema.validate(args, spec.parameters)
    return goal, args


def _fill(example: Example, spec: formats.ToolSpec, slots: Mapping[str, list], rng, ref_args: str | None,
          ref_goal: str, linked) -> tuple[str, dict]:
    chosen: dict[str, Any] = {}
    props = spec.parameters.get("properties", {})

    def value(slot: str, arg_schema: Mapping | None) -> Any:
        if slot == REF:
            if ref_args is None:
                raise ValueError(f"example {example.goal!r} of {spec.name} needs earlier evidence")
            return ref_args
        if slot not in chosen:
            if _TYPED_RE.fullmatch("{" + slot + "}"):
                return _typed_value(slot, arg_schema or {}, rng)
            if slot not in slots:
                raise CatalogError(f"{spec.name}: placeholder {{{slot}}} has no slot values; "
                                   f"known slots: {', '.join(sorted(slots))}")
            group = next((g for g in linked if slot in g), None)
            if group:
                at = rng.randrange(len(slots[slot]))
                chosen.update({g: slots[g][at] for g in group})
            else:
                chosen[slot] = rng.choice(slots[slot])
        return chosen[slot]

    args: dict[str, Any] = {}
    for arg, template in example.args.items():
        schema = props.get(arg, {})
        if not isinstance(template, str):
            args[arg] = template
            continue
        whole = PLACEHOLDER_RE.fullmatch(template) or _TYPED_RE.fullmatch(template)
        if whole:
            v = value(whole.group(1), schema)
        else:
            v = _TYPED_RE.sub(lambda m: str(value(m.group(1), schema)), template)
            v = PLACEHOLDER_RE.sub(lambda m: str(value(m.group(1), schema)), v)
        kind = schema.get("type")
        if kind == "integer" and isinstance(v, str) and re.fullmatch(r"-?\d+", v):
            v = int(v)
        elif kind == "number" and isinstance(v, str) and re.fullmatch(r"-?\d+(\.\d+)?", v):
            v = float(v)
        elif kind == "string" and not isinstance(v, str):
            v = str(v)
        args[arg] = v
    # Goal: same slot values; a typed placeholder shows the value its argument got.
    typed_shown = {f"{{{t}}}": str(args[a]) for a, t in example.args.items()
                   if isinstance(t, str) and _TYPED_RE.fullmatch(t)}

    def goal_sub(m: re.Match) -> str:
        if m.group(1) == REF:
            return ref_goal
        return str(value(m.group(1), None))
    goal = example.goal
    for k, v in typed_shown.items():
        goal = goal.replace(k, v)
    return PLACEHOLDER_RE.sub(goal_sub, goal), args
