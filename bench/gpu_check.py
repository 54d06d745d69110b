"""One prepared GPU check: every GPU claim of the stack measured in one device call of under 9 minutes.

    python bench/gpu_check.py                      # on a CUDA machine: every step, one table, $OUT/gpu_check.json
    python bench/gpu_check.py --dry-run            # any machine, a few seconds: each step's set-up on the CPU
    python bench/gpu_check.py --fetch-wheels .whl  # here: the wheels the GPU machine lacks (make gpu-check-wheels)
    make gpu-check-wheels; make gpu-check

Steps, numbered as in issue 18 (on a GPU each runs in its own process group with a timeout; one
that fails, hangs or runs out of time is recorded and the next one runs):

  1 gpu_tests  ``pytest -m gpu`` over the test files that hold gpu-marked tests.
  2 exl2       ``serve/quantize.py`` converts the first EXL2_LAYERS layers of a random ~1B Llama
               (hidden 2048, 22 layers, GQA 32/4, SwiGLU 5632: TinyLlama-1.1B's shape, a 512-token
               vocabulary; the whole model's conversion outran the step's share) to EXL2 at 2.5 and
               4.0 bpw: conversion time, size, effective bpw (whole model, and the decoder layers
               alone), decode tok/s of our exllamav2 backend vs our transformers backend (bf16)
               and plain ``generate`` on the same model; then the seed's arithmetic (a 70B at
               2.5 bpw -> 22 GB) redone with the bits per weight measured here.
  3 lora       LoRA q/v in bf16 through train/sft.py's own builders (recipe, load_model,
               apply_lora, build_datasets, the packed and padded collators), SDPA and
               flash-attention when it imports: real tokens/s, peak memory, MFU, packed vs padded;
               then ``run_sft`` itself (the HF Trainer path) for 3 steps.
  4 qlora      QLoRA NF4 (caller recipe) with CUDA bitsandbytes: tokens/s, peak memory.
  5 serve      ``python -m serve`` on the GPU: 1 vs 8 clients, aggregate completion tok/s
               (bench/bench_serve.py's clients).

Set-up steps: ``wheels`` installs the carried wheels into a private folder; ``prepare`` builds the
model and the training data once for steps 2-5; ``exl2_build`` imports exllamav2, which compiles
its CUDA extension (about 50 C++/CUDA files), in the background while steps 3-5 use the GPU.

MFU: model FLOPs over the datasheet peak, 989 TFLOP/s (H200 SXM dense bf16, the H100's rate).
LoRA counts 4 N FLOP per real token: forward 2N, backward to the activations 2N; the frozen
weights take no weight gradient (full fine-tuning would be 6N). Attention's T^2 term and the
recomputation of gradient checkpointing are not counted. Step 3 also times an 8192^3 bf16
matmul, the ceiling actually reachable (KINDS.md saw 769-798 TFLOP/s).

Budget (one ``run`` call of at most 540 s; the script aims at 510 s): each step has a nominal
timeout (STEPS below); a step gets the time left minus the nominal time of the steps after it
(so unspent time passes on), the wait for the exllamav2 build takes whatever slack is left, and a
``--budget`` under the nominal total scales every share alike. The build is the one unknown:
with a prebuilt ``exllamav2_ext.so`` carried in ``.whl/prebuilt/`` it costs nothing; otherwise
it compiles for this GPU's architecture only, with all cores but two, while the training steps
run. A build that finishes comes back gzipped as ``$OUT/exllamav2_ext.so.gz``: carry it in
``.whl/prebuilt/`` on the next call. If it does not finish in time, step 2 and the exllamav2
tests are skipped (a killed build would leave torch's extension lock behind and hang them).
First run on an H200 on 2026-12-04: the README's "GPU check" holds its table.

Without CUDA (and without ``--dry-run``) it prints one line and exits 0. ``--dry-run`` walks every
step's set-up on the CPU in this process (the configs, a tiny random model, the recipes and one
training step, the converter and server commands, the wheels folder), prints the same table and
JSON, and exits 1 if any set-up failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))  # bench_serve's clients, scaling_plan's 70B shape

RESULT_MARK = "GPU_CHECK_RESULT "
PEAK_BF16_TFLOPS = 989.4      # H200 SXM (= H100 SXM) dense bf16, NVIDIA datasheet; KINDS.md measured 769-798
BUDGET_S = 510                # the whole run; the device's `run` allows 600 s, we ask for 540
CARRY_LIMIT = 64 * 2**20      # the device tool's working tree + carried paths
OUT_FILE_LIMIT = 16 * 2**20   # one file back from $OUT
SITE = Path(tempfile.gettempdir()) / "gpu-check-site"

# The model of steps 2-5: TinyLlama-1.1B's decoder (hidden 2048, 22 layers, 32 heads with 4 KV
# heads, SwiGLU 5632) over the tiny BPE's 512 tokens, 0.97 B parameters in the layers. A small
# vocabulary keeps every id the model can emit decodable by both tokenizers; the embeddings'
# share (0.2%) is then close to a 70B's (0.8%), and step 2 scales the layers' bits separately.
ONE_B = {"hidden": 2048, "intermediate": 5632, "layers": 22, "heads": 32, "kv_heads": 4}
TINY = {"hidden": 64, "intermediate": 256, "layers": 2, "heads": 4, "kv_heads": 2}
# Step 2 converts the same model cut to its first 3 layers: on the H200 (2026-12-04) the whole
# 22-layer model's 2.5 bpw conversion ran past 180 s, and 6 layers took 128 s for 2.5 bpw alone
# (measurement 50 s of it). Bits per weight are measured per part (layers, embeddings, head), so
# the cut changes none of them; decode speeds compare the backends on one and the same model.
EXL2_LAYERS = 3

# The Python packages the checks need that the GPU machine's image lacks (KINDS.md's package list,
# 2026-11-17: it has torch 2.11, transformers, peft, accelerate, pandas, ninja, pytest, httpx ...).
# Versions: those this repository is tested with; all are pure Python or have cp312 manylinux wheels.
WHEELS = [
    ("exllamav2==0.3.2", "step 2, serve --backend exllamav2 (pure Python; compiles its extension at import)"),
    ("fastparquet==2026.3.0", "exllamav2's converter imports it"),
    ("cramjam==2.11.0", "fastparquet"),
    ("bitsandbytes==0.50.2", "step 4 (slimmed to its CPU and CUDA 13 libraries)"),
    ("llguidance==1.9.1", "serve: constrained decoding"),
    ("fastapi==0.165.0", "serve"),
    ("starlette==1.10.0", "serve"),
    ("pydantic==2.14.4", "serve, openai"),
    ("pydantic-core==2.50.5", "pydantic"),
    ("annotated-types==0.8.0", "pydantic"),
    ("typing-inspection==0.4.5", "pydantic, fastapi"),
    ("opentelemetry-api==1.45.2", "fastapi"),
    ("uvicorn==0.54.0", "serve"),
    ("sniffio==1.3.1", "openai"),
    ("openai==3.57.0", "the gpu-marked serving test"),
    ("jiter==0.19.0", "openai"),
    ("httpx2==2.16.2", "openai"),
    ("httpcore2==2.16.2", "httpx2"),
    ("truststore==0.10.5", "httpx2"),
    ("jsonschema==4.26.0", "pipeline, serve: tool schemas"),
    ("jsonschema-specifications==2025.9.1", "jsonschema"),
    ("referencing==0.37.0", "jsonschema"),
    ("rpds-py==2026.9.1", "referencing"),
]
# Not carried: flash-attn is published as source only (a CUDA build of tens of minutes; no PyPI
# wheel): step 3 then runs SDPA alone and says so. bitsandbytes' full wheel (43 MB, libraries for
# every CUDA) does not fit beside the tree; only the libraries matching torch's CUDA 13 are kept.
BNB_KEEP = re.compile(r"libbitsandbytes_(cpu|cuda13\d)\.so$")
# pip matches a manylinux tag exactly: list them all up to the machine's glibc (Ubuntu 24.04's 2.39)
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]


@dataclass
class Step:
    """One row of the table. ``timeout_s`` is nominal: the budget may give less (module docstring)."""

    name: str
    number: str              # the numbering, "-" for set-up steps
    title: str
    timeout_s: int
    status: str = "pending"  # ok, failed, timeout, skipped
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    error: str | None = None
    command: list[str] = field(default_factory=list)
    given_s: float = 0.0     # the timeout it actually ran under
    beside_build: bool = False  # ran while the exllamav2 extension compiled (CPU contention)


STEPS = [
    Step("wheels", "-", "install the carried wheels", 15),
    Step("prepare", "-", "random ~1B Llama (bf16) + generated training data", 35),
    # no nominal of its own: it runs beside prepare..serve and its wait takes the slack left
    Step("exl2_build", "-", "exllamav2 extension: import (JIT compile) in the background", 0),
    Step("gpu_tests", "1", "pytest -m gpu", 90),
    Step("exl2", "2", "EXL2 2.5/4.0 bpw: convert, size, decode vs transformers", 160),
    Step("lora", "3", "LoRA q/v bf16: SDPA / flash, packed vs padded, MFU", 60),
    Step("qlora", "4", "QLoRA NF4 (bitsandbytes CUDA)", 50),
    Step("serve", "5", "python -m serve on the GPU: 1 vs 8 clients", 80),
]
# Execution order on a GPU: exl2_build starts after wheels and runs beside prepare, lora, qlora, serve.
FOREGROUND = ["wheels", "prepare", "lora", "qlora", "serve", "exl2", "gpu_tests"]


class StepFailed(Exception):
    """A step that failed but measured something on the way: its figures still reach the table."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


@dataclass
class Ctx:
    dry: bool
    work: Path
    wheels: Path

    @property
    def model_dir(self) -> Path:
        return self.work / "llama"

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def exl2_source(self) -> Path:
        return self.work / "llama-exl2"


# --------------------------------------------------------------------------------------------
# Wheels: fetched here, installed there
# --------------------------------------------------------------------------------------------

def tree_bytes() -> int:
    """Bytes of the git-tracked files: what the device tool sends besides the carried paths."""
    try:
        names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum((REPO / n).stat().st_size for n in names.decode().split("\0") if n and (REPO / n).is_file())


def _wheel_name(spec: str) -> str:
    return spec.split("==")[0].replace("-", "_").lower()


def wheel_inventory(folder: Path) -> dict:
    """Which of WHEELS the folder holds, their sizes, and whether the folder fits beside the tree."""
    files = {p.name: p.stat().st_size for p in folder.glob("*.whl")} if folder.is_dir() else {}
    present, missing = {}, []
    for spec, _ in WHEELS:
        name, version = _wheel_name(spec), spec.split("==")[1]
        hit = [f for f in files if f.lower().startswith(f"{name}-{version}-")]
        if hit:
            present[spec] = files[hit[0]]
        else:
            missing.append(spec)
    prebuilt = list((folder / "prebuilt").glob("exllamav2_ext.so*")) if folder.is_dir() else []
    total = sum(files.values()) + sum(p.stat().st_size for p in prebuilt)
    tree = tree_bytes()
    names = {_wheel_name(s) for s, _ in WHEELS}
    extra = sorted(f for f in files if f.split("-")[0].lower() not in names or
                   not any(f.lower().startswith(f"{_wheel_name(s)}-{s.split('==')[1]}-") for s, _ in WHEELS))
    return {"folder": str(folder), "present": len(present), "missing": missing, "wheels_mb": round(total / 2**20, 1),
            "tree_mb": round(tree / 2**20, 1), "fits_64mib": tree + total <= CARRY_LIMIT,
            "prebuilt_ext": bool(prebuilt), "extra": extra}


def slim_bitsandbytes(path: Path) -> tuple[int, int]:
    """Rewrite the bitsandbytes wheel without the libraries of other CUDA/ROCm/XPU versions (and
    their RECORD lines). Returns (bytes before, bytes after)."""
    before = path.stat().st_size
    tmp = path.with_suffix(".slim")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        dropped = {i.filename for i in src.infolist()
                   if i.filename.endswith(".so") and i.filename.startswith("bitsandbytes/libbitsandbytes_")
                   and not BNB_KEEP.search(i.filename)}
        for info in src.infolist():
            if info.filename in dropped:
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = "".join(line for line in data.decode().splitlines(keepends=True)
                               if line.split(",")[0] not in dropped).encode()
            dst.writestr(info, data)
    tmp.replace(path)
    return before, path.stat().st_size


def fetch_wheels(folder: Path) -> int:
    """``make gpu-check-wheels``: download WHEELS for the GPU machine (CPython 3.12, x86-64 Linux)."""
    folder.mkdir(parents=True, exist_ok=True)
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    failed = []
    for spec, why in WHEELS:  # one at a time: a wheel that is not found must not stop the others
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(folder), spec],
                           capture_output=True, text=True)
        if r.returncode != 0:
            failed.append(spec)
            print(f"gpu_check: no wheel for {spec} ({why}): {_error_tail(r.stderr, 300)}", file=sys.stderr)
    for whl in folder.glob("bitsandbytes-*.whl"):
        before, after = slim_bitsandbytes(whl)
        if before != after:
            print(f"bitsandbytes: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB (CPU and CUDA 13 libraries only)")
    inv = wheel_inventory(folder)
    print(f"{folder}: {inv['present']}/{len(WHEELS)} wheels, {inv['wheels_mb']} MiB; tracked tree {inv['tree_mb']} MiB; "
          f"together {'within' if inv['fits_64mib'] else 'OVER'} the device tool's 64 MiB")
    if inv["extra"]:
        print(f"also in {folder} (not in the list; two versions of one package stop the install): {', '.join(inv['extra'])}")
    if inv["missing"]:
        print(f"missing: {', '.join(inv['missing'])}: the steps that import them fail, the others run")
    return 0 if inv["fits_64mib"] and not inv["missing"] and not failed else 1


def step_wheels(ctx: Ctx) -> dict:
    inv = wheel_inventory(ctx.wheels)
    if ctx.dry:
        return inv
    wheels = sorted(ctx.wheels.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"no wheels in {ctx.wheels}: run make gpu-check-wheels here and carry {ctx.wheels.name}")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(SITE), *map(str, wheels)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"pip install of the wheels failed: {r.stderr[-1500:]}")
    return {**inv, "site": str(SITE)}


# --------------------------------------------------------------------------------------------
# prepare: the model and data of steps 2-5
# --------------------------------------------------------------------------------------------

def llama_config(tokenizer, shape: dict):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
                       num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                       num_key_value_heads=shape["kv_heads"], max_position_embeddings=2048,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)


def step_prepare(ctx: Ctx) -> dict:
    import torch
    from transformers import LlamaForCausalLM

    from train.catalog import load_catalog
    from train.datagen import GenConfig, generate, write
    from train.tiny import build_tokenizer

    tok = build_tokenizer()
    config = llama_config(tok, TINY if ctx.dry else ONE_B)
    torch.manual_seed(0)
    with torch.device("cpu" if ctx.dry else "cuda"):  # a 1B init on the CPU takes tens of seconds
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.to(torch.bfloat16).save_pretrained(ctx.model_dir)
    tok.save_pretrained(ctx.model_dir)
    n = sum(p.numel() for p in model.parameters())
    shape = (f"h{config.hidden_size} L{config.num_hidden_layers} heads {config.num_attention_heads}/"
             f"{config.num_key_value_heads} mlp {config.intermediate_size}")
    kept = min(EXL2_LAYERS, config.num_hidden_layers)
    model.model.layers = model.model.layers[:kept]  # step 2's source: the first layers alone
    config.num_hidden_layers = kept
    model.save_pretrained(ctx.exl2_source)
    tok.save_pretrained(ctx.exl2_source)
    del model
    catalog = load_catalog(REPO / "data" / "catalog" / "tools.json")
    rows = 8 if ctx.dry else 96
    gen = GenConfig(planner=rows, caller=rows, eval=2, test=2, max_tools=4, max_steps=3, seed=0)
    write(ctx.data_dir, generate(catalog, gen), catalog, gen)
    size = sum(f.stat().st_size for f in ctx.model_dir.glob("*.safetensors"))
    return {"parameters": n, "bf16_gb": round(size / 1e9, 3), "vocab": len(tok),
            "shape": shape, "exl2_layers": kept, "train_rows": rows}


# --------------------------------------------------------------------------------------------
# exl2_build: import exllamav2 (its JIT compile) once, keep the result
# --------------------------------------------------------------------------------------------

def extension_so() -> Path | None:
    """The extension torch built for exllamav2 (``~/.cache/torch_extensions/<py/cuda>/exllamav2_ext``)."""
    from torch.utils.cpp_extension import _get_build_directory

    so = Path(_get_build_directory("exllamav2_ext", False)) / "exllamav2_ext.so"
    return so if so.is_file() else None


def step_exl2_build(ctx: Ctx) -> dict:
    import importlib.util

    if ctx.dry:  # the import compiles CUDA code: here only check that the package or its wheel is at hand
        spec = importlib.util.find_spec("exllamav2")
        return {"exllamav2": "installed" if spec else ("wheel in " + str(ctx.wheels) if
                                                      list(ctx.wheels.glob("exllamav2-*.whl")) else "absent here"),
                "prebuilt_ext": any((ctx.wheels / "prebuilt").glob("exllamav2_ext.so*")),
                "max_jobs": max(1, (os.cpu_count() or 2) - 2)}
    start = time.monotonic()
    import exllamav2  # noqa: F401  (compiles unless exllamav2_ext is importable)
    import exllamav2.ext as ext

    seconds = time.monotonic() - start
    prebuilt = Path(getattr(ext.exllamav2_ext, "__file__", "") or "")
    figures = {"import_s": round(seconds, 1), "arch": os.environ.get("TORCH_CUDA_ARCH_LIST", ""),
               "max_jobs": os.environ.get("MAX_JOBS", ""), "loaded": str(prebuilt)}
    so = extension_so()
    out = os.environ.get("OUT")
    if so and out:  # gzip: a file comes back from $OUT only up to 16 MiB
        import gzip

        packed = Path(out) / "exllamav2_ext.so.gz"
        with open(so, "rb") as f, gzip.open(packed, "wb", compresslevel=6) as g:
            shutil.copyfileobj(f, g)
        mib = packed.stat().st_size / 2**20
        if packed.stat().st_size > OUT_FILE_LIMIT:
            packed.unlink()
            figures["saved"] = f"not saved: {mib:.1f} MiB gzipped, over the 16 MiB a file may bring back"
        else:
            figures["saved"] = f"$OUT/exllamav2_ext.so.gz ({mib:.1f} MiB): put it in .whl/prebuilt/ for the next call"
    return figures


def unpack_prebuilt(wheels: Path) -> Path | None:
    """``.whl/prebuilt/exllamav2_ext.so[.gz]`` (a previous call's build) as a folder to put on
    PYTHONPATH: exllamav2 imports a module named exllamav2_ext before it builds one."""
    import gzip

    plain, packed = wheels / "prebuilt" / "exllamav2_ext.so", wheels / "prebuilt" / "exllamav2_ext.so.gz"
    if plain.is_file():
        return plain.parent
    if not packed.is_file():
        return None
    folder = SITE.parent / "gpu-check-prebuilt"
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(packed, "rb") as g, open(folder / "exllamav2_ext.so", "wb") as f:
        shutil.copyfileobj(g, f)
    return folder


# --------------------------------------------------------------------------------------------
# 1: the gpu-marked tests
# --------------------------------------------------------------------------------------------

def gpu_test_files() -> list[Path]:
    return sorted(p for p in (REPO / "tests").glob("test_*.py") if "pytest.mark.gpu" in p.read_text(encoding="utf-8"))


def gpu_tests_command(timeout: int, without_exllamav2: bool) -> list[str]:
    # without the built extension, importing exllamav2 would start the build again (and hang on the
    # lock a killed build leaves): deselect those tests by name
    select = ["-k", "not exl2 and not exllamav2"] if without_exllamav2 else []
    return [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-m", "gpu", *select,
            f"--timeout={max(30, timeout)}", *[str(p.relative_to(REPO)) for p in gpu_test_files()]]


def step_gpu_tests(ctx: Ctx) -> dict:
    without = os.environ.get("GPU_CHECK_NO_EXLLAMAV2") == "1"
    argv = gpu_tests_command(int(os.environ.get("GPU_CHECK_TIMEOUT", "90")), without)
    n = sum(len(re.findall(r"@pytest\.mark\.gpu\b", p.read_text(encoding="utf-8"))) for p in gpu_test_files())
    figures = {"files": len(gpu_test_files()), "gpu_marked": n, "command": " ".join(argv[1:])}
    if ctx.dry:
        return figures
    # each test's line goes to the step's log as it finishes: a timeout then shows how far it got
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    r = subprocess.CompletedProcess(argv, proc.wait(), "".join(lines))
    summary = (r.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", summary)}
    figures.update(counts, summary=summary.strip("= "))
    if r.returncode not in (0, 5):  # 5: nothing selected
        raise StepFailed(f"pytest exit {r.returncode}: {summary}", figures)
    return figures


# --------------------------------------------------------------------------------------------
# 2: EXL2
# --------------------------------------------------------------------------------------------

def _tensor_bytes(folder: Path) -> dict[str, int]:
    from serve.quantize import _safetensors_header

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        for name, meta in _safetensors_header(f).items():
            if name != "__metadata__":
                out[name] = meta["data_offsets"][1] - meta["data_offsets"][0]
    return out


def exl2_breakdown(source: Path, output: Path) -> dict:
    """Bits per source parameter in three parts: embeddings, the output head, the decoder layers
    (every ``model.layers.*`` tensor: quantized linears with their scales, norms)."""
    from serve.quantize import count_parameters

    def part(name: str) -> str:
        return "embed" if "embed_tokens" in name else "head" if name.startswith("lm_head") else "layers"

    src_counts: dict[str, int] = {"embed": 0, "head": 0, "layers": 0}
    for name, nbytes in _tensor_bytes(source).items():
        src_counts[part(name)] += nbytes // 2  # the source is bf16: 2 bytes a parameter
    out_bytes: dict[str, int] = {"embed": 0, "head": 0, "layers": 0}
    for name, nbytes in _tensor_bytes(output).items():
        out_bytes[part(name)] += nbytes
    total = count_parameters(source)
    return {"bytes": sum(out_bytes.values()), "bpw_whole": sum(out_bytes.values()) * 8 / total,
            **{f"bpw_{k}": out_bytes[k] * 8 / src_counts[k] for k in src_counts if src_counts[k]}}


def scale_to_70b(breakdown: dict) -> dict:
    """The seed's arithmetic with the bits measured here: Llama-2-70B's linear layers at the layers'
    measured bpw, its embeddings and head at theirs. The seed: 70B x 2.5 / 8 = 21.9 GB ("22 GB")."""
    from scaling_plan import LLAMA2_70B as m  # bench/scaling_plan.py: the 70B's shape

    emb = m.vocab * m.hidden
    layers = m.params() - 2 * emb
    gb = (layers * breakdown["bpw_layers"] + emb * breakdown["bpw_embed"] + emb * breakdown["bpw_head"]) / 8 / 1e9
    return {"70b_gb": round(gb, 1), "seed_gb": round(m.params() * 2.5 / 8 / 1e9, 1)}


def exl2_commands(ctx: Ctx, bpw: float) -> list[list[str]]:
    out = ctx.work / f"exl2-{bpw:g}"
    return [[sys.executable, "-m", "serve.quantize", str(ctx.exl2_source), str(out), f"{bpw:g}", "--rows", "16",
             "--length", "512", "--measurement", str(ctx.work / "llama.measurement.json"), "--work",
             str(ctx.work / "exl2.work")]]


async def _decode_rate(backend, tokenizer, tokens: int, runs: int) -> float:
    """Single-stream completion tok/s through a backend's ``stream`` (greedy, ignore_eos)."""
    from serve.backends.base import GenerationRequest, Sampling

    await backend.start()
    try:
        made, start = 0, 0.0
        for i in range(runs + 1):
            if i == 1:  # the first run warms up
                made, start = 0, time.perf_counter()
            ids = tokenizer(f"Request {i}: the planner writes").input_ids
            async for chunk in backend.stream(GenerationRequest(list(ids), Sampling(max_tokens=tokens, temperature=0,
                                                                                      ignore_eos=True))):
                if chunk.finish_reason:
                    made += chunk.completion_tokens
        return made / (time.perf_counter() - start)
    finally:
        await backend.stop()


def step_exl2(ctx: Ctx) -> dict:
    from serve.quantize import count_parameters, exl2_plan

    if not (ctx.exl2_source / "config.json").is_file():
        raise RuntimeError(f"{ctx.exl2_source}: no model (the prepare step failed)")
    figures: dict = {"source_parameters": count_parameters(ctx.exl2_source)}
    # the plan serve.quantize will run: one measurement pass, reused by the second bitrate
    plan = exl2_plan(ctx.exl2_source, ctx.work / "exl2-2.5", 2.5, 6, ctx.work / "exl2.work",
                     ctx.work / "llama.measurement.json", None, 16, 512, fresh=False)
    figures["converter_runs"] = len(plan.commands) + 1
    if ctx.dry:
        figures["formula_70b_gb"] = scale_to_70b({"bpw_layers": 2.5, "bpw_embed": 16, "bpw_head": 6})["70b_gb"]
        figures["commands"] = [" ".join(c[1:6]) for bpw in (2.5, 4.0) for c in exl2_commands(ctx, bpw)]
        figures["self_breakdown_bpw"] = round(exl2_breakdown(ctx.exl2_source, ctx.exl2_source)["bpw_whole"], 2)
        return figures
    env = {**os.environ}
    for bpw in (2.5, 4.0):
        (argv,) = exl2_commands(ctx, bpw)
        t0 = time.monotonic()
        # the converter's progress goes straight to the step's log: a step killed at its timeout
        # then shows how far it got (the first H200 run's showed nothing)
        r = subprocess.run(argv, cwd=REPO, env=env, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise RuntimeError(f"serve.quantize {bpw:g} bpw exit {r.returncode} (its output is in the step's log)")
        b = exl2_breakdown(ctx.exl2_source, Path(argv[4]))
        figures[f"{bpw:g}"] = {"convert_s": round(time.monotonic() - t0, 1), "gb": round(b["bytes"] / 1e9, 3),
                               "bpw_whole": round(b["bpw_whole"], 3), "bpw_layers": round(b["bpw_layers"], 3),
                               "bpw_head": round(b.get("bpw_head", 0), 2), "bpw_embed": round(b.get("bpw_embed", 0), 2),
                               **scale_to_70b(b)}
        print(RESULT_MARK + json.dumps(figures), flush=True)  # what is measured so far survives a timeout
    # decode: the same prompt, 128 tokens, through our two backends and plain generate
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from serve.backends.exl2 import ExLlamaV2Backend
    from serve.backends.hf import TransformersBackend, load_model

    tok = AutoTokenizer.from_pretrained(ctx.exl2_source)
    for bpw in (2.5, 4.0):
        backend = ExLlamaV2Backend(str(ctx.work / f"exl2-{bpw:g}"), "q", context_length=1024, max_batch_size=8,
                                   cache_tokens=4096)
        figures[f"{bpw:g}"]["decode_tok_s"] = round(asyncio.run(_decode_rate(backend, tok, 128, 3)), 1)
        del backend
        torch.cuda.empty_cache()
    model, tok2 = load_model(str(ctx.exl2_source), dtype="bfloat16", device="cuda")
    backend = TransformersBackend(model, tok2, "bf16", cache_tokens=4096)
    figures["transformers_backend_bf16_tok_s"] = round(asyncio.run(_decode_rate(backend, tok, 128, 3)), 1)
    del backend, model
    model = AutoModelForCausalLM.from_pretrained(ctx.exl2_source, dtype=torch.bfloat16).cuda().eval()
    ids = tok("Request: the planner writes", return_tensors="pt").input_ids.cuda()
    kw = dict(max_new_tokens=128, min_new_tokens=128, do_sample=False, pad_token_id=tok.pad_token_id)
    model.generate(ids, **kw)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = model.generate(ids, **kw)
    torch.cuda.synchronize()
    figures["generate_bf16_tok_s"] = round((out.shape[1] - ids.shape[1]) / (time.perf_counter() - t0), 1)
    return figures


# --------------------------------------------------------------------------------------------
# 3 and 4: training through train/sft.py's builders
# --------------------------------------------------------------------------------------------

def lora_recipe(ctx: Ctx, attn: str, packing: bool, qlora: bool = False, extra: tuple[str, ...] = ()):
    from train.recipe import load_recipe

    name = "caller_qlora.yaml" if qlora else "planner_lora.yaml"
    kind = "caller" if qlora else "planner"
    return load_recipe(REPO / "train" / "configs" / name, [
        f"model_name_or_path={ctx.model_dir}", f"attn_implementation={attn}", "dtype=bf16",
        f"dataset={ctx.data_dir / f'{kind}_train.jsonl'}", "eval_fraction=0", f"packing={str(packing).lower()}",
        f"max_seq_len={256 if ctx.dry else 1024}", f"output_dir={ctx.work / ('sft-' + kind)}",
        "per_device_train_batch_size=8", "gradient_accumulation_steps=1", "plot_loss=false",
        f"use_cpu={str(ctx.dry).lower()}", *extra])


def _time_training(recipe, packings: list[bool], steps: int, warmup: int, batch_size: int) -> dict:
    """Real tokens/s, computed tokens per real token and peak memory of LoRA training with the
    recipe's model, adapter and data; the collators of ``packings`` alternate step by step so that
    noise hits them alike. Returns ``{"packed"|"padded": {...}}``."""
    import torch

    from train.data import PackedCollator, PaddedCollator
    from train.sft import apply_lora, build_datasets, load_model, load_tokenizer, resolve_dtype

    cuda = torch.cuda.is_available() and not recipe.train.use_cpu
    tok = load_tokenizer(recipe.model.model_name_or_path)
    rows, _, _ = build_datasets(recipe, tok)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = load_model(recipe, resolve_dtype(recipe.model.dtype, recipe.train.use_cpu))
    if cuda and recipe.lora.quantization != "4bit":
        model = model.cuda()
    model = apply_lora(model, recipe)
    if recipe.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    weights_gb = torch.cuda.max_memory_allocated() / 1e9 if cuda else 0.0
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    collators = {True: PackedCollator(), False: PaddedCollator(tok.pad_token_id)}
    stats = {p: {"time": 0.0, "real": 0, "computed": 0, "peak": 0, "loss": None} for p in packings}
    device = next(model.parameters()).device
    for i in range(warmup + steps):
        batch = [rows[(i * batch_size + j) % len(rows)] for j in range(batch_size)]
        for packing in packings:
            inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in collators[packing](batch).items()}
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            loss = model(**inputs).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                s = stats[packing]
                s["time"] += time.perf_counter() - t0
                s["real"] += sum(len(b["input_ids"]) for b in batch)
                s["computed"] += inputs["input_ids"].numel()
                s["loss"] = float(loss)
                if cuda:
                    s["peak"] = max(s["peak"], torch.cuda.max_memory_allocated())
    from serve.quantize import count_parameters

    n = count_parameters(recipe.model.model_name_or_path)  # the source's: 4-bit weights pack two per byte
    out = {}
    for packing, s in stats.items():
        rate = s["real"] / s["time"]
        out["packed" if packing else "padded"] = {
            "tok_s": round(rate), "computed_per_real": round(s["computed"] / s["real"], 2),
            "peak_gb": round(s["peak"] / 1e9, 2), "loss": round(s["loss"], 3),
            "mfu": round(4 * n * rate / (PEAK_BF16_TFLOPS * 1e12), 3) if cuda else None}
    out["weights_gb"] = round(weights_gb, 2)
    del model, opt
    if cuda:
        torch.cuda.empty_cache()
    return out


def matmul_tflops() -> float:
    """bf16 8192^3 matmul rate on this GPU: the ceiling actually reachable, beside the datasheet's."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12


def flash_available() -> tuple[bool, str]:
    try:
        import flash_attn  # noqa: F401
        return True, f"flash_attn {flash_attn.__version__}"
    except Exception as e:  # ImportError when absent; a build against another torch fails otherwise
        return False, f"flash_attn does not import ({type(e).__name__}): SDPA only"


def step_lora(ctx: Ctx) -> dict:
    import torch

    steps, warmup = (2, 1) if ctx.dry else (8, 2)  # dry: the loop turns more than once
    figures: dict = {"peak_tflops": PEAK_BF16_TFLOPS, "flops_per_token": "4N (LoRA: no weight gradients)"}
    if not ctx.dry:
        figures["matmul_tflops"] = round(matmul_tflops(), 1)
    attns = ["sdpa"]
    ok, why = flash_available()
    figures["flash"] = why
    if ok and not ctx.dry:
        attns.append("flash_attention_2")
    for attn in attns:
        recipe = lora_recipe(ctx, attn, packing=True)
        figures[attn] = _time_training(recipe, [True, False], steps, warmup, batch_size=2 if ctx.dry else 8)
    s = figures["sdpa"]
    figures["packed_over_padded_sdpa"] = round(s["packed"]["tok_s"] / max(1, s["padded"]["tok_s"]), 2)
    if ctx.dry:
        figures["trainer"] = "run_sft with max_steps=3 (GPU run only)"
        return figures
    # the HF Trainer path itself, as users run it (auto attention: flash when it imports)
    from train.sft import run_sft

    recipe = lora_recipe(ctx, "auto", packing=True, extra=("max_steps=3", "logging_steps=1", "save_steps=10000"))
    t0 = time.monotonic()
    result = run_sft(recipe)
    history = json.loads(result.log_history.read_text())
    runtime = next((h["train_runtime"] for h in history if "train_runtime" in h), None)
    figures["trainer"] = {"steps": result.global_step, "loss": result.train_loss, "train_runtime_s": runtime,
                          "wall_s": round(time.monotonic() - t0, 1)}
    torch.cuda.empty_cache()
    return figures


def step_qlora(ctx: Ctx) -> dict:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("bitsandbytes is not installed: carry its wheel (make gpu-check-wheels)")
    recipe = lora_recipe(ctx, "sdpa", packing=True, qlora=True)
    steps, warmup = (2, 1) if ctx.dry else (6, 2)
    figures = {"quant": f"{recipe.lora.bnb_quant_type} double={recipe.lora.bnb_double_quant}",
               "targets": len(recipe.lora.target_modules), "r": recipe.lora.r}
    if not ctx.dry:
        import bitsandbytes
        figures["bitsandbytes"] = bitsandbytes.__version__
    figures.update(_time_training(recipe, [True], steps, warmup, batch_size=2 if ctx.dry else 8))
    return figures


# --------------------------------------------------------------------------------------------
# 5: the served model
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(ctx: Ctx, port: int) -> list[str]:
    return [sys.executable, "-m", "serve", "--model", str(ctx.model_dir), "--served-model-name", "bench",
            "--port", str(port), "--device", "cpu" if ctx.dry else "cuda", "--dtype", "bfloat16",
            "--max-batch-size", "16", "--cache-tokens", "16384", "--max-batch-tokens", "2048",
            "--log-level", "warning"]


def step_serve(ctx: Ctx) -> dict:
    import httpx

    from bench_serve import throughput  # bench/bench_serve.py: its clients, unchanged

    argv = serve_command(ctx, _free_port())
    tokens, requests = (8, 1) if ctx.dry else (128, 4)
    figures: dict = {"command": " ".join(argv[1:6]) + " ...", "tokens": tokens, "requests_per_client": requests}
    if ctx.dry:
        return figures
    port = int(argv[argv.index("--port") + 1])
    server = subprocess.Popen(argv, cwd=REPO, env=os.environ.copy())
    try:
        t0 = time.monotonic()
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                raise RuntimeError(f"python -m serve exited during start-up (exit {server.returncode})")
            time.sleep(0.2)
        figures["startup_s"] = round(time.monotonic() - t0, 1)
        base = f"http://127.0.0.1:{port}/v1"
        for clients in (1, 8):
            figures[f"clients_{clients}_tok_s"] = round(asyncio.run(throughput(base, clients, requests, tokens)), 1)
        figures["ratio_8_over_1"] = round(figures["clients_8_tok_s"] / figures["clients_1_tok_s"], 2)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    return figures


STEP_FUNCS = {"wheels": step_wheels, "prepare": step_prepare, "exl2_build": step_exl2_build,
              "gpu_tests": step_gpu_tests, "exl2": step_exl2, "lora": step_lora, "qlora": step_qlora,
              "serve": step_serve}


# --------------------------------------------------------------------------------------------
# Running steps: in this process (dry run) or each in its own process group with a timeout
# --------------------------------------------------------------------------------------------

def _error_tail(text: str, n: int = 600) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-6:])[-n:]


def run_inline(step: Step, fn, ctx: Ctx) -> Step:
    """The dry run: call the step's function here; an exception fails this step only."""
    t0 = time.monotonic()
    try:
        step.figures = fn(ctx)
        step.status = "ok"
    except StepFailed as e:
        step.status, step.error, step.figures = "failed", str(e)[:600], e.figures
    except Exception as e:  # a step's failure is its row, never the end of the check
        step.status, step.error = "failed", f"{type(e).__name__}: {e}"[:600]
        traceback.print_exc(file=sys.stderr)
    step.seconds = round(time.monotonic() - t0, 2)
    return step


def start_process(argv: list[str], log: Path, env: dict) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        return subprocess.Popen(argv, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def finish_process(step: Step, proc: subprocess.Popen, log: Path, timeout: float, t0: float) -> Step:
    """Wait up to ``timeout``; kill the whole process group past it. The step's figures are the
    JSON on its last ``GPU_CHECK_RESULT`` line. ``seconds`` is the process's own run: one that
    ended before the wait began (the background build, reaped after the steps beside it) ended
    when its log was last written, not when it was reaped (the first H200 run's build row said
    158.7 s for a 9.1 s import)."""
    step.given_s = round(timeout, 1)
    ended_before = proc.poll() is not None
    try:
        proc.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        step.status = "timeout"
    step.seconds = round(time.monotonic() - t0, 1)
    if ended_before and log.is_file():
        step.seconds = round(max(0.0, step.seconds - max(0.0, time.time() - log.stat().st_mtime)), 1)
    text = log.read_text(errors="replace") if log.is_file() else ""
    results = [line for line in text.splitlines() if line.startswith(RESULT_MARK)]
    if results:
        step.figures = json.loads(results[-1][len(RESULT_MARK):])
    if step.status == "timeout":
        step.error = f"killed after {timeout:.0f} s; last output: {_error_tail(text, 300)}"
    elif proc.returncode == 0 and results:
        step.status = "ok"
    else:
        step.status = "failed"
        step.error = f"exit {proc.returncode}: {_error_tail(text)}"
    return step


def run_process(step: Step, argv: list[str], timeout: float, log: Path, env: dict) -> Step:
    step.command = argv
    t0 = time.monotonic()
    return finish_process(step, start_process(argv, log, env), log, timeout, t0)


def step_argv(name: str, ctx: Ctx) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--step", name, "--work", str(ctx.work),
            "--wheels", str(ctx.wheels)]


def child_main(name: str, ctx: Ctx) -> int:
    """``--step NAME``: run one step here and print its figures as the last line."""
    try:
        figures = STEP_FUNCS[name](ctx)
    except StepFailed as e:
        print(RESULT_MARK + json.dumps(e.figures, default=str), flush=True)
        print(f"{name}: {e}", file=sys.stderr, flush=True)
        return 1
    print(RESULT_MARK + json.dumps(figures, default=str), flush=True)
    return 0


def step_env(ctx: Ctx) -> dict:
    import torch

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
    paths = [str(SITE), str(REPO)]
    prebuilt = unpack_prebuilt(ctx.wheels)
    if prebuilt:
        paths.insert(0, str(prebuilt))  # exllamav2 imports a prebuilt exllamav2_ext before it builds one
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    # the interpreter's own bin first: torch's extension loader wants ninja (pip's, beside python3)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    major, minor = torch.cuda.get_device_capability(0)
    env.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")  # this GPU only: the build's biggest saving
    env.setdefault("MAX_JOBS", str(max(1, (os.cpu_count() or 2) - 2)))  # two cores left to the GPU steps
    if "CUDA_HOME" not in env and shutil.which("nvcc"):
        env["CUDA_HOME"] = str(Path(shutil.which("nvcc")).resolve().parents[1])
    return env


class Budget:
    """A deadline shared by the steps: a step gets the time left minus the nominal time of the
    steps still to run after it, so time a step leaves unspent passes on and the later steps keep
    theirs. A budget under the nominal total (``--budget`` with less device time left) scales every
    step's share down alike: with the shares unscaled, a 400 s budget skipped the set-up steps
    that every other step needs (the second H200 call, 2026-12-04)."""

    def __init__(self, seconds: float, nominal: dict[str, int]):
        self.deadline = time.monotonic() + seconds
        scale = min(1.0, seconds / max(1, sum(nominal.values())))
        self.nominal = {name: t * scale for name, t in nominal.items()}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def give(self, later: list[str]) -> float:
        """The seconds a step (or the wait for the build) may take with ``later`` still to run."""
        return self.left() - sum(self.nominal[n] for n in later)


def run_gpu(ctx: Ctx, steps: dict[str, Step], budget_s: float) -> None:
    """The real run: FOREGROUND in order, exl2_build beside the training and serving steps."""
    env = step_env(ctx)
    budget = Budget(budget_s, {s.name: s.timeout_s for s in steps.values()})
    logs = ctx.work / "logs"
    build = None

    def foreground(name: str) -> None:
        later = FOREGROUND[FOREGROUND.index(name) + 1:]
        given = budget.give(later)
        step = steps[name]
        step.beside_build = build is not None and build[0].poll() is None
        if given < 5:
            step.status, step.error = "skipped", f"budget spent ({budget.left():.0f} s left)"
            return
        step_env_ = dict(env, GPU_CHECK_TIMEOUT=str(int(given)))
        if name == "gpu_tests" and steps["exl2_build"].status != "ok":
            step_env_["GPU_CHECK_NO_EXLLAMAV2"] = "1"
        run_process(step, step_argv(name, ctx), given, logs / f"{name}.log", step_env_)

    foreground("wheels")
    # the build needs the wheels (exllamav2 itself), not the model: start it now
    b = steps["exl2_build"]
    b.command = step_argv("exl2_build", ctx)
    build = (start_process(b.command, logs / "exl2_build.log", env), time.monotonic())
    for name in ("prepare", "lora", "qlora", "serve"):
        foreground(name)
    finish_process(b, build[0], logs / "exl2_build.log", max(0.0, budget.give(["exl2", "gpu_tests"])), build[1])
    build = None
    if b.status == "ok":
        foreground("exl2")
    else:
        steps["exl2"].status = "skipped"
        steps["exl2"].error = f"the exllamav2 extension is not built (exl2_build {b.status})"
    foreground("gpu_tests")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _flat(figures: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in figures.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        elif isinstance(v, list):
            out.append(f"{prefix}{k}=[{len(v)}]")
        elif isinstance(v, float):
            out.append(f"{prefix}{k}={v:g}")
        else:
            out.append(f"{prefix}{k}={v}")
    return out


def table(steps: list[Step]) -> str:
    lines = [f"{'#':<2} {'step':<11} {'status':<8} {'s':>6}  figures", "-" * 100]
    for s in steps:
        detail = ", ".join(_flat(s.figures)) if s.figures else ""
        if s.error:
            detail = (detail + "; " if detail else "") + "error: " + s.error.replace("\n", " | ")
        mark = " [beside the exllamav2 build]" if s.beside_build else ""
        lines.append(f"{s.number:<2} {s.name:<11} {s.status:<8} {s.seconds:>6.1f}  {detail}{mark}")
    return "\n".join(lines)


def report(steps: list[Step], meta: dict, json_path: Path | None) -> dict:
    doc = {**meta, "steps": [asdict(s) for s in steps]}
    text = table(steps)
    print(text)
    out = os.environ.get("OUT")
    targets = [p for p in [json_path, Path(out) / "gpu_check.json" if out else None] if p]
    for p in targets:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if out:
        (Path(out) / "gpu_check.txt").write_text(text + "\n")
    return doc


def copy_logs(ctx: Ctx) -> None:
    """The tail of every step's log in one file under $OUT (it returns at most 8 files)."""
    out = os.environ.get("OUT")
    if not out:
        return
    parts = []
    for log in sorted((ctx.work / "logs").glob("*.log")):
        parts.append(f"===== {log.name}\n{log.read_text(errors='replace')[-12000:]}")
    (Path(out) / "gpu_check_logs.txt").write_text("\n".join(parts))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="walk every step's set-up on the CPU (a few seconds)")
    p.add_argument("--fetch-wheels", metavar="DIR", type=Path, help="download the wheels the GPU machine lacks")
    p.add_argument("--wheels", type=Path, default=REPO / ".whl", help="folder of carried wheels (default .whl)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    p.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole run (default %(default)s)")
    p.add_argument("--json", type=Path, help="also write the JSON here (it always goes to $OUT/gpu_check.json)")
    p.add_argument("--step", choices=sorted(STEP_FUNCS), help=argparse.SUPPRESS)  # one step, in a child process
    a = p.parse_args(argv)

    if a.fetch_wheels:
        return fetch_wheels(a.fetch_wheels)
    if a.step:
        return child_main(a.step, Ctx(dry=a.dry_run, work=a.work, wheels=a.wheels.resolve()))

    import torch

    if not a.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing measured. "
              "Run it on a GPU machine, or --dry-run to walk the set-up on the CPU.")
        return 0
    work = a.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    ctx = Ctx(dry=a.dry_run, work=work, wheels=a.wheels.resolve())
    if a.dry_run:
        torch.set_num_threads(1)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    steps = {s.name: Step(**{k: getattr(s, k) for k in ("name", "number", "title", "timeout_s")}) for s in STEPS}
    t0 = time.monotonic()
    meta = {"mode": "dry-run" if a.dry_run else "gpu", "budget_s": a.budget, "peak_bf16_tflops": PEAK_BF16_TFLOPS,
            "model": TINY if a.dry_run else ONE_B, "device": torch.cuda.get_device_name(0) if torch.cuda.is_available()
            else "cpu", "torch": torch.__version__, "work": str(work)}
    if a.dry_run:
        order = ["wheels", "prepare", "exl2_build", "gpu_tests", "exl2", "lora", "qlora", "serve"]
        for name in order:
            run_inline(steps[name], STEP_FUNCS[name], ctx)
    else:
        run_gpu(ctx, steps, a.budget)
        copy_logs(ctx)
    meta["total_s"] = round(time.monotonic() - t0, 1)
    report(list(steps.values()), meta, a.json)
    if not a.work and a.dry_run:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(s.status == "ok" for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
