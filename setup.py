"""Packaging details that pyproject.toml cannot say: ``data/`` (the offline wiki, the demo database
sources, the tool catalog, the eval tasks, the demo adapters) ships inside the wheel as the
``rewoo_data`` package, so that an installed (non-editable) copy finds it
(``toolkit.config.data_root``); the training recipes ship with ``train``.

    python -m pip wheel --no-deps -w dist .
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["pipeline*", "toolkit*", "train*", "serve*"]) + ["rewoo_data"],
    package_dir={"rewoo_data": "data"},
    package_data={
        "rewoo_data": ["catalog/*.json", "db/*.csv", "db/README.md", "wiki/*.txt", "wiki/README.md", "eval/*.jsonl",
                       "eval/README.md", "demo/manifest.json", "demo/*.jsonl", "demo/*/adapter_config.json",
                       "demo/*/adapter_model.safetensors"],
        "train": ["configs/*.yaml", "configs/deepspeed/*.json"],
        "serve": ["ui/*.html", "ui/*.js", "ui/*.css"],  # the web playground (GET /ui)
    },
)
