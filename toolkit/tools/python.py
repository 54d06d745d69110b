"""``python_interpreter(code)``: run Python in the sandbox (``toolkit.sandbox``) and return
what it printed and the value of its last expression. A pool of ``workers`` isolated processes
serves it, so independent steps of a plan run at once."""

from __future__ import annotations

import os
from pathlib import Path

from toolkit.tool import Tool


class SandboxCodeError(RuntimeError):
    """The code failed or was refused in the sandbox; the message says why and shows its output."""


class PythonInterpreterTool(Tool):
    name = "python_interpreter"
    description = ("Run Python code in a sandbox; returns what it prints and its last value. "
                   "Modules: {imports}.")
    # contentMediaType: the pipeline binds #E evidence into this code as data, not as source text
    inputs = {"code": {"type": "string", "description": "the Python code to run", "contentMediaType": "text/x-python"}}
    output_type = "string"

    def __init__(self, workspace: str | os.PathLike = "workspace", timeout: float = 10.0, memory_mb: int = 512,
                 additional_authorized_imports: tuple[str, ...] = (), reuse: bool = True, workers: int = 2,
                 sandbox=None):
        from toolkit.sandbox import DEFAULT_AUTHORIZED_IMPORTS

        super().__init__()
        self.sandbox_dir = Path(workspace) / "python"
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.authorized = (tuple(sandbox.authorized_imports) if sandbox is not None else
                           tuple(DEFAULT_AUTHORIZED_IMPORTS) + tuple(additional_authorized_imports))
        self.reuse = reuse
        self.workers = workers
        self.sandbox = sandbox  # a Sandbox given here is shared, not owned: close() leaves it open
        self._owns_sandbox = sandbox is None
        self.description = type(self).description.format(imports=", ".join(self.authorized))

    def setup(self) -> None:
        from toolkit.sandbox import Sandbox

        if self.sandbox is not None:
            return
        self.sandbox = Sandbox(workspace=self.sandbox_dir, timeout=self.timeout, memory_mb=self.memory_mb,
                               authorized_imports=self.authorized, reuse=self.reuse, workers=self.workers)

    def forward(self, code: str) -> str:
        result = self.sandbox.run(code)
        if result.error:
            printed = f"\nPrinted before the error:\n{result.output.rstrip()}" if result.output.strip() else ""
            raise SandboxCodeError(f"{result.error}{printed}")
        parts = [result.output.rstrip()] if result.output.strip() else []
        if result.value is not None:
            parts.append(result.value)
        return "\n".join(parts) if parts else "(the code ran and printed nothing)"

    def close(self) -> None:
        if self.sandbox is not None and self._owns_sandbox:
            self.sandbox.close()
