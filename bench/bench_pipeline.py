"""Pipeline runtime figures: parallel evidence, orchestration overhead, constrained plan validity.

    python bench/bench_pipeline.py            # all three, ~1-2 minutes on 2 cores
    python bench/bench_pipeline.py --quick    # fewer repetitions
    python bench/bench_pipeline.py --only streamed

1. Parallel evidence: a plan of k=4 independent tool steps, each an HTTP GET to a loopback
   server that answers after 250 ms (real I/O waits), run by the workers in parallel and with
   max_parallel=1 (sequential), side by side in one process. Goal: >= 3.5x.
2. Orchestration overhead per step: distribute + run_steps on plans of no-op tools (model and
   tool time excluded by construction), per step. Goal: < 1 ms.
3. Plan validity of a randomly initialised tiny Llama, with and without the plan grammar:
   greedy and sampled runs; valid = parses with the toolbox's tools and ends with EOS.
4. Streamed dispatch: the planner is an OpenAIEngine over real loopback HTTP, talking to a small
   scripted OpenAI-compatible server (``ScriptedOpenAI``: it writes a fixed plan at ~30 tokens/s,
   4 characters a token, as server-sent events, or whole after the same time); four independent
   1 s tools and a join; time to the first tool start and end-to-end wall, streamed vs not (goal
   >= 1.5x); PlanStream's parse cost per step (goal < 0.1 ms); replanning on a scripted failure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DELAY_S = 0.25


class SlowHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(DELAY_S)
        body = f"page for {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class FetchTool:
    name, description, output_type = "fetch", "GET a page from the local server", "string"
    inputs = {"query": {"type": "string", "description": "path"}}

    def __init__(self, base):
        import httpx
        self.client = httpx.Client(base_url=base, timeout=10)

    def __call__(self, query):
        return self.client.get("/" + query).text


class NoopTool:
    name, description, output_type = "noop", "returns its input", "string"
    inputs = {"query": {"type": "string", "description": "anything"}}

    def __call__(self, query):
        return query


def bench_parallel(reps: int) -> None:
    from pipeline.distributor import distribute
    from pipeline.plan import parse_plan
    from pipeline.worker import run_steps

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    box = {"fetch": FetchTool(f"http://127.0.0.1:{server.server_address[1]}")}
    plan = parse_plan("\n".join(f"Plan: page {i}\n#E{i} = fetch[p{i}]" for i in range(1, 5)))
    calls = distribute(plan, box)
    par, seq = [], []
    for _ in range(reps):
        for out, width in ((par, 8), (seq, 1)):
            t = time.perf_counter()
            ev = run_steps(plan, calls, box, max_parallel=width)
            out.append(time.perf_counter() - t)
            assert all(e.ok for e in ev.values())
    server.shutdown()
    p, s = statistics.median(par), statistics.median(seq)
    print(f"parallel evidence, k=4 steps x {DELAY_S * 1000:.0f} ms loopback HTTP: parallel {p * 1000:.0f} ms, "
          f"sequential {s * 1000:.0f} ms, speed-up {s / p:.2f}x (goal >= 3.5x; median of {reps})")


def bench_overhead(reps: int) -> None:
    from pipeline.distributor import distribute
    from pipeline.plan import parse_plan
    from pipeline.worker import run_steps

    box = {"noop": NoopTool()}
    for shape, text in [
        ("independent", "\n".join(f"Plan: s{i}\n#E{i} = noop[x{i}]" for i in range(1, 51))),
        ("chain", "Plan: s1\n#E1 = noop[x]\n" + "\n".join(f"Plan: s{i}\n#E{i} = noop[#E{i - 1}]" for i in range(2, 51))),
    ]:
        plan = parse_plan(text)
        per_step = []
        for _ in range(reps):
            t = time.perf_counter()
            calls = distribute(plan, box)
            ev = run_steps(plan, calls, box)
            elapsed = time.perf_counter() - t
            tool_time = sum(e.seconds for e in ev.values())
            per_step.append((elapsed - tool_time) / len(plan))
        print(f"orchestration overhead per step ({shape}, 50 steps, parse excluded): "
              f"{statistics.median(per_step) * 1e3:.3f} ms (goal < 1 ms; median of {reps})")
    t = time.perf_counter()
    for _ in range(reps):
        parse_plan(text)
    print(f"parse_plan of a 50-step plan: {(time.perf_counter() - t) / reps * 1e3:.3f} ms")


def bench_validity(runs: int) -> None:
    import torch
    from pipeline import formats
    from pipeline.formats import constrain
    from pipeline.plan import PlanError
    from train.tiny import build_llama, build_tokenizer

    torch.set_num_threads(1)
    tok = build_tokenizer()
    model = build_llama(tok, seed=3).eval()
    tools = ["search_wiki", "llm", "calculator", "save_file", "get_current_time"]
    specs = [{"name": t, "description": f"the {t} tool", "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}}}} for t in tools]
    prompt = formats.planner_prompt("What movies did the director of 'Killers of the Flower Moon' direct?", specs)
    ids = tok(prompt, return_tensors="pt")
    max_new = 256
    for constrained in (False, True):
        valid, ms_per_token = 0, []
        for i in range(runs):
            sample = i >= runs // 2
            torch.manual_seed(i)
            kw = dict(max_new_tokens=max_new, do_sample=sample, top_k=0, pad_token_id=tok.pad_token_id)
            if constrained:
                kw["logits_processor"] = [constrain.logits_processor(tok, model.config.vocab_size,
                                                                     grammar=constrain.plan_grammar(tools, max_new))]
            t = time.perf_counter()
            out = model.generate(**ids, **kw)[0, ids["input_ids"].shape[1]:].tolist()
            ms_per_token.append((time.perf_counter() - t) / len(out) * 1e3)
            ended = tok.eos_token_id in out
            try:
                formats.parse_planner_output(tok.decode(out, skip_special_tokens=True), specs)
                valid += ended
            except PlanError:
                pass
        label = "constrained  " if constrained else "unconstrained"
        print(f"tiny random model, {label}: {valid}/{runs} valid plans ending in EOS "
              f"({runs // 2} greedy + {runs - runs // 2} sampled, {max_new} new tokens max), "
              f"{statistics.median(ms_per_token):.2f} ms/token")


class ScriptedOpenAI(BaseHTTPRequestHandler):
    """A loopback OpenAI-compatible server that answers each ``POST /v1/completions`` with the
    next scripted output, written at ``TOKENS_PER_S`` tokens of 4 characters: streamed as
    server-sent events (``"stream": true``, with a usage event), or whole after the same time."""

    protocol_version = "HTTP/1.0"  # the connection's end ends the body: no length to announce
    outputs: list[str] = []
    TOKENS_PER_S = 30.0

    def do_GET(self):
        self._json({"object": "list", "data": [{"id": "scripted", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = self.outputs.pop(0)
        pieces = [text[i:i + 4] for i in range(0, len(text), 4)]
        usage = {"prompt_tokens": len(body["prompt"]) // 4, "completion_tokens": len(pieces),
                 "total_tokens": len(body["prompt"]) // 4 + len(pieces)}
        if not body.get("stream"):
            time.sleep(len(pieces) / self.TOKENS_PER_S)
            return self._json({"choices": [{"index": 0, "text": text, "finish_reason": "stop"}], "usage": usage})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for i, piece in enumerate(pieces):
            time.sleep(1 / self.TOKENS_PER_S)
            last = i == len(pieces) - 1
            self._event({"choices": [{"index": 0, "text": piece, "finish_reason": "stop" if last else None}]})
        self._event({"choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, obj):
        self.wfile.write(f"data: {json.dumps(obj)}\n\n".encode())
        self.wfile.flush()

    def _json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def _scripted_planner(outputs: list[str]):
    """An OpenAIEngine over a fresh :class:`ScriptedOpenAI` server (and the server, to shut down)."""
    from pipeline.engines import OpenAIEngine

    handler = type("Script", (ScriptedOpenAI,), {"outputs": list(outputs)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return OpenAIEngine(f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="none"), server


class SleepTool:
    name, description, output_type = "slow", "answers after a second", "string"
    inputs = {"query": {"type": "string", "description": "anything"}}

    def __init__(self, seconds=1.0, fail=()):
        self.seconds, self.fail = seconds, set(fail)

    def __call__(self, query):
        time.sleep(self.seconds)
        if query in self.fail:
            raise ConnectionError(f"{query}: backend down")
        return f"result for {query}"


def bench_streamed(reps: int) -> None:
    from pipeline.engines import recording
    from pipeline.plan import PlanStream
    from pipeline.rewoo import Pipeline

    plan = "\n".join(f"Plan: look up topic {q} in the archive\n#E{i} = slow[topic {q}]" for i, q in enumerate("abcd", 1))
    plan += "\nPlan: combine the four findings\n#E5 = slow[#E1 #E2 #E3 #E4]"
    rows = {}
    for streamed in (True, False):
        walls, firsts = [], []
        for _ in range(reps):
            first = {}

            def on_event(kind, payload, first=first):
                if kind == "start" and "t" not in first:
                    first["t"] = time.perf_counter()

            engine, server = _scripted_planner([plan, "done"])
            pipe = Pipeline(engine, toolbox={"slow": SleepTool()}, replan=0, stream=streamed)
            t = time.perf_counter()
            pipe.run("Combine four topics.", on_event=on_event)
            server.shutdown()
            walls.append(time.perf_counter() - t)
            firsts.append(first["t"] - t)
        rows[streamed] = (statistics.median(firsts), statistics.median(walls))
    (f1, w1), (f0, w0) = rows[True], rows[False]
    plan_s = len(plan) / 4 / 30
    print(f"streamed dispatch, planner over HTTP (OpenAIEngine, SSE) at 30 tokens/s ({plan_s:.1f} s of plan), "
          f"4 x 1 s tools + a join: first tool "
          f"starts after {f1:.2f} s streamed vs {f0:.2f} s; end to end {w1:.2f} s vs {w0:.2f} s, "
          f"{w0 / w1:.2f}x (goal >= 1.5x; median of {reps})")
    t, n = time.perf_counter(), 0
    for _ in range(200):
        ps = PlanStream(["slow"])
        for i in range(0, len(plan), 4):
            n += len(ps.feed(plan[i:i + 4]))
        n += len(ps.close()) - len(ps.steps)
    print(f"PlanStream: {(time.perf_counter() - t) / n * 1e3:.3f} ms per step, fed 4 characters at a time "
          "(goal < 0.1 ms)")
    round1 = "Plan: ask the primary source\n#E1 = slow[primary]\nPlan: ask the archive\n#E2 = slow[archive]"
    round2 = "Plan: ask the mirror instead\n#E3 = slow[mirror]"
    engine, server = _scripted_planner([round1, round2, "done"])
    with recording() as calls:
        r = Pipeline(engine, toolbox={"slow": SleepTool(0.1, ["primary"])}, replan=1).run("Find it.")
    server.shutdown()
    planner_tokens = sum((c["prompt_tokens"] or 0) + (c["completion_tokens"] or 0) for c in calls if c["role"] == "planner")
    print(f"replanning on a scripted failure: {r.stats['rounds']} rounds, steps {', '.join(r.plan.vars)} "
          f"({', '.join(e.status for e in r.evidence.values())}), planner tokens {planner_tokens}, "
          f"{r.stats['wall_s']:.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", choices=["parallel", "overhead", "validity", "streamed"])
    a = p.parse_args()
    if a.only:
        {"parallel": lambda: bench_parallel(3 if a.quick else 7), "overhead": lambda: bench_overhead(5 if a.quick else 20),
         "validity": lambda: bench_validity(6 if a.quick else 20), "streamed": lambda: bench_streamed(3)}[a.only]()
        return
    bench_streamed(3)
    bench_parallel(3 if a.quick else 7)
    bench_overhead(5 if a.quick else 20)
    bench_validity(6 if a.quick else 20)


if __name__ == "__main__":
    main()
