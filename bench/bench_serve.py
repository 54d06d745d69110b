"""Serving throughput and overhead, side by side in one run.

    python bench/bench_serve.py [--hidden 256 --layers 4 --tokens 64 --requests 8]

Builds a random Llama (hidden 256, 4 layers by default), starts ``python -m serve`` on it in a
subprocess on 127.0.0.1, and prints:

- aggregate completion tokens/s with 1, 4 and 8 concurrent clients (each client sends
  ``--requests`` completions of ``--tokens`` tokens, greedy, ``ignore_eos``);
- the server's own overhead per request: the median latency of a 1-token completion over HTTP
  minus the median latency of the same request straight into the same backend in-process;
- single-client decode rate three ways, side by side: the continuous-batching manager alone
  (``add_request`` / ``get_result``, no streaming), our backend in-process (``backend.stream``),
  and over HTTP (one client) -- the HTTP / manager ratio is the cost of everything we add;
- constrained tool-call decoding: ms per token of ``tool_choice="required"`` replies against the
  same number of unconstrained tokens.

The machine may be shared (a training job): run it nice'd; the figures of one run are comparable
with each other, not with another day's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _client(http: httpx.AsyncClient, url: str, n: int, tokens: int) -> int:
    made = 0
    for i in range(n):
        r = await http.post(url, json={"model": "bench", "prompt": f"Request {i}: the planner writes",
                                       "max_tokens": tokens, "temperature": 0, "ignore_eos": True})
        r.raise_for_status()
        made += r.json()["usage"]["completion_tokens"]
    return made


async def throughput(base: str, clients: int, requests: int, tokens: int) -> float:
    async with httpx.AsyncClient(timeout=600) as http:
        await _client(http, base + "/completions", 1, tokens)  # warm-up
        start = time.perf_counter()
        made = await asyncio.gather(*(_client(http, base + "/completions", requests, tokens)
                                      for _ in range(clients)))
        return sum(made) / (time.perf_counter() - start)


async def http_latency(base: str, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=60) as http:
        for i in range(n + 3):
            start = time.perf_counter()
            r = await http.post(base + "/completions", json={"model": "bench", "prompt": "Paris is",
                                                             "max_tokens": 1, "temperature": 0})
            r.raise_for_status()
            if i >= 3:
                out.append(time.perf_counter() - start)
    return out


TOOL = {"type": "function", "function": {"name": "search_wiki", "description": "Search Wikipedia.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                       "required": ["query", "limit"]}}}


async def http_decode(base: str, tokens: int, n: int) -> float:
    """Completion tokens/s of one client, ``n`` requests of ``tokens`` tokens."""
    async with httpx.AsyncClient(timeout=600) as http:
        made, start = 0, time.perf_counter()
        for i in range(n + 1):
            if i == 1:  # the first is a warm-up
                made, start = 0, time.perf_counter()
            r = await http.post(base + "/completions", json={"model": "bench", "prompt": f"Request {i}: the planner",
                                                             "max_tokens": tokens, "temperature": 0,
                                                             "ignore_eos": True})
            r.raise_for_status()
            made += r.json()["usage"]["completion_tokens"]
        return made / (time.perf_counter() - start)


async def tool_call_overhead(base: str, n: int) -> tuple[float, float, int]:
    """(ms/token constrained, ms/token free, tokens per call): tool_choice=required replies, then
    unconstrained replies of the same length."""
    async with httpx.AsyncClient(timeout=600) as http:
        async def timed(body):
            start = time.perf_counter()
            r = await http.post(base + "/chat/completions", json=body)
            r.raise_for_status()
            return time.perf_counter() - start, r.json()["usage"]["completion_tokens"]

        base_body = {"model": "bench", "messages": [{"role": "user", "content": "Plan: search\n#E1 = search_wiki[x]"}],
                     "temperature": 0, "max_tokens": 256}
        await timed({**base_body, "tools": [TOOL], "tool_choice": "required"})  # warm-up (grammar compile)
        c_time, c_tokens = 0.0, 0
        for _ in range(n):
            t, k = await timed({**base_body, "tools": [TOOL], "tool_choice": "required"})
            c_time, c_tokens = c_time + t, c_tokens + k
        per_call = max(1, c_tokens // n)
        f_time, f_tokens = 0.0, 0
        for _ in range(n):
            t, k = await timed({**base_body, "max_tokens": per_call, "ignore_eos": True})
            f_time, f_tokens = f_time + t, f_tokens + k
        return c_time / c_tokens * 1e3, f_time / f_tokens * 1e3, per_call


class InProcess:
    """The same model in this process, two ways: transformers' continuous-batching manager alone
    (``add_request`` / ``get_result``, no streaming) and our backend (``backend.stream``)."""

    def __init__(self, model_dir: str):
        import math

        from transformers import ContinuousBatchingConfig, GenerationConfig

        from serve.backends.hf import TransformersBackend, load_model

        model, self.tokenizer = load_model(model_dir)
        cfg = GenerationConfig(do_sample=False, max_new_tokens=16, eos_token_id=None,
                               pad_token_id=self.tokenizer.pad_token_id or 0)
        self.mgr = model.init_continuous_batching(generation_config=cfg, continuous_batching_config=(
            ContinuousBatchingConfig(num_blocks=math.ceil(8192 / 64), page_size=64, max_batch_tokens=512,
                                     max_requests_per_batch=16)))
        self.mgr.start()
        model2, tok2 = load_model(model_dir)
        self.backend = TransformersBackend(model2, tok2, "bench", cache_tokens=8192)

    def manager_rate(self, tokens: int, n: int) -> float:
        made, start = 0, time.perf_counter()
        for i in range(n):
            rid = self.mgr.add_request(self.tokenizer(f"Request {i}: the planner").input_ids, max_new_tokens=tokens)
            made += len(self.mgr.get_result(request_id=rid, timeout=600).generated_tokens)
        return made / (time.perf_counter() - start)

    async def backend_rate(self, tokens: int, n: int) -> float:
        from serve.backends.base import GenerationRequest, Sampling
        made, start = 0, time.perf_counter()
        for i in range(n):
            ids = self.tokenizer(f"Request {i}: the planner").input_ids
            request = GenerationRequest(list(ids), Sampling(max_tokens=tokens, temperature=0, ignore_eos=True))
            async for chunk in self.backend.stream(request):
                if chunk.finish_reason:
                    made += chunk.completion_tokens
        return made / (time.perf_counter() - start)

    async def backend_latency(self, n: int) -> list[float]:
        from serve.backends.base import GenerationRequest, Sampling
        ids, out = self.tokenizer("Paris is").input_ids, []
        for _ in range(n):
            start = time.perf_counter()
            async for _ in self.backend.stream(GenerationRequest(list(ids), Sampling(max_tokens=1, temperature=0))):
                pass
            out.append(time.perf_counter() - start)
        return out

    def close(self) -> None:
        self.mgr.stop(block=True)


async def decode_rounds(base: str, model_dir: str, tokens: int, n: int, rounds: int) -> dict[str, float]:
    """Median single-client tokens/s of the manager, our backend and HTTP, measured in turns so
    that a busy machine slows all three alike."""
    inproc = InProcess(model_dir)
    await inproc.backend.start()
    rates: dict[str, list[float]] = {"manager": [], "backend": [], "http": [], "http_1": [], "backend_1": []}
    try:
        inproc.manager_rate(tokens, 1)
        await inproc.backend_rate(tokens, 1)
        await http_decode(base, tokens, 1)
        for _ in range(rounds):
            rates["manager"].append(await asyncio.to_thread(inproc.manager_rate, tokens, n))
            rates["backend"].append(await inproc.backend_rate(tokens, n))
            rates["http"].append(await http_decode(base, tokens, n))
            rates["http_1"] += await http_latency(base, 6)
            rates["backend_1"] += await inproc.backend_latency(6)
    finally:
        await inproc.backend.stop()
        inproc.close()
    return {k: statistics.median(v) for k, v in rates.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=4, help="requests per client")
    a = p.parse_args()

    import torch
    torch.set_num_threads(1)  # steady timings on small machines (FACTS.md)
    from train.tiny import save_tiny

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny(Path(tmp) / "model", hidden_size=a.hidden, num_layers=a.layers,
                              num_heads=max(4, a.hidden // 64))
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "serve", "--model", str(model_dir), "--served-model-name", "bench",
             "--port", str(port), "--threads", "1", "--cache-tokens", "8192", "--log-level", "warning"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        base = f"http://127.0.0.1:{port}/v1"
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None:
                    raise SystemExit("the server exited during startup")
                time.sleep(0.1)
            print(f"model: random Llama hidden {a.hidden}, {a.layers} layers; {a.tokens} tokens per request, "
                  f"greedy; CPU threads 1")
            rates = {}
            for clients in (1, 4, 8):
                rates[clients] = asyncio.run(throughput(base, clients, a.requests, a.tokens))
                print(f"{clients} client(s): {rates[clients]:8.1f} completion tok/s aggregate "
                      f"({rates[clients] / rates[1]:.2f}x one client)")
            decode = asyncio.run(decode_rounds(base, str(model_dir), a.tokens, a.requests, 5))
            c_ms, f_ms, per_call = asyncio.run(tool_call_overhead(base, 5))
        finally:
            server.terminate()
            server.wait(timeout=30)
        h, d = decode["http_1"], decode["backend_1"]
        print(f"1-token request: {h * 1e3:.2f} ms over HTTP, {d * 1e3:.2f} ms straight into the same kind of "
              "backend in-process (medians of 30, interleaved)")
        print(f"server overhead per request: {(h - d) * 1e3:.2f} ms (goal < 3 ms)")
        print(f"8 clients / 1 client: {rates[8] / rates[1]:.2f}x (goal >= 4x)")
        raw, ours, http_rate = decode["manager"], decode["backend"], decode["http"]
        print(f"single-client decode (medians of 5 interleaved rounds): manager alone {raw:.1f} tok/s, our backend "
              f"in-process {ours:.1f} tok/s, over HTTP {http_rate:.1f} tok/s = {http_rate / raw:.0%} of the manager "
              "(goal >= 80%)")
        print(f"tool call (tool_choice=required, ~{per_call} tokens): {c_ms:.2f} ms/token constrained vs "
              f"{f_ms:.2f} unconstrained = {c_ms - f_ms:+.2f} ms/token for the grammar")


if __name__ == "__main__":
    main()
