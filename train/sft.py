"""Supervised fine-tuning with the HF Trainer and PEFT: LoRA, QLoRA, full; packing; DeepSpeed.

    python -m train sft --config train/configs/planner_lora.yaml model_name_or_path=PATH max_steps=20

One function, :func:`run_sft`, turns a :class:`~train.recipe.Recipe` into a trained adapter (or
model) in ``output_dir``, with checkpoints, ``log_history.json``, ``loss.png`` (train and eval
loss) and ``recipe.yaml``. The builders below take plain arguments and know nothing of YAML.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml

from train.data import (DataError, LossWeights, PackedCollator, PaddedCollator, load_examples, split_eval,
                        tokenize_all)
from train.recipe import Recipe, RecipeError


@dataclass
class SFTResult:
    """Where a run left its outputs, and its last losses."""

    output_dir: Path
    adapter_dir: Path        # the adapter (LoRA) or the model (full)
    plot: Path | None
    log_history: Path
    checkpoints: list[Path]
    train_loss: float | None
    eval_loss: float | None
    train_rows: int
    eval_rows: int
    global_step: int = 0     # optimiser steps done (the same on every rank)
    rank: int = 0            # this process's rank; only rank 0 wrote the files above
    world_size: int = 1


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

def resolve_attn(choice: str) -> str:
    """``auto`` -> flash_attention_2 when flash-attn is installed and CUDA is there, else sdpa."""
    if choice != "auto":
        return choice
    import torch  # noqa: PLC0415

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def resolve_dtype(choice: str, use_cpu: bool = False):
    import torch  # noqa: PLC0415

    if choice == "auto":
        if not use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[choice]


def check_model_path(name_or_path: str) -> None:
    """A path that does not exist is an error here, not a confusing hub lookup later."""
    if not name_or_path:
        raise RecipeError("model_name_or_path is empty: give a local model folder or a hub name")
    p = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or p.suffix
    if looks_local and not p.exists():
        raise RecipeError(f"model path {name_or_path} does not exist")
    if p.exists() and p.is_dir() and not (p / "config.json").exists():
        raise RecipeError(f"model path {name_or_path} has no config.json: not a transformers model folder")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer  # noqa: PLC0415

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.eos_token_id is None:
        raise RecipeError(f"the tokenizer of {path} has no EOS token: the model could never learn to stop")
    if tok.pad_token_id is None:  # Llama-style tokenizers: pad with EOS (labels of padding are -100 anyway)
        tok.pad_token = tok.eos_token
    return tok


def linear_module_names(model) -> list[str]:
    """Leaf names of the model's linear layers (``q_proj``, ``v_proj``, ...), sorted, once each."""
    import torch  # noqa: PLC0415

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def load_model(recipe: Recipe, torch_dtype):
    """The base model: full precision, or 4-bit NF4 (QLoRA) with k-bit preparation."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: PLC0415

    m, lo, t = recipe.model, recipe.lora, recipe.train
    kwargs = {"dtype": torch_dtype, "attn_implementation": resolve_attn(m.attn_implementation),
              "trust_remote_code": m.trust_remote_code}
    if lo.quantization == "4bit":
        on_gpu = torch.cuda.is_available() and not t.use_cpu
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=lo.bnb_quant_type, bnb_4bit_use_double_quant=lo.bnb_double_quant,
            bnb_4bit_compute_dtype=torch_dtype if torch_dtype != torch.float16 else torch.float16)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        kwargs["device_map"] = {"": f"cuda:{local_rank}" if on_gpu else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(m.model_name_or_path, **kwargs)
    model.config.use_cache = False  # the KV cache is for generation; training only wastes memory on it
    if lo.quantization == "4bit":
        from peft import prepare_model_for_kbit_training  # noqa: PLC0415

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=m.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def apply_lora(model, recipe: Recipe):
    """Wrap ``model`` in a PEFT LoRA model; an unknown target module is an error listing the valid ones."""
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    lo = recipe.lora
    targets: list[str] | str = list(lo.target_modules)
    if targets == ["all-linear"]:
        targets = "all-linear"
    else:
        names = linear_module_names(model)
        missing = [t for t in targets if t not in names]
        if missing:
            raise RecipeError(f"target module(s) {', '.join(missing)} not in {recipe.model.model_name_or_path}; "
                              f"its linear modules: {', '.join(names)} (or all-linear)")
    if lo.init_adapter:
        return _from_adapter(model, recipe, targets)
    config = LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def _from_adapter(model, recipe: Recipe, targets):
    """``model`` with the trainable LoRA adapter of ``lora.init_adapter`` (say, another role's
    adapter to start from); it must be the adapter the recipe describes: same rank, alpha and
    modules."""
    from peft import PeftModel  # noqa: PLC0415

    lo = recipe.lora
    folder = Path(lo.init_adapter)
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RecipeError(f"init_adapter {folder} is not a LoRA adapter folder (no readable adapter_config.json)") from e
    found = {"r": config.get("r"), "alpha": config.get("lora_alpha"),
             "target_modules": sorted(config.get("target_modules") or [])}
    wanted = {"r": lo.r, "alpha": lo.alpha, "target_modules": sorted(targets) if isinstance(targets, list) else targets}
    differ = [f"{k} {found[k]} (the recipe's: {wanted[k]})" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise RecipeError(f"init_adapter {folder} is another adapter than the recipe's: {'; '.join(differ)}")
    return PeftModel.from_pretrained(model, str(folder), is_trainable=True)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

class _Rows:
    """A list of tokenized rows as a torch-style map dataset."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def build_datasets(recipe: Recipe, tokenizer) -> tuple[list[dict], list[dict], int]:
    """``(train_rows, eval_rows, dropped)``: tokenized, masked, split."""
    d = recipe.data
    if not d.dataset:
        raise RecipeError("dataset is empty: give a JSONL/JSON/parquet file, a folder or a datasets name")
    weights = LossWeights(d.loss_weight_pattern, d.loss_weight) if d.loss_weight_pattern else None
    examples = load_examples(d.dataset, d.template, tokenizer, d.max_rows)
    rows, dropped = tokenize_all(examples, tokenizer, d.max_seq_len, d.train_on_prompt, weights=weights)
    if d.eval_dataset:
        eval_rows, dropped_eval = tokenize_all(load_examples(d.eval_dataset, d.template, tokenizer),
                                               tokenizer, d.max_seq_len, d.train_on_prompt, weights=weights)
        dropped += dropped_eval
        train_rows = rows
    else:
        train_rows, eval_rows = split_eval(rows, d.eval_fraction, recipe.train.seed)
    if not train_rows:
        raise DataError(f"no training rows left from {d.dataset} (max_seq_len={d.max_seq_len} cut every response)")
    return train_rows, eval_rows, dropped


# --------------------------------------------------------------------------------------------
# Launch details
# --------------------------------------------------------------------------------------------

def _nll_sum(logits, labels, weights=None):
    """``sum(w * nll)`` of next-token prediction over the label tokens of ``(B, T)`` rows."""
    import torch  # noqa: PLC0415

    logits = logits[:, :-1].float()
    target = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                            ignore_index=-100, reduction="none")
    keep = (target.reshape(-1) != -100).to(nll.dtype)
    w = weights[:, 1:].reshape(-1).to(nll.dtype) if weights is not None else 1.0
    return (nll * w * keep).sum()


def weighted_token_loss(outputs, labels, num_items_in_batch=None, weights=None):
    """Causal-LM cross-entropy with a weight per token: ``sum(w * nll) / n`` over the label
    tokens, ``n`` the Trainer's token count of the whole (accumulated) batch, as its own loss
    divides by. With every weight 1 it is transformers' loss; the weights come from the batch's
    ``loss_weights`` (:class:`train.data.LossWeights`)."""
    import torch  # noqa: PLC0415

    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    labels = labels.to(logits.device)
    total = _nll_sum(logits, labels, None if weights is None else weights.to(logits.device))
    n = num_items_in_batch if num_items_in_batch is not None else (labels[:, 1:] != -100).sum()
    return total / (n.to(total.device) if torch.is_tensor(n) else n)


def label_window(labels) -> int:
    """How many trailing positions of ``(B, T)`` rows need logits: from the one before the first
    label token of any row to the end (``logits_to_keep``). The vocabulary projection (49k x 576
    on SmolLM2) and its float copy over a ~400-token prompt whose labels are all masked are then
    never computed; the loss over the window is the loss over the whole row."""
    cols = (labels != -100).any(dim=0).nonzero().flatten()
    if not len(cols):
        return 1
    return labels.shape[1] - max(int(cols[0]) - 1, 0)


def _windowed(model, labels, **kwargs):
    """``model(**kwargs)``'s logits over :func:`label_window` and the labels they predict."""
    keep = label_window(labels)
    out = model(**kwargs, logits_to_keep=keep)
    return out.logits, labels[:, labels.shape[1] - keep:]


def _cache_kwarg(model) -> str:
    """The forward argument that takes a KV cache: ``cache`` (transformers >= 5.24) or
    ``past_key_values``; looked up on the model inside PEFT's and DeepSpeed's wrappers."""
    import inspect  # noqa: PLC0415

    inner = getattr(model, "module", model)
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def shared_prefix_loss(model, inputs, num_items_in_batch=None, weights=None):
    """:func:`weighted_token_loss` of a padded batch whose rows share prompt prefixes
    (``prefix_group``/``prefix_len`` from ``PaddedCollator(share_prefix=N)``), computed with each
    group's prefix run once: the prefix goes through the model alone (``logits_to_keep=1``: no
    vocabulary projection over it), its KV cache is repeated for the group's rows, and their
    remainders run on it at positions ``P..``. Gradients flow through the cache into the prefix,
    so LoRA on ``v_proj`` still learns from the tool list. Rows in no group run as a plain batch.
    Logits are computed only from the first label token on (:func:`label_window`).
    A planner batch of 8 rows that list the same ~420-token toolbox then costs about
    ``420 + 8 x 80`` tokens instead of ``8 x 500``."""
    import torch  # noqa: PLC0415

    ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
    group, prefix_len = inputs["prefix_group"], inputs["prefix_len"]
    lengths = mask.sum(dim=1)
    total = None

    def add(part):
        nonlocal total
        total = part if total is None else total + part

    cache_kw = _cache_kwarg(model)
    for g, p in enumerate(prefix_len.tolist()):
        rows = (group == g).nonzero().flatten()
        pre = model(input_ids=ids[rows[:1], :p], use_cache=True, logits_to_keep=1)
        cache = getattr(pre, "cache", None) or pre.past_key_values
        cache.batch_repeat_interleave(len(rows))
        end = int(lengths[rows].max())
        positions = torch.arange(p, end, device=ids.device).expand(len(rows), -1)
        logits, tail = _windowed(model, labels[rows, p:end], input_ids=ids[rows, p:end],
                                 attention_mask=mask[rows, :end], position_ids=positions, use_cache=True,
                                 **{cache_kw: cache})
        add(_nll_sum(logits, tail, None if weights is None else weights[rows, end - tail.shape[1]:end]))
    rest = (group < 0).nonzero().flatten()
    if len(rest):
        end = int(lengths[rest].max())
        logits, tail = _windowed(model, labels[rest, :end], input_ids=ids[rest, :end], attention_mask=mask[rest, :end],
                                 use_cache=False)
        add(_nll_sum(logits, tail, None if weights is None else weights[rest, end - tail.shape[1]:end]))
    n = num_items_in_batch if num_items_in_batch is not None else (labels[:, 1:] != -100).sum()
    return total / (n.to(total.device) if torch.is_tensor(n) else n)


def make_trainer(**kwargs):
    """A transformers ``Trainer``; batches with ``loss_weights`` get :func:`weighted_token_loss`
    (through ``compute_loss_func``, so gradient accumulation and multi-device scaling stay the
    Trainer's); training batches with shared prefixes (``prefix_group``) get
    :func:`shared_prefix_loss`, scaled as the Trainer scales its own token-averaged loss."""
    from transformers import Trainer  # noqa: PLC0415

    class WeightedTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("loss_weights", None)
            group, prefix_len = inputs.pop("prefix_group", None), inputs.pop("prefix_len", None)
            self.compute_loss_func = (None if weights is None else
                                      lambda o, y, num_items_in_batch=None: weighted_token_loss(o, y, num_items_in_batch,
                                                                                                weights))
            if group is None or return_outputs or not model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # A plain loss the Trainer must not divide by the accumulation steps again: it is
            # already over the whole accumulated batch's token count, as compute_loss_func's is.
            self.compute_loss_func = weighted_token_loss if num_items_in_batch is not None else None
            loss = shared_prefix_loss(model, {**inputs, "prefix_group": group, "prefix_len": prefix_len},
                                      num_items_in_batch, weights)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size()
                               if self.args.n_gpu <= 1 else self.args.n_gpu)
            return loss

    return WeightedTrainer(**kwargs)


def is_rank0() -> bool:
    """Whether this process writes the shared outputs (adapter, tokenizer, logs, plot, recipe).
    With several ranks every one trains, and every one would write the same files at once."""
    return os.environ.get("RANK", "0") == "0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def release_shm_buffer(deepspeed: str) -> None:
    """Unlink this rank's DeepSpeed CPU all-reduce buffer (``/dev/shm/deepspeed_allreduce_buffer_
    <uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>``, ~66 MB of RAM each). DeepSpeed's CPU accelerator
    creates one per rank when all ranks are local and never unlinks it, so every multi-rank CPU
    run left them behind in RAM (found: 120 of them, 7.8 GB, after a few days of test runs). The
    other ranks mapped it when the process group started, so unlinking at the end is safe."""
    if not deepspeed or "MASTER_PORT" not in os.environ:
        return
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ['MASTER_PORT']}_{os.environ.get('RANK', '0')}")
    Path("/dev/shm", name).unlink(missing_ok=True)


def leave_process_group() -> None:
    """Wait for every rank, then destroy the process group (no-op in a one-process run without one).
    ``python -m train sft`` calls this once run_sft returns: a gloo group left for interpreter
    finalisation can abort the rank after its work is done ("terminate called without an active
    exception", exit -6, seen once in CI on the two-rank ZeRO-3 test), and the launcher then fails
    the whole run."""
    import torch.distributed as dist  # noqa: PLC0415

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def exit_rank(code: int) -> None:
    """End a rank of a multi-process run (``WORLD_SIZE`` >= 2, torch.distributed loaded) with
    ``code`` once its work is done: stdout and stderr flushed, the ``atexit`` handlers run (logging's
    flush among them), then ``os._exit``, skipping the interpreter's finalisation. There, with the
    process group already destroyed (:func:`leave_process_group`), a two-rank ZeRO-3 run still
    aborted a rank now and then after its last line ("terminate called without an active
    exception", exit -6: 1 run in 17 of tests/test_train_multirank.py's ZeRO-3 test here, and in CI),
    and the launcher failed the whole run. A one-process run exits as usual."""
    import atexit  # noqa: PLC0415
    import sys  # noqa: PLC0415

    if "torch.distributed" not in sys.modules or int(os.environ.get("WORLD_SIZE", "1") or 1) < 2:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()  # what a normal exit runs first; the finalisation after it is where ranks aborted
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def prepare_distributed_env(deepspeed: str, use_cpu: bool) -> None:
    """DeepSpeed needs a process group even for one process: set the variables a launcher would
    (rank 0 of 1, a free local port) when no launcher did, and the CPU accelerator without CUDA."""
    import torch  # noqa: PLC0415

    if not deepspeed:
        return
    if use_cpu or not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if "RANK" not in os.environ:
        os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())})


def training_arguments(recipe: Recipe, torch_dtype, n_train: int, has_eval: bool):
    import torch  # noqa: PLC0415
    from transformers import TrainingArguments  # noqa: PLC0415

    t, m = recipe.train, recipe.model
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * world
    total = t.max_steps if t.max_steps > 0 else math.ceil(t.num_train_epochs * math.ceil(n_train / per_step))
    use_cpu = t.use_cpu or not torch.cuda.is_available()
    kwargs = {}
    checkpointing = m.gradient_checkpointing and recipe.lora.quantization != "4bit"  # QLoRA: prepared by PEFT
    # transformers 5.x renamed gradient_checkpointing* to activation_checkpointing* (the old names warn)
    name = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
            else "gradient_checkpointing")
    kwargs.update({name: checkpointing, f"{name}_kwargs": {"use_reentrant": False}})
    if has_eval:
        kwargs.update(eval_strategy="steps", eval_steps=t.eval_steps or max(1, total // 4),
                      per_device_eval_batch_size=t.per_device_eval_batch_size)
    if t.deepspeed:
        kwargs["deepspeed"] = t.deepspeed
        if use_cpu:
            kwargs["ddp_backend"] = "gloo"
    return TrainingArguments(
        output_dir=t.output_dir, num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type, warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, logging_steps=t.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit, seed=t.seed,
        bf16=torch_dtype == torch.bfloat16 and not use_cpu, fp16=torch_dtype == torch.float16,
        optim=t.optim, use_cpu=use_cpu,
        remove_unused_columns=False, report_to=t.report_to, dataloader_num_workers=t.dataloader_num_workers,
        disable_tqdm=False, train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        **kwargs)


def check_report_to(report_to: str) -> None:
    """``report_to`` names a logger whose package is installed (before minutes of model loading)."""
    packages = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}.get(report_to, ())
    if packages and not any(importlib.util.find_spec(p) is not None for p in packages):
        raise RecipeError(f"report_to={report_to} needs the {packages[0]} package: pip install {packages[-1]}, "
                          "or report_to=none")


# --------------------------------------------------------------------------------------------
# Checkpoints that survive a kill
# --------------------------------------------------------------------------------------------

COMPLETE_MARK = "checkpoint_complete.json"  # written into checkpoint-N once the Trainer has saved all of it


def mark_complete_callback():
    """A Trainer callback: once the Trainer has written a checkpoint (weights, optimizer, RNG, trainer
    state, in that order; ``on_save`` runs after), mark it complete. The mark is written to a temporary
    name and renamed, so it exists whole or not at all; a run killed while saving leaves no mark."""
    from transformers import TrainerCallback  # noqa: PLC0415

    class MarkCompleteCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and ckpt.is_dir():
                tmp = ckpt / (COMPLETE_MARK + ".tmp")
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump({"global_step": state.global_step}, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, ckpt / COMPLETE_MARK)
            return control

    return MarkCompleteCheckpoints()


def checkpoint_is_complete(ckpt: Path) -> bool:
    """Marked complete by :func:`mark_complete_callback`; a checkpoint from before the mark
    existed counts when its ``trainer_state.json`` (the Trainer's last file) reads whole."""
    step = int(ckpt.name.rsplit("-", 1)[-1])
    for name in (COMPLETE_MARK, "trainer_state.json"):
        try:
            return json.loads((ckpt / name).read_text(encoding="utf-8"))["global_step"] == step
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            return False
    return False


def last_complete_checkpoint(output_dir: Path) -> tuple[Path | None, list[Path]]:
    """``(the newest complete checkpoint-N, the incomplete ones newer than it)``."""
    ckpts = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    incomplete: list[Path] = []
    for ckpt in sorted(ckpts, key=lambda p: int(p.name.split("-", 1)[1]), reverse=True):
        if checkpoint_is_complete(ckpt):
            return ckpt, incomplete[::-1]
        incomplete.append(ckpt)
    return None, incomplete[::-1]


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

def run_sft(recipe: Recipe) -> SFTResult:
    """Train as the recipe says; returns where everything went."""
    from transformers import set_seed  # noqa: PLC0415

    from train.plot import plot_losses  # noqa: PLC0415

    m, lo, t = recipe.model, recipe.lora, recipe.train
    check_model_path(m.model_name_or_path)
    check_report_to(t.report_to)
    prepare_distributed_env(t.deepspeed, t.use_cpu)
    out = Path(t.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(m.tokenizer or m.model_name_or_path, m.trust_remote_code)
    train_rows, eval_rows, dropped = build_datasets(recipe, tokenizer)
    if dropped and is_rank0():
        print(f"[train] dropped {dropped} examples whose response did not fit max_seq_len={recipe.data.max_seq_len}")

    torch_dtype = resolve_dtype(m.dtype, t.use_cpu)
    # TrainingArguments first: with ZeRO-3 it must exist before the model loads (zero.Init).
    args = training_arguments(recipe, torch_dtype, len(train_rows), bool(eval_rows))
    if t.deepspeed:
        # Join the process group before the model loads: zero.Init reads DeepSpeed's world size then, and
        # without a group it takes 1 and rejects a batch made for several ranks. args.device sets up the
        # Trainer's group (on the CPU a plain gloo one DeepSpeed does not see); init_distributed adopts it.
        import deepspeed  # noqa: PLC0415

        _ = args.device
        deepspeed.init_distributed(dist_backend=args.ddp_backend or "nccl")
    set_seed(t.seed)  # the LoRA init: the same on every rank and in every run of the recipe, as `seed` promises
    model = load_model(recipe, torch_dtype)
    if lo.finetuning == "lora":
        model = apply_lora(model, recipe)
        if m.gradient_checkpointing:
            model.enable_input_require_grads()
    collator = (PackedCollator() if recipe.data.packing
                else PaddedCollator(tokenizer.pad_token_id, share_prefix=recipe.data.share_prefix))
    trainer = make_trainer(model=model, args=args, train_dataset=_Rows(train_rows),
                      eval_dataset=_Rows(eval_rows) if eval_rows else None, data_collator=collator,
                      processing_class=tokenizer, callbacks=[mark_complete_callback()])

    resume_from = None
    if t.resume:
        last, incomplete = last_complete_checkpoint(out)
        resume_from = str(last) if last else None
        if is_rank0():
            if incomplete:  # a kill while saving: the Trainer would stop on it ("Can't find a valid checkpoint")
                print(f"[train] {', '.join(p.name for p in incomplete)} incomplete (killed while saving): removed; "
                      + (f"resuming from {last.name}" if last else "no complete checkpoint: starting fresh"))
                for p in incomplete:
                    shutil.rmtree(p, ignore_errors=True)
            elif last:
                print(f"[train] resuming from {resume_from}")
            else:
                print(f"[train] resume=true but {out} holds no checkpoint yet: starting fresh")
    rank0 = trainer.is_world_process_zero()
    if rank0:
        (out / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
    try:
        trainer.train(resume_from_checkpoint=resume_from)
        trainer.save_model(str(out))  # every rank: ZeRO-3 gathers the adapter's shards; rank 0 writes it
    finally:
        release_shm_buffer(t.deepspeed)

    history = trainer.state.log_history
    log_path = out / "log_history.json"
    plot = None
    if rank0:
        tokenizer.save_pretrained(str(out))
        log_path.write_text(json.dumps(history, indent=1), encoding="utf-8")
        if t.plot_loss:
            plot = plot_losses(history, out / "loss.png", title=f"{Path(m.model_name_or_path).name} ({lo.finetuning}"
                               f"{', 4-bit' if lo.quantization == '4bit' else ''})")
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return SFTResult(out, out, plot, log_path, checkpoints, train_losses[-1] if train_losses else None,
                     eval_losses[-1] if eval_losses else None, len(train_rows), len(eval_rows),
                     trainer.state.global_step, trainer.args.process_index, trainer.args.world_size)
