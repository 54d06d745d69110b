#!/usr/bin/env bash
# bash scripts/train_caller.sh model_name_or_path=PATH [dataset=FILE output_dir=DIR max_steps=N key=value ...]
#
# QLoRA SFT of the function caller (train/configs/caller_qlora.yaml): 4-bit NF4 base with double
# quantisation, LoRA on every projection, loss on the JSON call only (the prompt-loss mask).
# Several GPUs / nodes: NUM_GPUS and HOSTFILE as in train_planner.sh.
# The 34B caller on 24 GB cards (docs/scaling.md): RECIPE=train/configs/caller_qlora_34b.yaml
RECIPE="${RECIPE:-train/configs/caller_qlora.yaml}"
DEFAULT_DATA=data/generated/caller_train.jsonl
source "$(dirname "$0")/_launch.sh"
