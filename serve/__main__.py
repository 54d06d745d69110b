"""Serve a model over the OpenAI API.

    python -m serve --model PATH [--backend transformers|exllamav2|llamacpp] [--adapter PATH] [--agent-adapter PATH]
                    [--host 127.0.0.1 --port 8000] [--api-key K] [--tools SPEC ...]

Listening beyond loopback (``--host 0.0.0.0``) requires an API key (``--api-key`` or the
``REWOO_API_KEY`` environment variable). ``python -m serve --help`` lists the limits. The web
playground is at ``http://HOST:PORT/ui``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys

from serve.config import ServeConfig
from toolkit.quiet import quiet_libraries


def _parser() -> argparse.ArgumentParser:
    from toolkit.helpformat import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m serve", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    help_ = {
        "max_request_bytes": "largest request body (413 above)",
        "max_tokens_limit": "largest max_tokens a request may ask (400 above)",
        "default_max_tokens": "max_tokens of a chat request that gives none",
        "context_length": "prompt + completion tokens per request (default: the model's)",
        "max_batch_size": "requests decoded together",
        "cache_tokens": "KV-cache tokens shared by running requests (transformers, llamacpp)",
        "page_size": "tokens per KV-cache block (transformers)",
        "max_batch_tokens": "tokens per forward pass (transformers, llamacpp)",
        "threads": "CPU threads: torch (default 1 on <= 2 cores) or llama.cpp (default every core)",
    }
    defaults = ServeConfig(model="-")
    p.add_argument("--model", required=True,
                   help="local model folder (transformers checkpoint or EXL2 folder) or a .gguf file (llamacpp)")
    p.add_argument("--backend", default=None, choices=["transformers", "exllamav2", "llamacpp"],
                   help="transformers (CPU or GPU, continuous batching), exllamav2 (GPU, EXL2 folder) or llamacpp "
                        "(a GGUF file; batched); default: llamacpp for a GGUF file, else transformers")
    p.add_argument("--adapter", help="PEFT LoRA folder merged into --model at load (transformers backend)")
    p.add_argument("--agent-adapter", help="PEFT LoRA folder for a second model, --model with it merged, served as "
                                           "NAME-agent; /v1/pipeline/run's react and code modes run on it")
    p.add_argument("--served-model-name", help="model id for /v1/models and requests (default: folder name)")
    p.add_argument("--host", default=defaults.host,
                   help="address to listen on; beyond loopback (0.0.0.0) an API key is required")
    p.add_argument("--port", type=int, default=defaults.port, help="port to listen on")
    p.add_argument("--api-key", default=os.environ.get("REWOO_API_KEY"),
                   help="required key (Bearer or x-api-key); default $REWOO_API_KEY")
    for name in ("max_request_bytes", "max_tokens_limit", "default_max_tokens", "context_length",
                 "max_batch_size", "cache_tokens", "page_size", "max_batch_tokens", "threads"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name), help=help_[name])
    p.add_argument("--tools", action="append", metavar="SPEC",
                   help="toolbox of /v1/pipeline/run, as pipeline.run --tools (FILE.py:NAME, module:NAME, builtin, "
                        "mcp:SERVER); repeat to combine; default: the built-in tools")
    p.add_argument("--tool-prior", type=float, default=defaults.tool_prior, metavar="LOGITS",
                   help="tool prior of /v1/pipeline/run's planner when a request gives none (pipeline.formats."
                        "toolprior; default 0, the demo's own with --model default)")
    p.add_argument("--dtype", default=defaults.dtype, choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' dtype; auto: bf16 on a GPU, fp32 on a CPU")
    p.add_argument("--device", default=defaults.device, choices=["auto", "cpu", "cuda"],
                   help="auto: cuda when available")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="server log level")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show the libraries' notes that are hidden by default (toolkit/quiet.py)")
    return p


def config_from_args(argv: list[str] | None = None) -> tuple[ServeConfig, str]:
    args = vars(_parser().parse_args(argv))
    if args["backend"] is None:
        from pipeline.llamacpp import is_gguf
        args["backend"] = "llamacpp" if is_gguf(args["model"]) else ServeConfig.backend
    log_level = args.pop("log_level")
    args.pop("verbose")
    return ServeConfig(**args), log_level


def bind_listener(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now (before the model loads, which takes seconds to
    minutes) so that a busy port or a wrong host fails at once. uvicorn serves on it as is."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a restart is not "busy"
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def build_agent_backend(cfg: ServeConfig, main):
    """The agents' model beside ``main`` (``cfg.agent_adapter`` merged into ``cfg.model``), named
    ``<main's name>-agent``; None without an agent adapter."""
    if not cfg.agent_adapter:
        return None
    from dataclasses import replace
    return build_backend(replace(cfg, adapter=cfg.agent_adapter, agent_adapter=None,
                                 served_model_name=f"{main.model_id}-agent"))


def build_backend(cfg: ServeConfig):
    """The backend ``cfg`` names, with its model loaded."""
    if cfg.backend == "exllamav2":
        from serve.backends.exl2 import ExLlamaV2Backend
        return ExLlamaV2Backend.from_config(cfg)
    if cfg.backend == "llamacpp":
        from serve.backends.llamacpp import LlamaCppBackend
        return LlamaCppBackend.from_config(cfg)
    from serve.backends.hf import TransformersBackend
    return TransformersBackend.from_config(cfg)


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, log_level = config_from_args(argv)
    except ValueError as e:
        print(f"python -m serve: {e}", file=sys.stderr)
        return 2
    # before torch, transformers and httpx load: their notes at start and per loopback call are hidden
    quiet_libraries(verbose=_parser().parse_args(argv).verbose, progress_bars=False)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    toolbox = None
    if cfg.tools:  # before the model loads, so that a bad spec fails at once
        from toolkit import load_toolbox
        try:
            toolbox = load_toolbox(cfg.tools)
        except (ValueError, ImportError, OSError) as e:
            print(f"python -m serve: --tools: {e}", file=sys.stderr)
            return 2
    try:
        listener = bind_listener(cfg.host, cfg.port)
    except OSError as e:
        why = (f"port {cfg.port} on {cfg.host} is busy (another server listens there): stop it or pick another --port"
               if e.errno == errno.EADDRINUSE else f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}")
        print(f"python -m serve: {why}", file=sys.stderr)
        return 2
    import torch
    threads = cfg.threads or (1 if (os.cpu_count() or 1) <= 2 else None)
    if threads:  # on 2 cores torch's default threads stall erratically (FACTS.md)
        torch.set_num_threads(threads)
    what = cfg.model
    try:
        backend = build_backend(cfg)
        what = f"--agent-adapter {cfg.agent_adapter}"
        agent = build_agent_backend(cfg, backend)
    except (ValueError, RuntimeError, OSError) as e:  # a bad path or name: the user's to fix, one line
        listener.close()
        why = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        print(f"python -m serve: cannot load {what}: {why}", file=sys.stderr)
        return 2
    import uvicorn

    from serve.app import build_app
    from serve.pipeline_route import add_pipeline_routes
    from serve.playground import add_playground_routes
    app = build_app(backend, cfg, routes=[add_pipeline_routes, add_playground_routes], agent=agent)
    app.state.pipeline_toolbox = toolbox
    config = uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[listener])
    return 0


if __name__ == "__main__":
    sys.exit(main())
