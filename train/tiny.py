"""Tiny models built from scratch: a byte-level BPE tokenizer and a small random Llama.

    python -m train.tiny OUT_DIR [--hidden 64 --layers 2 --heads 4 --vocab 512 --seed 0]

writes a tokenizer and a random Llama to OUT_DIR, loadable with ``from_pretrained``. No hub and
no download: the tests build these on the fly (2 layers, hidden 64), and the demo models start
from them. The tokenizer is byte-level, so any text encodes, and is trained on the stack's own
prompt formats so that ``Plan:``, ``#E`` and the tool names are a few tokens each.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}

_SAMPLE_TOOLS = [
    {"name": "search_wiki", "description": "Search the offline encyclopedia and return the best passages.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "what to look up"}},
                    "required": ["query"]}},
    {"name": "calculator", "description": "Evaluate an arithmetic expression.",
     "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}},
    {"name": "save_file", "description": "Save text to a file in the workspace.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                    "required": ["path", "content"]}},
    {"name": "llm", "description": "A language model like yourself, for reasoning over evidence.",
     "parameters": {"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}},
]

_PROSE = """\
Martin Scorsese directed Killers of the Flower Moon, Goodfellas, Taxi Driver and The Irishman.
Christopher Nolan directed Oppenheimer, Inception, Interstellar and The Dark Knight.
The planner writes the whole plan first; workers fill the evidence; the solver answers.
Paris is the capital of France. Water boils at 100 degrees Celsius at sea level.
The quick brown fox jumps over the lazy dog. 0123456789 + - * / ( ) [ ] { } " ' : , . ? !
SELECT name, year FROM films WHERE director = 'Martin Scorsese' ORDER BY year;
def add(a: int, b: int) -> int:
    return a + b
"""


def tiny_corpus() -> list[str]:
    """A few KB of text: the prompt formats with sample tools, a plan, a call, prose, code."""
    from pipeline import formats

    plan = ("Plan: Find the director of the film.\n#E1 = search_wiki[Killers of the Flower Moon director]\n"
            "Plan: List the films of that director.\n#E2 = llm[Which films did the director in #E1 make?]")
    steps = formats.parse_plan(plan).steps
    texts = [
        formats.alpaca(formats.planner_instruction("Who directed Oppenheimer?", _SAMPLE_TOOLS)) + plan,
        formats.alpaca(formats.caller_instruction(steps[0], _SAMPLE_TOOLS))
        + formats.render_call("search_wiki", {"query": "Killers of the Flower Moon director"}),
        formats.alpaca(formats.solver_instruction("Who directed it?", steps,
                                                  {"#E1": "Martin Scorsese", "#E2": "Goodfellas"}))
        + "Martin Scorsese",
    ]
    return texts + _PROSE.splitlines() * 3


def build_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 512,
                    model_max_length: int = 2048):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with ``<s>``, ``</s>``, ``<pad>``, ``<unk>``.

    Encoding adds ``<s>`` in front (as Llama's tokenizer does); ``add_special_tokens=False``
    leaves it out.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts) if texts is not None else tiny_corpus()
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL_TOKENS[k] for k in ("unk_token", "bos_token", "eos_token", "pad_token")],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text encodes
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **SPECIAL_TOKENS)


def build_llama(tokenizer, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                intermediate_size: int | None = None, max_position_embeddings: int = 2048, seed: int = 0,
                tie_word_embeddings: bool = False):
    """A randomly initialised ``LlamaForCausalLM`` sized for ``tokenizer``; deterministic by seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny(out_dir: str | Path, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
              vocab_size: int = 512, seed: int = 0) -> Path:
    """Build a tokenizer and a random Llama and save both to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size=vocab_size)
    model = build_llama(tokenizer, hidden_size, num_layers, num_heads, seed=seed)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m train.tiny", description=__doc__.splitlines()[0])
    p.add_argument("out_dir")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = save_tiny(a.out_dir, a.hidden, a.layers, a.heads, a.vocab, a.seed)
    print(f"wrote a tiny Llama (hidden {a.hidden}, {a.layers} layers) and its tokenizer to {out}")


if __name__ == "__main__":
    main()
