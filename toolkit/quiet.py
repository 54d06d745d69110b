"""Quiet command lines: third-party messages that tell the user nothing to act on are hidden,
and ``-v`` shows them again.

    from toolkit.quiet import quiet_libraries
    quiet_libraries(verbose=args.verbose, progress_bars=False)

Only the exact messages listed here are dropped (a filter on the logger that emits each, or a
warnings filter on the text), never a whole library's warnings: anything new still shows. Each
entry says why it is noise in this stack. The stack's command lines (``python -m pipeline.run``,
``python -m train``, the scripts) call :func:`quiet_libraries` first; library users who import
our modules keep every message. No import of the libraries themselves happens here.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# (logger name, text the message starts with, why it is noise)
LOG_MESSAGES: list[tuple[str, str, str]] = [
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community",
     "an optional CPU kernel from the hub (the `kernels` package); bitsandbytes uses its own fallback"),
    ("DeepSpeed", "Setting accelerator to CPU",
     "DeepSpeed is imported by transformers on a machine without a GPU; training sets DS_ACCELERATOR itself"),
    ("transformers.tokenization_utils_base", "Token indices sequence length is longer than",
     "training cuts every example to max_seq_len itself (the prompt first), after tokenizing in full"),
    # the server's start: transformers' continuous batching explains its own choices at INFO, with its own
    # handler (so whatever the log level); the server sizes the cache itself (--cache-tokens) and sets no seed
    ("ContinuousBatchingLogger", "Continuous batching is much better when using flash attention",
     "flash-attn is a GPU-only extra; on a GPU with it installed the server already uses it"),
    ("ContinuousBatchingLogger", "Using cuda graphs for", "an internal choice, nothing to act on"),
    ("ContinuousBatchingLogger", "No behavior specified for use_async_batching", "an internal choice"),
    ("ContinuousBatchingLogger", "Memory available for cache allocation",
     "the server sizes the KV cache itself (--cache-tokens), not from free memory"),
    ("ContinuousBatchingLogger", "Paged cache initialized", "the cache --cache-tokens asked for"),
    ("ContinuousBatchingLogger", "self.cache_shape = ",
     "the same cache's tensor shapes (transformers 5.17, the GPU machine's, says it at INFO)"),
    ("ContinuousBatchingLogger", "Found no user-specified seed in the config",
     "each request carries its own seed or none; the manager's seed is not the user's"),
    ("ContinuousBatchingLogger", "Background generation thread stopped after", "the server's own shutdown"),
    ("ContinuousBatchingLogger", "Generation loop finished and background thread exited", "the server's own shutdown"),
    ("ContinuousBatchingLogger", "Rank 0 requested background thread to stop", "the server's own shutdown"),
    # /v1/pipeline/run calls the server's own endpoint over loopback: uvicorn's access log already shows it
    ("httpx", "HTTP Request:", "one line per HTTP call the pipeline makes (its own server, a model URL)"),
]

# (category, regular expression the warning text matches from its start, why it is noise)
WARNING_MESSAGES: list[tuple[type[Warning], str, str]] = [
    (FutureWarning, r"`(is_)?gradient_checkpointing\w*` is deprecated",
     "transformers 5 renamed gradient checkpointing to activation checkpointing; PEFT's QLoRA preparation "
     "still calls the old names (our own TrainingArguments use the new ones where they exist)"),
    (FutureWarning, r"`\w+` only defines `gradient_checkpointing_enable`",
     "the same rename, seen by the Trainer on a PEFT model"),
]


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: list[str]):
        super().__init__()
        self.prefixes = tuple(prefixes)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record is the library's business: let it through  # noqa: BLE001
            return True
        return not text.startswith(self.prefixes)


_installed: list[tuple[logging.Logger, logging.Filter]] = []


def quiet_libraries(verbose: bool = False, progress_bars: bool = True) -> None:
    """Hide the messages listed above (``verbose=False``); ``verbose=True`` hides nothing (and
    takes back the log filters of an earlier call). ``progress_bars=False`` also hides
    transformers' and the hub's progress bars ("Loading weights"), when transformers is
    installed. Meant for a command line's start: the warnings filters are process-wide."""
    for logger, f in _installed:
        logger.removeFilter(f)
    _installed.clear()
    if verbose:
        return
    by_logger: dict[str, list[str]] = {}
    for name, prefix, _why in LOG_MESSAGES:
        by_logger.setdefault(name, []).append(prefix)
    for name, prefixes in by_logger.items():
        logger, f = logging.getLogger(name), _DropMessages(prefixes)
        logger.addFilter(f)  # kept when the library configures the logger later (level, handlers)
        _installed.append((logger, f))
    for category, pattern, _why in WARNING_MESSAGES:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    if not progress_bars:
        # transformers reads the hub's switch when it is imported; importing it here to turn its
        # bars off would cost a process that never uses it ~1.5 s (it imports torch)
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "huggingface_hub" in sys.modules:  # imported already: the variable was read
            from huggingface_hub.utils import disable_progress_bars  # noqa: PLC0415

            disable_progress_bars()
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging  # noqa: PLC0415

            hf_logging.disable_progress_bar()


__all__ = ["quiet_libraries", "LOG_MESSAGES", "WARNING_MESSAGES"]
