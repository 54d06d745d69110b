#!/usr/bin/env bash
# bash scripts/merge.sh BASE_MODEL ADAPTER_DIR OUT_DIR [--dtype bf16] [--max-shard-size 2GB]
#
# Merges a LoRA/QLoRA adapter into its base (NaN/inf check, sharded safetensors, tokenizer
# copied); the result loads with AutoModelForCausalLM.from_pretrained and converts with
# scripts/quantize.sh. Paths are relative to where you stand. Bad inputs (no adapter, an adapter
# made for another base) are one line and exit code 2, before anything is written.
set -euo pipefail
usage="usage: bash scripts/merge.sh BASE_MODEL ADAPTER_DIR OUT_DIR [--dtype bf16] [--max-shard-size 2GB]"
for arg in "$@"; do
  case "$arg" in
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
  esac
done
if [ $# -lt 3 ]; then
  echo "$usage" >&2
  exit 2
fi
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3 )}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
base="$1"; adapter="$2"; out="$3"; shift 3
exec "$PYTHON" -m train merge --base "$base" --adapter "$adapter" --out "$out" "$@"
