"""The built-in tools, one module each. ``toolkit.default_toolbox()`` builds them from a
``ToolkitConfig``."""
