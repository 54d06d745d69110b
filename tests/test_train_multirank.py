"""Training with two ranks on the CPU (gloo), through the launcher the scripts use for several GPUs.

    nice -n 19 python -m pytest tests/test_train_multirank.py -q

``NUM_GPUS=2 bash scripts/train_planner.sh ...`` runs ``deepspeed.launcher.runner --num_gpus 2``, as
on a GPU node; ``HOSTFILE`` + ``NODE_RANK`` runs one launcher per "host" (two on loopback). On the
tiny Llama of the test kit:

- ZeRO-2 (the launcher's default) and ZeRO-3 (named by a recipe): both ranks train; only rank 0
  writes the shared files (a Python audit hook records every file each rank opens for writing);
- the losses match a one-rank run with the same global batch (2 ranks x 1 row against 1 x 2 rows);
- a checkpoint saved by two ranks resumes on two ranks, and the adapter loads in one process.

DeepSpeed compiles its CPU communication op into a ``TORCH_EXTENSIONS_DIR`` of the tests' own, under
pytest's temporary folder (seeded with ops already built, never with a lock): a run killed while
compiling leaves its lock there, never in ``~/.cache/torch_extensions`` where it would hang every later
run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


ROOT = Path(__file__).resolve().parents[1]

# Loaded by every Python process of a run (it is on PYTHONPATH as sitecustomize): appends each path the
# process opens for writing to WRITES_LOG.<RANK>.<pid>. The hook writes with os.write on a descriptor it
# opened before it was installed, so it never records itself. At exit it says so if the process group
# is still alive (each rank of ``python -m train sft`` must leave it before the interpreter ends).
AUDIT_HOOK = '''
import os, sys
_log = os.environ.get("WRITES_LOG")
if _log:
    _fd = os.open(f"{_log}.{os.environ.get('RANK', 'launcher')}.{os.getpid()}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _record(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)) and args[2] & (os.O_WRONLY | os.O_RDWR):
            os.write(_fd, (os.path.abspath(os.fsdecode(args[0])) + "\\n").encode())

    sys.addaudithook(_record)

import atexit

def _group_left():
    # registered first, so it runs after every other exit handler: a process group still alive here is
    # torn down during interpreter finalisation, where gloo's worker threads can abort the process
    # ("terminate called without an active exception", exit -6: seen once in CI; the ranks now end with
    # train.sft.exit_rank, which runs the atexit handlers, this one among them, and skips the teardown)
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        sys.stderr.write(f"[hook] rank {os.environ.get('RANK', '?')} exits with its process group alive\\n")
        sys.stderr.flush()

atexit.register(_group_left)
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _private_extensions_dir(dst: Path) -> str:
    """A TORCH_EXTENSIONS_DIR of the test's own, seeded with the ops already built in the user's one
    (each op folder with its .so and no lock; never the lock itself): a rebuild costs ~20 s of CPU,
    and ninja rebuilds an op that was built with other paths or flags."""
    import torch.utils.cpp_extension as cpp

    flavour = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"  # torch's own layout
    default = Path(cpp.get_default_build_root()) / f"py{sys.version_info.major}{sys.version_info.minor}_{flavour}"
    src = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or default)
    for op in src.glob("*/"):
        if any(op.glob("*.so")) and not (op / "lock").exists():
            shutil.copytree(op, dst / op.name)
    return str(dst)


@pytest.fixture(scope="module")
def launch_env(tmp_path_factory):
    """The environment of a launch: the audit hook, a private TORCH_EXTENSIONS_DIR, the CPU accelerator."""
    hook = tmp_path_factory.mktemp("hook")
    (hook / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NUM_GPUS", "HOSTFILE",
                        "NODE_RANK", "RECIPE")}
    env.update(PYTHON=sys.executable, PYTHONPATH=f"{hook}{os.pathsep}{ROOT}", DS_ACCELERATOR="cpu",
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               TORCH_EXTENSIONS_DIR=_private_extensions_dir(tmp_path_factory.mktemp("torch_extensions")))
    return env


def _args(model_dir, gen_dir, out, **kw) -> list[str]:
    base = {"model_name_or_path": model_dir, "dataset": gen_dir / "planner_train.jsonl", "eval_dataset": "",
            "eval_fraction": 0, "output_dir": out, "max_steps": 2, "save_steps": 1, "save_total_limit": 5,
            "learning_rate": 1e-3, "logging_steps": 1, "max_seq_len": 768, "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 1, "use_cpu": "true", "gradient_checkpointing": "false"}
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]


def _train(env, args, tmp_path, *, timeout=400, **extra_env) -> subprocess.CompletedProcess:
    env = dict(env, WRITES_LOG=str(tmp_path / "writes"), MASTER_PORT=str(_free_port()), **extra_env)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "train_planner.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "exits with its process group alive" not in proc.stdout + proc.stderr, proc.stdout[-4000:]
    return proc


def _writes(tmp_path, out: Path) -> dict[str, set[str]]:
    """``{rank: {path relative to out}}`` of the files each rank opened for writing under ``out``."""
    by_rank: dict[str, set[str]] = {}
    for log in tmp_path.glob("writes.*"):
        rank = log.name.split(".")[1]
        for line in log.read_text().splitlines():
            p = Path(line)
            if p.is_relative_to(out):
                by_rank.setdefault(rank, set()).add(str(p.relative_to(out)))
    return by_rank


def _assert_only_rank0_writes_shared_files(tmp_path, out: Path) -> None:
    writes = _writes(tmp_path, out)
    assert {"recipe.yaml", "log_history.json", "loss.png", "tokenizer_config.json", "adapter_config.json"} <= writes["0"]
    for rank, paths in writes.items():
        if rank == "0":
            continue
        # a rank may write only its own shards of a checkpoint (optimizer / model states, RNG state)
        own = [p for p in paths if re.fullmatch(rf"checkpoint-\d+/(.*rank_{rank}_.*|rng_state_{rank}\.pth)", p)]
        assert sorted(set(paths) - set(own)) == [], f"rank {rank} wrote shared files"


def _losses(log_history: Path) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in json.loads(log_history.read_text()) if "loss" in h}


def _assert_adapter_loads_on_one_process(tiny_model_dir, adapter: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert len(lora_b) == 4 and all(torch.isfinite(p).all() for p in lora_b)  # q and v of 2 layers
    assert all(p.abs().sum() > 0 for p in lora_b)  # it trained: B starts at zero


@pytest.fixture(scope="module")
def one_rank_losses(tmp_path_factory, tiny_model_dir, gen_dir):
    """The reference: one process, no DeepSpeed, the same global batch (2 rows per step) and seed."""
    from train.recipe import load_recipe
    from train.sft import run_sft

    out = tmp_path_factory.mktemp("one_rank")
    recipe = load_recipe(ROOT / "train/configs/planner_lora.yaml",
                         _args(tiny_model_dir, gen_dir, out, per_device_train_batch_size=2, save_steps=100))
    return _losses(run_sft(recipe).log_history)


def _assert_losses_match(got: dict[int, float], want: dict[int, float]) -> None:
    assert sorted(got) == sorted(want) == [1, 2]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=2e-3, abs=2e-3), (step, got, want)


@pytest.mark.slow
@pytest.mark.timeout(900)  # two launches, each bounded below
def test_zero2_two_ranks_train_once_write_once_and_match_one_rank(tmp_path, launch_env, tiny_model_dir, gen_dir,
                                                                  one_rank_losses):
    out = tmp_path / "run"
    before = set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*"))
    proc = _train(launch_env, _args(tiny_model_dir, gen_dir, out), tmp_path, NUM_GPUS="2")
    # DeepSpeed's CPU all-reduce leaves a 66 MB shared-memory buffer per rank in RAM; train.sft unlinks them
    assert sorted(set(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*")) - before) == []
    assert "--num_gpus 2" in proc.stdout and "deepspeed=train/configs/deepspeed/zero2.json" in proc.stdout
    for rank in (0, 1):
        assert f"[train] rank {rank} of 2: 2 optimiser steps" in proc.stdout
    _assert_only_rank0_writes_shared_files(tmp_path, out)
    assert (out / "train.log").exists() and (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert any(p.name.startswith("global_step") for p in (out / "checkpoint-2").iterdir())
    _assert_losses_match(_losses(out / "log_history.json"), one_rank_losses)
    _assert_adapter_loads_on_one_process(tiny_model_dir, out)


@pytest.mark.slow
@pytest.mark.timeout(900)  # two launches, each bounded below
def test_zero3_from_a_recipe_two_ranks_resume_on_two_and_load_on_one(tmp_path, launch_env, tiny_model_dir, gen_dir,
                                                                      one_rank_losses):
    import yaml

    recipe = yaml.safe_load((ROOT / "train/configs/planner_lora.yaml").read_text())
    recipe["train"]["deepspeed"] = "train/configs/deepspeed/zero3.json"  # the recipe's config, not zero2
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    env = dict(launch_env, RECIPE=str(tmp_path / "recipe.yaml"), NUM_GPUS="2")
    proc = _train(env, _args(tiny_model_dir, gen_dir, out), tmp_path)
    assert "zero2.json" not in proc.stdout
    for rank in (0, 1):
        assert f"[train] rank {rank} of 2: 2 optimiser steps" in proc.stdout
        # ZeRO-3 keeps each rank's shard of the model in the checkpoint
        assert (out / "checkpoint-2" / "global_step2" / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt").exists()
    _assert_losses_match(_losses(out / "log_history.json"), one_rank_losses)
    _assert_adapter_loads_on_one_process(tiny_model_dir, out / "checkpoint-2")

    proc = _train(env, _args(tiny_model_dir, gen_dir, out, max_steps=3, resume="true"), tmp_path)
    assert f"[train] resuming from {out / 'checkpoint-2'}" in proc.stdout
    for rank in (0, 1):
        assert f"[train] rank {rank} of 2: 3 optimiser steps" in proc.stdout
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["global_step"] == 3
    assert sorted(_losses(out / "log_history.json")) == [1, 2, 3]  # steps 1-2 from the checkpoint, 3 ran
    _assert_only_rank0_writes_shared_files(tmp_path, out)
    _assert_adapter_loads_on_one_process(tiny_model_dir, out)


@pytest.mark.slow
@pytest.mark.timeout(900)  # two launches, each bounded below
def test_hostfile_two_hosts_on_loopback(tmp_path, launch_env, tiny_model_dir, gen_dir, one_rank_losses):
    """Two "hosts" of one slot each; no pdsh or ssh here, so each host runs the launcher itself
    (NODE_RANK, MASTER_ADDR: DeepSpeed's --no_ssh), as on nodes without pdsh."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=1\n127.0.0.1 slots=1\n")
    out = tmp_path / "run"
    env = dict(launch_env, HOSTFILE=str(hostfile), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
               WRITES_LOG=str(tmp_path / "writes"))
    cmd = ["bash", str(ROOT / "scripts" / "train_planner.sh"), *_args(tiny_model_dir, gen_dir, out, save_steps=100)]
    nodes = [subprocess.Popen(cmd, cwd=ROOT, env=dict(env, NODE_RANK=str(i)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    try:
        outputs = [n.communicate(timeout=400)[0] for n in nodes]
    finally:
        for n in nodes:
            n.kill()
    for i, (n, text) in enumerate(zip(nodes, outputs)):
        assert n.returncode == 0, text[-4000:]
        assert f"--no_ssh --node_rank {i}" in text and f"[train] rank {i} of 2: 2 optimiser steps" in text
    log = (out / "train.log").read_text()
    assert "[train] rank 0 of 2" in log and "[train] rank 1 of 2" not in log  # only node 0 keeps a log
    _assert_only_rank0_writes_shared_files(tmp_path, out)
    _assert_losses_match(_losses(out / "log_history.json"), one_rank_losses)


def test_node_rank_without_hostfile_or_master_addr_is_a_one_line_error(tmp_path, launch_env):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "train_planner.sh"), "model_name_or_path=x",
                           f"dataset={tmp_path / 'd.jsonl'}", f"output_dir={tmp_path}"], cwd=ROOT,
                          env=dict(launch_env, NODE_RANK="1"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: NODE_RANK needs HOSTFILE and MASTER_ADDR (the address of the first host in the hostfile)"
