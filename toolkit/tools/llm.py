"""``llm(prompt)``: ask the language model the tool is given.

An engine follows the transformers Agents protocol,
``engine(messages: list[dict], stop_sequences=None, **kw) -> str``. The pipeline injects the
planner's engine (``default_toolbox(llm_engine=...)`` or ``toolbox["llm"].engine = ...``).
"""

from __future__ import annotations

from collections.abc import Callable

from toolkit.tool import Tool


class NoEngineError(RuntimeError):
    """``llm`` was called before it was given an engine."""


class LLMTool(Tool):
    name = "llm"
    description = ("Ask a language model to write, translate, summarize or compare; put everything "
                   "it needs in the input.")
    inputs = {"prompt": {"type": "string", "description": "the complete prompt for the model"}}
    output_type = "string"

    def __init__(self, engine: Callable | None = None, system_prompt: str | None = None,
                 stop_sequences: list[str] | None = None, **engine_kwargs):
        super().__init__()
        self.engine = engine
        self.system_prompt = system_prompt
        self.stop_sequences = stop_sequences
        self.engine_kwargs = engine_kwargs

    def forward(self, prompt: str) -> str:
        if self.engine is None:
            raise NoEngineError("the llm tool has no engine; give it one with "
                                "default_toolbox(llm_engine=engine), LLMTool(engine) or "
                                "toolbox['llm'].engine = engine")
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        out = self.engine(messages, stop_sequences=self.stop_sequences, **self.engine_kwargs)
        if not isinstance(out, str):
            raise TypeError(f"the engine returned {type(out).__name__}, not str; an engine returns the text it generated")
        return out.strip()
