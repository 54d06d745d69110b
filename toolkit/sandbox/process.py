"""The sandbox process: the AST interpreter run in a separate, isolated process.

    python -m toolkit.sandbox.process        (the worker; ``Sandbox`` starts it, not you)

Host side, :class:`Sandbox`:

    with Sandbox(workspace="workspace/python", timeout=10, memory_mb=512) as box:
        result = box.run("print(sum(range(10)))")   # SandboxResult(output='45\\n', value=None, error=None)

The worker starts once (``reuse=True``, the default) or per call (``reuse=False``), imports the
authorized modules, isolates itself (``toolkit.sandbox.isolation``: network namespace, Landlock,
rlimits, unprivileged uid) and then, for each request, forks a child that sets its CPU limit and
``RLIMIT_NPROC = 0``, runs the interpreter and writes one JSON result. The worker kills a child
that overruns the wall clock (SIGKILL to its process group); the host kills the whole worker
group when the worker itself does not answer in time, and starts a fresh one on the next call.
Nothing a run does survives it: each run is a fresh fork of the pristine worker.

Protocol: one JSON object per line. Host -> worker: first ``{"workspace", "memory_mb",
"authorized_imports"}``, then ``{"code", "timeout"}`` per run. Worker -> host: ``{"ready": true,
"isolation": {...}}``, then ``{"output", "value", "error"}`` per run.
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
from dataclasses import dataclass
from pathlib import Path

MAX_RESULT_BYTES = 1_000_000
HOST_GRACE_S = 5.0  # how much longer than the run's timeout the host waits for the worker


@dataclass
class SandboxResult:
    """One run: ``output`` is what the code printed, ``value`` the repr of its last expression
    (None when there is none), ``error`` why it failed (None when it did not)."""

    output: str
    value: str | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


class SandboxError(RuntimeError):
    """The sandbox itself could not run (the worker failed to start)."""


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

def _run_child(code: str, timeout: float, authorized: tuple, write_fd: int) -> None:
    """In the forked child: last limits, run, write the result, exit without cleanup."""
    import resource

    from toolkit.sandbox.interpreter import InterpreterError, evaluate_python_code

    os.setpgid(0, 0)
    cpu = max(1, math.ceil(timeout))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    except (ValueError, OSError):
        pass
    try:
        value, printed = evaluate_python_code(code, authorized_imports=authorized)
        result = {"output": printed, "value": None if value is None else repr(value), "error": None}
    except InterpreterError as e:
        result = {"output": getattr(e, "printed", ""), "value": None, "error": str(e)}
    except MemoryError:
        result = {"output": "", "value": None, "error": "out of memory (the sandbox's memory limit)"}
    except BaseException as e:  # the child reports every failure as the run's error, then exits
        result = {"output": "", "value": None, "error": f"{type(e).__name__}: {e}"}
    data = json.dumps(result).encode()
    if len(data) > MAX_RESULT_BYTES:
        data = json.dumps({"output": result["output"][:MAX_RESULT_BYTES // 2], "value": (result["value"] or "")[:1000],
                           "error": result["error"]}).encode()
    try:
        os.write(write_fd, data)
    finally:
        os._exit(0)


def _serve_one(request: dict, authorized: tuple) -> dict:
    timeout = float(request.get("timeout", 10))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _run_child(request["code"], timeout, authorized, write_fd)
    os.close(write_fd)
    chunks, deadline, killed = [], time.monotonic() + timeout, False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            killed = True
            break
        ready, _, _ = select.select([read_fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        if sum(map(len, chunks)) > 2 * MAX_RESULT_BYTES:
            break
    os.close(read_fd)
    for target in (-pid, pid):  # the child's group (it made one) and the child itself
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    _, status = os.waitpid(pid, 0)
    if killed:
        return {"output": "", "value": None, "error": f"timed out after {timeout:g} s (killed)"}
    if chunks:
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        why = {signal.SIGXCPU: "CPU time limit", signal.SIGKILL: "killed", signal.SIGSEGV: "crashed"}.get(sig, "")
        return {"output": "", "value": None,
                "error": f"the sandboxed code was stopped by signal {signal.Signals(sig).name} {why}".strip()}
    return {"output": "", "value": None, "error": f"the sandboxed code exited with status {os.WEXITSTATUS(status)}"}


def worker_main() -> None:
    from toolkit.sandbox import isolation
    from toolkit.sandbox import interpreter  # noqa: F401 - imported before isolation cuts file access

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    config = json.loads(stdin.readline())
    authorized = tuple(config["authorized_imports"])
    for name in authorized:  # import now: after isolation the stdlib may be out of reach
        try:
            __import__(name)
        except ImportError:
            pass
    import string  # noqa: F401 - used by the interpreter's format check
    os.chdir(config["workspace"])
    report = isolation.apply(config["workspace"], config["memory_mb"])
    stdout.write(json.dumps({"ready": True, "isolation": report}).encode() + b"\n")
    stdout.flush()
    for line in stdin:
        request = json.loads(line)
        result = _serve_one(request, authorized)
        stdout.write(json.dumps(result).encode() + b"\n")
        stdout.flush()


# --------------------------------------------------------------------------------------------
# Host side
# --------------------------------------------------------------------------------------------

class Sandbox:
    """Runs code in an isolated worker process. Thread-safe; runs are serialized per Sandbox.

    ``workspace``: the only folder the code can write (created; as root it is given to the
    sandbox uid). ``timeout``: wall-clock seconds per run (also its CPU seconds).
    ``memory_mb``: address-space limit. ``authorized_imports``: the interpreter's allow-list.
    ``reuse``: keep one worker for many runs (fast) or start one per run.
    """

    def __init__(self, workspace: str | os.PathLike = "workspace/python", timeout: float = 10.0,
                 memory_mb: int = 512, authorized_imports: tuple[str, ...] | None = None,
                 additional_authorized_imports: tuple[str, ...] = (), reuse: bool = True):
        from toolkit.sandbox.interpreter import DEFAULT_AUTHORIZED_IMPORTS

        self.workspace = Path(workspace).resolve()
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.authorized_imports = tuple(authorized_imports or DEFAULT_AUTHORIZED_IMPORTS) + tuple(additional_authorized_imports)
        self.reuse = reuse
        self.isolation: dict | None = None
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _start(self) -> None:
        from toolkit.sandbox.isolation import SANDBOX_UID

        self.workspace.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:
            os.chown(self.workspace, SANDBOX_UID, SANDBOX_UID)
        package_root = str(Path(__file__).resolve().parents[2])
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": package_root,
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        self._proc = subprocess.Popen([sys.executable, "-s", "-m", "toolkit.sandbox.process"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=package_root,
                                      start_new_session=True, close_fds=True)
        config = {"workspace": str(self.workspace), "memory_mb": self.memory_mb,
                  "authorized_imports": list(self.authorized_imports)}
        self._proc.stdin.write(json.dumps(config).encode() + b"\n")
        self._proc.stdin.flush()
        line = self._read_line(30.0)
        if line is None:
            err = self._kill()
            raise SandboxError(f"the sandbox worker did not start: {err[-500:]}")
        self.isolation = json.loads(line)["isolation"]

    def _read_line(self, timeout: float) -> bytes | None:
        out = self._proc.stdout
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready:
            return None
        line = out.readline()
        return line or None

    def _kill(self) -> str:
        proc, self._proc = self._proc, None
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

    def run(self, code: str, timeout: float | None = None) -> SandboxResult:
        """Run ``code``; never raises for what the code does (that is ``result.error``)."""
        timeout = self.timeout if timeout is None else timeout
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._kill()
                self._start()
            try:
                self._proc.stdin.write(json.dumps({"code": code, "timeout": timeout}).encode() + b"\n")
                self._proc.stdin.flush()
                line = self._read_line(timeout + HOST_GRACE_S)
            except (BrokenPipeError, OSError):
                line = None
            if line is None:
                self._kill()
                return SandboxResult("", None, f"timed out after {timeout:g} s; the sandbox worker was killed")
            result = json.loads(line)
            if not self.reuse:
                self._kill()
            return SandboxResult(result.get("output", ""), result.get("value"), result.get("error"))

    def close(self) -> None:
        with self._lock:
            self._kill()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self._kill()
        except Exception:  # interpreter shutdown: the process group dies with its pipes anyway
            pass


if __name__ == "__main__":
    worker_main()
