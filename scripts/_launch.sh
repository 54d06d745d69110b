# Shared by train_planner.sh and train_caller.sh (sourced, not run): launch `python -m train sft`
# on one process, or under the DeepSpeed launcher for several GPUs or nodes.
#   NUM_GPUS=N    GPUs per node (default: 1 process; >1 launches `deepspeed --num_gpus N`)
#   HOSTFILE=F    DeepSpeed hostfile ("host slots=N" per line) for several nodes
#   PYTHON=...    interpreter (default: the repository's .venv/bin/python when present, else python3)
# Needs RECIPE (a YAML file, relative to the repository) and DEFAULT_DATA (the generated set the
# recipe names) set by the caller.
#
# Order: --help answers at once; the recipe and its required keys are checked (python -m train sft
# --check, no model and no data loaded, nothing written); only then is the default dataset
# generated (when it is used and missing) and the run launched. Paths given on the command line are
# relative to where you stand; the recipe's own defaults (data/generated/..., outputs/...) are
# relative to the repository.
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
cd "$REPO"

extra=()
NUM_GPUS="${NUM_GPUS:-1}"
if [ "$NUM_GPUS" -gt 1 ] || [ -n "${HOSTFILE:-}" ]; then
  launcher=("$PYTHON" -m deepspeed.launcher.runner --num_gpus "$NUM_GPUS")
  [ -n "${HOSTFILE:-}" ] && launcher+=(--hostfile "$HOSTFILE")
  launcher+=(--no_local_rank --module train)  # ranks come as env vars (LOCAL_RANK)
  # Several GPUs without a DeepSpeed config: ZeRO-2 (the recipe's or the command line's wins).
  printf '%s\n' "${args[@]+"${args[@]}"}" | grep -q '^\(train\.\)\?deepspeed=' || extra+=(deepspeed=train/configs/deepspeed/zero2.json)
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
mkdir -p "$output_dir"
log="$output_dir/train.log"

echo "[train] ${launcher[*]} sft --config $RECIPE ${args[*]+"${args[*]}"} ${extra[*]+"${extra[*]}"}"
# python -m train sft prints where the adapter, the loss plot and the logs went (rank 0, once).
"${launcher[@]}" sft --config "$RECIPE" "${args[@]+"${args[@]}"}" "${extra[@]+"${extra[@]}"}" 2>&1 | tee "$log"
echo "[train] console log: $log"
