"""The sandbox process: the AST interpreter run in separate, isolated worker processes.

    python -m toolkit.sandbox.process        (the worker; ``Sandbox`` starts it, not you)

Host side, :class:`Sandbox`, a small pool of workers:

    with Sandbox(workspace="workspace/python", timeout=10, memory_mb=512, workers=2) as box:
        box.run("print(sum(range(10)))")     # SandboxResult(output='45\\n', value=None, error=None, ...)
        state = {}
        box.run("x = search(query='BERT')", tools={"search": search}, state=state)   # state -> {"x": ...}

A worker starts once (``reuse=True``, the default) or per call (``reuse=False``), imports the
authorized modules, isolates itself (``toolkit.sandbox.isolation``: network namespace, Landlock,
rlimits, no_new_privs, unprivileged uid) and then, for each run, forks a child that sets its CPU
limit and ``RLIMIT_NPROC = 0`` and runs the interpreter (``evaluate_python_code``). The worker
kills a child that overruns the wall clock (SIGKILL to its process group); the host kills the whole
worker group when the worker itself does not answer in time, and starts a fresh one next time.
Nothing a run does survives it: each run is a fresh fork of the pristine worker.

Tools are called back, not run in the sandbox: the host's tools (they hold connections and
models) stay in the host. A tool call in the code sends ``{"call": {"tool", "args", "kwargs"}}``
up through the worker; the host checks the name, decodes the arguments
(``toolkit.sandbox.values``: data only), calls its tool (a ``Tool`` validates them against its
``inputs``) and sends back ``{"reply": {"value"}}`` or ``{"reply": {"error"}}``; the code gets the
value, or a ``ToolError`` it may catch. The child is stopped (SIGSTOP) while the host works and the
time it waits does not count against its wall clock.

Variables persist between runs by value (``state``): the host sends them in, the child sends
them back after the run. Chosen over keeping a process per conversation because every run stays a
fresh fork (a timeout, crash or out-of-memory in one step loses nothing of the earlier ones and
cannot leave anything behind for the next), any worker of the pool can serve any step, and the
host holds the variables as plain data it can show. What is not data (an iterator, a file-like
object) is not kept: ``SandboxResult.dropped`` names it and why. Modules and the code's own
top-level functions are kept as their name or source and rebuilt in the next run.

Protocol: one JSON object per line. Host -> worker: first ``{"workspace", "memory_mb",
"authorized_imports"}``, then per run ``{"run": {"code", "timeout", "tools", "state"}}`` and a
``{"reply": ...}`` per call. Worker -> host: ``{"ready": true, "isolation": {...}}``, then per
run any ``{"call": ...}`` and one ``{"result": {"output", "value", "data"?, "error", "state"?,
"dropped"}}``.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_MESSAGE_BYTES = 16_000_000  # one line between child, worker and host (a call's arguments, a result)
MAX_STATE_BYTES = 8_000_000     # the variables kept between runs, encoded
MAX_OUTPUT_CHARS = 1_000_000
HOST_GRACE_S = 5.0  # how much longer than the run's timeout the host waits for the worker
_NO_DATA = object()


@dataclass
class SandboxResult:
    """One run: ``output`` is what the code printed, ``value`` the repr of its last expression
    (None when there is none), ``error`` why it failed (None when it did not). ``data`` is the
    last expression's value itself when it is data (else None); ``dropped`` names the variables
    that were not kept, with why."""

    output: str
    value: str | None
    error: str | None
    data: Any = None
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class SandboxError(RuntimeError):
    """The sandbox itself could not run (the worker failed to start)."""


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

class ToolError(RuntimeError):
    """A tool called from sandboxed code failed in the host; the message is the host's."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _encode_state(state: dict, code_value_of) -> tuple[dict, dict]:
    """The variables as data for the host, and ``{name: why}`` for those not kept."""
    from toolkit.sandbox.values import ValueNotSendable, encode

    kept, dropped, size = {}, {}, 0
    for name, value in state.items():
        try:
            data = encode(value, allow_code=code_value_of)
            text = json.dumps(data)
        except (ValueNotSendable, ValueError, RecursionError) as e:
            dropped[name] = str(e)
            continue
        size += len(text)
        if size > MAX_STATE_BYTES:
            dropped[name] = f"too large to keep between steps (the variables may take {MAX_STATE_BYTES} bytes)"
            continue
        kept[name] = data
    return kept, dropped


def _run_child(request: dict, authorized: tuple, to_worker: int, from_worker: int) -> None:
    """In the forked child: last limits, run, write the result, exit without cleanup."""
    import resource

    from toolkit.sandbox.interpreter import InterpreterError, code_value_of, evaluate_python_code
    from toolkit.sandbox.values import ValueNotSendable, decode, encode

    os.setpgid(0, 0)
    timeout = float(request.get("timeout", 10))
    cpu = max(1, math.ceil(timeout))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except (ValueError, OSError):
        pass
    replies = os.fdopen(from_worker, "rb")

    def proxy(name: str):
        def call(*args, **kwargs):
            try:
                message = {"call": {"tool": name, "args": encode(list(args)), "kwargs": encode(kwargs)}}
            except ValueNotSendable as e:
                raise TypeError(f"an argument of {name}() cannot be passed to a tool: {e}") from None
            _write_all(to_worker, json.dumps(message).encode() + b"\n")
            reply = json.loads(replies.readline() or b"{}")
            if "error" in reply:
                raise ToolError(str(reply["error"]))
            if "value" not in reply:
                raise ToolError(f"the host did not answer the call to {name}")
            return decode(reply["value"])
        call.__name__ = name
        return call

    result: dict[str, Any] = {"output": "", "value": None, "error": None}
    state = None
    try:
        tools = {name: proxy(name) for name in request.get("tools", [])}
        if request.get("state") is not None:
            state = {k: decode(v, allow_code=True) for k, v in request["state"].items()}
        value, printed = evaluate_python_code(request["code"], tools=tools, state=state, authorized_imports=authorized,
                                              timeout=timeout)  # a clean error first; the kill if C code runs on
        result["output"] = printed
        if value is not None:
            result["value"] = repr(value)[:MAX_OUTPUT_CHARS]
            try:
                result["data"] = encode(value, allow_code=code_value_of)
            except ValueNotSendable:
                pass
    except InterpreterError as e:
        result.update(output=getattr(e, "printed", ""), error=str(e))
    except MemoryError:
        result["error"] = "out of memory (the sandbox's memory limit)"
    except BaseException as e:  # the child reports every failure as the run's error, then exits
        result["error"] = f"{type(e).__name__}: {e}"
    try:
        result["output"] = result["output"][:MAX_OUTPUT_CHARS]
        if state is not None:
            result["state"], result["dropped"] = _encode_state(state, code_value_of)
        data = json.dumps({"result": result}).encode()
        if len(data) > MAX_MESSAGE_BYTES:
            result.pop("data", None)
            result["state"], result["dropped"] = {}, {"*": "the result was too large to send back"}
            data = json.dumps({"result": result}).encode()
    except BaseException as e:
        data = json.dumps({"result": {"output": "", "value": None, "error": f"{type(e).__name__}: {e}"}}).encode()
    try:
        _write_all(to_worker, data + b"\n")
    finally:
        os._exit(0)


def _serve_one(request: dict, authorized: tuple, host_in, host_out) -> dict:
    """Fork a child for ``request``, relay its tool calls to the host, return its result."""
    timeout = float(request.get("timeout", 10))
    up_read, up_write = os.pipe()        # child -> worker
    down_read, down_write = os.pipe()    # worker -> child
    pid = os.fork()
    if pid == 0:
        os.close(up_read)
        os.close(down_write)
        _run_child(request, authorized, up_write, down_read)
    os.close(up_write)
    os.close(down_read)
    buffer, deadline, failure, result = b"", time.monotonic() + timeout, None, None
    while result is None and failure is None:
        left = deadline - time.monotonic()
        if left <= 0:
            failure = f"timed out after {timeout:g} s (killed)"
            break
        ready, _, _ = select.select([up_read], [], [], left)
        if not ready:
            continue
        chunk = os.read(up_read, 1 << 16)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer and result is None and failure is None:
            line, buffer = buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                failure = "the sandboxed code sent an unreadable message"
                break
            if isinstance(message, dict) and isinstance(message.get("call"), dict):
                os.kill(pid, signal.SIGSTOP)  # the child waits, stopped, while the host runs the tool
                paused = time.monotonic()
                host_out.write(json.dumps({"call": message["call"]}).encode() + b"\n")
                host_out.flush()
                reply = host_in.readline()
                if not reply:  # the host is gone: so are we
                    os.killpg(pid, signal.SIGKILL)
                    os._exit(0)
                deadline += time.monotonic() - paused
                os.kill(pid, signal.SIGCONT)
                answer = json.loads(reply).get("reply", {"error": "no reply"})
                _write_all(down_write, json.dumps(answer).encode() + b"\n")
            elif isinstance(message, dict) and isinstance(message.get("result"), dict):
                result = message["result"]
            else:
                failure = "the sandboxed code sent an unexpected message"
        if len(buffer) > MAX_MESSAGE_BYTES:
            failure = f"the sandboxed code sent a message over {MAX_MESSAGE_BYTES} bytes"
    os.close(up_read)
    os.close(down_write)
    for target in (-pid, pid):  # the child's group (it made one) and the child itself
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _, status = os.waitpid(pid, 0)
    if failure:
        return {"output": "", "value": None, "error": failure}
    if result is not None:
        return result
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        why = {signal.SIGXCPU: "CPU time limit", signal.SIGKILL: "killed", signal.SIGSEGV: "crashed"}.get(sig, "")
        return {"output": "", "value": None,
                "error": f"the sandboxed code was stopped by signal {signal.Signals(sig).name} {why}".strip()}
    return {"output": "", "value": None, "error": f"the sandboxed code exited with status {os.WEXITSTATUS(status)}"}


def worker_main() -> None:
    from toolkit.sandbox import interpreter, isolation, values  # noqa: F401 - imported before isolation

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    config = json.loads(stdin.readline())
    authorized = tuple(config["authorized_imports"])
    for name in authorized:  # import now: after isolation the stdlib may be out of reach
        try:
            __import__(name.removesuffix(".*"))
        except ImportError:
            pass
    import string  # noqa: F401 - used by the interpreter's format check
    os.chdir(config["workspace"])
    report = isolation.apply(config["workspace"], config["memory_mb"])
    stdout.write(json.dumps({"ready": True, "isolation": report}).encode() + b"\n")
    stdout.flush()
    import gc
    gc.freeze()  # the children's collector leaves the worker's objects (and their shared pages) alone
    for line in stdin:
        request = json.loads(line)["run"]
        result = _serve_one(request, authorized, stdin, stdout)
        stdout.write(json.dumps({"result": result}).encode() + b"\n")
        stdout.flush()


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------

_SPAWN_REQUESTS: "queue.Queue" = None  # type: ignore[assignment]
_SPAWN_LOCK = threading.Lock()


def _spawn(*args, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` run by one long-lived thread. A worker dies with its parent *thread*
    (``PR_SET_PDEATHSIG``, so that it never outlives the host); started from a short-lived thread
    (a pipeline step's) it would be killed when that thread ends."""
    global _SPAWN_REQUESTS
    import queue

    with _SPAWN_LOCK:
        if _SPAWN_REQUESTS is None:
            _SPAWN_REQUESTS = queue.Queue()
            threading.Thread(target=_spawner, args=(_SPAWN_REQUESTS,), daemon=True, name="sandbox-spawner").start()
    done, box = threading.Event(), {}
    _SPAWN_REQUESTS.put((args, kwargs, box, done))
    done.wait()
    if "error" in box:
        raise box["error"]
    return box["proc"]


def _spawner(requests) -> None:
    while True:
        args, kwargs, box, done = requests.get()
        try:
            box["proc"] = subprocess.Popen(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread, raised there
            box["error"] = e
        finally:
            done.set()


class _Worker:
    """One isolated worker process, used by one run at a time."""

    def __init__(self, workspace: Path, memory_mb: int, authorized: tuple[str, ...]):
        package_root = str(Path(__file__).resolve().parents[2])
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": package_root,
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        self.proc = _spawn([sys.executable, "-s", "-m", "toolkit.sandbox.process"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=package_root,
                                     start_new_session=True, close_fds=True)
        self.send({"workspace": str(workspace), "memory_mb": memory_mb, "authorized_imports": list(authorized)})
        line = self.read_line(30.0)
        if line is None:
            err = self.kill()
            raise SandboxError(f"the sandbox worker did not start: {err[-500:]}")
        self.isolation = json.loads(line)["isolation"]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, message: dict) -> None:
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def read_line(self, timeout: float) -> bytes | None:
        out = self.proc.stdout  # one line is in flight at a time, so select on the pipe suffices
        ready, _, _ = select.select([out], [], [], max(timeout, 0))
        if not ready:
            return None
        line = out.readline(MAX_MESSAGE_BYTES + 1)
        return line if line.endswith(b"\n") else None

    def kill(self) -> str:
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.kill()
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            err = b""
        return (err or b"").decode(errors="replace")


class Sandbox:
    """Runs code in isolated worker processes: a pool of up to ``workers`` runs at once.
    Thread-safe.

    ``workspace``: the only folder the code can write (created; as root it is given to the
    sandbox uid). ``timeout``: wall-clock seconds per run (also its CPU seconds), not counting
    the time its tool calls spend in the host. ``memory_mb``: address-space limit per worker.
    ``authorized_imports``: the interpreter's allow-list (``"pkg.*"`` admits submodules).
    ``reuse``: keep workers for many runs (fast) or start one per run. ``workers``: how many
    runs execute at once; a run waiting on a tool call in the host does not hold its place, so
    a tool that itself runs code here (a managed code agent) cannot deadlock the pool.
    """

    def __init__(self, workspace: str | os.PathLike = "workspace/python", timeout: float = 10.0,
                 memory_mb: int = 512, authorized_imports: tuple[str, ...] | None = None,
                 additional_authorized_imports: tuple[str, ...] = (), reuse: bool = True, workers: int = 2):
        from toolkit.sandbox.interpreter import DEFAULT_AUTHORIZED_IMPORTS

        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workspace = Path(workspace).resolve()
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.authorized_imports = tuple(authorized_imports or DEFAULT_AUTHORIZED_IMPORTS) + tuple(additional_authorized_imports)
        self.reuse = reuse
        self.workers = workers
        self.isolation: dict | None = None
        self._idle: list[_Worker] = []
        self._started: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(workers)
        self._closed = False

    # -- the pool -------------------------------------------------------------------------------

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                worker.kill()
        from toolkit.sandbox.isolation import SANDBOX_UID

        self.workspace.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            os.chown(self.workspace, SANDBOX_UID, SANDBOX_UID)
        worker = _Worker(self.workspace, self.memory_mb, self.authorized_imports)
        with self._lock:
            self.isolation = worker.isolation
            self._started.append(worker)
        return worker

    def _give_back(self, worker: _Worker, healthy: bool) -> None:
        with self._lock:
            if healthy and self.reuse and not self._closed and worker.alive() and len(self._idle) < self.workers:
                self._idle.append(worker)
                return
            if worker in self._started:
                self._started.remove(worker)
        worker.kill()

    @property
    def processes(self) -> int:
        """Worker processes alive now (idle or running)."""
        with self._lock:
            return sum(1 for w in self._started if w.alive())

    # -- runs -----------------------------------------------------------------------------------

    def run(self, code: str, timeout: float | None = None, tools: Mapping[str, Callable] | None = None,
            state: dict | None = None) -> SandboxResult:
        """Run ``code``; never raises for what the code does (that is ``result.error``).

        ``tools``: host callables the code may call by name, over the channel (arguments and
        results as data, ``toolkit.sandbox.values``). ``state``: the code's variables, updated
        in place after the run (also after a failed one; not after a killed one); values that
        cannot be sent stay here, out of the code's reach, and are named in ``result.dropped``.
        """
        from toolkit.sandbox.values import ValueNotSendable, encode

        timeout = self.timeout if timeout is None else timeout
        tools = dict(tools or {})
        sent_state, unsent = None, {}
        if state is not None:
            sent_state = {}
            for name, value in state.items():
                try:
                    sent_state[name] = encode(value)
                except ValueNotSendable as e:
                    unsent[name] = f"not available to the code: {e}"
        request = {"run": {"code": code, "timeout": timeout, "tools": sorted(tools), "state": sent_state}}
        self._slots.acquire()
        holding = True
        worker, healthy = None, False
        try:
            worker = self._take()
            worker.send(request)
            code_time = 0.0  # the host waits for the code, not counting its tool calls
            while True:
                waited = time.monotonic()
                line = worker.read_line(timeout + HOST_GRACE_S - code_time)
                code_time += time.monotonic() - waited
                if line is None:
                    return SandboxResult("", None, f"timed out after {timeout:g} s; the sandbox worker was killed",
                                         dropped=unsent)
                message = json.loads(line)
                if "call" in message:
                    self._slots.release()  # parked: a tool may run code in this pool meanwhile
                    holding = False
                    reply = self._call_tool(tools, message["call"])
                    self._slots.acquire()
                    holding = True
                    worker.send({"reply": reply})
                    continue
                result = message["result"]
                healthy = True
                return self._result(result, state, sent_state, unsent)
        except (BrokenPipeError, OSError, ValueError, KeyError, TypeError) as e:
            return SandboxResult("", None, f"the sandbox worker failed ({type(e).__name__}: {e}); it was restarted",
                                 dropped=unsent)
        finally:
            if worker is not None:
                self._give_back(worker, healthy)
            if holding:
                self._slots.release()

    @staticmethod
    def _call_tool(tools: Mapping[str, Callable], call: Any) -> dict:
        """Run one tool call that came from the code; the reply for the child."""
        from toolkit.sandbox.values import ValueNotSendable, decode, encode

        if not isinstance(call, dict) or call.get("tool") not in tools:
            name = call.get("tool") if isinstance(call, dict) else None
            return {"error": f"there is no tool named {name!r}; the tools are: {', '.join(tools) or 'none'}"}
        try:
            args, kwargs = decode(call.get("args", [])), decode(call.get("kwargs", {}))
            if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
                raise ValueError("arguments must be a list and a dict with string keys")
        except (ValueError, TypeError, RecursionError) as e:
            return {"error": f"the call's arguments could not be read: {e}"}
        try:
            result = tools[call["tool"]](*args, **kwargs)
        except Exception as e:  # the tool's failure is the code's to handle: it gets it as ToolError
            return {"error": str(e) if type(e).__name__ == "ToolError" else f"{type(e).__name__}: {e}"}
        try:
            return {"value": encode(result)}
        except ValueNotSendable:  # not data: the code gets its text
            return {"value": str(result)}

    @staticmethod
    def _result(result: dict, state: dict | None, sent_state: dict | None, unsent: dict) -> SandboxResult:
        from toolkit.sandbox.values import decode

        output, value, error = result.get("output", ""), result.get("value"), result.get("error")
        if not isinstance(output, str) or not (value is None or isinstance(value, str)) or \
                not (error is None or isinstance(error, str)):
            raise ValueError("malformed result")
        data = decode(result["data"], allow_code=True) if "data" in result else None
        dropped = dict(unsent)
        dropped.update({str(k): str(v) for k, v in (result.get("dropped") or {}).items()})
        if state is not None and isinstance(result.get("state"), dict):
            new = {str(k): decode(v, allow_code=True) for k, v in result["state"].items()}
            for name in sent_state or {}:
                if name not in new and name not in dropped:
                    state.pop(name, None)  # the code deleted it
            for name in dropped:
                if name in sent_state or {}:
                    state.pop(name, None)  # it was sent but could not come back
            state.update(new)
        return SandboxResult(output, value, error, data, dropped)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._started, self._idle = list(self._started), [], []
        for worker in workers:
            worker.kill()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the process groups die with their pipes anyway
            pass


_SHARED: dict[tuple, Sandbox] = {}
_SHARED_LOCK = threading.Lock()


def shared_sandbox(workspace: str | os.PathLike = "workspace/python", timeout: float = 10.0, memory_mb: int = 512,
                   authorized_imports: tuple[str, ...] | None = None, workers: int = 2) -> Sandbox:
    """One pool per distinct setting for this process (the code agents' default), closed at exit."""
    from toolkit.sandbox.interpreter import DEFAULT_AUTHORIZED_IMPORTS

    imports = tuple(authorized_imports or DEFAULT_AUTHORIZED_IMPORTS)
    key = (str(Path(workspace).resolve()), float(timeout), int(memory_mb), imports, int(workers))
    with _SHARED_LOCK:
        box = _SHARED.get(key)
        if box is None or box._closed:
            if not _SHARED:
                import atexit
                atexit.register(_close_shared)
            box = _SHARED[key] = Sandbox(workspace, timeout, memory_mb, imports, workers=workers)
        return box


def _close_shared() -> None:
    with _SHARED_LOCK:
        boxes = list(_SHARED.values())
        _SHARED.clear()
    for box in boxes:
        box.close()


if __name__ == "__main__":
    worker_main()
