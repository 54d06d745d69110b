"""The server's settings: one validated dataclass, built from the command line by ``serve.__main__``.

Classes take plain arguments; this module is the only place that knows the defaults.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


@dataclass
class ServeConfig:
    """How the server listens, whom it lets in, and what it refuses.

    Every limit answers with a 4xx and an OpenAI-style error body, never a 500.
    """

    model: str
    """Local model folder: a transformers checkpoint (merged) or, with ``backend="exllamav2"``, an EXL2 folder;
    with ``backend="llamacpp"``, a GGUF file."""
    backend: str = "transformers"
    """``transformers`` (CPU or GPU, continuous batching), ``exllamav2`` (GPU, dynamic generator) or
    ``llamacpp`` (a GGUF file, batched in one llama.cpp context)."""
    adapter: str | None = None
    """A PEFT LoRA folder applied on top of ``model`` (transformers backend; merged at load)."""
    served_model_name: str | None = None
    """The id ``/v1/models`` reports and requests name; default: the model folder's name."""
    agent_adapter: str | None = None
    """A second model served beside the first: ``model`` with this PEFT LoRA merged (transformers
    backend), named ``<served name>-agent``; ``POST /v1/pipeline/run``'s react and code modes run on
    it (the demo's agent adapter, which ``--model default`` adds when the manifest has one)."""
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    """Required (Bearer or ``x-api-key``) on every ``/v1`` route when set; mandatory beyond loopback."""
    max_request_bytes: int = 1 << 20
    """Largest request body accepted (413 above it). 1 MiB holds a long prompt and a large JSON schema."""
    max_tokens_limit: int = 4096
    """Largest ``max_tokens`` a request may ask for (400 above it)."""
    default_max_tokens: int = 512
    """``max_tokens`` of a chat request that gives none (completions default to 16, as OpenAI's do)."""
    context_length: int | None = None
    """Prompt plus completion tokens per request; default: the model's ``max_position_embeddings``."""
    max_batch_size: int = 16
    """Most requests decoded together; more wait in the queue."""
    cache_tokens: int = 32768
    """KV-cache size in tokens shared by all running requests (transformers continuous batching would
    otherwise reserve 60% of memory). 16 requests x 2048 tokens."""
    page_size: int = 64
    """Tokens per KV-cache block (transformers backend)."""
    max_batch_tokens: int = 512
    """Tokens per forward pass, prefill chunks included (transformers backend)."""
    dtype: str = "auto"
    """``auto`` (bf16 on a GPU, fp32 on a CPU), ``float32``, ``bfloat16`` or ``float16``."""
    device: str = "auto"
    """``auto`` (``cuda`` when available), ``cpu`` or ``cuda``."""
    threads: int | None = None
    """CPU threads: torch's (default 1 on machines with at most 2 cores: steadier, same speed) or, with
    ``backend="llamacpp"``, llama.cpp's (default every core: it scales here, pipeline.llamacpp)."""
    tools: list[str] | None = None
    """The toolbox of ``POST /v1/pipeline/run``: specs as ``pipeline.run --tools`` takes them
    (``FILE.py:NAME``, ``module:NAME``, ``builtin``, ``mcp:SERVER``), combined; default the built-in tools."""
    tool_prior: float = 0.0
    """The tool prior of ``POST /v1/pipeline/run``'s planner when a request gives none (logits,
    ``pipeline.formats.toolprior``); ``--model default`` sets the demo's own."""

    def __post_init__(self):
        problems = []
        if self.backend not in ("transformers", "exllamav2", "llamacpp"):
            problems.append(f"--backend must be 'transformers', 'exllamav2' or 'llamacpp', not {self.backend!r}")
        if self.adapter and self.backend != "transformers":
            problems.append("--adapter works with --backend transformers only; merge the LoRA before converting to EXL2")
        if self.agent_adapter and self.backend != "transformers":
            problems.append("--agent-adapter works with --backend transformers only; serve the merged agent model "
                            "on a server of its own")
        if not (math.isfinite(self.tool_prior) and 0 <= self.tool_prior <= 100):
            problems.append(f"--tool-prior must be 0 to 100 logits, not {self.tool_prior:g}")
        if not (0 < self.port < 65536):
            problems.append(f"--port must be 1..65535, not {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            problems.append("--api-key is empty; give a real key or leave it out on loopback")
        if not is_loopback(self.host) and not self.api_key:
            problems.append(
                f"--host {self.host} listens beyond this machine: an API key is required. "
                "Pass --api-key KEY (or set REWOO_API_KEY), or listen on 127.0.0.1.")
        for name in ("max_request_bytes", "max_tokens_limit", "default_max_tokens", "max_batch_size",
                     "cache_tokens", "page_size", "max_batch_tokens"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}")
        if self.context_length is not None and self.context_length < 2:
            problems.append(f"--context-length must be at least 2, not {self.context_length}")
        if self.default_max_tokens > self.max_tokens_limit:
            problems.append(f"--default-max-tokens ({self.default_max_tokens}) exceeds --max-tokens-limit "
                            f"({self.max_tokens_limit})")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            problems.append(f"--dtype must be auto, float32, bfloat16 or float16, not {self.dtype!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"--device must be auto, cpu or cuda, not {self.device!r}")
        if problems:
            raise ValueError("invalid server settings:\n  " + "\n  ".join(problems))
