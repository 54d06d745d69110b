"""Quantize a merged model: EXL2 (exllamav2) or EXL3 (exllamav3) on a CUDA GPU, GGUF on any CPU.

    python -m serve.quantize IN OUT BPW [--head-bits 6] [--calibration FILE.parquet]
                             [--rows 100 --length 2048] [--measurement FILE] [--work DIR]
                             [--fresh] [--format exl2|exl3]
    python -m serve.quantize IN OUT.gguf --format gguf --type Q4_K_M [--calibration FILE.txt|.jsonl]
    bash scripts/quantize.sh IN OUT BPW [same options]

GGUF (llama.cpp's format, served with ``--backend llamacpp``) is :mod:`serve.gguf`: llama.cpp's own
converter, then ``llama_model_quantize``; ``--type`` picks the quantization (Q8_0, Q4_K_M, Q2_K,
IQ2_M, ...) and the 1-2 bit i-quants need ``--calibration`` text for their importance matrix.

EXL2 runs exllamav2's converter in two passes. The measurement pass (how much error each layer
takes at each bitrate) is the slow one; it is saved to ``--measurement`` (default
``OUT/../<IN name>.measurement.json``) and reused by every later bitrate of the same model. The
quantization pass then picks per-layer bitrates that hit BPW on average. Each pass keeps its
working folder under ``--work`` and resumes there when rerun after an interruption (``--fresh``
starts over). ``--head-bits`` sets the output layer's bits (6 or 8 are the useful values).

Quality at about 2.5 bpw: EXL2 at this rate costs a lot. Published for Llama-3.1-70B: wikitext
perplexity 10.2 at EXL2 2.4 bpw against 5.5 at EXL3 2.5 bpw, so prefer ``--format exl3`` when exllamav3 is installed, or spend 3.0-4.0
bpw on EXL2 when the card allows it. Measure your own planner on your task file
(``python -m pipeline.eval``) before and after.

At the end it prints the output size, the source's parameter count and the effective bits per
weight over the whole model (embeddings and head included).
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The converters, run as modules of the installed packages.
EXL2_CONVERTER = "exllamav2.conversion.convert_exl2"
EXL3_RUNNER = ("from exllamav3.conversion.convert_model import parser, prepare, main\n"
               "args = parser.parse_args()\n"
               "in_args, job_state, ok, err = prepare(args)\n"
               "if not ok: raise SystemExit(err)\n"
               "main(in_args, job_state)\n")


class QuantizeError(Exception):
    """The conversion cannot run as asked; the message says what to do."""


# --------------------------------------------------------------------------------------------
# Sizes (CPU): safetensors headers only, no tensor is loaded
# --------------------------------------------------------------------------------------------

def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))  # little-endian u64 header length, then JSON
        return json.loads(f.read(n))


def count_parameters(folder: str | Path) -> int:
    """Elements of every tensor in the folder's ``*.safetensors`` files."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise QuantizeError(f"{folder}: no .safetensors files (save the merged model with safe_serialization)")
    total = 0
    for f in files:
        for name, meta in _safetensors_header(f).items():
            if name == "__metadata__":
                continue
            n = 1
            for d in meta["shape"]:
                n *= d
            total += n
    return total


@dataclass
class SizeReport:
    output_bytes: int
    source_parameters: int

    @property
    def effective_bpw(self) -> float:
        return self.output_bytes * 8 / self.source_parameters

    def lines(self) -> list[str]:
        return [f"output size: {self.output_bytes / 2**30:.3f} GiB ({self.output_bytes:,} bytes)",
                f"source parameters: {self.source_parameters:,}",
                f"effective bits per weight (whole model): {self.effective_bpw:.3f}"]


def size_report(source: str | Path, output: str | Path) -> SizeReport:
    out_bytes = sum(f.stat().st_size for f in Path(output).glob("*.safetensors"))
    return SizeReport(out_bytes, count_parameters(source))


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What to run: each entry is one converter process (argv)."""

    commands: list[list[str]]
    measurement: Path | None


def exl2_plan(src: Path, out: Path, bpw: float, head_bits: int, work: Path, measurement: Path,
              calibration: Path | None, rows: int | None, length: int | None, fresh: bool,
              python: str = sys.executable) -> Plan:
    """The converter runs for EXL2: a measurement pass unless ``measurement`` exists, then the
    quantization pass using it. Each pass resumes in its own working folder unless ``fresh``."""
    common = ["-i", str(src)]
    if calibration:
        common += ["-c", str(calibration)]
    if rows:
        common += ["-r", str(rows), "-mr", str(min(rows, 16))]
    if length:
        common += ["-l", str(length), "-ml", str(length)]
    fresh_flag = ["-nr"] if fresh else []
    commands = []
    if fresh or not measurement.is_file():
        commands.append([python, "-m", EXL2_CONVERTER, *common, "-o", str(work / "measure"), *fresh_flag,
                         "-om", str(measurement)])
    commands.append([python, "-m", EXL2_CONVERTER, *common, "-o", str(work / f"quant-{bpw:g}bpw"), *fresh_flag,
                     "-m", str(measurement), "-b", f"{bpw:g}", "-hb", str(head_bits), "-cf", str(out)])
    return Plan(commands, measurement)


def exl3_plan(src: Path, out: Path, bpw: float, head_bits: int, work: Path, rows: int | None,
              length: int | None, fresh: bool, python: str = sys.executable) -> Plan:
    """One exllamav3 run (it has no separate measurement pass); ``--resume`` when its working
    folder holds an interrupted job."""
    wdir = work / f"exl3-{bpw:g}bpw"
    argv = [python, "-c", EXL3_RUNNER, "-w", str(wdir)]
    if not fresh and (wdir / "args.json").is_file():
        argv += ["--resume"]
    else:
        argv += ["-i", str(src), "-o", str(out), "-b", f"{bpw:g}", "-hb", str(head_bits)]
        if rows:
            argv += ["-cr", str(rows)]
        if length:
            argv += ["-cc", str(length)]
    return Plan([argv], None)


def require_gpu(fmt: str) -> None:
    """Refuse clearly unless CUDA and the converter's package import."""
    import torch

    if not torch.cuda.is_available():
        raise QuantizeError("quantization needs a CUDA GPU and torch sees none. Convert on a GPU machine, "
                            "or serve the merged model on this one: python -m serve --model IN")
    package = "exllamav2" if fmt == "exl2" else "exllamav3"
    try:
        __import__(package)
    except Exception as e:  # exllamav2 raises OSError when it cannot build its CUDA extension
        raise QuantizeError(f"cannot import {package} ({type(e).__name__}: {e}); "
                            f"pip install {package} on this GPU machine") from e


def build_parser() -> argparse.ArgumentParser:
    from toolkit.helpformat import HelpFormatter, summary

    p = argparse.ArgumentParser(prog="python -m serve.quantize", description=summary(__doc__),
                                formatter_class=HelpFormatter)
    p.add_argument("src", metavar="IN", help="merged model folder (safetensors, config.json, tokenizer)")
    p.add_argument("out", metavar="OUT", help="output folder (a complete model folder for --backend exllamav2), "
                                              "or a .gguf file with --format gguf")
    p.add_argument("bpw", metavar="BPW", type=float, nargs="?",
                   help="target bits per weight, e.g. 2.5 or 4.0 (exl2, exl3; gguf takes --type)")
    p.add_argument("--format", choices=["exl2", "exl3", "gguf"], default="exl2",
                   help="exl2 (exllamav2, GPU), exl3 (exllamav3, GPU) or gguf (llama.cpp, CPU)")
    p.add_argument("--type", dest="gguf_type", metavar="TYPE",
                   help="GGUF quantization type: Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q3_K_M, Q2_K, IQ4_XS, IQ3_M, IQ2_M, "
                        "... or BF16 (--format gguf)")
    p.add_argument("--threads", type=int, help="quantization threads (--format gguf; default all cores)")
    p.add_argument("--head-bits", type=int, default=6, choices=[2, 3, 4, 5, 6, 8],
                   help="bits of the output layer (6: ~6.3 mixed; 8 for the most accurate head)")
    p.add_argument("--calibration", type=Path, help="calibration set: Parquet for exl2 (default: the converter's "
                                                     "built-in mix); text or JSONL for gguf's importance matrix")
    p.add_argument("--rows", type=int, help="calibration rows (converter default 100)")
    p.add_argument("--length", type=int, help="tokens per calibration row (converter default 2048)")
    p.add_argument("--measurement", type=Path, help="measurement file to reuse or write "
                                                     "(default OUT/../<IN name>.measurement.json)")
    p.add_argument("--work", type=Path, help="working folder (default OUT/../<OUT name>.work); reruns resume here")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming (and re-measure)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)

    src, out = Path(a.src), Path(a.out)
    if a.format == "gguf":
        return _main_gguf(a, src, out)
    problems = []
    if a.bpw is None:
        print(f"python -m serve.quantize: BPW is required with --format {a.format} (e.g. 2.5)", file=sys.stderr)
        return 2
    if a.gguf_type or a.threads:
        print("python -m serve.quantize: --type and --threads apply to --format gguf only", file=sys.stderr)
        return 2
    if not (src / "config.json").is_file():
        problems.append(f"IN {src}: no config.json; give the merged model folder")
    if not 1.5 <= a.bpw <= 8.0:
        problems.append(f"BPW {a.bpw}: choose between 1.5 and 8.0 (2.5 fits a 70B planner on a 24 GB card)")
    if a.calibration and not a.calibration.is_file():
        problems.append(f"--calibration {a.calibration}: no such file")
    if a.format == "exl3" and (a.calibration or a.measurement):
        problems.append("--calibration and --measurement apply to --format exl2 only")
    if problems:
        print("python -m serve.quantize: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    try:
        require_gpu(a.format)
    except QuantizeError as e:
        print(f"python -m serve.quantize: {e}", file=sys.stderr)
        return 2

    work = a.work or out.parent / f"{out.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if a.format == "exl2":
        measurement = a.measurement or out.parent / f"{src.name}.measurement.json"
        plan = exl2_plan(src, out, a.bpw, a.head_bits, work, measurement, a.calibration, a.rows, a.length, a.fresh)
    else:
        plan = exl3_plan(src, out, a.bpw, a.head_bits, work, a.rows, a.length, a.fresh)
    start = time.monotonic()
    for argv_ in plan.commands:
        print("+ " + " ".join(argv_[:3] if argv_[1] == "-c" else argv_), flush=True)
        rc = subprocess.call(argv_)
        if rc != 0:
            print(f"python -m serve.quantize: the converter failed (exit {rc}); rerun the same command to "
                  f"resume from {work}", file=sys.stderr)
            return rc
    report = size_report(src, out)
    print(f"converted {src} -> {out} ({a.format}, target {a.bpw:g} bpw, head {a.head_bits} bits) "
          f"in {time.monotonic() - start:.0f} s")
    for line in report.lines():
        print(line)
    if plan.measurement is not None:
        print(f"measurement (reuse for other bitrates): {plan.measurement}")
    return 0


def _main_gguf(a, src: Path, out: Path) -> int:
    """``--format gguf``: on the CPU, no GPU needed (:mod:`serve.gguf`)."""
    from serve import gguf

    problems = []
    if a.bpw is not None:
        problems.append("--format gguf takes --type (Q4_K_M, Q2_K, ...), not BPW")
    if not a.gguf_type:
        problems.append(f"--format gguf needs --type, one of {', '.join(gguf.TYPES)}")
    elif a.gguf_type.upper() not in gguf.TYPES:
        problems.append(f"--type {a.gguf_type}: choose one of {', '.join(gguf.TYPES)}")
    if not (src / "config.json").is_file():
        problems.append(f"IN {src}: no config.json; give the merged model folder")
    if a.measurement or a.rows or a.length or a.fresh or a.head_bits != 6:
        problems.append("--measurement, --rows, --length, --fresh and --head-bits apply to exl2/exl3 only")
    if out.suffix != ".gguf":
        if out.exists() and not out.is_dir():
            problems.append(f"OUT {out}: give a .gguf file name or a folder")
        out = out / f"{src.name}-{(a.gguf_type or 'x').upper()}.gguf"
    if problems:
        print("python -m serve.quantize: " + "\n  ".join(problems), file=sys.stderr)
        return 2
    try:
        report = gguf.export(src, out, a.gguf_type.upper(), a.calibration, a.work, a.threads)
    except gguf.GGUFError as e:
        print(f"python -m serve.quantize: {e}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
