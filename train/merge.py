"""Merge a LoRA adapter into its base model and save a plain transformers model.

    python -m train merge --base BASE_MODEL --adapter outputs/planner --out outputs/planner-merged

The base loads in ``--dtype`` (default: the dtype in its config, bf16 on GPUs that have it for
QLoRA adapters: a 4-bit base is never merged into, the adapter goes onto full-precision
weights). Every merged weight is checked for NaN/inf before anything is written; the model is
saved as sharded safetensors (``--max-shard-size``) with the tokenizer (the adapter's, else the
base's), so ``AutoModelForCausalLM.from_pretrained(out)`` loads it and exllamav2 can convert it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


class MergeError(ValueError):
    """The inputs cannot be merged, or the merge produced non-finite weights."""


def merge(base: str, adapter: str, out: str, dtype: str = "auto", max_shard_size: str = "2GB") -> Path:
    """Merge ``adapter`` into ``base`` and save to ``out``; returns ``out``. Inputs that cannot be
    merged (no adapter, an unreadable adapter config, a base that does not load, an adapter made
    for another base) are a :class:`MergeError` in one line, raised before anything is written."""
    adapter_dir = Path(adapter)
    if not (adapter_dir / "adapter_config.json").exists():
        raise MergeError(f"{adapter} holds no adapter_config.json: not a PEFT adapter folder")
    try:
        json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise MergeError(f"{adapter_dir / 'adapter_config.json'} is not readable JSON ({_first_line(e)})") from e
    if Path(base).expanduser().suffix or base.startswith((".", "/", "~")):
        if not Path(base).expanduser().exists():
            raise MergeError(f"base model {base} does not exist")
    if dtype not in ("auto", "bf16", "fp16", "fp32"):
        raise MergeError(f"dtype {dtype!r} is not valid; choose one of: auto, bf16, fp16, fp32")
    import torch  # noqa: PLC0415
    from peft import PeftModel  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    dtypes = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtypes[dtype])
    except (OSError, ValueError) as e:
        raise MergeError(f"cannot load the base model {base}: {_first_line(e)}") from e
    try:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as e:  # shapes or modules of another base
        raise MergeError(f"cannot apply the adapter {adapter} to {base} (made for another base?): "
                         f"{_first_line(e)}") from e
    bad = [name for name, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise MergeError(f"merged weights hold NaN or inf in {len(bad)} tensors (first: {', '.join(bad[:5])}); "
                         "nothing was written")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, max_shard_size=max_shard_size)
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else base
    AutoTokenizer.from_pretrained(str(tok_src)).save_pretrained(out_dir)
    (out_dir / "merge.json").write_text(json.dumps({"base": base, "adapter": str(adapter_dir), "dtype": dtype},
                                                   indent=1), encoding="utf-8")
    return out_dir


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split("\n", 1)[0].split())
    return text[:300] if text else type(e).__name__


def build_parser() -> argparse.ArgumentParser:
    from toolkit.helpformat import HelpFormatter, summary

    p = argparse.ArgumentParser(prog="python -m train merge", description=summary(__doc__),
                                formatter_class=HelpFormatter)
    p.add_argument("--base", required=True, help="base model folder or name")
    p.add_argument("--adapter", required=True, help="LoRA adapter folder (a training output_dir)")
    p.add_argument("--out", required=True, help="folder for the merged model")
    p.add_argument("--dtype", default="auto", help="auto, bf16, fp16 or fp32")
    p.add_argument("--max-shard-size", default="2GB", help="largest safetensors shard, e.g. 2GB or 500MB")
    return p


def main(argv: list[str] | None = None) -> Path:
    a = build_parser().parse_args(argv)
    out = merge(a.base, a.adapter, a.out, a.dtype, a.max_shard_size)
    print(f"merged model: {out}")
    return out


if __name__ == "__main__":
    main()
