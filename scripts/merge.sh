#!/usr/bin/env bash
# bash scripts/merge.sh BASE_MODEL ADAPTER_DIR OUT_DIR [--dtype bf16] [--max-shard-size 2GB]
#
# Merges a LoRA/QLoRA adapter into its base (NaN/inf check, sharded safetensors, tokenizer
# copied); the result loads with AutoModelForCausalLM.from_pretrained and converts with
# scripts/quantize.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
  echo "usage: bash scripts/merge.sh BASE_MODEL ADAPTER_DIR OUT_DIR [--dtype bf16] [--max-shard-size 2GB]" >&2
  exit 2
fi
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
base="$1"; adapter="$2"; out="$3"; shift 3
"$PYTHON" -m train merge --base "$base" --adapter "$adapter" --out "$out" "$@"
