"""``Toolbox``: the tools an agent may use, by name; loading one from a spec; the default one.

A Toolbox is a read-only Mapping ``name -> Tool`` (``toolbox["search_wiki"]``, ``in``, ``len``,
iteration over names, ``keys()``/``values()``/``items()``) plus the transformers Agents methods
``add_tool``, ``remove_tool``, ``update_tool``, ``clear_toolbox`` and
``show_tool_descriptions``.

``load_toolbox("my_tools.py:TOOLS")`` or ``load_toolbox("package.module:make_tools")`` builds
one from user code (the CLI's ``--tools``); ``load_toolbox("builtin")`` is ``default_toolbox()``,
the built-in tools; ``load_toolbox("mcp:stdio:COMMAND ARGS")`` / ``"mcp:http://host:port/mcp"``
loads an MCP server's tools (:mod:`toolkit.mcp`); a list of specs is one toolbox with them all
(the CLI's repeated ``--tools``). ``Toolbox.close()`` releases what its tools hold (MCP servers,
the Python sandbox).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from toolkit.config import ToolkitConfig
from toolkit.tool import Tool

__all__ = ["Toolbox", "ToolboxSpecError", "load_toolbox", "default_toolbox", "BUILTIN_TOOL_NAMES",
           "DEFAULT_DESCRIPTION_TEMPLATE"]

BUILTIN_TOOL_NAMES = ("get_current_time", "search_wiki", "search_web", "search_bilibili", "save_file",
                      "query_sql", "python_interpreter", "calculator", "llm")

# The transformers Agents tool description, as a str.format template (jinja-style
# ``{{ tool.name }}`` placeholders are accepted too).
DEFAULT_DESCRIPTION_TEMPLATE = ("- {name}: {description}\n"
                                "    Takes inputs: {inputs}\n"
                                "    Returns an output of type: {output_type}\n")
_JINJA_FIELD = re.compile(r"\{\{\s*tool\.(\w+)\s*\}\}")


class ToolboxSpecError(ValueError):
    """A ``--tools`` spec that cannot be loaded; the message says why, in one line."""


class Toolbox(Mapping):
    """Tools by name. ``Toolbox(tools, add_base_tools=False)``: ``tools`` is an iterable of
    Tool instances (or a mapping of them); ``add_base_tools`` adds the built-in tools that are
    not already there. Names are unique: adding a second tool of a name is an error (use
    ``update_tool`` to replace one). Safe to read from several threads while one thread edits.
    """

    def __init__(self, tools: Iterable[Tool] | Mapping[str, Tool] = (), add_base_tools: bool = False):
        self._tools: dict[str, Tool] = {}
        self._lock = threading.RLock()
        if isinstance(tools, Mapping):
            tools = list(tools.values())
        for t in tools:
            self.add_tool(t)
        if add_base_tools:
            for t in default_toolbox().values():
                if t.name not in self._tools:
                    self._tools[t.name] = t

    # -- Mapping ------------------------------------------------------------------------------

    def __getitem__(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise KeyError(f"no tool named {name!r} in the toolbox; known: {', '.join(self._tools) or '(none)'}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._tools))

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"Toolbox([{', '.join(self._tools)}])"

    @property
    def tools(self) -> dict[str, Tool]:
        """A copy of ``{name: tool}``."""
        return dict(self._tools)

    # -- the transformers Agents methods --------------------------------------------------------

    def add_tool(self, tool: Tool) -> None:
        """Add a tool; its name must be new."""
        _check_tool(tool)
        with self._lock:
            if tool.name in self._tools:
                raise ValueError(f"the toolbox already has a tool named {tool.name!r}; use update_tool to replace it")
            self._tools[tool.name] = tool

    def remove_tool(self, tool_name: str) -> None:
        """Remove the tool named ``tool_name``."""
        with self._lock:
            if tool_name not in self._tools:
                raise KeyError(f"cannot remove {tool_name!r}: no such tool; known: {', '.join(self._tools) or '(none)'}")
            del self._tools[tool_name]

    def update_tool(self, tool: Tool) -> None:
        """Replace the tool of the same name."""
        _check_tool(tool)
        with self._lock:
            if tool.name not in self._tools:
                raise KeyError(f"cannot update {tool.name!r}: no such tool; add it with add_tool")
            self._tools[tool.name] = tool

    def clear_toolbox(self) -> None:
        """Remove every tool."""
        with self._lock:
            self._tools.clear()

    def show_tool_descriptions(self, tool_description_template: str | None = None) -> str:
        """Every tool described by the template, joined by newlines. The template uses
        ``{name}``, ``{description}``, ``{inputs}``, ``{output_type}`` (or the jinja-style
        ``{{ tool.name }}`` ...)."""
        template = tool_description_template or DEFAULT_DESCRIPTION_TEMPLATE
        out = []
        for t in self._tools.values():
            fields = {"name": t.name, "description": t.description, "inputs": t.inputs,
                      "output_type": t.output_type}
            if "{{" in template:
                def sub(m, fields=fields):
                    if m.group(1) not in fields:
                        raise ValueError(f"the template names tool.{m.group(1)}; use one of {', '.join(fields)}")
                    return str(fields[m.group(1)])
                out.append(_JINJA_FIELD.sub(sub, template))
            else:
                try:
                    out.append(template.format(**fields))
                except (KeyError, IndexError) as e:
                    raise ValueError(f"the template uses {e}; it may use {{name}}, {{description}}, "
                                     "{inputs} and {output_type}") from e
        return "\n".join(s.rstrip("\n") for s in out)

    def rewoo_lines(self) -> str:
        """One ``name[input]: description`` line per tool."""
        return "\n".join(t.rewoo_line() for t in self._tools.values())

    def subset(self, names: Iterable[str]) -> "Toolbox":
        """A new toolbox with the named tools (the same instances); an unknown name is an error."""
        return Toolbox([self[n] for n in names])

    def close(self) -> None:
        """Call ``close()`` on every tool that has one (an MCP server's tools stop their server,
        ``python_interpreter`` its sandbox). A subset shares its tools with the toolbox it came from."""
        for t in list(self._tools.values()):
            close = getattr(t, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> "Toolbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_tool(tool: Any) -> None:
    if isinstance(tool, type) and issubclass(tool, Tool):
        raise TypeError(f"got the class {tool.__name__}; add an instance, {tool.__name__}()")
    if not isinstance(tool, Tool):
        raise TypeError(f"a toolbox holds Tool instances; got {type(tool).__name__} {tool!r}. "
                        "Wrap a function with @tool first")


# --------------------------------------------------------------------------------------------
# Loading a toolbox from a spec
# --------------------------------------------------------------------------------------------

def _as_toolbox(obj: Any, spec: str, called: bool = False) -> Toolbox:
    if isinstance(obj, Toolbox):
        return obj
    if isinstance(obj, Tool):
        return Toolbox([obj])
    if isinstance(obj, type) and issubclass(obj, Tool):
        return Toolbox([obj()])
    if isinstance(obj, Mapping) and obj and all(isinstance(v, Tool) for v in obj.values()):
        return Toolbox(obj)
    if isinstance(obj, (list, tuple)):
        bad = [x for x in obj if not isinstance(x, Tool)]
        if bad:
            raise ToolboxSpecError(f"{spec}: the list holds {type(bad[0]).__name__} {bad[0]!r}, not a Tool")
        try:
            return Toolbox(obj)
        except ValueError as e:
            raise ToolboxSpecError(f"{spec}: {e}") from e
    if callable(obj) and not called:
        try:
            made = obj()
        except Exception as e:
            raise ToolboxSpecError(f"{spec}: calling it raised {type(e).__name__}: {e}") from e
        return _as_toolbox(made, spec, called=True)
    what = "returned" if called else "is"
    raise ToolboxSpecError(f"{spec} {what} {type(obj).__name__}; expected a Toolbox, a Tool, a list of "
                           "tools, or a function returning one of these")


class NotAPythonFile(ImportError):
    """A path that importlib cannot load as a Python source file."""


def import_file(path: str | Path) -> types.ModuleType:
    """Run the Python file ``path`` as a module, registered in ``sys.modules`` (dataclasses and
    typing look a module up there). An error raised by the file's code propagates, and the
    half-made module is unregistered; a path that cannot be loaded as Python is NotAPythonFile."""
    path = Path(path)
    mod_name = f"_rewoo_user_{re.sub(r'[^0-9a-zA-Z_]', '_', str(path.resolve()))}"
    module_spec = importlib.util.spec_from_file_location(mod_name, path)
    if module_spec is None or module_spec.loader is None:
        raise NotAPythonFile(f"{path} cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[mod_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    return module


def load_toolbox(spec: str | Iterable[str]) -> Toolbox:
    """A Toolbox from ``FILE.py:NAME``, ``module:NAME``, ``builtin`` or ``mcp:SERVER``, or from
    a list of these (one toolbox with every tool; a name two of them define is an error).

    ``NAME`` may be a Toolbox, a list of tools, one Tool (or Tool class), or a function with no
    arguments returning one of these. ``builtin`` is :func:`default_toolbox`. ``mcp:SERVER`` is
    ``mcp:stdio:COMMAND ARGS...`` or ``mcp:http(s)://host:port/mcp`` (see :mod:`toolkit.mcp`).
    Every failure is a :class:`ToolboxSpecError` with a one-line message.
    """
    if not isinstance(spec, str) and isinstance(spec, Iterable):
        return _load_many(list(spec))
    if spec == "builtin":
        return default_toolbox()
    if isinstance(spec, str) and spec.startswith("mcp:"):
        from toolkit.mcp import load_mcp_tools  # noqa: PLC0415  (imports the SDK only when asked)
        return load_mcp_tools(spec)
    if not isinstance(spec, str) or spec.count(":") < 1:
        raise ToolboxSpecError(f"bad tools spec {spec!r}: expected FILE.py:NAME or module:NAME (or builtin, "
                               "or mcp:SERVER for an MCP server)")
    target, _, name = spec.rpartition(":")
    if not target or not name.isidentifier():
        raise ToolboxSpecError(f"bad tools spec {spec!r}: expected FILE.py:NAME or module:NAME, "
                               "NAME a Python identifier")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
            raise ToolboxSpecError(f"tools spec {spec!r}: no such file {target}")
        try:
            module = import_file(path)
        except NotAPythonFile as e:
            raise ToolboxSpecError(f"tools spec {spec!r}: {e}") from e
        except Exception as e:
            raise ToolboxSpecError(f"tools spec {spec!r}: running {target} raised "
                                   f"{type(e).__name__}: {_one_line(e)}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise ToolboxSpecError(f"tools spec {spec!r}: no module named {e.name!r}") from e
        except Exception as e:
            raise ToolboxSpecError(f"tools spec {spec!r}: importing {target} raised "
                                   f"{type(e).__name__}: {_one_line(e)}") from e
    if not hasattr(module, name):
        candidates = [k for k, v in vars(module).items() if not k.startswith("_") and
                      (isinstance(v, (Tool, Toolbox)) or (isinstance(v, list) and v and isinstance(v[0], Tool)))]
        hint = f"; it defines {', '.join(candidates)}" if candidates else ""
        raise ToolboxSpecError(f"tools spec {spec!r}: {target} has no {name!r}{hint}")
    return _as_toolbox(getattr(module, name), spec)


def _load_many(specs: list) -> Toolbox:
    """One toolbox with the tools of every spec. A failure closes what was already loaded (an
    MCP server started for an earlier spec does not outlive the error)."""
    if not specs:
        raise ToolboxSpecError("no tools spec given")
    loaded: list[tuple[str, Toolbox]] = []
    try:
        merged = Toolbox()
        origin: dict[str, str] = {}
        for spec in specs:
            box = load_toolbox(spec)
            loaded.append((spec, box))
            for t in box.values():
                if t.name in origin:
                    raise ToolboxSpecError(f"tools spec {spec!r} defines {t.name!r}, which {origin[t.name]!r} "
                                           "already defines; tool names must be unique")
                origin[t.name] = spec
                merged.add_tool(t)
        return merged
    except BaseException:
        for _, box in loaded:
            box.close()
        raise


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


# --------------------------------------------------------------------------------------------
# The built-in tools
# --------------------------------------------------------------------------------------------

def _builders() -> dict[str, Callable[[ToolkitConfig, Any], Tool]]:
    from toolkit.tools.calculator import CalculatorTool
    from toolkit.tools.clock import CurrentTimeTool
    from toolkit.tools.files import SaveFileTool
    from toolkit.tools.llm import LLMTool
    from toolkit.tools.python import PythonInterpreterTool
    from toolkit.tools.sql import QuerySQLTool
    from toolkit.tools.web import SearchBilibiliTool, SearchWebTool
    from toolkit.tools.wiki import SearchWikiTool

    data = lambda c, sub: Path(c.data_dir) / sub  # noqa: E731
    return {
        "get_current_time": lambda c, e: CurrentTimeTool(timezone=c.timezone),
        "search_wiki": lambda c, e: SearchWikiTool(corpus_dir=data(c, "wiki"), api_url=c.wiki_api,
                                                   results=c.wiki_results, timeout=c.http_timeout),
        "search_web": lambda c, e: SearchWebTool(search_url=c.search_url, results=c.search_results,
                                                 timeout=c.http_timeout),
        "search_bilibili": lambda c, e: SearchBilibiliTool(base_url=c.bilibili_url, results=c.search_results,
                                                           timeout=c.http_timeout),
        "save_file": lambda c, e: SaveFileTool(workspace=c.workspace, max_bytes=c.max_file_bytes),
        "query_sql": lambda c, e: QuerySQLTool(url=c.sql_url, demo_dir=None if c.sql_url else data(c, "db"),
                                               allow_write=c.sql_write, max_rows=c.sql_max_rows),
        "python_interpreter": lambda c, e: PythonInterpreterTool(
            workspace=c.workspace, timeout=c.python_timeout, memory_mb=c.python_memory_mb,
            additional_authorized_imports=c.python_imports, workers=c.python_workers),
        "calculator": lambda c, e: CalculatorTool(),
        "llm": lambda c, e: LLMTool(engine=e),
    }


def default_toolbox(llm_engine: Callable | None = None, config: ToolkitConfig | None = None,
                    tools: Iterable[str] | None = None, **options) -> Toolbox:
    """The built-in tools, each with its offline default.

    ``llm_engine`` is the engine ``llm`` calls. ``config`` (default ``ToolkitConfig.from_env()``)
    holds the tools' settings; ``options`` override single fields, e.g.
    ``default_toolbox(workspace="out", sql_url="mysql+pymysql://u:p@127.0.0.1/db")``; an unknown
    option is an error. ``tools`` limits the toolbox to those names. Nothing connects or loads
    until a tool is first called.
    """
    if config is None:
        config = ToolkitConfig.from_env(**options)
    elif options:
        config = ToolkitConfig.from_env(environ={}, **{**config.__dict__, **options})
    builders = _builders()
    names = list(builders) if tools is None else list(tools)
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise KeyError(f"no built-in tool named {unknown}; built-ins: {', '.join(builders)}")
    return Toolbox([builders[n](config, llm_engine) for n in names])
