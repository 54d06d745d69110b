"""The project as a wheel: built from a copy of the checkout, installed (not editable) into a fresh
folder, and run from outside the checkout, so that nothing can find ``data/`` beside the code.

    python -m pytest -q tests/test_wheel.py

It used to find the wiki, the demo database and the demo adapters relative to the checkout only:
installed, ``search_wiki`` and ``query_sql`` failed and the default models were missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "outputs",
                              "workspace", ".pytest_cache", ".hypothesis", "generated")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(target folder, env)``: the wheel installed with ``pip install --no-deps --target``."""
    tmp = tmp_path_factory.mktemp("wheel")
    shutil.copytree(ROOT, tmp / "src", ignore=SKIP)  # the build writes build/ and *.egg-info: not in the checkout
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    proc = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                           str(tmp / "src")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next((tmp / "dist").glob("rewoo_stack-*.whl"))
    target = tmp / "site"
    proc = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "REWOO_DATA_DIR", "REWOO_DEMO_DIR")}
    env.update(PYTHONPATH=str(target), OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp / "cache"))
    (tmp / "elsewhere").mkdir()
    return target, env, tmp / "elsewhere"


def _python(installed, code: str) -> str:
    target, env, cwd = installed
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_installed_wheel_finds_its_data_and_runs_from_elsewhere(installed):
    target, env, cwd = installed
    out = _python(installed, "\n".join([
        "import json, pipeline, toolkit.config as c",
        "from pipeline.defaults import DEMO_DIR",
        "from toolkit import default_toolbox",
        "box = default_toolbox()",
        "print(json.dumps({'code': pipeline.__file__, 'data': str(c.data_root()), 'demo': str(DEMO_DIR),",
        "                  'wiki': box['search_wiki'](query='Oppenheimer director'),",
        "                  'sql': box['query_sql'](sql='SELECT COUNT(*) FROM films')}))",
    ]))
    got = json.loads(out)
    assert got["code"] == str(target / "pipeline" / "__init__.py")  # the installed copy, not the checkout
    assert got["data"] == str(target / "rewoo_data") and got["demo"] == str(target / "rewoo_data" / "demo")
    assert "Christopher Nolan" in got["wiki"]
    assert got["sql"].splitlines()[1] == "48"
    manifest = (target / "rewoo_data" / "demo" / "manifest.json").read_text()
    assert set(json.loads(manifest)["adapters"]) == {"planner", "caller", "agent"}
    for adapter in json.loads(manifest)["adapters"].values():
        assert (target / "rewoo_data" / "demo" / adapter / "adapter_model.safetensors").is_file()
    assert not any(p in manifest for p in ("/tmp/", "/root", "/home/", "/work/", str(ROOT))), "a build path"
    assert (target / "train" / "configs" / "planner_lora.yaml").is_file()  # the recipes ship with train
    for command in (["pipeline.run"], ["serve"], ["train", "sft"]):
        proc = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0 and proc.stdout.startswith("usage: "), (command, proc.stderr[-2000:])
