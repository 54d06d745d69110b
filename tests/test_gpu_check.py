"""bench/gpu_check.py without a GPU: the dry run walks every step's set-up, the no-CUDA exit, the
step runner's independence (a failing or hanging step never stops the next), the wheels folder.

    python -m pytest -q tests/test_gpu_check.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~15 s of CPU: importing torch, transformers, peft and bitsandbytes is most of it
def test_dry_run_walks_every_step_and_writes_the_table_and_json(tmp_path, gc):
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--wheels", str(tmp_path / "no-wheels")],
                       capture_output=True, text=True, env={**NO_GPU, "OUT": str(tmp_path)}, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in doc["steps"]}
    assert doc["mode"] == "dry-run"
    assert list(steps) == [s.name for s in gc.STEPS]
    assert all(s["status"] == "ok" for s in steps.values()), {n: s["error"] for n, s in steps.items()}
    for name in steps:  # the printed table has one row per step
        assert any(line.split()[1:3] == [name, "ok"] for line in r.stdout.splitlines() if len(line.split()) > 2)
    assert (tmp_path / "gpu_check.txt").read_text().strip() in r.stdout
    f = {n: s["figures"] for n, s in steps.items()}
    assert f["wheels"]["present"] == 0 and len(f["wheels"]["missing"]) == len(gc.WHEELS)
    assert f["prepare"]["vocab"] > 0 and f["prepare"]["train_rows"] > 0
    assert f["gpu_tests"]["gpu_marked"] >= 3 and "-m gpu" in f["gpu_tests"]["command"]
    assert f["exl2"]["converter_runs"] == 3  # one measurement pass, reused by the second bitrate
    assert [c.split()[-1] for c in f["exl2"]["commands"]] == ["2.5", "4"]
    assert f["exl2"]["self_breakdown_bpw"] == 16  # bf16 weights read back from the headers
    assert 21 < f["exl2"]["formula_70b_gb"] < 23   # the seed: 70B at 2.5 bpw -> 22 GB
    lora = f["lora"]["sdpa"]
    assert lora["packed"]["tok_s"] > 0 and lora["padded"]["tok_s"] > 0
    assert lora["padded"]["computed_per_real"] >= 1.0 == lora["packed"]["computed_per_real"]
    assert f["qlora"]["quant"].startswith("nf4") and f["qlora"]["packed"]["tok_s"] > 0
    assert "-m serve" in f["serve"]["command"] and "--model" in f["serve"]["command"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA exit")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                       env={**NO_GPU, "OUT": str(tmp_path)}, timeout=300)
    assert r.returncode == 0
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA" in lines[0]
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_a_failing_or_hanging_step_never_stops_the_next(tmp_path, gc):
    py = sys.executable
    hang = gc.run_process(gc.Step("hang", "-", "", 1), [py, "-c", "import time; print('started', flush=True); "
                                                           "time.sleep(60)"], 1.0, tmp_path / "hang.log", dict(os.environ))
    assert hang.status == "timeout" and "killed after" in hang.error
    fail = gc.run_process(gc.Step("fail", "-", "", 10), [py, "-c", "raise SystemExit('broken set-up')"], 30,
                          tmp_path / "fail.log", dict(os.environ))
    assert fail.status == "failed" and "broken set-up" in fail.error
    ok = gc.run_process(gc.Step("ok", "-", "", 10), [py, "-c", f"print({gc.RESULT_MARK!r} + '{{\"x\": 1}}')"], 30,
                        tmp_path / "ok.log", dict(os.environ))
    assert ok.status == "ok" and ok.figures == {"x": 1}

    def broken(ctx):
        raise RuntimeError("no model")

    # a background step reaped long after it ended counts its own run, not the wait for it
    t0 = time.monotonic()
    early = gc.start_process([py, "-c", "print('built', flush=True)"], tmp_path / "early.log", dict(os.environ))
    early.wait()
    time.sleep(2.0)
    done = gc.finish_process(gc.Step("early", "-", "", 0), early, tmp_path / "early.log", 30, t0)
    assert done.seconds < time.monotonic() - t0 - 1.5

    ctx = gc.Ctx(dry=True, work=tmp_path, wheels=tmp_path)
    assert gc.run_inline(gc.Step("a", "-", "", 1), broken, ctx).status == "failed"
    assert gc.run_inline(gc.Step("b", "-", "", 1), lambda c: {"y": 2}, ctx).figures == {"y": 2}


def test_the_budget_fits_one_device_call(gc):
    nominal = {s.name: s.timeout_s for s in gc.STEPS}
    assert set(gc.FOREGROUND) | {"exl2_build"} == set(nominal)
    assert sum(nominal[n] for n in gc.FOREGROUND) <= gc.BUDGET_S <= 540  # 9 minutes, with the start's margin
    budget = gc.Budget(150, {"a": 30, "b": 50, "c": 40})
    assert 55 < budget.give(["b", "c"]) <= 60  # the later steps keep their time, the slack goes first
    assert 145 < budget.give([]) <= 150               # the last step gets whatever is left
    short = gc.Budget(60, {"a": 30, "b": 50, "c": 40})  # half the nominal total: every share halves
    assert 14 < short.give(["b", "c"]) <= 15       # and the first (set-up) step still runs


def test_wheels_folder_inventory_and_bitsandbytes_slimming(tmp_path, gc):
    libs = ["cpu", "cuda118", "cuda128", "cuda130", "rocm64"]
    whl = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for lib in libs:
            z.writestr(f"bitsandbytes/libbitsandbytes_{lib}.so", b"\0" * 1000)
        z.writestr("bitsandbytes/__init__.py", "")
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD",
                   "".join(f"bitsandbytes/libbitsandbytes_{lib}.so,sha256=x,1000\n" for lib in libs))
    (tmp_path / "numpy-2.0-cp312-cp312-linux_x86_64.whl").write_bytes(b"")  # not in the list
    gc.slim_bitsandbytes(whl)
    with zipfile.ZipFile(whl) as z:
        names = set(z.namelist())
        record = z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode()
    assert {"bitsandbytes/libbitsandbytes_cpu.so", "bitsandbytes/libbitsandbytes_cuda130.so",
            "bitsandbytes/__init__.py"} <= names
    assert not any(lib in n for n in names for lib in ("cuda118", "cuda128", "rocm64"))
    assert "cuda130" in record and "cuda118" not in record
    inv = gc.wheel_inventory(tmp_path)
    assert inv["present"] == 1 and "bitsandbytes==0.50.2" not in inv["missing"]
    assert inv["extra"] == ["numpy-2.0-cp312-cp312-linux_x86_64.whl"]
