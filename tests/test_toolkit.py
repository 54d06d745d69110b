"""The tool API: Tool, @tool, Toolbox, ToolError, load_toolbox, default_toolbox, and the small
built-ins (calculator, get_current_time, llm, save_file)."""

from __future__ import annotations

import os
import re
import textwrap
import threading
from typing import Literal, Optional

import pytest

from pipeline import formats
from toolkit import (BUILTIN_TOOL_NAMES, Tool, ToolArgumentError, ToolDefinitionError, ToolError, Toolbox,
                     ToolboxSpecError, ToolkitConfig, default_toolbox, load_toolbox, tool, validate_arguments)


class Echo(Tool):
    name = "echo"
    description = "Repeat a text a number of times."
    inputs = {"text": {"type": "string", "description": "what to repeat"},
              "times": {"type": "integer", "description": "how often", "nullable": True}}
    output_type = "string"

    def forward(self, text, times=1):
        return text * times


@tool
def add(a: int, b: float, mode: Literal["sum", "diff"] = "sum", note: Optional[str] = None) -> float:
    """Add or subtract two numbers.

    Args:
        a: the first number
        b: the second number,
            which may be a float
        mode: 'sum' or 'diff'
        note: ignored
    """
    return a + b if mode == "sum" else a - b


# ------------------------------------------------------------------------------------------------
# Tool definitions
# ------------------------------------------------------------------------------------------------

def test_tool_subclass_has_the_agents_attributes():
    echo = Echo()
    assert echo(text="ab", times=2) == "abab"
    assert echo("ab") == "ab"  # one positional value for a tool of one required input
    assert echo.parameters_schema() == {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "what to repeat"},
                       "times": {"type": "integer", "description": "how often"}},
        "required": ["text"]}


@pytest.mark.parametrize("attrs, fragment", [
    ({"name": "bad name"}, "`name` must be a Python identifier"),
    ({"name": "class"}, "`name` must be a Python identifier"),
    ({"description": " "}, "`description` must be a non-empty string"),
    ({"output_type": "str"}, "`output_type` must be one of"),
    ({"inputs": {"text": {"type": "str", "description": "x"}}}, "has type 'str'; use one of"),
    ({"inputs": {"text": {"type": "string"}}}, "needs a non-empty 'description'"),
    ({"inputs": {"text": {"type": "string", "description": "x", "required": True}}}, "unknown keys ['required']"),
    ({"inputs": {"text": {"type": "string", "description": "x"}, "extra": {"type": "string", "description": "y"}}},
     "lacks parameters for inputs ['extra']"),
])
def test_tool_subclass_is_validated_at_definition(attrs, fragment):
    body = {"name": "ok", "description": "fine", "inputs": {"text": {"type": "string", "description": "x"}},
            "output_type": "string", "forward": lambda self, text: text, **attrs}
    with pytest.raises(ToolDefinitionError, match=re.escape(fragment)):
        type("Broken", (Tool,), body)


def test_forward_signature_must_match_inputs():
    with pytest.raises(ToolDefinitionError, match=r"parameters \['other'\] that `inputs` does not describe"):
        class A(Tool):
            name = "a"
            description = "d"
            inputs = {"text": {"type": "string", "description": "x"}}

            def forward(self, text, other):
                return text
    with pytest.raises(ToolDefinitionError, match="is nullable; give `forward`'s parameter a default"):
        class B(Tool):
            name = "b"
            description = "d"
            inputs = {"text": {"type": "string", "description": "x", "nullable": True}}

            def forward(self, text):
                return text
    with pytest.raises(ToolDefinitionError, match=r"may not take \*args"):
        class C(Tool):
            name = "c"
            description = "d"
            inputs = {}

            def forward(self, *args):
                return args
    with pytest.raises(ToolDefinitionError, match="define `forward"):
        class D(Tool):
            name = "d"
            description = "d"
            inputs = {}


def test_abstract_subclass_is_not_validated_until_concrete():
    class Base(Tool, abstract=True):
        output_type = "string"

    class Concrete(Base):
        name = "concrete"
        description = "d"
        inputs = {}

        def forward(self):
            return "ok"

    assert Concrete()() == "ok"


def test_at_tool_builds_inputs_from_hints_and_docstring():
    assert add.name == "add"
    assert add.description == "Add or subtract two numbers."
    assert add.inputs == {
        "a": {"type": "integer", "description": "the first number"},
        "b": {"type": "number", "description": "the second number, which may be a float"},
        "mode": {"type": "string", "description": "'sum' or 'diff'", "enum": ["sum", "diff"], "nullable": True},
        "note": {"type": "string", "description": "ignored", "nullable": True},
    }
    assert add.output_type == "number"
    assert add(a=2, b=0.5) == 2.5
    assert add(a=2, b=1, mode="diff") == 1
    assert isinstance(add, Tool)


def test_at_tool_accepts_a_name():
    @tool(name="shout")
    def upper(text: str) -> str:
        """Upper-case a text.

        Args:
            text (str): the text
        """
        return text.upper()

    assert upper.name == "shout" and upper(text="a") == "A"


@pytest.mark.parametrize("source, fragment", [
    ('def f(x) -> str:\n    """Do.\n\n    Args:\n        x: a thing\n    """\n', "parameter 'x' has no type hint; add one, e.g. `x: str`"),
    ('def f(x: str):\n    """Do.\n\n    Args:\n        x: a thing\n    """\n', "no return type hint"),
    ('def f(x: str) -> str:\n    """Do."""\n', "no `Args:` entry for 'x'; add a line `x: <what it is>`"),
    ('def f(x: str) -> str:\n    pass\n', "has no docstring"),
    ('def f(*xs: str) -> str:\n    """Do.\n\n    Args:\n        xs: things\n    """\n', "takes *xs/**xs"),
    ('def f(x: str) -> str:\n    """Do.\n\n    Args:\n        x: a thing\n        y: gone\n    """\n', "documents ['y'], which are not parameters"),
    ('def f(x: Optional[str]) -> str:\n    """Do.\n\n    Args:\n        x: a thing\n    """\n', "is Optional; give it a default"),
    ('def f(x: bytes) -> str:\n    """Do.\n\n    Args:\n        x: a thing\n    """\n', "has no tool input type"),
])
def test_at_tool_refuses_incomplete_functions(source, fragment):
    ns = {"Optional": Optional}
    exec(source, ns)  # the test builds functions with broken definitions on purpose
    with pytest.raises(ToolDefinitionError, match=re.escape(fragment)):
        tool(ns["f"])


def test_schemas_agree_with_the_format_contract():
    for t in [Echo(), add, *default_toolbox().values()]:
        assert t.to_openai_schema() == formats.tool_spec(t).to_openai()
        assert t.to_json_schema() == formats.tool_spec(t).to_json_schema()
    calc = default_toolbox()["calculator"]
    assert calc.rewoo_line() == formats.tool_line(calc)
    assert calc.rewoo_line().startswith("calculator[input]: Evaluate an arithmetic expression")


# ------------------------------------------------------------------------------------------------
# Calls
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, fragment", [
    ({}, "missing required argument 'text' (string)"),
    ({"text": 3}, "argument 'text' must be string, got int"),
    ({"text": "a", "times": True}, "argument 'times' must be integer, got bool"),
    ({"text": "a", "times": 1.5}, "argument 'times' must be integer, got float"),
    ({"text": None}, "argument 'text' may not be None"),
    ({"text": "a", "colour": "red"}, "unknown arguments ['colour']; echo takes ['text', 'times']"),
])
def test_wrong_arguments_are_refused_before_the_call_with_the_schema(kwargs, fragment):
    calls = []

    class Spy(Echo):
        def forward(self, text, times=1):
            calls.append(text)
            return text

    with pytest.raises(ToolArgumentError) as info:
        Spy()(**kwargs)
    assert fragment in str(info.value)
    assert '"required": ["text"]' in str(info.value)  # the schema is quoted
    assert info.value.tool == "echo" and info.value.schema == Echo().parameters_schema()
    assert calls == []


def test_enum_and_nullable_are_checked():
    with pytest.raises(ToolArgumentError, match=r"must be one of \['sum', 'diff'\]"):
        add(a=1, b=2, mode="product")
    assert add(a=1, b=2, note=None) == 3
    assert validate_arguments(add, {"a": 1, "b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(ToolArgumentError, match="arguments must be a dict"):
        validate_arguments(add, ["a"])
    with pytest.raises(ToolArgumentError, match="keyword arguments"):
        add(1, 2)


def test_a_tool_that_raises_becomes_a_tool_error_naming_tool_and_arguments():
    @tool
    def broken(city: str) -> str:
        """Always fails.

        Args:
            city: a city
        """
        raise LookupError(f"no weather for {city}")

    with pytest.raises(ToolError) as info:
        broken(city="Paris")
    err = info.value
    assert err.tool == "broken" and err.arguments == {"city": "Paris"}
    assert isinstance(err.__cause__, LookupError)
    assert str(err) == "tool 'broken' failed with arguments {'city': 'Paris'}: LookupError: no weather for Paris"


def test_setup_runs_once_lazily_even_from_many_threads():
    class Slow(Tool):
        name = "slow"
        description = "d"
        inputs = {}
        output_type = "integer"

        def __init__(self):
            super().__init__()
            self.setups = 0

        def setup(self):
            self.setups += 1

        def forward(self):
            return self.setups

    t = Slow()
    assert t.setups == 0 and not t.is_initialized
    barrier = threading.Barrier(8)
    results = []

    def call():
        barrier.wait()
        results.append(t())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == [1] * 8 and t.setups == 1


def test_setup_failure_is_a_tool_error_and_is_retried_next_call():
    class Flaky(Tool):
        name = "flaky"
        description = "d"
        inputs = {}
        output_type = "string"
        attempts = 0

        def setup(self):
            type(self).attempts += 1
            if self.attempts == 1:
                raise OSError("index missing")

        def forward(self):
            return "ready"

    t = Flaky()
    with pytest.raises(ToolError, match="OSError: index missing"):
        t()
    assert t() == "ready"


# ------------------------------------------------------------------------------------------------
# Toolbox
# ------------------------------------------------------------------------------------------------

def test_toolbox_is_a_mapping_with_the_agents_methods():
    box = Toolbox([Echo(), add])
    assert list(box) == ["echo", "add"] and len(box) == 2 and "echo" in box
    assert box["add"] is add and list(box.keys()) == ["echo", "add"] and add in box.values()
    with pytest.raises(KeyError, match="no tool named 'nope' in the toolbox; known: echo, add"):
        box["nope"]
    with pytest.raises(ValueError, match="already has a tool named 'add'; use update_tool"):
        box.add_tool(add)
    with pytest.raises(TypeError, match="Wrap a function with @tool first"):
        box.add_tool(lambda: 1)
    with pytest.raises(TypeError, match=r"add an instance, Echo\(\)"):
        box.add_tool(Echo)

    class Echo2(Echo):
        description = "Echo, improved."

    box.update_tool(Echo2())
    assert box["echo"].description == "Echo, improved."
    box.remove_tool("echo")
    assert list(box) == ["add"]
    with pytest.raises(KeyError, match="cannot remove 'echo'"):
        box.remove_tool("echo")
    with pytest.raises(KeyError, match="cannot update 'echo'"):
        box.update_tool(Echo())
    box.clear_toolbox()
    assert len(box) == 0


def test_show_tool_descriptions_with_both_template_styles():
    box = Toolbox([Echo()])
    text = box.show_tool_descriptions()
    assert text.startswith("- echo: Repeat a text a number of times.\n    Takes inputs: {'text':")
    assert text.endswith("Returns an output of type: string")
    assert box.show_tool_descriptions("{name} -> {output_type}") == "echo -> string"
    assert box.show_tool_descriptions("{{ tool.name }}: {{tool.description}}") == "echo: Repeat a text a number of times."
    with pytest.raises(ValueError, match="it may use"):
        box.show_tool_descriptions("{title}")
    assert box.rewoo_lines() == "echo[input]: Repeat a text a number of times."


def test_toolbox_from_mapping_duplicates_and_base_tools():
    with pytest.raises(ValueError, match="already has a tool named 'echo'"):
        Toolbox([Echo(), Echo()])
    box = Toolbox({"x": Echo()}, add_base_tools=True)
    assert "echo" in box and set(default_toolbox()) <= set(box)
    assert list(box.subset(["echo", "calculator"])) == ["echo", "calculator"]


# ------------------------------------------------------------------------------------------------
# load_toolbox
# ------------------------------------------------------------------------------------------------

TOOLS_FILE = textwrap.dedent('''
    from toolkit import tool, Toolbox

    @tool
    def double(x: int) -> int:
        """Double a number.

        Args:
            x: the number
        """
        return 2 * x

    @tool
    def negate(x: int) -> int:
        """Negate a number.

        Args:
            x: the number
        """
        return -x

    BOX = Toolbox([double, negate])
    LIST = [double, negate]
    NOT_TOOLS = [1, 2]
    NUMBER = 3

    def make():
        return [negate]

    def make_wrong():
        return "nope"

    def make_broken():
        raise RuntimeError("no config")
''')


@pytest.fixture
def tools_file(tmp_path):
    path = tmp_path / "my_tools.py"
    path.write_text(TOOLS_FILE)
    return path


@pytest.mark.parametrize("name, expected", [("BOX", ["double", "negate"]), ("LIST", ["double", "negate"]),
                                            ("double", ["double"]), ("make", ["negate"])])
def test_load_toolbox_from_a_file(tools_file, name, expected):
    box = load_toolbox(f"{tools_file}:{name}")
    assert list(box) == expected
    assert {name: box[name](x=3) for name in box} == {name: {"double": 6, "negate": -3}[name] for name in expected}


def test_load_toolbox_from_a_module(tools_file, monkeypatch):
    monkeypatch.syspath_prepend(str(tools_file.parent))
    assert list(load_toolbox("my_tools:BOX")) == ["double", "negate"]
    assert list(load_toolbox("toolkit.toolbox:default_toolbox")) == list(default_toolbox())


@pytest.mark.parametrize("spec, fragment", [
    ("no_colon", "expected FILE.py:NAME or module:NAME"),
    ("x.py:", "expected FILE.py:NAME or module:NAME"),
    ("missing_dir/none.py:BOX", "no such file missing_dir/none.py"),
    ("no_such_module_xyz:BOX", "no module named 'no_such_module_xyz'"),
    ("{file}:NOPE", "has no 'NOPE'; it defines double, negate, BOX, LIST"),
    ("{file}:NUMBER", "is int; expected a Toolbox, a Tool, a list of tools"),
    ("{file}:NOT_TOOLS", "the list holds int 1, not a Tool"),
    ("{file}:make_wrong", "returned str; expected a Toolbox"),
    ("{file}:make_broken", "calling it raised RuntimeError: no config"),
])
def test_load_toolbox_errors_are_one_line(tools_file, spec, fragment):
    with pytest.raises(ToolboxSpecError) as info:
        load_toolbox(spec.format(file=tools_file))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_load_toolbox_reports_a_file_that_fails_to_run(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import nonexistent_package_q\n")
    with pytest.raises(ToolboxSpecError, match="raised ModuleNotFoundError"):
        load_toolbox(f"{bad}:X")


# ------------------------------------------------------------------------------------------------
# default_toolbox and its config
# ------------------------------------------------------------------------------------------------

def test_default_toolbox_names_and_options(tmp_path):
    box = default_toolbox()
    assert set(box) <= set(BUILTIN_TOOL_NAMES)
    assert {"get_current_time", "save_file", "calculator", "llm"} <= set(box)
    with pytest.raises(ValueError, match=r"unknown toolkit option\(s\) \['workspcae'\]"):
        default_toolbox(workspcae="x")
    with pytest.raises(KeyError, match="no built-in tool named"):
        default_toolbox(tools=["calculator", "weather"])
    box = default_toolbox(tools=["save_file"], workspace=str(tmp_path / "ws"))
    assert list(box) == ["save_file"]
    box["save_file"](path="a.txt", content="x")
    assert (tmp_path / "ws" / "a.txt").read_text() == "x"


def test_config_reads_the_environment():
    cfg = ToolkitConfig.from_env({"REWOO_SQL_WRITE": "yes", "REWOO_SQL_MAX_ROWS": "7",
                                  "REWOO_PYTHON_IMPORTS": "numpy, pandas", "REWOO_WORKSPACE": "w"})
    assert cfg.sql_write is True and cfg.sql_max_rows == 7 and cfg.workspace == "w"
    assert cfg.python_imports == ("numpy", "pandas")
    with pytest.raises(ValueError, match="REWOO_SQL_MAX_ROWS='many' is not valid for sql_max_rows"):
        ToolkitConfig.from_env({"REWOO_SQL_MAX_ROWS": "many"})
    with pytest.raises(ValueError, match="sql_max_rows must be positive"):
        ToolkitConfig(sql_max_rows=0)


# ------------------------------------------------------------------------------------------------
# calculator, get_current_time, llm
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, expected", [
    ("0.1 + 0.2", "0.3"), ("1/3 * 3", "1"), ("2**100", str(2 ** 100)), ("(3 + 4.5) * 2 / 7", "2.142857142857143 (= 15/7)"),
    ("7 // 2 + 7 % 2", "4"), ("-2^3", "-8"), ("sqrt(16) + factorial(5)", "124.0"), ("1/8", "0.125"),
    ("max(1, 2.5, 2)", "2.5"), ("6 × 7 ÷ 2", "21"),
])
def test_calculator_is_exact(expr, expected):
    assert default_toolbox()["calculator"](expression=expr) == expected


@pytest.mark.parametrize("expr, expected", [
    # the shipped planner's input for handwritten calc-4 ("2 to the 16th?"): refused before
    ("2 to the 16th", "65536"),
    ("2 to the 16th?", "65536"), ("2 raised to the power of 10", "1024"), ("2 to the power of 3 minus 1", "7"),
    ("15 percent of 80", "12"), ("15% of 80", "12"), ("7 squared", "49"), ("3 cubed", "27"),
    ("10 divided by 4", "2.5"), ("3 times 4 plus 2", "14"), ("6 multiplied by 7", "42"), ("the square root of 16", "4.0"),
    ("17 mod 5", "2"), ("12 + 30 =", "42"), ("7 % 2", "1"),  # a number's % is still the remainder
])
def test_calculator_reads_operators_written_in_words(expr, expected):
    assert default_toolbox()["calculator"](expression=expr) == expected


@pytest.mark.parametrize("expr, fragment", [
    ("1/0", "division by zero"), ("9**9**9", "too large"), ("__import__('os')", "unknown function '__import__'"),
    ("(1).__class__", "unsupported syntax Attribute"), ("x + 1", "unknown name 'x'"), ("1 +", "not an arithmetic expression"),
    ("'a' * 3", "only numbers are allowed"), ("", "the expression is empty"), ("factorial(10**6)", "factorial takes"),
    ("(-8) ** 0.5", "complex"),
])
def test_calculator_refuses_what_is_not_arithmetic(expr, fragment):
    with pytest.raises(ToolError, match=re.escape(fragment)):
        default_toolbox()["calculator"](expression=expr)


def test_get_current_time_is_timezone_aware():
    text = default_toolbox(timezone="Asia/Shanghai")["get_current_time"]()
    m = re.fullmatch(r"\d{4}-\d\d-\d\dT(\d\d:\d\d):\d\d\+08:00 \(\w+day, (\d\d:\d\d) Asia/Shanghai\)", text)
    assert m and m.group(1) == m.group(2), text  # the hour and minute again beside the weekday
    local = default_toolbox()["get_current_time"]()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d \(", local)
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
        default_toolbox(timezone="Mars/Olympus")


def test_llm_calls_the_engine_it_is_given(scripted_engine):
    engine = scripted_engine(["  Martin Scorsese  "])
    box = default_toolbox(llm_engine=engine)
    assert box["llm"](prompt="Who directed it?") == "Martin Scorsese"
    assert engine.calls[0]["messages"] == [{"role": "user", "content": "Who directed it?"}]


def test_llm_without_engine_fails_clearly_and_accepts_one_later(scripted_engine):
    box = default_toolbox()
    with pytest.raises(ToolError, match=r"has no engine; give it one with default_toolbox\(llm_engine=engine\)"):
        box["llm"](prompt="hi")
    box["llm"].engine = scripted_engine(["hello"])
    assert box["llm"](prompt="hi") == "hello"
    box["llm"].engine = lambda messages, stop_sequences=None, **kw: 42
    with pytest.raises(ToolError, match="the engine returned int, not str"):
        box["llm"](prompt="hi")


# ------------------------------------------------------------------------------------------------
# save_file
# ------------------------------------------------------------------------------------------------

@pytest.fixture
def save_file(tmp_path):
    return default_toolbox(workspace=str(tmp_path / "ws"), max_file_bytes=100)["save_file"]


def test_save_file_writes_inside_the_workspace(save_file, tmp_path):
    out = save_file(path="notes/day1/plan.md", content="héllo")
    assert (tmp_path / "ws/notes/day1/plan.md").read_text(encoding="utf-8") == "héllo"
    assert "saved 6 bytes to notes/day1/plan.md" in out
    save_file(path="notes/day1/plan.md", content="second")
    assert (tmp_path / "ws/notes/day1/plan.md").read_text() == "second"
    assert sorted(os.listdir(tmp_path / "ws/notes/day1")) == ["plan.md"]  # no temporary file left


@pytest.mark.parametrize("path, fragment", [
    ("/etc/passwd", "absolute path '/etc/passwd' refused"),
    (" /etc/passwd", "absolute path ' /etc/passwd' refused"),
    (" .. /outside.txt", "'..' may not appear"),
    ("../outside.txt", "'..' may not appear"),
    ("a/../../outside.txt", "'..' may not appear"),
    ("", "the path is empty"),
    ("a\x00b", "NUL byte"),
    (".", "names the workspace itself"),
    ("C:\\x.txt", "absolute path"),
    ("sub/", "names a folder (it ends with '/')"),
    ("sub/.", "names a folder"),
    ("a\nb.txt", "control character '\\n'"),
    ("notes/x\r.txt", "control character '\\r'"),
    ("x" * 256, "is 256 bytes; a file or folder name holds at most 255"),
    ("é" * 128, "is 256 bytes"),
])
def test_save_file_refuses_paths_that_leave_the_workspace(save_file, path, fragment):
    with pytest.raises(ToolError, match=re.escape(fragment)):
        save_file(path=path, content="x")


@pytest.mark.parametrize("length", [238, 240, 254, 255])
def test_save_file_writes_names_up_to_the_file_system_limit(save_file, tmp_path, length):
    """Names of 238-255 bytes are legal; the temporary file's name used to add 18 bytes to them."""
    name = "n" * (length - 4) + ".txt"
    assert f"saved 2 bytes to d/{name} in the workspace" in save_file(path=f"d/{name}", content="ok")
    assert (tmp_path / "ws" / "d" / name).read_text() == "ok"
    assert os.listdir(tmp_path / "ws" / "d") == [name]


@pytest.mark.parametrize("path, written", [
    (" Ideas.md", "Ideas.md"), ("notes.txt ", "notes.txt"), (" notes / day 1/ plan.md", "notes/day 1/plan.md"),
])
def test_save_file_drops_spaces_around_names(save_file, tmp_path, path, written):
    """The shipped planner wrote "path= Ideas.md" for "Make a file called Ideas.md ...", and the file
    was named " Ideas.md", which no later "read Ideas.md" finds. Spaces around a name are dropped;
    those inside it stay."""
    assert f"saved 2 bytes to {written} in the workspace" in save_file(path=path, content="ok")
    assert (tmp_path / "ws" / written).read_text() == "ok"
    assert sorted(p.relative_to(tmp_path / "ws").as_posix() for p in (tmp_path / "ws").rglob("*")
                  if p.is_file()) == [written]


@pytest.mark.parametrize("path", ["sub/ ", " ", "sub/ /"])
def test_save_file_spaces_alone_name_no_file(save_file, tmp_path, path):
    with pytest.raises(ToolError, match="the path is empty|names a folder"):
        save_file(path=path, content="x")
    assert not (tmp_path / "ws" / "sub").exists()


def test_save_file_refuses_a_folder_path_and_writes_nothing(save_file, tmp_path):
    with pytest.raises(ToolError, match="names a folder"):
        save_file(path="sub/", content="x")
    assert not (tmp_path / "ws" / "sub").exists()


def test_save_file_does_not_follow_symlinks(save_file, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "escape").symlink_to(outside)
    with pytest.raises(ToolError, match="'escape' is a symlink or not a folder"):
        save_file(path="escape/x.txt", content="x")
    assert not (outside / "x.txt").exists()
    # a symlinked file is replaced by a regular file; its target is left alone
    target = outside / "secret.txt"
    target.write_text("keep")
    (tmp_path / "ws" / "link.txt").symlink_to(target)
    with pytest.raises(ToolError, match="exists and is not a regular file"):
        save_file(path="link.txt", content="overwrite")
    assert target.read_text() == "keep"


def test_save_file_size_limit(save_file, tmp_path):
    with pytest.raises(ToolError, match="content is 101 bytes; save_file writes at most 100"):
        save_file(path="big.txt", content="x" * 101)
    assert not (tmp_path / "ws" / "big.txt").exists()
