"""GGUF for CPUs: a merged transformers folder -> GGUF -> a llama.cpp quantization type.

    python -m serve.quantize IN OUT.gguf --format gguf --type Q4_K_M [--calibration FILE]
    bash scripts/quantize.sh IN OUT.gguf --format gguf --type Q4_K_M

EXL2 stays the GPU format; GGUF (llama.cpp) is the CPU one, and runs on Apple and CUDA too. Two
steps, both maintained code of llama.cpp:

1. ``convert_hf_to_gguf.py``, llama.cpp's own converter, as the ``llama-cpp-python`` sdist
   distributes it (with its ``gguf-py``): the folder becomes a GGUF at the source's precision
   (F32, F16 or BF16). The converter is
   extracted once into ``<cache>/llama.cpp/<version>/`` (``make install-llamacpp`` does it; else
   the first export fetches the sdist with pip). ``$REWOO_LLAMACPP_SRC`` may name a llama.cpp
   checkout instead. It needs ``sentencepiece`` (the ``llamacpp`` extra installs it).
2. ``llama_model_quantize`` from the ``llama-cpp-python`` binding: that file -> ``--type``.

The i-quants of 1-2 bits (``IQ2_M``, ``IQ2_XS``, ``IQ2_XXS``, ``IQ2_S``, ``IQ1_S``, ``IQ1_M``,
``Q2_K_S``) need an importance matrix, and any type takes one: the mean of each input column's
squared activation for every weight matrix, measured on ``--calibration`` text (plain text, or
JSONL whose rows have ``instruction``/``input``/``output``, ``text`` or ``prompt`` fields: use the
prompts your model will see). It is computed here with the transformers model and handed to the
quantizer through the binding's ``llama_model_imatrix_data``; tensor names come from ``gguf``'s
own name map.

At the end it prints the file size, the parameter count and the effective bits per weight over
the whole model. Small models stay far above the nominal rate: a 135M model keeps its 49k x 576
tied embedding at higher precision, and 576-wide rows are not a multiple of the 256-wide
k-quant blocks (measured: Q2_K = 5.3 bpw there); ~2.5 bpw is a property of large models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP_PYTHON = "0.3.36"  # the binding (and vendored llama.cpp) this module was written against

# The quantization types offered, by llama.cpp's names (``LLAMA_FTYPE_MOSTLY_<name>``).
TYPES = ("F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M",
         "Q3_K_S", "Q2_K", "Q2_K_S", "IQ4_XS", "IQ4_NL", "IQ3_M", "IQ3_S", "IQ3_XXS", "IQ2_M", "IQ2_S",
         "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S")
# llama.cpp refuses these without an importance matrix ("this quantization requires an imatrix!").
NEEDS_IMATRIX = frozenset({"IQ2_M", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M", "IQ1_S", "Q2_K_S"})


class GGUFError(Exception):
    """The export cannot run as asked; the message says what to do."""


def _say(progress: bool, text: str, end: str = "\n") -> None:
    if progress:
        print(text, end=end, file=sys.stderr, flush=True)


class _Progress:
    """One line that counts up: rewritten in place on a terminal (at most 10 times a second),
    printed once at the end when stderr is a file or a pipe."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.last, self.text = 0.0, ""

    def update(self, text: str) -> None:
        self.text = text
        now = time.monotonic()
        if self.tty and now - self.last >= 0.1:
            self.last = now
            print("\r" + text, end="", file=sys.stderr, flush=True)

    def close(self, suffix: str = "") -> None:
        if self.enabled and self.text:
            print(("\r" if self.tty else "") + self.text + suffix, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# llama.cpp's converter, as distributed
# --------------------------------------------------------------------------------------------

def _cache_root() -> Path:
    from pipeline.defaults import cache_root
    return cache_root()


def binding_version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("llama_cpp_python")
    except importlib.metadata.PackageNotFoundError:
        return None


def require_binding():
    """The ``llama_cpp`` module, or a :class:`GGUFError` naming the install command."""
    try:
        import llama_cpp
    except ImportError as e:
        raise GGUFError("GGUF needs the llama.cpp binding, which is not installed: run `make install-llamacpp` "
                        f"(or `pip install llama-cpp-python=={LLAMA_CPP_PYTHON} sentencepiece`; it builds "
                        "llama.cpp from source, about 5 minutes on 2 cores)") from e
    return llama_cpp


def converter_dir(fetch: bool = True, sdist: Path | None = None, progress: bool = True) -> Path:
    """The folder holding llama.cpp's ``convert_hf_to_gguf.py`` (and its ``conversion/`` and
    ``gguf-py/``): ``$REWOO_LLAMACPP_SRC``, else the copy extracted from the binding's sdist into
    the cache, fetched with pip when absent and ``fetch``."""
    env = os.environ.get("REWOO_LLAMACPP_SRC")
    if env:
        path = Path(env).expanduser()
        if not (path / "convert_hf_to_gguf.py").is_file():
            raise GGUFError(f"REWOO_LLAMACPP_SRC={env} holds no convert_hf_to_gguf.py; point it at a llama.cpp checkout")
        return path
    version = binding_version() or LLAMA_CPP_PYTHON
    target = _cache_root() / "llama.cpp" / version
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    if sdist is None and not fetch:
        raise GGUFError(f"llama.cpp's converter is not in {target}: run `make install-llamacpp` or "
                        "`python -m serve.gguf --fetch-converter`")
    with tempfile.TemporaryDirectory(prefix="rewoo-llamacpp-") as tmp:
        if sdist is None:
            _say(progress, f"[gguf] fetching llama.cpp's converter (the llama-cpp-python {version} sdist, ~75 MB) ...")
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   f"llama-cpp-python=={version}", "-d", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True)
            found = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
            if done.returncode != 0 or not found:
                last = (done.stderr.strip().splitlines() or ["no sdist downloaded"])[-1]
                raise GGUFError(f"cannot fetch llama.cpp's converter with pip ({last}); set REWOO_LLAMACPP_SRC "
                                "to a llama.cpp checkout")
            sdist = found[0]
        _extract_converter(Path(sdist), target)
    return target


def _extract_converter(sdist: Path, target: Path) -> None:
    """Copy ``vendor/llama.cpp/{convert_hf_to_gguf.py,conversion/,gguf-py/,LICENSE}`` out of the
    sdist into ``target``, atomically (a killed extraction leaves no half folder)."""
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    n = 0
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 1)
            rel = parts[1] if len(parts) == 2 else ""
            if not rel.startswith("vendor/llama.cpp/"):
                continue
            rel = rel[len("vendor/llama.cpp/"):]
            if not (member.isfile() and any(rel == w or (w.endswith("/") and rel.startswith(w)) for w in wanted)):
                continue
            dest = partial / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            n += 1
    if not (partial / "convert_hf_to_gguf.py").is_file():
        shutil.rmtree(partial, ignore_errors=True)
        raise GGUFError(f"{sdist} carries no vendor/llama.cpp/convert_hf_to_gguf.py")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


# --------------------------------------------------------------------------------------------
# Step 1: transformers folder -> BF16 GGUF
# --------------------------------------------------------------------------------------------

def _tensor_count(folder: Path) -> int:
    from serve.quantize import _safetensors_header

    return sum(len([k for k in _safetensors_header(f) if k != "__metadata__"])
               for f in sorted(folder.glob("*.safetensors")))


def _converter_failure(lines: list[str]) -> str:
    """The line that says why llama.cpp's converter stopped (its exception), else its last line."""
    for line in reversed(lines):
        m = re.match(r"^(\w+(?:Error|Exception)|NotImplementedError): (.+)", line.strip())
        if m:
            return m.group(2)
    return lines[-1].strip() if lines else "no output"


def hf_to_gguf(src: Path, out: Path, outtype: str = "bf16", progress: bool = True) -> None:
    """Run llama.cpp's converter on ``src`` (config.json, safetensors, tokenizer) into ``out``,
    showing a tensor count as it goes. An architecture or tokenizer it does not know is a
    :class:`GGUFError` with the converter's reason."""
    if not (src / "config.json").is_file():
        raise GGUFError(f"{src}: no config.json; give a merged transformers model folder")
    if not list(src.glob("*.safetensors")):
        raise GGUFError(f"{src}: no .safetensors files (save the merged model with safe_serialization)")
    conv = converter_dir(progress=progress)
    total = _tensor_count(src)
    partial = out.with_name(out.name + ".partial")
    cmd = [sys.executable, str(conv / "convert_hf_to_gguf.py"), str(src), "--outfile", str(partial),
           "--outtype", outtype]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(conv / "gguf-py"), str(conv)]),
           "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    lines: list[str] = []
    seen = 0
    bar = _Progress(progress)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if re.match(r"INFO:hf-to-gguf:(blk\.|token_embd|output)", line):
            seen += 1
            bar.update(f"[gguf] {src.name} -> GGUF {outtype}: {seen}/{total} tensors")
    rc = proc.wait()
    bar.close(f" ({time.perf_counter() - t0:.0f} s)")
    if rc != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise GGUFError(f"llama.cpp's converter cannot convert {src}: {_converter_failure(lines)}")
    partial.rename(out)


# --------------------------------------------------------------------------------------------
# The importance matrix
# --------------------------------------------------------------------------------------------

def calibration_texts(path: Path) -> list[str]:
    """Texts from ``path``: JSONL rows (``instruction``+``input``+``output``, ``text`` or
    ``prompt``) or plain text split on blank lines."""
    if not path.is_file():
        raise GGUFError(f"--calibration {path}: no such file")
    raw = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".jsonl":
        texts = []
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise GGUFError(f"{path}:{n}: not JSON ({e})") from e
            if not isinstance(row, dict):
                raise GGUFError(f"{path}:{n}: a row must be a JSON object")
            text = row.get("text") or row.get("prompt") or "\n".join(
                str(row.get(k, "")) for k in ("instruction", "input", "output") if row.get(k))
            if text:
                texts.append(str(text))
        return texts
    return [t for t in re.split(r"\n\s*\n", raw) if t.strip()]


def compute_imatrix(src: Path, texts: Iterable[str], max_tokens: int = 50_000, chunk: int = 512,
                    progress: bool = True) -> dict[str, list[float]]:
    """``{gguf tensor name: mean squared input activation per column}`` for every 2-D weight of
    ``src`` that a matmul reads, over up to ``max_tokens`` tokens of ``texts`` (the statistic
    llama.cpp's imatrix tool collects). A tied output layer reads ``token_embd.weight``."""
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(src)
    arch_name = (config.architectures or ["?"])[0]
    arch = _gguf_arch(arch_name)
    n_layers = config.get_text_config().num_hidden_layers
    names = gguf.get_tensor_name_map(arch, n_layers)
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    tied = bool(getattr(config.get_text_config(), "tie_word_embeddings", False))
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def add(key: str, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        sums[key] = sums.get(key, 0) + (x * x).sum(0)
        counts[key] = counts.get(key, 0) + x.shape[0]

    # The output layer's statistic is that of its input, the decoder's last hidden state: run the
    # decoder alone and never compute the logits (for SmolLM2, 49k x 576 per token, ~19% of the
    # forward; most of it for a small test model).
    head = model.get_output_embeddings()
    decoder = model.get_decoder() if head is not None else None
    if decoder is model:  # a model without a separate decoder: the whole forward, as before
        decoder = None
    head_key = None
    hooks = []
    for module_name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        target = names.get_name(module_name)
        if target is None:
            continue
        target += ".weight"
        if target == "output.weight" and tied:
            target = "token_embd.weight"
        if module is head and decoder is not None:
            head_key = target
            continue
        hooks.append(module.register_forward_hook(lambda _m, args, _out, key=target: add(key, args[0])))
    ids: list[int] = []
    for text in texts:
        ids += tok(text, add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        if len(ids) >= max_tokens:
            break
    ids = ids[:max_tokens]
    if len(ids) < chunk // 4:
        raise GGUFError(f"the calibration text holds {len(ids)} tokens; give at least {chunk // 4} "
                        "(llama.cpp's own tool uses ~100k)")
    t0 = time.perf_counter()
    bar = _Progress(progress)
    with torch.no_grad():
        for start in range(0, len(ids), chunk):
            batch = torch.tensor([ids[start:start + chunk]])
            if head_key is None:
                model(batch)
            else:
                add(head_key, decoder(batch).last_hidden_state)
            bar.update(f"[gguf] importance matrix: {min(start + chunk, len(ids))}/{len(ids)} tokens")
    bar.close(f" ({time.perf_counter() - t0:.0f} s)")
    for h in hooks:
        h.remove()
    if not sums:
        raise GGUFError(f"no weight of {src} maps to a GGUF tensor name for architecture {arch_name}")
    return {k: (sums[k] / counts[k]).tolist() for k in sums}


def _gguf_arch(arch_name: str):
    """gguf's ``MODEL_ARCH`` for a transformers architecture name, for the tensor-name map."""
    import gguf

    table = {"LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA, "MistralForCausalLM": gguf.MODEL_ARCH.LLAMA,
             "Qwen2ForCausalLM": gguf.MODEL_ARCH.QWEN2, "Qwen3ForCausalLM": gguf.MODEL_ARCH.QWEN3,
             "GemmaForCausalLM": gguf.MODEL_ARCH.GEMMA, "Gemma2ForCausalLM": gguf.MODEL_ARCH.GEMMA2,
             "PhiForCausalLM": gguf.MODEL_ARCH.PHI2, "Phi3ForCausalLM": gguf.MODEL_ARCH.PHI3}
    if arch_name not in table:
        raise GGUFError(f"no importance matrix for architecture {arch_name} here (known: {', '.join(table)}); "
                        "choose a type that needs none (Q8_0, Q4_K_M, Q2_K)")
    return table[arch_name]


# --------------------------------------------------------------------------------------------
# Step 2: quantize
# --------------------------------------------------------------------------------------------

def ftype(name: str) -> int:
    llama_cpp = require_binding()
    value = getattr(llama_cpp, "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}", None)
    if name not in TYPES or value is None:
        raise GGUFError(f"--type {name}: choose one of {', '.join(TYPES)}")
    return int(value)


def quantize(src: Path, out: Path, type_name: str, imatrix: dict[str, list[float]] | None = None,
             threads: int | None = None, progress: bool = True) -> None:
    """``src`` GGUF -> ``out`` at ``type_name`` with ``llama_model_quantize``, in a child process
    whose per-tensor lines become one progress line (llama.cpp prints from C)."""
    ftype(type_name)
    if type_name in NEEDS_IMATRIX and not imatrix:
        raise GGUFError(f"--type {type_name} needs an importance matrix: pass --calibration FILE (text or "
                        "JSONL of the prompts the model will see)")
    with tempfile.TemporaryDirectory(prefix="rewoo-quant-") as tmp:
        args = {"src": str(src), "out": str(out.with_name(out.name + ".partial")), "type": type_name,
                "threads": threads or 0, "imatrix": None}
        if imatrix:
            args["imatrix"] = str(Path(tmp) / "imatrix.json")
            Path(args["imatrix"]).write_text(json.dumps(imatrix))
        cmd = [sys.executable, "-m", "serve.gguf", "--quantize-child", json.dumps(args)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                                cwd=str(Path(__file__).resolve().parent.parent))
        assert proc.stdout is not None
        lines: list[str] = []
        bar = _Progress(progress)
        t0 = time.perf_counter()
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            m = re.search(r"\[\s*(\d+)/\s*(\d+)\]", line)
            if m:
                bar.update(f"[gguf] quantizing to {type_name}: {m.group(1)}/{m.group(2)} tensors")
        rc = proc.wait()
        bar.close(f" ({time.perf_counter() - t0:.1f} s)")
    partial = Path(args["out"])
    if rc != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        why = next((ln for ln in reversed(lines) if "error" in ln.lower() or "requires" in ln.lower()),
                   lines[-1] if lines else "no output")
        raise GGUFError(f"llama.cpp could not quantize {src.name} to {type_name}: {why.strip()}")
    partial.rename(out)


def _quantize_child(spec: str) -> int:
    """In the child: run ``llama_model_quantize`` (its C log goes to stderr, read by the parent)."""
    import ctypes

    args = json.loads(spec)
    llama_cpp = require_binding()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype(args["type"])
    params.nthread = int(args["threads"])
    keep = []
    if args["imatrix"]:
        data = json.loads(Path(args["imatrix"]).read_text())
        entries = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
        for i, (name, values) in enumerate(data.items()):
            arr = (ctypes.c_float * len(values))(*values)
            keep.append((name.encode(), arr))
            entries[i].name, entries[i].data, entries[i].size = keep[-1][0], arr, len(values)
        entries[len(data)].name = None
        params.imatrix = entries
    rc = llama_cpp.llama_model_quantize(args["src"].encode(), args["out"].encode(), ctypes.byref(params))
    sys.stderr.flush()
    return 0 if rc == 0 else 1


# --------------------------------------------------------------------------------------------
# Sizes and the whole export
# --------------------------------------------------------------------------------------------

@dataclass
class GGUFReport:
    path: Path
    type: str
    bytes: int
    parameters: int
    seconds: float

    @property
    def bpw(self) -> float:
        return self.bytes * 8 / self.parameters

    def lines(self) -> list[str]:
        return [f"output: {self.path} ({self.type})",
                f"size: {self.bytes / 2**20:.1f} MiB ({self.bytes:,} bytes)",
                f"parameters: {self.parameters:,}",
                f"effective bits per weight (whole model): {self.bpw:.2f}",
                f"time: {self.seconds:.1f} s"]


def gguf_parameters(path: Path) -> int:
    """Elements of every tensor in a GGUF file (tied weights once, as stored)."""
    import gguf

    return sum(int(t.n_elements) for t in gguf.GGUFReader(str(path)).tensors)


def export(src: Path, out: Path, type_name: str, calibration: Path | None = None, work: Path | None = None,
           threads: int | None = None, progress: bool = True, imatrix_tokens: int = 50_000) -> GGUFReport:
    """The whole path: ``src`` (merged transformers folder) -> ``out`` (a .gguf at ``type_name``).
    The full-precision GGUF is kept in ``work`` (default ``OUT.work/``) and reused for other types
    while the source's weights are unchanged."""
    t0 = time.perf_counter()
    src, out = Path(src), Path(out)
    ftype(type_name)  # the binding is there and the type is known, before any work
    if type_name in NEEDS_IMATRIX and calibration is None:
        raise GGUFError(f"--type {type_name} needs an importance matrix: pass --calibration FILE (text or JSONL "
                        "of the prompts the model will see)")
    texts = calibration_texts(calibration) if calibration is not None else None
    work = Path(work) if work else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    stamp = _source_stamp(src)
    outtype = source_outtype(src)
    full = work / f"model-{outtype}.gguf"
    stamp_file = work / f"model-{outtype}.source.json"
    if not (full.is_file() and stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp):
        full.unlink(missing_ok=True)
        hf_to_gguf(src, full, outtype, progress)
        stamp_file.write_text(json.dumps(stamp))
    if type_name == outtype.upper():
        shutil.copyfile(full, out)
    else:
        imatrix = compute_imatrix(src, texts, imatrix_tokens, progress=progress) if texts is not None else None
        quantize(full, out, type_name, imatrix, threads, progress)
    write_tokenizer_folder(src, out)
    return GGUFReport(out, type_name, out.stat().st_size, gguf_parameters(out), time.perf_counter() - t0)


TOKENIZER_FILES = ("tokenizer", "special_tokens", "chat_template")


def write_tokenizer_folder(src: Path, out: Path) -> Path | None:
    """Copy ``src``'s tokenizer files beside GGUF ``out`` (:func:`pipeline.llamacpp.tokenizer_dir`), whole or not
    at all (written aside, then renamed; ``complete.json`` last). The llama.cpp path reads it
    without transformers (:class:`pipeline.llamacpp.TokenizerFolder`); without it the tokenizer is
    rebuilt from the GGUF's own metadata. None when ``src`` has no ``tokenizer.json``."""
    from pipeline.llamacpp import tokenizer_dir

    src = Path(src)
    if not (src / "tokenizer.json").is_file():
        return None
    folder = tokenizer_dir(Path(out))
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.name.startswith(TOKENIZER_FILES):
            shutil.copy2(f, partial / f.name)
    (partial / "complete.json").write_text(json.dumps({"source": src.name}))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def source_outtype(src: Path) -> str:
    """The intermediate GGUF keeps the source's precision: ``f32`` for a float32 folder (a LoRA
    merged in fp32 is then rounded once, by the quantizer), ``f16`` for float16, else ``bf16``."""
    try:
        cfg = json.loads((src / "config.json").read_text())
    except (OSError, ValueError):
        return "bf16"
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    return {"float32": "f32", "float16": "f16"}.get(dtype, "bf16")


def _source_stamp(src: Path) -> dict:
    return {f.name: [f.stat().st_size, int(f.stat().st_mtime)] for f in sorted(src.glob("*.safetensors"))}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--quantize-child"] and len(argv) == 2:
        return _quantize_child(argv[1])
    if argv[:1] == ["--fetch-converter"]:
        sdist = Path(argv[1]) if len(argv) > 1 else None
        try:
            print(converter_dir(sdist=sdist))
        except GGUFError as e:
            print(f"python -m serve.gguf: {e}", file=sys.stderr)
            return 2
        return 0
    print("usage: python -m serve.gguf --fetch-converter [SDIST]   (exports: python -m serve.quantize "
          "IN OUT.gguf --format gguf --type T)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
