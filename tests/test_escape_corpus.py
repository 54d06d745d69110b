"""The escape corpus: published sandbox escapes (the smolagents executor CVEs, the transformers
interpreter proofs of concept), classic pyjail tricks, the cases found against the code agents,
and denial of service, each run through every entry point that runs model code: the
``python_interpreter`` tool, ``CodeAgent`` and ``ReactCodeAgent`` (driven by a scripted engine
that writes the escape as its code). All three share one pool of isolated workers.

For each case and entry point: the code is refused with an error the model reads, and the harm
it aims at did not happen: a canary file outside the sandbox keeps its bytes, a secret in it is
in nothing the model sees, no file appears where a command would create one, the host's state
(decimal context, random generator, module attributes, sys hooks, time zone, working folder) is
unchanged, and the pool still serves the next run.
"""

from __future__ import annotations

import decimal
import json
import math
import os
import random
import re
import sys
import time

import pytest

from pipeline.agents import CodeAgent, ReactCodeAgent
from tests.test_sandbox import _BITS, _BUILTIN, _CAP, _IMPORT, _NO_ATTR, _PRIVATE, ESCAPES, REFUSED_BY, TIMEOUT
from tests.test_sandbox import CANARY as TOUCHED
from toolkit import ToolError, tool
from toolkit.sandbox import Sandbox
from toolkit.tools.python import PythonInterpreterTool

SECRET = "s3cr3t-7f1c2a"
SECRET_FILE = f"/tmp/rewoo_escape_secret_{os.getpid()}.txt"   # outside the sandbox's workspace

CORPUS = dict(ESCAPES)
CORPUS.update({
    # found against the code agents (the cases)
    "json.tool.Path reads a file": f"import json.tool\njson.tool.Path('{SECRET_FILE}').read_text()",
    "json.tool.Path writes a file": f"import json.tool\njson.tool.Path('{SECRET_FILE}').write_text('owned')",
    "json.tool.main raises SystemExit": "import json.tool\njson.tool.main()",
    "json.tool through the package": "import json\njson.tool.main()",
    "from json import tool": "from json import tool\ntool.main()",
    "json.decoder submodule": "import json\njson.decoder.scanstring('x', 0)",
    "statistics.sys": f"import statistics\nstatistics.sys.modules['os'].system('touch {TOUCHED}')",
    "datetime.sys": "import datetime\ndatetime.sys.exit(3)",
    "re.functools": "import re\nre.functools.update_wrapper",
    "collections.abc registers a class": "import collections\ncollections.abc.Mapping.register(list)",
    "a foreign function re-exported": "import statistics\nstatistics.reduce(lambda a, b: a, [1])",
    "namedtuple makes a class from elsewhere": "import collections\ncollections.namedtuple('P', 'a b')",
    # the smolagents executor CVEs, in their shape
    "CVE-2025-5120: a restricted module through an allowed one": "import fractions\nfractions.sys.modules['subprocess']",
    "CVE-2025-9959: class hierarchy to Popen": ("[c for c in ().__class__.__base__.__subclasses__() "
                                                "if c.__name__ == 'Popen'][0](['id'])"),
    "CVE-2025-9959 through an exception": ("try:\n    1 / 0\nexcept Exception as e:\n"
                                           "    e.__class__.__base__.__subclasses__()"),
    # pyjail classics
    "fullwidth eval (NFKC)": "\uff45val('1 + 1')",
    "__builtins__ by name": "__builtins__['open']",
    "lambda default smuggles __self__": "f = lambda x=print.__self__: x\nf()",
    "rebind a builtin with walrus": "(print := 1)",
    "read the secret with open": f"open('{SECRET_FILE}').read()",
    # host state
    "decimal.setcontext": "import decimal\ndecimal.setcontext(decimal.Context(prec=1))",
    "decimal precision bomb": "import decimal\ndecimal.getcontext().prec = 10**9\ndecimal.Decimal(1) / 7",
    "time.tzset": "import time\ntime.tzset()",
    "assign a module constant": "import math\nmath.pi = 3",
    "replace a module function": "import json\njson.dumps = print",
    "replace random.seed": "import random\nrandom.seed = None",
    # tool channel
    "smuggle a function through a tool": "echo(text=print)",
    "final_answer with a module": "import math\nfinal_answer(math)",
    # denial of service (the cases and friends)
    "sum over a huge range": "sum(range(10**11))",
    "backtracking regex": "import re\nre.match('(a+)+$', 'a' * 40 + 'b')",
    "math.factorial(2*10**6)": "import math\nmath.factorial(2 * 10**6)",
    "list past the size cap": "list(range(3 * 10**7))",
    "deeply nested source": "-" * 100_000 + "1",
    "deeply nested brackets": "[" * 200 + "]" * 200,
    "infinite C iterator": "import itertools\nsum(itertools.count())",
    "iter(callable, sentinel)": "sum(iter(int, 1))",
    "ljust bomb": "'a'.ljust(10**10)",
    "format width bomb": "f'{1:>{10**10}}'",
    "percent width bomb": "'%*d' % (10**10, 1)",
    "repeated squaring": "x = 3\nfor _ in range(40):\n    x = x * x",
    "math.prod bomb": "import math\nmath.prod(range(1, 10**6))",
    "math.comb bomb": "import math\nmath.comb(10**7, 5 * 10**6)",
    "pow builtin bomb": "pow(10, 10**10)",
    "sum of lists bomb": "sum([[0] * 10**6] * 100, [])",
    "str.replace bomb": "('a' * 10**6).replace('a', 'a' * 1000)",
    "bytes bomb": "bytes(10**10)",
    "combinatorial explosion": "import itertools\nlen(list(itertools.product(range(100), repeat=10)))",
    "json nesting bomb": "import json\njson.loads('[' * 10**6)",
})


# the guard each case meets (a regular expression the error must match), as in test_sandbox.REFUSED_BY
CORPUS_REFUSED_BY = dict(REFUSED_BY)
CORPUS_REFUSED_BY.update({
    "json.tool.Path reads a file": _IMPORT.format(r"json\.tool"),
    "json.tool.Path writes a file": _IMPORT.format(r"json\.tool"),
    "json.tool.main raises SystemExit": _IMPORT.format(r"json\.tool"),
    "json.tool through the package": _NO_ATTR.format("json", "tool"),
    "from json import tool": r"cannot import 'tool' from 'json'",
    "json.decoder submodule": _NO_ATTR.format("json", "decoder"),
    "statistics.sys": _NO_ATTR.format("statistics", "sys"),
    "datetime.sys": _NO_ATTR.format("datetime", "sys"),
    "re.functools": _NO_ATTR.format("re", "functools"),
    "collections.abc registers a class": _NO_ATTR.format("collections", "abc"),
    "a foreign function re-exported": _NO_ATTR.format("statistics", "reduce"),
    "namedtuple makes a class from elsewhere": r"the call's result is the class [\w.]+\.P, which comes from a module "
                                               r"that is not authorized",
    "CVE-2025-5120: a restricted module through an allowed one": _NO_ATTR.format("fractions", "sys"),
    "CVE-2025-9959: class hierarchy to Popen": _PRIVATE.format("__class__"),
    "CVE-2025-9959 through an exception": _PRIVATE.format("__class__"),
    "fullwidth eval (NFKC)": _BUILTIN.format("eval"),
    "__builtins__ by name": _BUILTIN.format("__builtins__"),
    "lambda default smuggles __self__": _PRIVATE.format("__self__"),
    "rebind a builtin with walrus": r"cannot assign to 'print', a tool or builtin",
    "read the secret with open": _BUILTIN.format("open"),
    "decimal.setcontext": r"line 2: decimal\.setcontext is not allowed",
    "decimal precision bomb": r"line 2: a decimal precision of 1000000000 digits exceeds the limit \(10000\)",
    "time.tzset": r"line 2: time\.tzset is not allowed",
    "assign a module constant": r"assigning attribute 'pi' here is not allowed",
    "replace a module function": r"assigning attribute 'dumps' here is not allowed",
    "replace random.seed": r"assigning attribute 'seed' here is not allowed",
    # the python_interpreter tool has no tools: these reach the tool channel in the agents only (below)
    "smuggle a function through a tool": _BUILTIN.format("echo"),
    "final_answer with a module": _BUILTIN.format("final_answer"),
    "sum over a huge range": _CAP.format("a range"),
    "backtracking regex": TIMEOUT,  # a C call: only the worker's kill stops it
    "math.factorial(2*10**6)": _BITS.format(r"math\.factorial\(2000000,\)"),
    "list past the size cap": _CAP.format("a range"),
    "deeply nested source": r"the code is nested too deeply to parse",
    "deeply nested brackets": r"the code is nested more than 100 levels deep",
    "infinite C iterator": TIMEOUT,
    "iter(callable, sentinel)": TIMEOUT,
    "ljust bomb": _CAP.format(r"ljust\(\)"),
    "format width bomb": r"the format width or precision 10000000000 exceeds the limit \(10000000\)",
    "percent width bomb": r"the format width or precision 10000000000 exceeds the limit \(10000000\)",
    "repeated squaring": TIMEOUT + "|" + _BITS.format("the product"),
    "math.prod bomb": TIMEOUT + "|" + _BITS.format(r"math\.prod\(\)"),
    "math.comb bomb": _BITS.format(r"math\.comb\(10000000, 5000000\)"),
    "pow builtin bomb": _BITS.format(r"the power 10\*\*10000000000"),
    "sum of lists bomb": _CAP.format("a concatenated sequence") + "|" + TIMEOUT,  # the cap, unless the clock runs out
    "str.replace bomb": _CAP.format(r"replace\(\)"),
    "bytes bomb": _CAP.format(r"bytes\(\)"),
    # the list grows as fast as the loop runs: the memory limit or the time limit, whichever this
    # machine reaches first (a 2-core Xeon with AMX ran out of memory first, 2026-12-03), as for "memory bomb by growth"
    "combinatorial explosion": r"line 2: out of memory|" + TIMEOUT,
    "json nesting bomb": r"line 2: maximum recursion depth exceeded",
})
# in the agents the tools exist, and the tool channel refuses what is not data
AGENT_REFUSED_BY = dict(CORPUS_REFUSED_BY)
AGENT_REFUSED_BY.update({
    "smuggle a function through a tool": r"TypeError: an argument of echo\(\) cannot be passed to a tool: a method "
                                         r"object is not data",
    "final_answer with a module": r"TypeError: an argument of final_answer\(\) cannot be passed to a tool: a module "
                                  r"object is not data",
})


@tool
def echo(text: str) -> str:
    """Return the text.

    Args:
        text: any text
    """
    return text


def _host_state() -> dict:
    return {"decimal": decimal.getcontext().prec, "random": random.getstate(), "pi": math.pi,
            "dumps": json.dumps, "trace": sys.gettrace(), "profile": sys.getprofile(), "excepthook": sys.excepthook,
            "tzname": time.tzname, "cwd": os.getcwd(), "modules": {n for n in ("pathlib", "subprocess") if n in sys.modules}}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    with open(SECRET_FILE, "w") as f:
        f.write(SECRET)
    box = Sandbox(workspace=tmp_path_factory.mktemp("ws") / "python", timeout=0.5, memory_mb=256, workers=2)
    yield box
    box.close()
    os.unlink(SECRET_FILE)


@pytest.fixture
def unharmed(pool):
    """Checks, after the case, that the harm each escape aims at did not happen."""
    before = _host_state()
    seen: list[str] = []
    yield seen
    with open(SECRET_FILE) as f:
        assert f.read() == SECRET, "the canary outside the sandbox was changed"
    assert not os.path.exists(TOUCHED), "a command ran: its file exists"
    assert all(SECRET not in text for text in seen), "the secret reached the model"
    assert _host_state() == before, "host state changed"
    after = pool.run("6 * 7")
    assert (after.value, after.error) == ("42", None), "the pool no longer serves"


def test_every_case_names_the_guard_that_refuses_it():
    assert set(CORPUS_REFUSED_BY) == set(AGENT_REFUSED_BY) == set(CORPUS) and len(CORPUS) >= 100


@pytest.mark.parametrize("name", list(CORPUS))
def test_python_interpreter_tool_refuses(pool, unharmed, name):
    tool_ = PythonInterpreterTool(sandbox=pool)
    with pytest.raises(ToolError) as info:
        tool_(code=CORPUS[name])
    unharmed.append(str(info.value))
    error = str(info.value).split(": SandboxCodeError: ", 1)[1]
    assert re.search(CORPUS_REFUSED_BY[name], error), f"{name}: refused by another guard: {error}"
    assert "ran after the timeout" not in error


def _code_step(code: str) -> str:
    return f"Thought: try this.\nCode:\n```py\n{code}\n```<end_action>"


@pytest.mark.parametrize("agent_class", [CodeAgent, ReactCodeAgent])
@pytest.mark.parametrize("name", list(CORPUS))
def test_code_agents_refuse(pool, unharmed, scripted_engine, agent_class, name):
    engine = scripted_engine([_code_step(CORPUS[name]), "I could not do it."])
    agent = agent_class(tools=[echo], llm_engine=engine, max_iterations=1, sandbox=pool)
    answer = agent.run("Do the task.")
    step = agent.logs[1]
    assert "error" in step, f"{name}: not refused; observation={step.get('observation')!r}"
    assert str(step["error"]).startswith("the code failed: ")
    error = str(step["error"])[len("the code failed: "):]
    assert re.search(AGENT_REFUSED_BY[name], error), f"{name}: refused by another guard: {error}"
    unharmed.extend(m["content"] for m in agent.write_inner_memory_from_logs())
    unharmed.append(str(answer))
    assert "Error: the code failed: " in engine.calls[-1]["messages"][-2]["content"]  # the model read why
