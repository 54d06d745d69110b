"""The demo models this repository ships (data/demo): the README's first command must work.

They must match the current recipe (train.demo.DemoConfig); after changing it, rebuild them with
`python -m train.demo --out data/demo --force` (CPU, under 10 minutes).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train import demo

REPO = Path(__file__).resolve().parent.parent


def test_shipped_demo_matches_the_recipe():
    manifest = json.loads((demo.SHIPPED / "manifest.json").read_text())
    assert manifest["key"] == demo.DemoConfig().key(), (
        "data/demo was built from another recipe: rebuild it with python -m train.demo --out data/demo --force")
    assert demo.ensure_demo_models()["planner"] == str(demo.SHIPPED / "planner")
    size = sum(f.stat().st_size for f in demo.SHIPPED.rglob("*") if f.is_file())
    assert size < 20 * 2**20, f"the shipped demo is {size / 2**20:.1f} MB; the limit is 20 MB"


@pytest.mark.parametrize("task, check", [
    (demo.SHOWCASE[0], lambda answer, films: answer == "Martin Scorsese"),
    (demo.SHOWCASE[1], lambda answer, films: answer in films["Martin Scorsese"]),
])
def test_the_readme_command_answers_the_showcase_tasks(task, check, tmp_path):
    with open(REPO / "data" / "db" / "films.csv", newline="") as f:
        films: dict[str, list[str]] = {}
        for row in csv.DictReader(f):
            films.setdefault(row["director"], []).append(row["title"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REWOO_WORKSPACE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", task, "--json"], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["tool"] for s in out["plan"]] == ["query_sql"]
    assert "Killers of the Flower Moon" in out["plan"][0]["input"]
    assert check(out["answer"], films), out
    assert out["stats"]["llm_calls"] == 2
