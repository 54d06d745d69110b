"""Test helpers shared by the suite: a scripted engine that replays given outputs.

An engine follows the transformers Agents protocol:
``engine(messages, stop_sequences=None, **kw) -> str``. ``ScriptedEngine`` answers each call
with the next scripted output, cut at the first stop sequence as a real engine cuts it, and
records every call so a test can check what the agent sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


class ScriptExhausted(AssertionError):
    """The code under test called the engine more often than the script foresaw."""


class ScriptedEngine:
    """Replays ``outputs`` in order. An output may be a callable ``(messages) -> str`` for
    answers that depend on the prompt.

    ``calls`` holds ``{"messages", "stop_sequences", "kwargs"}`` for each call;
    ``prompt_tokens`` / ``completion_tokens`` count whitespace-separated words, a stand-in for
    tokens that is stable across tokenizers.
    """

    def __init__(self, outputs: Iterable[str | Callable[[Sequence[dict]], str]]):
        self.outputs = list(outputs)
        self.calls: list[dict] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def __call__(self, messages, stop_sequences: list[str] | None = None, **kwargs) -> str:
        if isinstance(messages, str):  # the completion form: one prompt string
            messages = [{"role": "user", "content": messages}]
        self.calls.append({"messages": list(messages), "stop_sequences": stop_sequences, "kwargs": kwargs})
        i = len(self.calls) - 1
        if i >= len(self.outputs):
            raise ScriptExhausted(f"engine called {i + 1} times, but the script has only {len(self.outputs)} outputs")
        out = self.outputs[i]
        text = out(messages) if callable(out) else out
        for stop in stop_sequences or ():
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
        self.prompt_tokens += sum(len(str(m.get("content", "")).split()) for m in messages)
        self.completion_tokens += len(text.split())
        return text

    @property
    def remaining(self) -> int:
        return len(self.outputs) - len(self.calls)
