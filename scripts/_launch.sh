# Shared by train_planner.sh and train_caller.sh (sourced, not run): launch `python -m train sft`
# on one process, or under the DeepSpeed launcher for several GPUs or nodes.
#   RECIPE=F      the YAML recipe (each script sets its default: train/configs/planner_lora.yaml, ...)
#   NUM_GPUS=N    processes per node (default: 1 process; >1 launches `deepspeed --num_gpus N`)
#   HOSTFILE=F    DeepSpeed hostfile ("host slots=N" per line) for several nodes; without NUM_GPUS
#                 each host runs its slots. DeepSpeed starts the other hosts over pdsh + passwordless ssh,
#   NODE_RANK=i   ... or, without pdsh/ssh, run the same command on every host with its NODE_RANK
#                 (0 = the first host of HOSTFILE) and MASTER_ADDR (the first host's address)
#   MASTER_ADDR, MASTER_PORT   rendezvous of the ranks (DeepSpeed's defaults: 127.0.0.1 on one node, 29500)
#   PYTHON=...    interpreter (default: the repository's .venv/bin/python when present, else python3)
# The DeepSpeed config: deepspeed= on the command line, else the recipe's, else ZeRO-2 for several ranks.
# Only node 0 writes OUTPUT_DIR/train.log (every rank's output); ranks other than 0 write no shared file.
# Needs RECIPE and DEFAULT_DATA (the generated set the recipe names) set by the caller.
#
# Order: --help answers at once; the recipe and its required keys are checked (python -m train sft
# --check, no model and no data loaded, nothing written); only then is the default dataset
# generated (when it is used and missing) and the run launched. Paths given on the command line
# (and RECIPE, HOSTFILE) are relative to where you stand; the recipe's own defaults
# (data/generated/..., outputs/...) are relative to the repository.
set -euo pipefail
_caller="${BASH_SOURCE[1]:-$0}"
for arg in "$@"; do
  case "$arg" in
    -h|--help)
      # the calling script's header comment, then where the recipe keys are listed
      awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$_caller"
      echo
      echo "Every recipe key, its default and meaning: python -m train sft --help-recipe"
      exit 0 ;;
  esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3 )}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# key=value arguments whose value is a path: relative to the caller's folder, made absolute here
# (a model or dataset only when it exists there: it may be a hub name; output_dir always).
args=()
wants_default_data=1
for arg in "$@"; do
  if [[ "$arg" == *=* ]]; then
    key="${arg%%=*}"; value="${arg#*=}"
    if [ -n "$value" ] && [[ "$value" != /* && "$value" != "~"* ]]; then
      case "${key#*.}" in
        output_dir) arg="$key=$PWD/$value" ;;
        dataset|eval_dataset|deepspeed|model_name_or_path|tokenizer)
          if [ -e "$value" ]; then arg="$key=$PWD/$value"; fi ;;
      esac
    fi
    case "${key#*.}" in dataset) wants_default_data=0 ;; esac
  fi
  args+=("$arg")
done
if [ -n "${HOSTFILE:-}" ] && [[ "$HOSTFILE" != /* ]] && [ -e "$HOSTFILE" ]; then HOSTFILE="$PWD/$HOSTFILE"; fi
if [[ "$RECIPE" != /* ]] && [ -e "$RECIPE" ] && [ ! -e "$REPO/$RECIPE" ]; then RECIPE="$PWD/$RECIPE"; fi
cd "$REPO"

node_rank="${NODE_RANK:-}"
if [ -n "$node_rank" ] && { [ -z "${HOSTFILE:-}" ] || [ -z "${MASTER_ADDR:-}" ]; }; then
  echo "error: NODE_RANK needs HOSTFILE and MASTER_ADDR (the address of the first host in the hostfile)" >&2
  exit 2
fi
recipe_key() {  # recipe_key SECTION KEY: the recipe's value, empty when absent
  "$PYTHON" -c "import yaml,sys; print((yaml.safe_load(open(sys.argv[1])) or {}).get(sys.argv[2], {}).get(sys.argv[3]) or '')" \
    "$RECIPE" "$1" "$2"
}

extra=()
if [ "${NUM_GPUS:-1}" -gt 1 ] || [ -n "${HOSTFILE:-}" ]; then
  launcher=("$PYTHON" -m deepspeed.launcher.runner)
  [ -n "${NUM_GPUS:-}" ] && launcher+=(--num_gpus "$NUM_GPUS")  # else each host runs its hostfile slots
  [ -n "${HOSTFILE:-}" ] && launcher+=(--hostfile "$HOSTFILE")
  [ -n "${MASTER_ADDR:-}" ] && launcher+=(--master_addr "$MASTER_ADDR")
  [ -n "${MASTER_PORT:-}" ] && launcher+=(--master_port "$MASTER_PORT")
  # this host only, without pdsh/ssh: every host runs the same command with its NODE_RANK
  [ -n "$node_rank" ] && launcher+=(--no_ssh --node_rank "$node_rank")
  launcher+=(--no_local_rank --module train)  # ranks come as env vars (LOCAL_RANK)
  # Several ranks without a DeepSpeed config: ZeRO-2 (the command line's or the recipe's wins).
  if ! printf '%s\n' "${args[@]+"${args[@]}"}" | grep -q '^\(train\.\)\?deepspeed=' \
      && [ -z "$(recipe_key train deepspeed)" ]; then
    extra+=(deepspeed=train/configs/deepspeed/zero2.json)
  fi
else
  launcher=("$PYTHON" -m train)
fi

# Required keys and the recipe, before any work (exit 2 with one line when something is wrong).
output_dir="$("$PYTHON" -m train sft --check --config "$RECIPE" "${args[@]+"${args[@]}"}" "${extra[@]+"${extra[@]}"}")"

# The generated dataset is made on first use (deterministic: python -m train.datagen --seed 0).
if [ "$wants_default_data" = 1 ] && [ ! -f "$DEFAULT_DATA" ]; then
  echo "[train] $DEFAULT_DATA is missing: generating the datasets (python -m train.datagen)"
  "$PYTHON" -m train.datagen --out "$(dirname "$DEFAULT_DATA")"
fi

echo "[train] ${launcher[*]} sft --config $RECIPE ${args[*]+"${args[*]}"} ${extra[*]+"${extra[*]}"}"
if [ "${node_rank:-0}" != 0 ]; then  # node 0 keeps the log; this node's output goes to its terminal
  "${launcher[@]}" sft --config "$RECIPE" "${args[@]+"${args[@]}"}" "${extra[@]+"${extra[@]}"}"
  exit 0
fi
mkdir -p "$output_dir"
log="$output_dir/train.log"
# python -m train sft prints where the adapter, the loss plot and the logs went (rank 0, once).
"${launcher[@]}" sft --config "$RECIPE" "${args[@]+"${args[@]}"}" "${extra[@]+"${extra[@]}"}" 2>&1 | tee "$log"
echo "[train] console log: $log"
