"""The Python sandbox: the AST interpreter's behaviour, and a corpus of published escape
techniques (transformers / smolagents interpreter CVE proofs of concept and classic pyjail
tricks) run through the isolated process. Every escape fails with an error, and the host and
the sandbox survive. A second group authorizes dangerous modules on purpose, as if the AST layer
had been bypassed, and checks that the OS layer still holds."""

from __future__ import annotations

import os
import re
import socket
import sys

import pytest

from toolkit import ToolError, default_toolbox
from toolkit.sandbox import InterpreterError, Sandbox, evaluate_python_code

LINUX = sys.platform.startswith("linux")


# ------------------------------------------------------------------------------------------------
# The interpreter (in-process)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("code, value, printed", [
    ("import math\nprint(math.sqrt(16))\n2 * 21", 42, "4.0\n"),
    ("def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n[fib(i) for i in range(8)]", [0, 1, 1, 2, 3, 5, 8, 13], ""),
    ("d = {'a': 1}\nd['a'] += 2\nf'{d[\"a\"]:>3}|'", "  3|", ""),
    ("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    print('caught', e)\nfinally:\n    print('done')", None, "caught division by zero\ndone\n"),
    ("def f(a, *rest, k=3, **kw):\n    return a, rest, k, kw\nf(1, 2, k=5, z=1)", (1, (2,), 5, {"z": 1}), ""),
    ("first, *rest = [1, 2, 3]\nrest", [2, 3], ""),
    ("t = 0\nfor i in range(10):\n    if i == 4:\n        break\n    t += i\nelse:\n    t = -1\nt", 6, ""),
    ("from collections import Counter\nCounter('hello').most_common(1)", [("l", 2)], ""),
    ("sorted(['bb', 'a', 'ccc'], key=lambda s: -len(s))", ["ccc", "bb", "a"], ""),
    ("x = 0\nwhile x < 5:\n    x += 1\nx", 5, ""),
    ("{k: v for k, v in zip('ab', range(2)) if v}", {"b": 1}, ""),
    ("'{} and {name}'.format(1, name='x')", "1 and x", ""),
    ("import json\njson.dumps({'a': [1, 2]})", '{"a": [1, 2]}', ""),
    ("(y := 3) + y", 6, ""),
    ("[isinstance(b'x', bytes), isinstance(range(3), (range, list)), issubclass(bytearray, bytearray)]",
     [True, True, True], ""),
])
def test_interpreter_runs_ordinary_code(code, value, printed):
    assert evaluate_python_code(code) == (value, printed)


def test_interpreter_calls_given_tools_and_protects_their_names():
    assert evaluate_python_code("double(21)", tools={"double": lambda x: 2 * x}) == (42, "")
    with pytest.raises(InterpreterError, match="cannot assign to 'double', a tool or builtin"):
        evaluate_python_code("double = 1", tools={"double": lambda x: 2 * x})


def test_interpreter_errors_name_the_line_and_keep_printed_output():
    with pytest.raises(InterpreterError, match="^ValueError: boom$") as info:
        evaluate_python_code("print('before')\nraise ValueError('boom')")
    assert info.value.printed == "before\n"
    with pytest.raises(InterpreterError, match="line 3: import of 'os' is not allowed"):
        evaluate_python_code("x = 1\ny = 2\nimport os")
    with pytest.raises(InterpreterError, match="syntax error on line 1"):
        evaluate_python_code("def (:")


def test_a_refusal_ends_the_run_without_running_finally_blocks():
    """A guard's refusal (here the size cap, in the worker also the time limit) used to run the
    `finally` block after it: code after the refusal, until the next check."""
    with pytest.raises(InterpreterError, match="the power 10\\*\\*10000000000") as info:
        evaluate_python_code("try:\n    10 ** 10 ** 10\nfinally:\n    print('after the refusal')")
    assert info.value.printed == ""
    # the code's own exceptions, return and break still run it
    assert evaluate_python_code("def f():\n    try:\n        return 1\n    finally:\n        print('f')\nf()") == (1, "f\n")
    assert evaluate_python_code("try:\n    1 / 0\nexcept ZeroDivisionError:\n    pass\nfinally:\n    print('z')") == (
        None, "z\n")


def test_additional_authorized_imports():
    with pytest.raises(InterpreterError, match="import of 'string' is not allowed"):
        evaluate_python_code("import string")
    assert evaluate_python_code("import textwrap\ntextwrap.fill('a b c d', 3)",
                                additional_authorized_imports=["textwrap"]) == ("a b\nc d", "")


# ------------------------------------------------------------------------------------------------
# Published escape techniques, through the isolated process
# ------------------------------------------------------------------------------------------------

CANARY = f"/tmp/rewoo_sandbox_canary_{os.getpid()}"

ESCAPES = {
    # subclass walks to reach os / subprocess through object
    "subclass walk via tuple": "().__class__.__bases__[0].__subclasses__()",
    "subclass walk via mro": "[].__class__.__mro__[-1].__subclasses__()",
    "object subclasses": "object.__subclasses__()",
    "type() to reach object": "type(1).__base__",
    "subclass walk via str": "''.__class__.__base__.__subclasses__()",
    # builtins reachable from a builtin function (smolagents CVE proof of concept)
    "print.__self__": "print.__self__",
    "print.__self__.__import__": f"print.__self__.__import__('os').system('touch {CANARY}')",
    "getattr smuggling": "getattr(print, '__self__')",
    "__getattribute__": "(1).__getattribute__('__class__')",
    "function globals": "f = lambda: 0\nf.__globals__",
    "function code object": "def f():\n    pass\nf.__code__.co_consts",
    # format-string attribute access
    "format attribute walk": "'{0.__class__.__base__.__subclasses__}'.format(1)",
    "format item walk": "'{0[__builtins__]}'.format({'__builtins__': 1})",
    "str.format on the type": "str.format('{0.__init__.__globals__}', print)",
    "format_map": "'{x.__class__}'.format_map({'x': 1})",
    "nested format spec": "'{0:{1.__class__}}'.format(1, 2)",
    # generator and traceback frames
    "generator frame": "g = (x for x in [1])\ng.gi_frame.f_back.f_globals",
    "generator function": "def g():\n    yield 1\nnext(g())",
    "traceback frame": "try:\n    1 / 0\nexcept Exception as e:\n    e.__traceback__.tb_frame.f_globals",
    # modules reachable through allowed modules
    "random._os": f"import random\nrandom._os.system('touch {CANARY}')",
    "from random import _os": "from random import _os",
    "public module member": "import json\njson.codecs",
    "import os": "import os",
    "import ctypes": "import ctypes",
    "pickle": "import pickle\npickle.loads(b\"cos\\nsystem\\n(S'id'\\ntR.\")",
    "import subprocess": "import subprocess",
    "import sys": "import sys\nsys.modules",
    "import builtins": "import builtins",
    "importlib": "import importlib\nimportlib.import_module('os')",
    "star import": "from math import *",
    "relative import": "from . import x",
    # forbidden builtins
    "__import__": "__import__('os')",
    "eval": "eval('1 + 1')",
    "exec": "exec('x = 1')",
    "compile": "compile('1', '<s>', 'eval')",
    "open": "open('/etc/passwd').read()",
    "globals": "globals()",
    "exit": "exit()",
    "quit": "quit()",
    "SystemExit": "raise SystemExit(0)",
    "breakpoint": "breakpoint()",
    # classes: __del__ after the timeout, __getattribute__, metaclasses
    "__del__ after timeout": "class A:\n    def __del__(self):\n        import os\nA()",
    "class __getattribute__": "class A:\n    def __getattribute__(self, n):\n        return 1",
    "finally after the timeout": "try:\n    while True:\n        pass\nfinally:\n    print('ran after the timeout')",
    # augmented assignment and with tricks
    "augmented attribute on module": "import math\nmath.pi += 1",
    "augmented dunder": "f = print\nf.__self__ += 1",
    "assign dunder": "x = []\nx.__class__ = dict",
    "with open": "with open('/etc/passwd') as f:\n    f.read()",
    "decorator": "@print.__self__.__import__\ndef os():\n    pass",
    # resource exhaustion
    "infinite while": "while True:\n    pass",
    "memory bomb by repetition": "'a' * 10**10",
    "list repetition bomb": "[0] * 10**9",
    "power bomb": "10 ** 10 ** 10",
    "shift bomb": "1 << 10**10",
    "memory bomb by growth": "x = [list(range(10**6)) for _ in range(200)]",
    "deep recursion": "def f(n):\n    return f(n + 1)\nf(0)",
    "sleep past the timeout": "import time\ntime.sleep(60)",
    "C-level spin past the timeout": "sum(range(10**12))",
}

# What refuses each escape: a regular expression the error must match (``re.search``), i.e. the
# message of the guard the escape runs into. Timing guards: the interpreter's own deadline, its
# ``while`` cap, or the worker's kill, whichever comes first on the machine.
_PRIVATE = r"access to the private or dunder attribute '{}' is not allowed"
_BUILTIN = r"name '{}' is not defined \(forbidden builtins such as eval, open, exit, type and getattr are not available\)"
_IMPORT = r"import of '{}' is not allowed; authorized modules: math, random"
_FORMAT = r"format field '{}' reaches a private attribute; refused"
_NO_ATTR = r"module '{}' has no attribute '{}' that code may use"
_ASSIGN = r"assigning attribute '{}' here is not allowed"
_CAP = r"{} of \d+ items exceeds the limit \(10000000\)"
_BITS = r"{} would have about \d+ bits, over the limit \(1000000\)"
TIMEOUT = (r"(timed out after [\d.]+ s \(killed\)|the code exceeded its time limit \([\d.]+ s\)"
           r"|the sandboxed code was stopped by signal SIGXCPU CPU time limit)")  # the wall clock, or the CPU rlimit
_CLASSES = "line 1: class definitions are not supported in the sandbox"

REFUSED_BY = {
    "subclass walk via tuple": _PRIVATE.format("__class__"),
    "subclass walk via mro": _PRIVATE.format("__class__"),
    "object subclasses": _BUILTIN.format("object"),
    "type() to reach object": _BUILTIN.format("type"),
    "subclass walk via str": _PRIVATE.format("__class__"),
    "print.__self__": _PRIVATE.format("__self__"),
    "print.__self__.__import__": _PRIVATE.format("__self__"),
    "getattr smuggling": _BUILTIN.format("getattr"),
    "__getattribute__": _PRIVATE.format("__getattribute__"),
    "function globals": _PRIVATE.format("__globals__"),
    "function code object": _PRIVATE.format("__code__"),
    "format attribute walk": _FORMAT.format(r"0\.__class__\.__base__\.__subclasses__"),
    "format item walk": _FORMAT.format(r"0\[__builtins__\]"),
    "str.format on the type": _FORMAT.format(r"0\.__init__\.__globals__"),
    "format_map": r"access to the attribute 'format_map' is not allowed",
    "nested format spec": _FORMAT.format(r"\{1\.__class__\}"),
    "generator frame": r"access to the attribute 'gi_frame' is not allowed",
    "generator function": r"line 2: generators \(yield\) are not supported",
    "traceback frame": _PRIVATE.format("__traceback__"),
    "random._os": _PRIVATE.format("_os"),
    "from random import _os": r"cannot import '_os' from 'random'",
    "public module member": _NO_ATTR.format("json", "codecs"),
    "import os": _IMPORT.format("os"),
    "import ctypes": _IMPORT.format("ctypes"),
    "pickle": _IMPORT.format("pickle"),
    "import subprocess": _IMPORT.format("subprocess"),
    "import sys": _IMPORT.format("sys"),
    "import builtins": _IMPORT.format("builtins"),
    "importlib": _IMPORT.format("importlib"),
    "star import": r"'from math import \*' is not allowed",
    "relative import": r"relative imports are not allowed",
    "__import__": _BUILTIN.format("__import__"),
    "eval": _BUILTIN.format("eval"),
    "exec": _BUILTIN.format("exec"),
    "compile": _BUILTIN.format("compile"),
    "open": _BUILTIN.format("open"),
    "globals": _BUILTIN.format("globals"),
    "exit": _BUILTIN.format("exit"),
    "quit": _BUILTIN.format("quit"),
    "SystemExit": _BUILTIN.format("SystemExit"),
    "breakpoint": _BUILTIN.format("breakpoint"),
    # a class is refused as a whole, so no __del__ or __getattribute__ override can be defined:
    # that refusal is the guard these two meet (their effects without a class are cases of their own:
    # "finally after the timeout", "__getattribute__")
    "__del__ after timeout": _CLASSES,
    "class __getattribute__": _CLASSES,
    "finally after the timeout": TIMEOUT + r"|while loop exceeded 1000000 iterations",
    "augmented attribute on module": _ASSIGN.format("pi"),
    "augmented dunder": _PRIVATE.format("__self__"),
    "assign dunder": _ASSIGN.format("__class__"),
    "with open": r"line 1: with statements are not supported in the sandbox",
    "decorator": r"line 2: decorators are not supported",
    "infinite while": TIMEOUT + r"|while loop exceeded 1000000 iterations",
    "memory bomb by repetition": _CAP.format("a repeated sequence"),
    "list repetition bomb": _CAP.format("a repeated sequence"),
    "power bomb": _BITS.format(r"the power 10\*\*10000000000"),
    "shift bomb": _BITS.format("the shift by 10000000000"),
    # the address-space rlimit, unless the clock runs out first on a slow machine
    "memory bomb by growth": r"out of memory|" + TIMEOUT,
    "deep recursion": r"line 2: call depth exceeds 100 \(recursion too deep\)",
    "sleep past the timeout": r"line 2: time\.sleep\(60\) would pass the time limit \([\d.]+ s\)",
    "C-level spin past the timeout": _CAP.format("a range"),
}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    box = Sandbox(workspace=tmp_path_factory.mktemp("ws") / "python", timeout=2.0, memory_mb=256)
    yield box
    box.close()


def test_every_escape_names_the_guard_that_refuses_it():
    assert set(REFUSED_BY) == set(ESCAPES)
    assert all(re.compile(pattern) for pattern in REFUSED_BY.values())


@pytest.mark.parametrize("name", list(ESCAPES))
def test_escape_fails_with_an_error_and_the_host_survives(sandbox, name):
    result = sandbox.run(ESCAPES[name])
    assert result.error, f"{name}: not refused; value={result.value!r} output={result.output!r}"
    assert re.search(REFUSED_BY[name], result.error), f"{name}: refused by another guard: {result.error}"
    assert "ran after the timeout" not in result.output
    assert not os.path.exists(CANARY)
    after = sandbox.run("print('alive')\n6 * 7")  # the sandbox still serves
    assert (after.output, after.value, after.error) == ("alive\n", "42", None)


def test_refusals_say_why(sandbox):
    assert "private or dunder attribute '__class__'" in sandbox.run(ESCAPES["subclass walk via tuple"]).error
    assert "name 'eval' is not defined" in sandbox.run(ESCAPES["eval"]).error
    assert "would pass the time limit (1 s)" in sandbox.run("import time\ntime.sleep(30)", timeout=1).error
    # a C call: stopped by the wall-clock kill or, on an idle machine, by the CPU rlimit first
    assert re.search(r"timed out after 1 s|stopped by signal SIGXCPU",
                     sandbox.run("import re\nre.match('(a+)+$', 'a' * 40 + 'b')", timeout=1).error)
    assert "class definitions are not supported" in sandbox.run(ESCAPES["__del__ after timeout"]).error


# ------------------------------------------------------------------------------------------------
# The OS layer, with the AST layer opened on purpose
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def open_sandbox(tmp_path_factory):
    """A sandbox that lets code import os, socket, ctypes and subprocess (and the C modules that
    define their functions, posix and _pickle, since a module view shows only what allowed
    modules define): only the OS layer holds."""
    ws = tmp_path_factory.mktemp("ws_open") / "python"
    box = Sandbox(workspace=ws, timeout=3.0, memory_mb=256,
                  additional_authorized_imports=("os", "posix", "socket", "ctypes", "subprocess", "pickle", "_pickle"))
    box.run("1")
    yield box
    box.close()


needs_isolation = pytest.mark.skipif(not LINUX, reason="the OS layer is Linux-only")


@needs_isolation
def test_isolation_layers_are_reported(open_sandbox):
    iso = open_sandbox.isolation
    assert "as=256MiB" in iso["rlimits"]
    if os.getuid() == 0:  # CI and these machines run as root: every layer must hold
        assert iso["network"] == "netns" and iso["user"] == "uid 65534"
        assert iso["filesystem"].startswith("landlock")


@needs_isolation
def test_no_network_even_to_loopback(open_sandbox):
    if not open_sandbox.isolation["network"].endswith("netns"):
        pytest.skip(f"no network namespace here: {open_sandbox.isolation['network']}")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        port = listener.getsockname()[1]
        r = open_sandbox.run(f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))")
        assert r.error and ("Errno" in r.error or "unreachable" in r.error.lower() or "refused" in r.error.lower())
        r = open_sandbox.run("import socket\nsocket.getaddrinfo('example.com', 80)")
        assert r.error
    finally:
        listener.close()


@needs_isolation
def test_workers_live_in_their_own_network_namespace(open_sandbox):
    """The namespace itself, read from the host: a worker reporting "netns" without unsharing
    passed the loopback test (Landlock's TCP rule also refuses loopback on this kernel)."""
    if not open_sandbox.isolation["network"].endswith("netns"):
        pytest.skip(f"no network namespace here: {open_sandbox.isolation['network']}")
    open_sandbox.run("1")
    pids = [w.proc.pid for w in open_sandbox._started if w.alive()]
    assert pids
    host = os.readlink("/proc/self/ns/net")
    for pid in pids:
        assert os.readlink(f"/proc/{pid}/ns/net") != host


@needs_isolation
def test_a_file_past_16_mib_and_a_65th_open_file_fail(open_sandbox):
    """The limits the README names, exercised (not only the self-reported rlimit string)."""
    r = open_sandbox.run("import os\nfd = os.open('big.bin', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
                         "chunk = b'x' * (1024 * 1024)\nfor i in range(16):\n    os.write(fd, chunk)\n"
                         "os.write(fd, b'y')")
    assert r.error and "File too large" in r.error, r.error
    r = open_sandbox.run("import os\nfds = [os.open('f%d' % i, os.O_WRONLY | os.O_CREAT) for i in range(80)]")
    assert r.error and "Too many open files" in r.error, r.error
    r = open_sandbox.run("import os\nfds = [os.open('g%d' % i, os.O_WRONLY | os.O_CREAT) for i in range(40)]\nlen(fds)")
    assert r.error is None and r.value == "40", r.error  # below the limit: fine


@needs_isolation
def test_no_new_processes(open_sandbox):
    r = open_sandbox.run("import os\nos.fork()")
    assert r.error and ("Resource temporarily unavailable" in r.error or "Permission denied" in r.error)
    r = open_sandbox.run(f"import subprocess\nsubprocess.run(['/bin/touch', '{CANARY}'])")
    assert r.error
    r = open_sandbox.run(f"import os\nos.system('touch {CANARY}')")
    assert r.error or r.value != "0"
    r = open_sandbox.run(f"import pickle\npickle.loads(b\"cos\\nsystem\\n(S'touch {CANARY}'\\ntR.\")")
    assert r.error or r.value != "0"
    assert not os.path.exists(CANARY)


@needs_isolation
def test_no_files_outside_the_workspace(open_sandbox, tmp_path):
    if not open_sandbox.isolation["filesystem"].startswith("landlock") and os.getuid() != 0:
        pytest.skip(f"no file-system layer here: {open_sandbox.isolation['filesystem']}")
    outside = tmp_path / "outside.txt"
    r = open_sandbox.run(f"import os\nfd = os.open('{outside}', os.O_WRONLY | os.O_CREAT)\nos.write(fd, b'x')")
    assert r.error and ("Permission denied" in r.error or "Errno" in r.error)
    assert not outside.exists()
    r = open_sandbox.run("import os\nfd = os.open('/tmp/x_sandbox', os.O_WRONLY | os.O_CREAT)")
    assert r.error
    r = open_sandbox.run("import os\nos.open('/etc/hostname', os.O_RDONLY)")
    assert r.error and "Permission denied" in r.error
    r = open_sandbox.run("import os\nfd = os.open('inside.txt', os.O_WRONLY | os.O_CREAT, 0o644)\n"
                         "os.write(fd, b'ok')\nos.close(fd)\nos.listdir('.')")
    assert r.error is None and "inside.txt" in r.value
    assert (open_sandbox.workspace / "inside.txt").read_bytes() == b"ok"


@needs_isolation
def test_memory_and_cpu_limits_hold_below_the_interpreter(open_sandbox):
    r = open_sandbox.run("b = [bytes(10**7) for _ in range(100)]")  # 1 GB in pieces the size caps allow
    assert r.error and ("memory" in r.error.lower())
    r = open_sandbox.run("import ctypes\nctypes.string_at(0)")  # a segfault in the child
    assert r.error and "signal" in r.error
    assert open_sandbox.run("1 + 1").value == "2"


def test_a_fresh_process_per_run(tmp_path):
    with Sandbox(workspace=tmp_path / "py", timeout=5, reuse=False) as box:
        assert box.run("x = 1\nx").value == "1"
        assert box.processes == 0  # the worker is gone after the run
        assert "name 'x' is not defined" in box.run("x").error


# ------------------------------------------------------------------------------------------------
# The python_interpreter tool
# ------------------------------------------------------------------------------------------------

def test_python_interpreter_tool(tmp_path):
    tool = default_toolbox(workspace=str(tmp_path), python_timeout=5)["python_interpreter"]
    try:
        assert tool(code="print('hi')\nsum(range(5))") == "hi\n10"
        assert tool(code="x = 1") == "(the code ran and printed nothing)"
        with pytest.raises(ToolError, match="import of 'os' is not allowed") as info:
            tool(code="print('partial')\nimport os")
        assert "Printed before the error:\npartial" in str(info.value)
        assert "Modules: math, random" in tool.description
    finally:
        tool.close()


# ------------------------------------------------------------------------------------------------
# The interpreter holds on its own, in-process (the cases found against the code agents)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("code, says", [
    ("import json.tool\njson.tool.Path('/etc/passwd').read_text()", "import of 'json.tool' is not allowed"),
    ("import json\njson.tool.Path('/etc/passwd').read_text()", "no attribute 'tool'"),
    ("from json import tool", "cannot import 'tool'"),
    ("import statistics\nstatistics.sys", "no attribute 'sys'"),
    ("import fractions\nfractions.sys", "no attribute 'sys'"),
    ("import random\nrandom._os", "private or dunder attribute '_os'"),
    ("import collections\ncollections.namedtuple('P', 'a')", "comes from a module that is not authorized"),
    ("import decimal\ndecimal.setcontext(decimal.Context())", "decimal.setcontext is not allowed"),
    ("import time\ntime.tzset()", "time.tzset is not allowed"),
])
def test_modules_show_only_their_allow_listed_surface(code, says):
    with pytest.raises(InterpreterError, match=re.escape(says)):
        evaluate_python_code(code)


def test_no_base_exception_leaves_the_interpreter(tmp_path):
    def raises(kind):
        def tool_():
            raise kind(2)
        return tool_
    for kind in (SystemExit, KeyboardInterrupt, GeneratorExit):
        with pytest.raises(InterpreterError, match=f"the code raised {kind.__name__}"):
            evaluate_python_code("try:\n    boom()\nexcept Exception:\n    pass", tools={"boom": raises(kind)})


@pytest.mark.parametrize("code, says", [
    ("import time\ntime.sleep(60)", "would pass the time limit"),
    ("sum(range(10**11))", "a range of 100000000000 items exceeds the limit"),
    ("import math\nmath.factorial(2 * 10**6)", "over the limit"),
    ("list(range(3 * 10**7))", "exceeds the limit"),
    ("import itertools\nsum(itertools.count())", "exceeded its time limit"),
    ("sum(iter(int, 1))", "exceeded its time limit"),
    ("x = 3\nfor _ in range(40):\n    x = x * x", "over the limit"),
    ("'a'.ljust(10**10)", "exceeds the limit"),
    ("f'{1:>{10**10}}'", "exceeds the limit"),
    ("-" * 100_000 + "1", "nested too deeply"),
    ("[" * 200 + "]" * 200, "nested more than 100 levels deep"),
    ("import decimal\ndecimal.getcontext().prec = 10**9", "exceeds the limit"),
])
def test_caps_hold_in_process(code, says):
    with pytest.raises(InterpreterError, match=re.escape(says)):
        evaluate_python_code(code, timeout=0.5)


def test_the_host_keeps_its_state():
    import decimal
    import json
    import random

    random.seed(7)
    expected = random.random()
    random.seed(7)
    evaluate_python_code("import decimal, random, json\ndecimal.getcontext().prec = 1\nrandom.seed(0)\nrandom.random()")
    assert decimal.getcontext().prec == 28 and random.random() == expected
    with pytest.raises(InterpreterError, match="assigning attribute 'dumps' here is not allowed"):
        evaluate_python_code("import json\njson.dumps = print")
    assert json.dumps({"a": 1}) == '{"a": 1}'


def test_state_is_the_codes_variables_across_runs():
    state = {"x": 2}
    assert evaluate_python_code("y = x * 21\ndef twice(n):\n    return 2 * n", state=state) == (None, "")
    assert state["y"] == 42 and evaluate_python_code("twice(y)", state=state) == (84, "")


# ------------------------------------------------------------------------------------------------
# The worker's channel: tools in the host, variables by value, a pool
# ------------------------------------------------------------------------------------------------

def test_tools_are_called_back_in_the_host_and_checked(sandbox):
    from toolkit import tool as make_tool

    calls = []

    @make_tool
    def lookup(query: str, limit: int = 2) -> dict:
        """Look up.

        Args:
            query: what
            limit: how many
        """
        calls.append((os.getpid(), query, limit))
        return {"query": query, "hits": ("a", "b")[:limit]}

    r = sandbox.run("r = lookup(query='BERT', limit=1)\nprint(r['hits'])\nr", tools={"lookup": lookup})
    assert (r.output, r.data, r.error) == ("('a',)\n", {"query": "BERT", "hits": ("a",)}, None)
    assert calls == [(os.getpid(), "BERT", 1)]  # it ran here, in the host
    r = sandbox.run("try:\n    lookup(q='x')\nexcept Exception as e:\n    print('caught:', e)", tools={"lookup": lookup})
    assert "caught: " in r.output and "missing required argument 'query'" in r.output and r.error is None
    r = sandbox.run("lookup(query=print)", tools={"lookup": lookup})
    assert "cannot be passed to a tool" in r.error and len(calls) == 1


def test_variables_persist_by_value_between_runs(sandbox):
    state = {"given": "text", "host_only": object()}
    r = sandbox.run("import math\ndef area(r):\n    return math.pi * r * r\nn = 3\nit = iter([1])", state=state)
    assert r.error is None and state["n"] == 3 and "it" not in state
    assert "it" in r.dropped and "host_only" in r.dropped and state["host_only"] is not None  # kept here
    r = sandbox.run("print(given, round(area(n), 2))\ndel n", state=state)
    assert (r.output, r.error) == ("text 28.27\n", None) and "n" not in state


def test_independent_runs_execute_at_once(tmp_path):
    import threading

    meet = threading.Barrier(2, timeout=20)  # passes only if both runs are in flight together

    def rendezvous() -> str:
        meet.wait()
        return "met"

    with Sandbox(workspace=tmp_path / "py", timeout=5, workers=2) as box:
        results = []
        threads = [threading.Thread(target=lambda: results.append(box.run("rendezvous()", tools={"rendezvous": rendezvous})))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [r.value for r in results] == ["'met'", "'met'"] and box.processes == 2


def test_a_worker_started_from_a_finished_thread_keeps_serving(tmp_path):
    import threading

    with Sandbox(workspace=tmp_path / "py", timeout=5, workers=1) as box:
        t = threading.Thread(target=box.run, args=("1",))
        t.start()
        t.join()
        pid = box._started[0].proc.pid
        assert box.run("2").value == "2" and box.run("3").value == "3"
        assert [w.proc.pid for w in box._started] == [pid]  # not killed with the thread, not restarted
