"""The toolkit: the transformers-Agents tool API and the built-in tools.

    from toolkit import tool, Tool, Toolbox, default_toolbox

    toolbox = default_toolbox(llm_engine=engine)      # the built-ins, offline by default
    toolbox["calculator"](expression="1/3 + 1/6")     # -> "0.5"

Tools are validated when defined; calls are validated before they run; a tool that raises
raises :class:`ToolError` (``tool``, ``arguments``, the cause). ``load_toolbox("file.py:NAME")``
loads user tools. Imports nothing else of this project.
"""

from toolkit.config import ToolkitConfig
from toolkit.tool import (INPUT_TYPES, OUTPUT_TYPES, Tool, ToolArgumentError, ToolDefinitionError,
                          ToolError, parameters_schema, tool, validate_arguments)
from toolkit.toolbox import (BUILTIN_TOOL_NAMES, Toolbox, ToolboxSpecError, default_toolbox,
                             load_toolbox)

__all__ = [
    "tool", "Tool", "Toolbox", "default_toolbox", "load_toolbox",
    "ToolError", "ToolArgumentError", "ToolDefinitionError", "ToolboxSpecError",
    "validate_arguments", "parameters_schema", "ToolkitConfig",
    "INPUT_TYPES", "OUTPUT_TYPES", "BUILTIN_TOOL_NAMES",
]
