"""The shell entry points as a newcomer meets them: --help at once, required keys checked before
any work, one-line errors, paths relative to where the user stands. The scripts run from a copy
of the repository's scripts/ and recipes in a temporary folder, so "writes nothing" is checked on
a tree the test owns (the Python code still comes from this checkout, through PYTHONPATH)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["train_planner.sh", "train_caller.sh", "merge.sh", "quantize.sh"]


@pytest.fixture
def fake_repo(tmp_path):
    """scripts/ and train/configs/ copied; nothing else (no data/, no outputs/, no .venv)."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    shutil.copytree(ROOT / "train" / "configs", repo / "train" / "configs")
    (tmp_path / "elsewhere").mkdir()
    return repo


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run(script: Path, *args: str, cwd: Path, python: str = sys.executable) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=python, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_answers_at_once_and_writes_nothing(fake_repo, script, flag):
    """No Python runs at all (PYTHON=false would fail the script), no data is generated, no folder made."""
    before = _files(fake_repo.parent)
    proc = _run(fake_repo / "scripts" / script, "model_name_or_path=x", flag, cwd=fake_repo.parent / "elsewhere",
                python="false")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"bash scripts/{script}") and proc.stderr == ""
    assert "[train]" not in proc.stdout
    assert _files(fake_repo.parent) == before


@pytest.mark.parametrize("script", ["train_planner.sh", "train_caller.sh"])
@pytest.mark.parametrize("args, fragment", [
    ([], "error: model_name_or_path is empty"),
    (["model_name_or_path=./no/such/model"], "error: model path ./no/such/model does not exist"),
    (["model_name_or_path=m", "lora_rank=4"], "error: unknown recipe key 'lora_rank'"),
])
def test_required_keys_are_checked_before_any_work(fake_repo, script, args, fragment):
    """It used to spend 30 s generating 5000 rows into data/generated (and make outputs/) first."""
    before = _files(fake_repo.parent)
    proc = _run(fake_repo / "scripts" / script, *args, cwd=fake_repo.parent / "elsewhere")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(fragment)
    assert "generating" not in proc.stdout and "[train] adapter" not in proc.stdout
    assert _files(fake_repo.parent) == before


@pytest.mark.parametrize("make_adapter, fragment", [
    (lambda d: None, "holds no adapter_config.json: not a PEFT adapter folder"),
    (lambda d: (d / "adapter_config.json").write_text("{not json"), "adapter_config.json is not readable JSON"),
])
def test_merge_with_a_bad_adapter_is_one_line_exit_2(fake_repo, make_adapter, fragment):
    """merge.sh used to print a 15-line traceback; the adapter path is the caller's, not the repo's."""
    elsewhere = fake_repo.parent / "elsewhere"
    (elsewhere / "adapter").mkdir()
    make_adapter(elsewhere / "adapter")
    proc = _run(fake_repo / "scripts" / "merge.sh", "base", "adapter", "out", cwd=elsewhere)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: adapter") and fragment in proc.stderr
    assert not (elsewhere / "out").exists()


def test_scripts_keep_short_usage_errors(fake_repo):
    for script in ("merge.sh", "quantize.sh"):
        proc = _run(fake_repo / "scripts" / script, cwd=fake_repo.parent / "elsewhere", python="false")
        assert proc.returncode == 2 and proc.stderr.startswith("usage: bash scripts/" + script)
