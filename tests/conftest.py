"""The test kit: tiny real models built on the fly, a scripted engine, the ``gpu`` marker.

- ``tiny_tokenizer``: a byte-level BPE trained on a few KB (``train.tiny``), with bos/eos/pad.
- ``tiny_model_dir``: that tokenizer and a random 2-layer, hidden-64 Llama saved to a temp dir,
  loadable with ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
- ``scripted_engine``: a factory, ``scripted_engine(["output 1", "output 2"])``.
- ``@pytest.mark.gpu``: skipped unless CUDA is available.

All are session-scoped where building costs anything, so the suite builds each once.
"""

from __future__ import annotations

import os

import pytest
from pathlib import Path

# Small CPUs: torch's default threads stall erratically on 2 cores (measured; FACTS.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

from tests.kit import ScriptedEngine  # noqa: E402


def _cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # a broken torch install must not hide every other test
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from train.tiny import build_tokenizer
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    from train.tiny import build_llama
    out = tmp_path_factory.mktemp("tiny-llama")
    tiny_tokenizer.save_pretrained(out)
    build_llama(tiny_tokenizer, hidden_size=64, num_layers=2, num_heads=4, seed=0).save_pretrained(out)
    return out


@pytest.fixture
def scripted_engine():
    return ScriptedEngine


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    """A small train.datagen set (planner and caller rows, eval and test splits) for training tests."""
    from train.catalog import load_catalog
    from train.datagen import GenConfig, generate, write

    out = tmp_path_factory.mktemp("generated")
    catalog = load_catalog(Path(__file__).resolve().parents[1] / "data" / "catalog" / "tools.json")
    cfg = GenConfig(planner=24, caller=24, eval=4, test=4, max_tools=4, max_steps=3, seed=0)
    write(out, generate(catalog, cfg), catalog, cfg)
    return out
