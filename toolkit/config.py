"""The built-in tools' settings: one dataclass, filled from arguments or ``REWOO_*`` variables.

``default_toolbox(workspace="out", sql_url="mysql+pymysql://...")`` overrides fields; an unknown
field is an error. ``ToolkitConfig.from_env()`` reads the environment variable named beside each
field (unset ones keep the default).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path


def data_root() -> Path:
    """The project's ``data/`` folder: the checkout's (a clone, or an editable install), else the
    copy a wheel installs as the ``rewoo_data`` package (setup.py ships it there)."""
    checkout = Path(__file__).resolve().parents[1] / "data"
    if (checkout / "catalog" / "tools.json").is_file():
        return checkout
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("rewoo_data")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "catalog" / "tools.json").is_file():
            return Path(location)
    return checkout


@dataclass
class ToolkitConfig:
    """Settings of the built-in tools. Each field names its environment variable."""

    data_dir: str = field(default_factory=lambda: str(data_root()), metadata={"env": "REWOO_DATA_DIR",
                          "help": "folder with the wiki corpus (wiki/) and the demo database sources (db/)"})
    workspace: str = field(default="workspace", metadata={"env": "REWOO_WORKSPACE",
                           "help": "folder that save_file and python_interpreter may write in"})
    max_file_bytes: int = field(default=1_000_000, metadata={"env": "REWOO_MAX_FILE_BYTES",
                                "help": "largest file save_file writes, in bytes (UTF-8)"})
    timezone: str | None = field(default=None, metadata={"env": "REWOO_TIMEZONE",
                                 "help": "IANA zone for get_current_time; None: the machine's"})
    sql_url: str | None = field(default=None, metadata={"env": "REWOO_SQL_URL",
                                "help": "SQLAlchemy URL for query_sql (mysql+pymysql://user:pw@host/db); None: the demo SQLite database"})
    sql_write: bool = field(default=False, metadata={"env": "REWOO_SQL_WRITE",
                            "help": "let query_sql run statements that change data"})
    sql_max_rows: int = field(default=50, metadata={"env": "REWOO_SQL_MAX_ROWS",
                              "help": "rows query_sql returns at most"})
    wiki_api: str | None = field(default=None, metadata={"env": "REWOO_WIKI_API",
                                 "help": "MediaWiki api.php URL for search_wiki; None: the offline corpus in data/wiki"})
    wiki_results: int = field(default=3, metadata={"env": "REWOO_WIKI_RESULTS",
                              "help": "passages search_wiki returns"})
    search_url: str | None = field(default=None, metadata={"env": "REWOO_SEARCH_URL",
                                   "help": "SearxNG base URL for search_web (its JSON API); None: search_web reports that no backend is set"})
    bilibili_url: str = field(default="https://api.bilibili.com", metadata={"env": "REWOO_BILIBILI_URL",
                              "help": "base URL of bilibili's web API for search_bilibili"})
    search_results: int = field(default=10, metadata={"env": "REWOO_SEARCH_RESULTS",
                                "help": "results search_web and search_bilibili return"})
    http_timeout: float = field(default=10.0, metadata={"env": "REWOO_HTTP_TIMEOUT",
                                "help": "seconds an HTTP tool waits for a response"})
    python_timeout: float = field(default=10.0, metadata={"env": "REWOO_PYTHON_TIMEOUT",
                                  "help": "wall-clock seconds a python_interpreter call may run"})
    python_memory_mb: int = field(default=512, metadata={"env": "REWOO_PYTHON_MEMORY_MB",
                                  "help": "address-space limit of the sandbox process, MiB"})
    python_workers: int = field(default=2, metadata={"env": "REWOO_PYTHON_WORKERS",
                                "help": "isolated sandbox processes that run python_interpreter calls at once"})
    python_imports: tuple[str, ...] = field(default=(), metadata={"env": "REWOO_PYTHON_IMPORTS",
                                            "help": "extra modules the sandbox may import (comma-separated in the variable)"})
    mcp_timeout: float = field(default=30.0, metadata={"env": "REWOO_MCP_TIMEOUT",
                               "help": "seconds an MCP server may take to start and list its tools, and each MCP tool call"})
    mcp_api_key: str | None = field(default=None, metadata={"env": "REWOO_MCP_API_KEY",
                                    "help": "key sent as 'Authorization: Bearer' to MCP servers loaded over HTTP"})

    def __post_init__(self):
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes must be positive, got {self.max_file_bytes}")
        if self.sql_max_rows <= 0:
            raise ValueError(f"sql_max_rows must be positive, got {self.sql_max_rows}")
        if self.wiki_results <= 0 or self.search_results <= 0:
            raise ValueError("wiki_results and search_results must be positive")
        if self.http_timeout <= 0 or self.python_timeout <= 0 or self.mcp_timeout <= 0:
            raise ValueError("http_timeout, python_timeout and mcp_timeout must be positive seconds")
        if self.python_workers < 1:
            raise ValueError(f"python_workers must be at least 1, got {self.python_workers}")
        if self.python_memory_mb < 64:
            raise ValueError(f"python_memory_mb must be at least 64 (the interpreter needs it), got {self.python_memory_mb}")
        self.python_imports = tuple(self.python_imports)

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "ToolkitConfig":
        """Defaults, then ``REWOO_*`` variables, then ``overrides`` (unknown keys are errors)."""
        environ = os.environ if environ is None else environ
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown toolkit option(s) {unknown}; known: {', '.join(known)}")
        values = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f, raw)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes) -> "ToolkitConfig":
        return dataclasses.replace(self, **changes)


def _parse(f: dataclasses.Field, raw: str):
    env = f.metadata["env"]
    default = f.default
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(x.strip() for x in raw.split(",") if x.strip())
        return raw
    except ValueError as e:
        raise ValueError(f"{env}={raw!r} is not valid for {f.name}: {e}") from e
