"""The test kit itself: tiny models load and generate, the scripted engine replays, gpu skips."""

from __future__ import annotations

import pytest
import torch

from tests.kit import ScriptExhausted


def test_tiny_tokenizer_round_trip(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "Plan: find it\n#E1 = search_wiki[Killers of the Flower Moon] — ünïcode ✓"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert {tok.bos_token, tok.eos_token, tok.pad_token} == {"<s>", "</s>", "<pad>"}
    line = " #E1 = search_wiki[Killers of the Flower Moon director]"
    assert len(tok(line, add_special_tokens=False)["input_ids"]) < len(line) / 2  # merges were learnt


def test_tiny_model_loads_and_generates(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert model.config.vocab_size == len(tok)
    batch = tok(["Plan: a", "Who directed Oppenheimer?"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2 and out.shape[1] <= batch["input_ids"].shape[1] + 5
    # deterministic: the same seed builds the same weights
    from train.tiny import build_llama
    again = build_llama(tok, seed=0)
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n


def test_scripted_engine(scripted_engine):
    eng = scripted_engine(["Plan: x\n#E1 = llm[y]\nObservation: no", lambda msgs: msgs[-1]["content"].upper()])
    assert eng([{"role": "user", "content": "plan it"}], stop_sequences=["Observation:"]) == "Plan: x\n#E1 = llm[y]\n"
    assert eng("echo me") == "ECHO ME"
    assert eng.calls[0]["stop_sequences"] == ["Observation:"] and eng.remaining == 0
    assert eng.prompt_tokens == 4 and eng.completion_tokens == 7
    with pytest.raises(ScriptExhausted, match="called 3 times"):
        eng("again")


@pytest.mark.gpu
def test_tiny_model_bf16_cuda_matches_cpu(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok("Plan: find the director", return_tensors="pt")["input_ids"]
    cpu = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    gpu = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).cuda()
    with torch.no_grad():
        ref = cpu(ids).logits
        got = gpu(ids.cuda()).logits.float().cpu()
    assert torch.allclose(ref, got, atol=5e-2, rtol=5e-2)


class _Item:
    """What conftest's hook reads of a collected test: its keywords, and add_marker."""

    def __init__(self, *keywords: str):
        self.keywords, self.markers = dict.fromkeys(keywords, True), []

    def add_marker(self, marker):
        self.markers.append(marker)


@pytest.mark.parametrize("cuda", [False, True])
def test_gpu_tests_skip_without_cuda_and_run_with_it(cuda, monkeypatch):
    """conftest.pytest_collection_modifyitems, the hook behind the `gpu` marker's promise."""
    from tests import conftest

    monkeypatch.setattr(conftest, "_cuda_available", lambda: cuda)
    gpu, cpu = _Item("gpu", "test_x"), _Item("test_y")
    conftest.pytest_collection_modifyitems(None, [gpu, cpu])
    assert cpu.markers == []
    if cuda:
        assert gpu.markers == []
    else:
        assert [(m.name, m.kwargs) for m in gpu.markers] == [("skip", {"reason": "needs a CUDA GPU"})]

