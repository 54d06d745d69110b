"""The Python sandbox: an AST interpreter (``interpreter``) run in isolated worker processes
(``process``, ``isolation``), with tools called back in the host and values that cross as data
(``values``).

    from toolkit.sandbox import Sandbox, evaluate_python_code
"""

from toolkit.sandbox.interpreter import DEFAULT_AUTHORIZED_IMPORTS, InterpreterError, Limits, evaluate_python_code
from toolkit.sandbox.process import Sandbox, SandboxError, SandboxResult, shared_sandbox
from toolkit.sandbox.values import CodeRef, ValueNotSendable

__all__ = ["evaluate_python_code", "InterpreterError", "Limits", "DEFAULT_AUTHORIZED_IMPORTS",
           "Sandbox", "SandboxResult", "SandboxError", "shared_sandbox", "CodeRef", "ValueNotSendable"]
