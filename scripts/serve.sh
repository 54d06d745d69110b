#!/usr/bin/env bash
# bash scripts/serve.sh --model PATH [--backend transformers|exllamav2] [--adapter PATH]
#                       [--host 127.0.0.1 --port 8000] [--api-key K]
#
# The OpenAI-compatible server (python -m serve). Beyond loopback it needs --api-key or
# REWOO_API_KEY. All options: python -m serve --help.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3 )}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m serve "$@"
