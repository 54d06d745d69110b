"""Loss curves: train and eval loss against the optimiser step, as a PNG.

    python -m train.plot OUTPUT_DIR        (re-draws OUTPUT_DIR/loss.png from log_history.json)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_losses(history: Sequence[Mapping], path: str | Path, title: str = "") -> Path:
    """Draw ``loss`` and ``eval_loss`` from a Trainer ``log_history`` into ``path``; returns it."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # files only: no display on training machines
    import matplotlib.pyplot as plt  # noqa: PLC0415

    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", linewidth=1.2)
    if evals:
        ax.plot(*zip(*evals), label="eval loss", color="tab:orange", marker="o", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (response tokens)")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


if __name__ == "__main__":
    run = Path(sys.argv[1])
    print(plot_losses(json.loads((run / "log_history.json").read_text()), run / "loss.png"))
