#!/usr/bin/env bash
# bash scripts/quantize.sh IN OUT BPW [--format exl2|exl3] [--head-bits 6] [--calibration FILE.parquet]
#                                    [--rows N] [--length L] [--measurement FILE] [--work DIR] [--fresh]
# bash scripts/quantize.sh IN OUT.gguf --format gguf --type Q8_0|Q4_K_M|Q2_K|IQ2_M|... [--calibration FILE]
#
# Quantizes a merged model folder IN to EXL2 (default) or EXL3 at BPW bits per weight into OUT, on a
# CUDA GPU; refuses clearly without one. The measurement pass is saved next to OUT and reused for
# other bitrates; an interrupted run resumes when rerun. Prints the output size and effective bpw.
# --format gguf runs on the CPU (llama.cpp's converter and quantizer; make install-llamacpp): the
# i-quants of 1-2 bits need --calibration text (or JSONL) for their importance matrix.
# Paths are relative to where you stand. Every option: python -m serve.quantize --help.
set -euo pipefail
for arg in "$@"; do
  case "$arg" in
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
  esac
done
if [ "$#" -lt 3 ]; then
    echo "usage: bash scripts/quantize.sh IN OUT BPW [options] | IN OUT.gguf --format gguf --type T   (--help)" >&2
    exit 2
fi
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3 )}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m serve.quantize "$@"
