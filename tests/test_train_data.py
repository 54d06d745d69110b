"""Training data: readers and their errors, the prompt-loss mask, packing equals padding."""

from __future__ import annotations

import json
import re

import pytest
import torch

from pipeline import formats
from train.data import (IGNORE, DataError, Example, PackedCollator, PaddedCollator, load_examples, tokenize,
                        tokenize_all)


def test_mask_covers_exactly_the_prompt(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = Example(formats.alpaca("Who directed Oppenheimer?"), "Plan: look it up\n#E1 = search_wiki[Oppenheimer]")
    row = tokenize(ex, tok, max_seq_len=512)
    prompt_ids = tok(ex.prompt)["input_ids"]
    response_ids = tok(ex.response, add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == prompt_ids + response_ids + [tok.eos_token_id]
    assert row["labels"] == [IGNORE] * len(prompt_ids) + response_ids + [tok.eos_token_id]
    assert tok.decode([t for t in row["labels"] if t != IGNORE], skip_special_tokens=True) == ex.response
    full = tokenize(ex, tok, max_seq_len=512, train_on_prompt=True)
    assert full["labels"] == full["input_ids"]


def test_truncation_cuts_the_prompt_first_and_keeps_bos(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = Example(formats.alpaca("word " * 200), "short answer")
    row = tokenize(ex, tok, max_seq_len=32)
    n_resp = len(tok("short answer", add_special_tokens=False)["input_ids"]) + 1
    assert len(row["input_ids"]) == 32 and row["input_ids"][0] == tok.bos_token_id
    assert row["labels"][-n_resp:] == row["input_ids"][-n_resp:] and row["labels"][:-n_resp] == [IGNORE] * (32 - n_resp)
    assert tokenize(Example("p", "r"), tok, max_seq_len=8) is not None
    rows, dropped = tokenize_all([ex, Example(formats.alpaca("x"), "y")], tok, max_seq_len=32)
    assert len(rows) == 2 and dropped == 0


def test_readers_accept_alpaca_chat_json_and_parquet(tmp_path, tiny_tokenizer):
    rows = [{"instruction": "Add 2 and 2", "input": "", "output": "4", "meta": {"ignored": True}},
            {"instruction": "Translate", "input": "bonjour", "output": "hello"},
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello!"}]},
            {"prompt": "<|im_start|>user\nHi<|im_end|>\n", "completion": "Hey", "meta": {"mode": "react"}}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=2))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows[:2]), tmp_path / "d.parquet")
    a = load_examples(tmp_path / "d.jsonl")
    assert a[0] == Example(formats.alpaca("Add 2 and 2"), "4", f"{tmp_path / 'd.jsonl'}:1")
    assert a[1].prompt == formats.alpaca("Translate\n\nbonjour")
    assert a[2].prompt == formats.messages_to_alpaca(rows[2]["messages"][:2]) and a[2].response == "Hello!"
    assert (a[3].prompt, a[3].response) == (rows[3]["prompt"], "Hey")  # rendered already: no template over it
    (tmp_path / "pc.jsonl").write_text(json.dumps(rows[3]) + "\n")
    assert load_examples(tmp_path / "pc.jsonl", template="chat")[0].prompt == rows[3]["prompt"]
    b = load_examples(tmp_path / "d.json")
    assert [(e.prompt, e.response) for e in b] == [(e.prompt, e.response) for e in a]
    assert b[1].where.endswith("d.json:10")  # the line where the second row opens
    c = load_examples(tmp_path / "d.parquet")
    assert [(e.prompt, e.response) for e in c] == [(e.prompt, e.response) for e in a[:2]]


def test_bad_rows_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c"}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:3: row lacks 'output'.*Found keys: \['instruction'\]"):
        load_examples(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"instruction": "a", "output": "b"}\n{"instruction": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl:2: not valid JSON"):
        load_examples(broken)
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"messages": [{"role": "user", "content": "hi"}]}], indent=1))
    with pytest.raises(DataError, match=r"chat\.json:2: the last message must be the assistant's"):
        load_examples(chat)
    with pytest.raises(DataError, match="does not exist"):
        load_examples(tmp_path / "missing.jsonl")


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_invalid_utf8_names_file_and_line(tmp_path, suffix):
    rows = ['{"instruction": "a", "output": "b"}', '{"instruction": "caf\xe9", "output": "d"}']
    data = ("\n".join(rows) if suffix == ".jsonl" else "[\n" + ",\n".join(rows) + "\n]").encode("latin-1")
    bad = tmp_path / f"latin1{suffix}"
    bad.write_bytes(data)
    line = 2 if suffix == ".jsonl" else 3
    with pytest.raises(DataError, match=rf"latin1\{suffix}:{line}: not valid UTF-8 \(byte b'\\xe9' at column 21\)"):
        load_examples(bad)


@pytest.mark.parametrize("row, fragment", [
    ({"instruction": "a", "output": 42}, "'output' is int, not text"),
    ({"instruction": "a", "output": ["x"]}, "'output' is list, not text"),
    ({"instruction": ["a"], "output": {"k": 1}}, "'instruction' is list and 'output' is dict, not text"),
    ({"instruction": "a", "input": 3, "output": "b"}, "'input' is int, not text"),
    ({"prompt": "a", "completion": 3}, "'completion' is int, not text"),
])
def test_wrong_typed_fields_are_reported_as_wrong_typed_not_missing(tmp_path, row, fragment):
    p = tmp_path / "typed.jsonl"
    p.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=re.escape(f"typed.jsonl:1: {fragment}")) as e:
        load_examples(p)
    assert "lacks" not in str(e.value)


def _rows(tok, n=4):
    examples = [Example(formats.alpaca(f"Task {i}: " + "find the director " * (i + 1)),
                        f"Plan: step {i}\n#E1 = search_wiki[film {i}]") for i in range(n)]
    return [tokenize(e, tok, 256) for e in examples]


def test_packing_has_no_cross_example_attention_and_equals_padding(tiny_tokenizer, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    # train mode, as the Trainer runs it (the tiny model has no dropout, so outputs are deterministic)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").train()
    assert model.config.use_cache  # the default that would break packing if the collator did not turn it off
    rows = _rows(tiny_tokenizer)
    padded = PaddedCollator(tiny_tokenizer.pad_token_id)(rows)
    packed = PackedCollator()(rows)
    assert packed["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))
    assert "attention_mask" not in packed and packed["use_cache"] is False and packed["position_ids"][0, len(rows[0]["input_ids"])] == 0
    with torch.no_grad():
        out_pad = model(**padded)
        out_pack = model(**packed)
        # each example's logits inside the pack equal its logits alone
        start = 0
        for r in rows:
            n = len(r["input_ids"])
            alone = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
            torch.testing.assert_close(out_pack.logits[0, start:start + n], alone, atol=1e-4, rtol=1e-4)
            start += n
    # the same tokens carry the loss, so the mean loss is the same
    assert (packed["labels"] != IGNORE).sum() == (padded["labels"] != IGNORE).sum()
    torch.testing.assert_close(out_pack.loss, out_pad.loss, atol=1e-4, rtol=1e-4)


def test_packing_never_predicts_across_a_boundary_even_when_training_on_the_prompt():
    """With ``train_on_prompt`` an example's first label is a real token: the packed row must
    still not ask the previous example's last token to predict it."""
    rows = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [8, 9]},
            {"input_ids": [10, 11, 12], "labels": [IGNORE, 11, 12]}]
    packed = PackedCollator()(rows)
    assert packed["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9, IGNORE, 11, 12]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]


def test_loss_weights_mark_exactly_the_matched_tokens_and_travel_through_both_collators(tiny_tokenizer):
    from train.data import LossWeights

    tok = tiny_tokenizer
    weights = LossWeights(r"(?m)^#E\d+ = (\w+)", 4.0)
    ex = Example(formats.alpaca("Who directed Oppenheimer?"), "Plan: look it up\n#E1 = search_wiki[Oppenheimer]")
    row = tokenize(ex, tok, max_seq_len=512, weights=weights)
    plain = tokenize(ex, tok, max_seq_len=512)
    assert row["input_ids"] == plain["input_ids"] and row["labels"] == plain["labels"]
    heavy = [t for t, w in zip(row["input_ids"], row["weights"]) if w == 4.0]
    assert tok.decode(heavy).replace(" ", "") == "search_wiki"
    assert set(row["weights"]) == {1.0, 4.0} and len(row["weights"]) == len(row["input_ids"])
    short = tokenize(ex, tok, max_seq_len=24, weights=weights)  # truncation keeps the lists aligned
    assert len(short["weights"]) == len(short["input_ids"]) == 24
    other = tokenize(Example("p", "no decision here"), tok, max_seq_len=64, weights=weights)
    padded = PaddedCollator(tok.pad_token_id)([row, other])
    assert padded["loss_weights"].shape == padded["input_ids"].shape
    assert padded["loss_weights"][0].tolist()[:len(row["weights"])] == row["weights"]
    assert padded["loss_weights"][1].tolist()[len(other["weights"]):] == [0.0] * (len(row["weights"]) - len(other["weights"]))
    packed = PackedCollator()([row, other])
    assert packed["loss_weights"][0].tolist() == row["weights"] + other["weights"]
    assert "loss_weights" not in PaddedCollator(tok.pad_token_id)([plain]) and "loss_weights" not in PackedCollator()([plain])
    with pytest.raises(DataError, match="not a regular expression"):
        LossWeights("(", 2.0)
