#!/usr/bin/env bash
# bash scripts/train_planner.sh model_name_or_path=PATH [dataset=FILE output_dir=DIR max_steps=N key=value ...]
#
# LoRA SFT of the ReWOO planner (train/configs/planner_lora.yaml): q_proj/v_proj, Alpaca
# template, lr 5e-6, 4 epochs, cosine, batch 1 x accumulation 4, flash attention when installed.
# Any recipe key can be overridden (python -m train sft --help-recipe lists them).
# Several GPUs: NUM_GPUS=4 bash scripts/train_planner.sh ...   (DeepSpeed, ZeRO-2 by default;
#   deepspeed=train/configs/deepspeed/zero3.json or zero3_offload.json for bigger models)
# Several nodes: HOSTFILE=hosts bash scripts/train_planner.sh ...   (pdsh + ssh; or on each host
#   HOSTFILE=hosts NODE_RANK=i MASTER_ADDR=first-host bash scripts/train_planner.sh ...)
# The 70B plan of docs/scaling.md: RECIPE=train/configs/planner_lora_70b.yaml NUM_GPUS=6 bash scripts/train_planner.sh ...
RECIPE="${RECIPE:-train/configs/planner_lora.yaml}"
DEFAULT_DATA=data/generated/planner_train.jsonl
source "$(dirname "$0")/_launch.sh"
