"""The arithmetic behind docs/scaling.md: memory, traffic and time of the 70B planner (LoRA q/v,
DeepSpeed ZeRO-3 with CPU offload) and of the 34B caller (QLoRA), from formulas you can change.

    python bench/scaling_plan.py                       # the seed's cluster: 6x 24 GiB cards
    python bench/scaling_plan.py --gpus 8 --link-gbs 26 --rows 2000 --row-tokens 330

Nothing here runs a model: every figure is a formula over a model's shape and the cluster's
numbers, printed with the formula next to it so that docs/scaling.md can quote it and a reader can
redo it for another cluster. Units: GB = 1e9 bytes (what `free -g`-style tools call GB is close
enough at this precision); a "24 GB" card is 24 GiB = 25.8 GB.

What is assumed, not measured (change it with the flags): the efficiency of a PCIe link (80-85% of
its raw rate), the model FLOP utilisation of a 4090 (40% for bf16 LoRA, 25% for 4-bit QLoRA), the
per-process host memory (3 GB), the number of training rows (2000: the size of ReWOO's published
planner set; the seed does not say how many rows it trained on) and their length (330 tokens).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Shape:
    """A Llama-style decoder: GQA attention, SwiGLU MLP, untied embeddings."""

    name: str
    vocab: int
    hidden: int         # h
    inter: int          # i, the MLP width
    layers: int         # L
    heads: int
    kv_heads: int

    @property
    def kv(self) -> int:  # h_kv = kv_heads * head_dim
        return self.kv_heads * self.hidden // self.heads

    def linear_params(self) -> int:
        """Per layer: q (h*h) + k, v (h*h_kv each) + o (h*h) + gate, up, down (h*i each)."""
        h, kv, i = self.hidden, self.kv, self.inter
        return self.layers * (2 * h * h + 2 * h * kv + 3 * h * i)

    def params(self) -> int:
        """P = 2*V*h (embeddings + lm_head) + linear + norms (2h per layer + h)."""
        return 2 * self.vocab * self.hidden + self.linear_params() + (2 * self.layers + 1) * self.hidden

    def proj_shape(self, name: str) -> tuple[int, int]:
        h, kv, i = self.hidden, self.kv, self.inter
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}[name]

    def lora_params(self, r: int, targets: list[str]) -> int:
        """L * sum over targets of r * (in + out): A is (r, in), B is (out, r)."""
        return self.layers * sum(r * sum(self.proj_shape(t)) for t in targets)

    def act_bytes_per_token_layer(self, lora_targets: int, bytes_per: int = 2) -> float:
        """What one layer keeps for backward per token, bf16, flash/SDPA attention (no T^2 scores):
        norm inputs and outputs 4h, q h + k, v 2h_kv, attention output h, MLP gate, silu(gate), up
        and their product 4i, and per LoRA module its dropout output (its input width) plus a
        1-byte mask. Upper estimate: it counts every tensor an op may save."""
        h, kv, i = self.hidden, self.kv, self.inter
        base = 4 * h + h + 2 * kv + h + 4 * i
        return bytes_per * base + lora_targets * (bytes_per + 1) * h


LLAMA2_70B = Shape("Llama-2-70B (Marcoroni-70B)", vocab=32000, hidden=8192, inter=28672, layers=80, heads=64, kv_heads=8)
CODELLAMA_34B = Shape("CodeLlama-34B", vocab=32000, hidden=8192, inter=22016, layers=48, heads=64, kv_heads=8)

PCIE4_LANE_GBS = 16 * 128 / 130 / 8   # 16 GT/s, 128b/130b encoding: 1.97 GB/s per lane and direction
CARD_GB = 24 * 2**30 / GB             # a "24 GB" RTX 4090 holds 24 GiB
BF16_TFLOPS = 165.2                   # RTX 4090 dense bf16 tensor throughput with fp32 accumulate


def row(label: str, value: str, formula: str) -> None:
    print(f"  {label:<44} {value:>14}   {formula}")


def planner(a) -> None:
    m, n = LLAMA2_70B, a.gpus
    P = m.params()
    Pl = m.lora_params(a.r, ["q_proj", "v_proj"])
    print(f"\n== {m.name}: LoRA q/v r={a.r}, DeepSpeed ZeRO-3 + CPU offload, {n} cards ==")
    row("parameters P", f"{P / 1e9:.2f} B", "2Vh + L(2h^2 + 2h*h_kv + 3hi) + (2L+1)h")
    row("weights in bf16", f"{2 * P / GB:.1f} GB", "2 B x P")
    row("LoRA parameters P_l", f"{Pl / 1e6:.2f} M", "L x r x ((h+h) + (h+h_kv))")
    row("LoRA train state", f"{16 * Pl / GB:.2f} GB", "16 B x P_l: bf16 w + g, fp32 master, Adam m, v")
    row("full fine-tune state, for scale", f"{16 * P / GB:.0f} GB", "16 B x P")

    a_l = m.act_bytes_per_token_layer(2)
    logits = 10 * m.vocab                      # bf16 logits 2 + fp32 upcast 4 + its grad 4, per token
    ckpt_l = 2 * m.hidden                      # a checkpointed layer keeps its bf16 input only
    print("  activations (per card, one micro-batch of T tokens):")
    row("  kept per token per layer", f"{a_l / 1e3:.0f} KB", "2(9h + 2h_kv + 4i) + 3h per LoRA module")
    for T in (a.row_tokens, a.batch * a.row_tokens, 2048):
        no = (m.layers * a_l + logits) * T
        yes = (m.layers * ckpt_l + a_l + logits) * T
        row(f"  T={T}: without / with checkpointing", f"{no / GB:.1f} / {yes / GB:.1f} GB",
            "T(L a + 10V)  /  T(L 2h + a + 10V)")

    live = min(1e9, P) * 2                      # stage3_max_live_parameters = 1e9
    ctx = 1.0 * GB
    T_mb = a.batch * a.row_tokens
    act = (m.layers * ckpt_l + a_l + logits) * T_mb
    print("  where ZeRO-3 + offload puts things (per card / per host):")
    row("  GPU: gathered layers (max_live 1e9)", f"{live / GB:.1f} GB", "2 B x 1e9")
    row("  GPU: activations, checkpointed", f"{act / GB:.1f} GB", f"T = {a.batch} x {a.row_tokens} packed")
    row("  GPU: CUDA context + NCCL buffers", f"{ctx / GB:.1f} GB", "assumed")
    row("  GPU: total of a card", f"{(live + act + ctx) / GB:.1f} GB", f"of {CARD_GB:.1f} GB")
    row("  ZeRO-3 without offload, a card", f"{(2 * P / n + live + act + ctx) / GB:.1f} GB",
        f"2P/N + the above: does not fit {CARD_GB:.1f} GB")
    need = math.ceil(2 * P / (CARD_GB * GB - live - act - ctx))
    row("  cards for ZeRO-3 without offload", f"{need}", "ceil(2P / (card - live - act - ctx))")

    shard = 2 * P / a.shards
    proc = a.proc_gb * GB
    steady = 2 * P + 16 * Pl + n * proc
    peak = steady + n * shard
    row("  host: bf16 partitions (pinned)", f"{2 * P / GB:.0f} GB", "2P, 2P/N per rank")
    row("  host: LoRA optimizer (offloaded)", f"{16 * Pl / GB:.2f} GB", "16 P_l")
    row("  host: processes", f"{n * proc / GB:.0f} GB", f"N x {a.proc_gb:.0f} GB (assumed)")
    row("  host: steady state", f"{steady / GB:.0f} GB", "2P + 16P_l + N proc")
    row("  host: peak while loading", f"{peak / GB:.0f} GB",
        f"+ N x one checkpoint shard (2P/{a.shards} = {shard / GB:.1f} GB) per rank; seed: 240 GB")

    link = a.link_gbs if a.link_gbs else a.lanes * PCIE4_LANE_GBS * a.link_eff
    inbound = 2 * 2 * P                         # forward + backward: every card needs every weight
    own = 2 * 2 * P / n
    gather = 2 * 2 * P * (n - 1) / n
    grads = 2 * Pl * (n - 1) / n
    print("  traffic per micro-batch, per card (forward + backward each gather all weights):")
    row("  host->GPU own partition", f"{own / GB:.0f} GB", "2 passes x 2P/N")
    row("  all-gather in (and out)", f"{gather / GB:.0f} GB", "2 passes x 2P(N-1)/N")
    row("  into each card in all", f"{inbound / GB:.0f} GB", "2 passes x 2P (the whole model twice)")
    row("  LoRA gradient reduce-scatter", f"{grads / 1e6:.0f} MB", "2 P_l (N-1)/N: negligible")
    row("  per optimizer step", f"{inbound * a.accum / GB:.0f} GB",
        f"x gradient_accumulation_steps={a.accum}")
    t_x = inbound / (link * GB)
    x16 = 16 * PCIE4_LANE_GBS * a.link_eff
    row(f"  link: PCIe 4.0 x{a.lanes}", f"{link:.1f} GB/s",
        f"{a.lanes} x {PCIE4_LANE_GBS:.2f} GB/s x {a.link_eff:.0%}" if not a.link_gbs else "given")
    row("  transfer time per micro-batch", f"{t_x:.1f} s", "4P / link (the slowest link sets the ring)")
    row("  same on PCIe 4.0 x16", f"{inbound / (x16 * GB):.1f} s", f"4P / {x16:.1f} GB/s")

    def compute(T: int) -> float:
        return 6 * P * T / (BF16_TFLOPS * 1e12 * a.mfu)
    print("  time (max of transfer and compute: DeepSpeed prefetch overlaps them):")
    row("  compute per micro-batch", f"{compute(a.row_tokens):.1f} / {compute(T_mb):.1f} s",
        f"6 P T / ({BF16_TFLOPS:.0f} TFLOP/s x {a.mfu:.0%}), T={a.row_tokens} / {T_mb}")
    seed_rounds = math.ceil(a.rows * a.epochs / n)
    for label, lk in ((f"x{a.lanes}", link), ("x16", x16)):
        t = seed_rounds * max(inbound / (lk * GB), compute(a.row_tokens))
        row(f"  seed recipe (batch 1 x accum 4), {label}", f"{t / 3600:.1f} h",
            f"ceil(rows x epochs / N) = {seed_rounds} micro-batches x max(...)")
    ours = math.ceil(a.rows * a.epochs / (n * a.batch))
    for label, lk in ((f"x{a.lanes}", link), ("x16", x16)):
        t = ours * max(inbound / (lk * GB), compute(T_mb))
        row(f"  planner_lora_70b (packed {a.batch} x accum 1), {label}", f"{t / 3600:.1f} h",
            f"ceil(rows x epochs / (N x {a.batch})) = {ours} micro-batches x max(...)")
    measured = 8 * 3600 + 56 * 60
    row("  seed, measured", f"{measured / 3600:.1f} h", "8 h 56 min")
    row("  rows the seed's time implies", f"{measured / t_x * n / a.epochs:.0f}",
        "measured / transfer time x N / epochs")
    row("  link the seed's time implies", f"{inbound * seed_rounds / measured / GB:.1f} GB/s",
        f"4P x {seed_rounds} / measured, if {a.rows} rows")


def caller(a) -> None:
    m, n = CODELLAMA_34B, a.gpus
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    P, Plin = m.params(), m.linear_params()
    Pl = m.lora_params(16, targets)
    nf4 = 0.5 + 1 / 64 + 4 / (64 * 256)         # 4-bit code + 8-bit absmax per 64 + fp32 per 256 absmax
    base = Plin * nf4 + (P - Plin) * 4           # prepare_model_for_kbit_training upcasts the rest to fp32
    print(f"\n== {m.name}: QLoRA NF4 + double quantisation, LoRA r=16 on all 7 projections ==")
    row("parameters P (linear part)", f"{P / 1e9:.2f} B ({Plin / 1e9:.2f} B)", "as above, i=22016, L=48")
    row("bytes per 4-bit weight", f"{nf4:.4f} B", "1/2 + 1/64 + 4/(64 x 256)")
    row("4-bit linear layers", f"{Plin * nf4 / GB:.1f} GB", "P_lin x 0.5159")
    row("embeddings, lm_head, norms (fp32)", f"{(P - Plin) * 4 / GB:.1f} GB", "4 B x (P - P_lin)")
    row("base model on the card", f"{base / GB:.1f} GB", "sum")
    row("LoRA parameters P_l", f"{Pl / 1e6:.1f} M", "L x 16 x sum(in + out) over 7 projections")
    for optim, per in (("adamw_torch", 16), ("paged_adamw_8bit", 10)):
        row(f"LoRA state, {optim}", f"{per * Pl / GB:.2f} GB",
            f"{per} B x P_l: fp32 w + g{', 2 x fp32 Adam' if per == 16 else ', 2 x 8-bit Adam'}")
    a_l = m.act_bytes_per_token_layer(7)
    logits = 12 * m.vocab                      # fp32 logits, log-softmax and grad
    ckpt_l = 4 * m.hidden                      # fp32 residual stream (fp32 embeddings)
    dequant = 2 * m.hidden * m.inter           # one dequantised bf16 weight at a time
    ctx = 0.8 * GB
    for T in (a.caller_tokens, 1024, 2048):
        act = (m.layers * ckpt_l + a_l + logits) * T
        tot8 = base + 10 * Pl + act + dequant + ctx
        tot = base + 16 * Pl + act + dequant + ctx
        row(f"card at T={T}: activations / total", f"{act / GB:.1f} / {tot8 / GB:.1f} GB",
            f"T(L 4h + a + 12V) + base + 10 P_l + dequant + ctx (adamw_torch: {tot / GB:.1f})")
    rows = a.caller_rows * a.epochs
    t_row = 6 * P * a.caller_tokens / (BF16_TFLOPS * 1e12 * a.mfu_q)
    allreduce = 2 * 4 * Pl * (n - 1) / n
    link = a.link_gbs if a.link_gbs else a.lanes * PCIE4_LANE_GBS * a.link_eff
    steps = math.ceil(rows / (n * 4))
    row("compute per row", f"{t_row:.1f} s", f"6 P T / ({BF16_TFLOPS:.0f} TFLOP/s x {a.mfu_q:.0%}), T={a.caller_tokens}")
    row("LoRA gradient all-reduce per step", f"{allreduce / GB:.2f} GB = {allreduce / (link * GB):.2f} s",
        f"2 x 4 B x P_l (N-1)/N over {link:.1f} GB/s")
    row(f"{a.caller_rows} rows x {a.epochs:.0f} epochs on 1 card", f"{rows * t_row / 60:.0f} min", "rows x t_row")
    row(f"... on {n} cards (DDP / ZeRO-2)", f"{(math.ceil(rows / n) * t_row + steps * allreduce / (link * GB)) / 60:.1f} min",
        "ceil(rows / N) x t_row + steps x all-reduce; seed: 2 min")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", type=int, default=6, help="cards (data-parallel ranks)")
    p.add_argument("--lanes", type=int, default=4, help="PCIe 4.0 lanes of the slowest card")
    p.add_argument("--link-eff", type=float, default=0.84, help="achieved fraction of a link's raw rate")
    p.add_argument("--link-gbs", type=float, default=0.0, help="measured GB/s of the slowest link (overrides lanes)")
    p.add_argument("--mfu", type=float, default=0.40, help="model FLOP utilisation, bf16 LoRA")
    p.add_argument("--mfu-q", type=float, default=0.25, help="model FLOP utilisation, 4-bit QLoRA")
    p.add_argument("--r", type=int, default=8, help="LoRA rank of the planner (train/configs/planner_lora.yaml)")
    p.add_argument("--rows", type=int, default=2000, help="planner training rows")
    p.add_argument("--row-tokens", type=int, default=330, help="tokens of a planner row")
    p.add_argument("--batch", type=int, default=4, help="rows packed per micro-batch (planner_lora_70b.yaml)")
    p.add_argument("--accum", type=int, default=4, help="gradient accumulation of the seed's recipe")
    p.add_argument("--epochs", type=float, default=4.0)
    p.add_argument("--shards", type=int, default=15, help="checkpoint shards of the 70B model")
    p.add_argument("--proc-gb", type=float, default=3.0, help="host memory of one training process")
    p.add_argument("--caller-rows", type=int, default=55, help="caller training rows (the seed's: 55)")
    p.add_argument("--caller-tokens", type=int, default=500, help="tokens of a caller row")
    a = p.parse_args()
    planner(a)
    caller(a)


if __name__ == "__main__":
    main()
