# Shared by train_planner.sh and train_caller.sh (sourced, not run): launch `python -m train sft`
# on one process, or under the DeepSpeed launcher for several GPUs or nodes.
#   NUM_GPUS=N    GPUs per node (default: 1 process; >1 launches `deepspeed --num_gpus N`)
#   HOSTFILE=F    DeepSpeed hostfile ("host slots=N" per line) for several nodes
#   PYTHON=...    interpreter (default: .venv/bin/python when present, else python3)
# Needs RECIPE (a YAML file) and DEFAULT_DATA (the generated set the recipe names) set by the caller.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"

# The generated dataset is made on first use (deterministic: python -m train.datagen --seed 0).
wants_default_data=1
output_dir=""
for arg in "$@"; do
  case "$arg" in
    dataset=*|data.dataset=*) wants_default_data=0 ;;
    output_dir=*|train.output_dir=*) output_dir="${arg#*=}" ;;
  esac
done
if [ "$wants_default_data" = 1 ] && [ ! -f "$DEFAULT_DATA" ]; then
  echo "[train] $DEFAULT_DATA is missing: generating the datasets (python -m train.datagen)"
  "$PYTHON" -m train.datagen --out "$(dirname "$DEFAULT_DATA")"
fi
if [ -z "$output_dir" ]; then
  output_dir="$("$PYTHON" -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['train']['output_dir'])" "$RECIPE")"
fi
mkdir -p "$output_dir"
log="$output_dir/train.log"

extra=()
NUM_GPUS="${NUM_GPUS:-1}"
if [ "$NUM_GPUS" -gt 1 ] || [ -n "${HOSTFILE:-}" ]; then
  launcher=("$PYTHON" -m deepspeed.launcher.runner --num_gpus "$NUM_GPUS")
  [ -n "${HOSTFILE:-}" ] && launcher+=(--hostfile "$HOSTFILE")
  launcher+=(--no_local_rank --module train)  # ranks come as env vars (LOCAL_RANK)
  # Several GPUs without a DeepSpeed config: ZeRO-2 (the recipe's or the command line's wins).
  printf '%s\n' "$@" | grep -q '^\(train\.\)\?deepspeed=' || extra+=(deepspeed=train/configs/deepspeed/zero2.json)
else
  launcher=("$PYTHON" -m train)
fi

echo "[train] ${launcher[*]} sft --config $RECIPE $* ${extra[*]}"
"${launcher[@]}" sft --config "$RECIPE" "$@" "${extra[@]}" 2>&1 | tee "$log"
echo "[train] adapter: $output_dir"
echo "[train] loss plot: $output_dir/loss.png"
echo "[train] logs: $log and $output_dir/log_history.json"
