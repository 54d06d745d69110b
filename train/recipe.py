"""SFT recipes: typed dataclasses, loaded from YAML with ``key=value`` overrides.

    python -m train sft --config train/configs/planner_lora.yaml max_steps=10 lora.r=16

A recipe has four groups, each a dataclass whose every field is documented below: ``model``,
``lora``, ``data``, ``train``. In YAML the groups are sections; on the command line a key is
either ``group.field`` or the bare ``field`` (field names are unique across groups). An unknown
key, in YAML or on the command line, is an error that names it and lists the valid keys; a value
of the wrong type is an error that names the key and the type it needs.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe that cannot run: an unknown key, a wrong type, a value out of range."""


def _f(default, help: str, **kw):
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelArgs:
    """What to train."""

    model_name_or_path: str = _f("", "local folder or hub name of the base causal LM")
    tokenizer: str = _f("", "tokenizer folder or name; empty: the model's")
    attn_implementation: str = _f("auto", "sdpa, eager, flash_attention_2, or auto (flash_attention_2 "
                                          "when flash-attn is installed and CUDA is there, else sdpa)")
    dtype: str = _f("auto", "weights/compute dtype: auto (bf16 on a GPU that has it, else fp32), bf16, fp16, fp32")
    gradient_checkpointing: bool = _f(True, "recompute activations in the backward pass to save memory")
    trust_remote_code: bool = _f(False, "allow model code from the model folder")

    def __post_init__(self):
        _choice("attn_implementation", self.attn_implementation, ["auto", "sdpa", "eager", "flash_attention_2"])
        _choice("dtype", self.dtype, ["auto", "bf16", "fp16", "fp32"])


@dataclass
class LoraArgs:
    """The adapter (or none) and quantisation."""

    finetuning: str = _f("lora", "lora (adapters only) or full (every weight)")
    r: int = _f(8, "LoRA rank")
    alpha: int = _f(16, "LoRA alpha (scale = alpha / r)")
    dropout: float = _f(0.05, "dropout on the LoRA input")
    target_modules: list = _f(["q_proj", "v_proj"], "module names to adapt, or [all-linear]")
    quantization: str = _f("none", "none, or 4bit (QLoRA: bitsandbytes NF4 base weights)")
    bnb_quant_type: str = _f("nf4", "4-bit data type: nf4 or fp4")
    bnb_double_quant: bool = _f(True, "quantise the quantisation constants too (saves ~0.4 bit/param)")
    init_adapter: str = _f("", "a LoRA adapter folder to start from instead of a fresh adapter (its rank, alpha "
                               "and modules must be these); empty: a fresh one")

    def __post_init__(self):
        _choice("finetuning", self.finetuning, ["lora", "full"])
        _choice("quantization", self.quantization, ["none", "4bit"])
        _choice("bnb_quant_type", self.bnb_quant_type, ["nf4", "fp4"])
        if self.quantization == "4bit" and self.finetuning != "lora":
            raise RecipeError("quantization=4bit trains adapters on frozen 4-bit weights: it needs finetuning=lora")
        if self.r < 1:
            raise RecipeError(f"r must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise RecipeError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise RecipeError("target_modules is empty: name at least one module, e.g. [q_proj, v_proj]")
        if self.init_adapter and self.finetuning != "lora":
            raise RecipeError("init_adapter starts from a LoRA adapter: it needs finetuning=lora")


@dataclass
class DataArgs:
    """What to train on and how it becomes tokens."""

    dataset: str = _f("", "JSONL/JSON/parquet file, a folder of them, or a datasets name "
                          "(name:split or name:config:split); rows with Alpaca fields or chat messages")
    eval_dataset: str = _f("", "a separate eval set; empty: hold out eval_fraction of dataset. A dataset "
                               "given on the command line without an eval_dataset there drops the "
                               "recipe file's eval_dataset (the eval split comes from that dataset)")
    eval_fraction: float = _f(0.05, "share of dataset held out for eval when eval_dataset is empty (0: none)")
    template: str = _f("alpaca", "alpaca (formats.alpaca) or chat (the tokenizer's chat template)")
    max_seq_len: int = _f(2048, "longest example in tokens; longer ones are cut (the prompt first)")
    train_on_prompt: bool = _f(False, "also compute the loss on the prompt (default: response only)")
    packing: bool = _f(True, "pack examples into one row per batch with per-example position ids "
                             "(no cross-example attention) instead of padding")
    max_rows: int = _f(0, "use only the first max_rows rows (0: all)")
    loss_weight_pattern: str = _f("", "a regex over each response: the tokens of its matches (of its groups, when "
                                      "it has groups) weigh loss_weight in the loss; e.g. a plan's decisions "
                                      "'(?m)^(?:Plan: (\\S+)|#E\\d+ = (\\w+))' (empty: every token weighs 1)")
    loss_weight: float = _f(1.0, "the weight of loss_weight_pattern's tokens (> 0)")
    share_prefix: int = _f(0, "rows of a padded batch that share at least this many prompt tokens (a tool "
                              "list) run that prefix once and the rest on its KV cache: same loss and "
                              "gradients, less compute; needs packing=false and gradient_checkpointing=false "
                              "(0: off)")

    def __post_init__(self):
        _choice("template", self.template, ["alpaca", "chat"])
        if self.loss_weight <= 0:
            raise RecipeError(f"loss_weight must be > 0, got {self.loss_weight}")
        if self.loss_weight_pattern:
            import re  # noqa: PLC0415
            try:
                re.compile(self.loss_weight_pattern)
            except re.error as e:
                raise RecipeError(f"loss_weight_pattern {self.loss_weight_pattern!r} is not a regular "
                                  f"expression: {e}") from e
        if not 0 <= self.eval_fraction < 1:
            raise RecipeError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.max_seq_len < 8:
            raise RecipeError(f"max_seq_len must be >= 8, got {self.max_seq_len}")
        if self.share_prefix < 0:
            raise RecipeError(f"share_prefix must be >= 0 (0: off), got {self.share_prefix}")
        if self.share_prefix and self.packing:
            raise RecipeError("share_prefix needs padded batches: set packing=false")


@dataclass
class TrainArgs:
    """The optimisation, checkpoints and launch."""

    output_dir: str = _f("outputs/run", "where the adapter, checkpoints, logs and loss plot go")
    num_train_epochs: float = _f(4.0, "passes over the data (ignored when max_steps > 0)")
    max_steps: int = _f(-1, "stop after this many optimiser steps (-1: use num_train_epochs)")
    per_device_train_batch_size: int = _f(1, "examples per device per micro-step (packs when packing)")
    per_device_eval_batch_size: int = _f(1, "examples per device per eval step")
    gradient_accumulation_steps: int = _f(4, "micro-steps per optimiser step")
    learning_rate: float = _f(5e-6, "peak learning rate")
    lr_scheduler_type: str = _f("cosine", "learning-rate schedule (transformers SchedulerType)")
    warmup_ratio: float = _f(0.0, "share of steps for linear warm-up")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    logging_steps: int = _f(10, "log the loss every this many steps")
    eval_steps: int = _f(0, "evaluate every this many steps (0: once per epoch and at the end)")
    save_steps: int = _f(1000, "checkpoint every this many steps; a killed run loses at most this many")
    save_total_limit: int = _f(3, "keep this many newest checkpoints")
    resume: bool = _f(False, "resume from the last complete checkpoint in output_dir")
    report_to: str = _f("none", "where the Trainer also logs: none, tensorboard (event files in "
                                "output_dir/runs) or wandb (needs the package installed)")
    seed: int = _f(42, "random seed (data order, LoRA init)")
    deepspeed: str = _f("", "DeepSpeed JSON config (train/configs/deepspeed/*.json); empty: none")
    optim: str = _f("adamw_torch", "optimizer (transformers OptimizerNames); ignored when the DeepSpeed config sets one")
    use_cpu: bool = _f(False, "train on the CPU even when a GPU is there")
    dataloader_num_workers: int = _f(0, "data loader worker processes")
    group_by_length: bool = _f(False, "batch examples of similar length together (less padding when "
                                      "packing is off; the order is still shuffled by seed)")
    plot_loss: bool = _f(True, "write loss.png (train and eval loss) to output_dir")

    def __post_init__(self):
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "save_steps"):
            if getattr(self, name) < 1:
                raise RecipeError(f"{name} must be >= 1, got {getattr(self, name)}")
        _choice("report_to", self.report_to, ["none", "tensorboard", "wandb"])
        if self.deepspeed and not Path(self.deepspeed).is_file():
            # recipes name repository paths (train/configs/deepspeed/...): they hold from any directory
            in_repo = Path(__file__).resolve().parents[1] / self.deepspeed
            if not Path(self.deepspeed).is_absolute() and in_repo.is_file():
                self.deepspeed = str(in_repo)
        if self.deepspeed and not Path(self.deepspeed).is_file():
            raise RecipeError(f"deepspeed config {self.deepspeed} does not exist; shipped: "
                              + ", ".join(str(p) for p in sorted((Path(__file__).parent / "configs" / "deepspeed").glob("*.json"))))


@dataclass
class Recipe:
    """A whole SFT recipe."""

    model: ModelArgs = field(default_factory=ModelArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    data: DataArgs = field(default_factory=DataArgs)
    train: TrainArgs = field(default_factory=TrainArgs)

    def __post_init__(self):
        if self.data.share_prefix and self.model.gradient_checkpointing:
            # Gradient checkpointing turns the KV cache off, and the shared prefix lives in it.
            raise RecipeError("share_prefix needs the prefix's KV cache, which gradient checkpointing turns off: "
                              "set gradient_checkpointing=false (or share_prefix=0)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


GROUPS = {"model": ModelArgs, "lora": LoraArgs, "data": DataArgs, "train": TrainArgs}


def _choice(name: str, value: str, valid: list[str]) -> None:
    if value not in valid:
        raise RecipeError(f"{name}={value!r} is not valid; choose one of: {', '.join(valid)}")


def _field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """bare field name -> (group, field); names are unique across groups (checked here)."""
    index: dict[str, tuple[str, dataclasses.Field]] = {}
    for group, cls in GROUPS.items():
        for f in dataclasses.fields(cls):
            assert f.name not in index, f"field {f.name} in two recipe groups"
            index[f.name] = (group, f)
    return index


def valid_keys() -> list[str]:
    return [f"{g}.{name}" for name, (g, _) in _field_index().items()]


def _unknown(key: str, where: str) -> RecipeError:
    keys = valid_keys()
    close = difflib.get_close_matches(key, keys + [k.split(".", 1)[1] for k in keys], n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return RecipeError(f"unknown recipe key '{key}' ({where}).{hint} Valid keys: {', '.join(keys)}")


def _resolve(key: str, where: str) -> tuple[str, dataclasses.Field]:
    index = _field_index()
    if "." in key:
        group, name = key.split(".", 1)
        if group in GROUPS and name in index and index[name][0] == group:
            return group, index[name][1]
        raise _unknown(key, where)
    if key in index:
        return index[key]
    raise _unknown(key, where)


def _coerce(key: str, f: dataclasses.Field, value: Any) -> Any:
    """``value`` as the field's type; strings from the command line are parsed as YAML first."""
    hint = typing.get_type_hints(_owner(f))[f.name]
    origin = typing.get_origin(hint) or hint
    if isinstance(value, str) and origin is not str:
        value = yaml.safe_load(value) if value.strip() else None
    if isinstance(value, str) and origin in (int, float):  # YAML 1.1 reads "1e-3" as text
        try:
            value = float(value)
        except ValueError:
            pass
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise RecipeError(f"{key} needs a list (YAML list or comma-separated), got {value!r}")
        return [str(v) for v in value]
    if origin is bool:
        if isinstance(value, bool):
            return value
        raise RecipeError(f"{key} needs true or false, got {value!r}")
    if origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise RecipeError(f"{key} needs an integer, got {value!r}")
    if origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise RecipeError(f"{key} needs a number, got {value!r}")
    if origin is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise RecipeError(f"{key} needs a string, got {value!r}")
    raise TypeError(f"recipe field {key} has an unsupported type {hint}")  # a bug in this module


def _owner(f: dataclasses.Field):
    for cls in GROUPS.values():
        if f in dataclasses.fields(cls):
            return cls
    raise KeyError(f.name)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """A :class:`Recipe` from a YAML file (optional) and ``key=value`` overrides, validated."""
    values: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    if path:
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"recipe {p} does not exist")
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise RecipeError(f"{p}: a recipe is a mapping of sections ({', '.join(GROUPS)})")
        for section, body in data.items():
            if section in GROUPS and isinstance(body, dict):
                for key, value in body.items():
                    group, f = _resolve(f"{section}.{key}", str(p))
                    values[group][f.name] = _coerce(f"{section}.{key}", f, value)
            else:
                group, f = _resolve(str(section), str(p))  # a bare key at the top level
                values[group][f.name] = _coerce(str(section), f, body)
    given = set()
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise RecipeError(f"override {item!r} is not key=value")
        group, f = _resolve(key.strip(), "command line")
        values[group][f.name] = _coerce(key.strip(), f, value)
        given.add(f.name)
    if "dataset" in given and "eval_dataset" not in given:
        # the recipe file's eval set belongs to its own dataset, not to the one given instead
        values["data"].pop("eval_dataset", None)
    return Recipe(**{g: cls(**values[g]) for g, cls in GROUPS.items()})


def describe() -> str:
    """Every key with its default and help, for ``python -m train sft --help-recipe``."""
    lines = []
    for group, cls in GROUPS.items():
        lines.append(f"{group}:  {cls.__doc__.strip()}")
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {f.name} = {default!r}\n      {f.metadata['help']}")
    return "\n".join(lines)


__all__ = ["Recipe", "ModelArgs", "LoraArgs", "DataArgs", "TrainArgs", "RecipeError", "load_recipe",
           "valid_keys", "describe"]
