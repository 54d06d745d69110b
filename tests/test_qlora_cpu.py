"""QLoRA on the CPU trains the right adapter: LoRA gradients through a 4-bit NF4 base equal those
through the same weights dequantized to fp32.

bitsandbytes logs that its CPU ``gemv_4bit`` has no autograd kernel; the default caller adapter is
trained through exactly that path (``train/configs/caller_qlora.yaml`` on a CPU), so the gradient
that reaches the adapters below the last layer must still be the true one.
"""

from __future__ import annotations

import pytest
import torch


def _lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                  target_modules=["q_proj", "v_proj", "down_proj"]))
    for name, p in peft_model.named_parameters():  # B starts at zero: give the adapter a real effect
        if "lora_B" in name:
            with torch.no_grad():
                p.copy_(torch.randn_like(p) * 0.05)
    return peft_model


def _grads(model, batch) -> dict[str, torch.Tensor]:
    # Train mode, as the Trainer runs it. In eval mode, on a CPU with AVX512-BF16, bitsandbytes 0.50
    # repacks a 4-bit weight for its bf16 inference kernel at the first forward without grad
    # (Linear4bit.forward): the results then differ from fp32 by bf16 rounding (0.3% here, 2026-12-01).
    model.train()
    model.zero_grad()
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    return {n.replace(".default", ""): p.grad.detach().float().clone()
            for n, p in model.named_parameters() if "lora_" in n}, out.loss.item()


def test_lora_gradients_through_a_4bit_base_match_the_dequantized_base(tiny_model_dir, tiny_tokenizer):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.functional as bnbf
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir, dtype=torch.float32, device_map={"": "cpu"},
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32))
    n4 = sum(type(m).__name__ == "Linear4bit" for m in q.modules())
    assert n4 > 0, "the base did not load in 4 bits"
    # The fp32 twin: the same architecture with every 4-bit weight replaced by its dequantized value.
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ref_modules = dict(ref.named_modules())
    for name, m in q.named_modules():
        if type(m).__name__ == "Linear4bit":
            w = bnbf.dequantize_4bit(m.weight.data, m.weight.quant_state).float()
            ref_modules[name].weight.data.copy_(w)
    q, ref = _lora(q), _lora(ref)
    batch = tiny_tokenizer(["Plan: look it up\n#E1 = search_wiki[Heat]", "a short second row"],
                           return_tensors="pt", padding=True)
    g4, loss4 = _grads(q, batch)
    g32, loss32 = _grads(ref, batch)
    assert abs(loss4 - loss32) < 1e-4
    assert g4.keys() == g32.keys() and len(g4) >= 12
    for name in g32:
        assert g32[name].abs().sum() > 0, name
        torch.testing.assert_close(g4[name], g32[name], rtol=1e-3, atol=1e-5, msg=name)
