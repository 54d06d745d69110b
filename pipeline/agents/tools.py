"""``PipelineTool`` (a transformers model and its processor as a tool) and ``load_tool``.

    class Sentiment(PipelineTool):
        name = "sentiment"
        description = "Says whether a text is positive or negative."
        inputs = {"text": {"type": "string", "description": "the text"}}
        output_type = "string"
        model_class = AutoModelForSequenceClassification
        pre_processor_class = AutoTokenizer
        default_checkpoint = "path/to/checkpoint"

        def encode(self, text):
            return self.pre_processor(text, return_tensors="pt")

        def decode(self, outputs):
            return self.model.config.id2label[int(outputs.logits.argmax(-1))]

    tool = Sentiment()                  # nothing is loaded yet
    tool(text="What a film!")           # setup() loads the model, then encode -> forward -> decode
    load_tool("my_tools.py:Sentiment", model="other/checkpoint")
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from toolkit import Tool, ToolDefinitionError, ToolError, validate_arguments
from toolkit.toolbox import import_file

__all__ = ["PipelineTool", "load_tool"]


class PipelineTool(Tool, abstract=True):
    """A tool whose work is a transformers model: ``encode`` (the tool's inputs -> model
    inputs, with the pre-processor), ``forward`` (the model, without gradients), ``decode``
    (model outputs -> the tool's output, with the post-processor).

    Class attributes besides the Tool ones: ``model_class`` (e.g. ``AutoModelForCausalLM``),
    ``default_checkpoint`` (used when ``model`` is not given), ``pre_processor_class`` (default
    ``AutoProcessor``), ``post_processor_class`` (default: the pre-processor's class).
    ``encode`` takes exactly the tool's ``inputs`` as parameters (checked when the class is
    defined, as a Tool's ``forward`` is).

    ``model``, ``pre_processor``, ``post_processor``: a checkpoint name or path, or an object
    already loaded. ``device``: default CUDA when available, else CPU (ignored with
    ``device_map``). ``model_kwargs`` go to ``from_pretrained``. Nothing loads before the
    first call (``setup``).
    """

    model_class: Any = None
    default_checkpoint: str | None = None
    pre_processor_class: Any = None
    post_processor_class: Any = None

    def __init_subclass__(cls, abstract: bool = False, **kwargs):
        super().__init_subclass__(abstract=True, **kwargs)  # the Tool check runs below, on encode
        if abstract:
            return
        check = {"name": getattr(cls, "name", None), "description": getattr(cls, "description", None),
                 "inputs": getattr(cls, "inputs", None), "output_type": getattr(cls, "output_type", None),
                 "forward": cls.encode if cls.encode is not PipelineTool.encode else None}
        try:
            type(cls.__name__, (Tool,), check)
        except ToolDefinitionError as e:
            raise ToolDefinitionError(str(e).replace("`forward`", "`encode`")) from e
        if cls.model_class is None:
            raise ToolDefinitionError(f"pipeline tool {cls.__qualname__} needs `model_class` "
                                      "(e.g. transformers.AutoModelForCausalLM)")

    def __init__(self, model: Any = None, pre_processor: Any = None, post_processor: Any = None,
                 device: Any = None, device_map: Any = None, model_kwargs: dict | None = None, **hub_kwargs):
        super().__init__()
        model = model if model is not None else self.default_checkpoint
        if model is None:
            raise ValueError(f"{type(self).__name__} needs a model: pass model= or set default_checkpoint")
        self.model = model
        self.pre_processor = pre_processor if pre_processor is not None else model
        self.post_processor = post_processor if post_processor is not None else self.pre_processor
        self.device = device
        self.device_map = device_map
        self.model_kwargs = dict(model_kwargs or {})
        if device_map is not None:
            self.model_kwargs["device_map"] = device_map
        self.hub_kwargs = hub_kwargs

    def setup(self) -> None:
        """Load what was given by name: pre-processor, model, post-processor; pick the device."""
        import torch

        if isinstance(self.pre_processor, (str, Path)):
            cls = self.pre_processor_class or _auto("AutoProcessor")
            self.pre_processor = cls.from_pretrained(str(self.pre_processor), **self.hub_kwargs)
        if isinstance(self.model, (str, Path)):
            self.model = self.model_class.from_pretrained(str(self.model), **self.model_kwargs, **self.hub_kwargs)
        if isinstance(self.post_processor, (str, Path)):
            cls = self.post_processor_class or self.pre_processor_class or _auto("AutoProcessor")
            self.post_processor = cls.from_pretrained(str(self.post_processor), **self.hub_kwargs)
        if self.device_map is None:
            self.device = torch.device(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model.to(self.device)
        else:
            self.device = next(self.model.parameters()).device
        self.model.eval()

    def encode(self, *args, **kwargs):  # pragma: no cover - every concrete tool defines it
        raise NotImplementedError

    def forward(self, inputs):
        """The model on the encoded inputs (a mapping of tensors, or one tensor)."""
        import torch

        with torch.no_grad():
            return self.model(**inputs) if hasattr(inputs, "keys") else self.model(inputs)

    def decode(self, outputs):
        """Model outputs -> the tool's output; the default decodes token ids with the post-processor."""
        return self.post_processor.decode(outputs, skip_special_tokens=True)

    def __call__(self, *args, **kwargs):
        """``tool(**inputs)`` (or one positional value for a one-input tool): set up on the first
        call, then encode -> forward -> decode. Failures are :class:`ToolError` s."""
        if args:
            if len(args) != 1 or kwargs or len(self.inputs) != 1:
                raise ToolError(self.name, {"args": list(args), **kwargs}, "call it with keyword arguments")
            kwargs = {next(iter(self.inputs)): args[0]}
        arguments = validate_arguments(self, kwargs)
        try:
            self._ensure_setup()
            encoded = _to_device(self.encode(**arguments), self.device)
            return self.decode(self.forward(encoded))
        except ToolError:
            raise
        except Exception as e:
            raise ToolError(self.name, arguments, f"{type(e).__name__}: {e}") from e


def _auto(name: str):
    import transformers
    return getattr(transformers, name)


def _to_device(inputs, device):
    if hasattr(inputs, "to"):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
    return inputs


# --------------------------------------------------------------------------------------------
# load_tool
# --------------------------------------------------------------------------------------------

def _import(target: str, spec: str):
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if path.is_dir():
            path = path / "tool.py"
        if not path.is_file():
            raise ValueError(f"load_tool({spec!r}): no such file {path}")
        try:
            return import_file(path)
        except Exception as e:
            raise ValueError(f"load_tool({spec!r}): running {path} raised {type(e).__name__}: {e}") from e
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise ValueError(f"load_tool({spec!r}): no module named {e.name!r}") from e


def _tools_in(module) -> list[Any]:
    found = []
    for value in vars(module).values():
        if isinstance(value, Tool) or (isinstance(value, type) and issubclass(value, Tool) and value.__module__ ==
                                       module.__name__ and value.__dict__.get("name")):
            found.append(value)
    return found


def load_tool(spec: str, **kwargs) -> Tool:
    """A tool from a local path or a module:

    - ``FILE.py:NAME`` or ``package.module:NAME``: ``NAME`` is a Tool, a Tool class or a function
      returning a Tool; classes and functions get ``kwargs``;
    - ``FILE.py``, ``package.module`` or a folder holding ``tool.py``: the one tool it defines.

    The tool loads nothing until its first call. Hub task names ("text-to-speech") are not
    available here: this stack runs offline.
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"load_tool needs a spec such as 'my_tools.py:MyTool' or 'pkg.tools:MyTool', got {spec!r}")
    target, sep, name = spec.rpartition(":") if re.search(r":[A-Za-z_]\w*$", spec) else (spec, "", "")
    if not sep and "-" in spec and not Path(spec).exists():
        raise ValueError(f"load_tool({spec!r}): Hub tools are not available offline; give FILE.py[:NAME], "
                         "a folder with tool.py, or module[:NAME]")
    if not sep and not (target.endswith(".py") or Path(target).is_dir() or re.fullmatch(r"[\w.]+", target)):
        raise ValueError(f"load_tool({spec!r}): give FILE.py[:NAME], a folder with tool.py, or module[:NAME]")
    module = _import(target, spec)
    if sep:
        if not hasattr(module, name):
            raise ValueError(f"load_tool({spec!r}): {target} has no {name!r}")
        obj = getattr(module, name)
    else:
        found = _tools_in(module)
        if len(found) != 1:
            listed = ", ".join(getattr(t, "__name__", getattr(t, "name", "?")) for t in found) or "none"
            raise ValueError(f"load_tool({spec!r}): expected exactly one tool in {target}, found {listed}; "
                             "name it as SPEC:NAME")
        obj = found[0]
    if isinstance(obj, Tool):
        if kwargs:
            raise ValueError(f"load_tool({spec!r}): {name or 'it'} is a tool instance; options {sorted(kwargs)} "
                             "need a Tool class or a function")
        return obj
    if callable(obj):
        made = obj(**kwargs)
        if isinstance(made, Tool):
            return made
        raise ValueError(f"load_tool({spec!r}): {name} returned {type(made).__name__}, not a Tool")
    raise ValueError(f"load_tool({spec!r}): {name} is {type(obj).__name__}, not a Tool")
