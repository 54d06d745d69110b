"""Serve a toolbox over MCP.

    python -m toolkit.mcp serve                                     # the built-in tools, over stdio
    python -m toolkit.mcp serve --tools my_tools.py:TOOLS --tools builtin
    python -m toolkit.mcp serve --http 127.0.0.1:8765               # Streamable HTTP at /mcp
    python -m toolkit.mcp serve --http 0.0.0.0:8765 --api-key KEY   # beyond loopback a key is required

``--tools`` takes what ``pipeline.run --tools`` takes (``FILE.py:NAME``, ``module:NAME``,
``builtin``, ``mcp:SERVER``) and may be repeated; without it the built-in tools are served
(``llm`` is left out: it has no engine outside a pipeline, and an MCP client has its own model). The
tools' settings come from the ``REWOO_*`` variables (``ToolkitConfig``). Bad settings print one
line and exit with code 2; nothing else is ever written to stdout in stdio mode.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toolkit.mcp", description="Serve a toolbox over MCP.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve a toolbox as an MCP server (stdio by default)")
    s.add_argument("--tools", action="append", metavar="SPEC",
                   help="the toolbox: FILE.py:NAME, module:NAME, builtin or mcp:SERVER; repeat to combine "
                        "(default: builtin)")
    s.add_argument("--http", metavar="HOST:PORT", help="serve Streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    s.add_argument("--api-key", default=os.environ.get("REWOO_API_KEY"),
                   help="key every HTTP request must carry (Bearer or x-api-key); required beyond loopback; "
                        "default $REWOO_API_KEY")
    s.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return p


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host.strip("[]"), int(port)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from toolkit.mcp.server import check_http_settings, serve_http, serve_stdio
    from toolkit.toolbox import ToolboxSpecError, load_toolbox

    try:
        http = _host_port(args.http) if args.http else None
        if http:
            check_http_settings(*http, args.api_key)
        toolbox = load_toolbox(args.tools or ["builtin"])
    except (ValueError, ImportError, OSError) as e:  # ToolboxSpecError is a ValueError
        what = "--tools" if isinstance(e, ToolboxSpecError) else "error"
        print(f"python -m toolkit.mcp: {what}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # `llm` needs an engine that only a pipeline gives it; an MCP client has its own model.
    from toolkit.tools.llm import LLMTool
    idle = [name for name, t in toolbox.items() if isinstance(t, LLMTool) and t.engine is None]
    if idle:
        print(f"python -m toolkit.mcp: not serving {', '.join(idle)} (no engine; the MCP client has its own model)",
              file=sys.stderr)
        toolbox = toolbox.subset([name for name in toolbox if name not in idle])
    try:
        if http:
            print(f"serving {len(toolbox)} tools ({', '.join(toolbox)}) at http://{http[0]}:{http[1]}/mcp",
                  file=sys.stderr)
            serve_http(toolbox, *http, api_key=args.api_key, log_level=args.log_level)
        else:
            import anyio
            anyio.run(serve_stdio, toolbox)
    except KeyboardInterrupt:
        pass
    finally:
        toolbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
