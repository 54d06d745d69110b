"""The Python sandbox: an AST interpreter (``interpreter``) run in an isolated process
(``process``, ``isolation``).

    from toolkit.sandbox import Sandbox, evaluate_python_code
"""

from toolkit.sandbox.interpreter import DEFAULT_AUTHORIZED_IMPORTS, InterpreterError, Limits, evaluate_python_code
from toolkit.sandbox.process import Sandbox, SandboxError, SandboxResult

__all__ = ["evaluate_python_code", "InterpreterError", "Limits", "DEFAULT_AUTHORIZED_IMPORTS",
           "Sandbox", "SandboxResult", "SandboxError"]
