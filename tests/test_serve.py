"""The OpenAI-compatible server against a real uvicorn on 127.0.0.1 with the tiny random Llama.

    python -m pytest -q tests/test_serve.py
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import openai
import pytest
import torch

from pipeline import formats
from serve.backends.hf import TransformersBackend, load_model
from serve.config import ServeConfig
from serve.local import LocalServer

MODEL = "tiny"
CONTEXT = 2048
KEY = "sk-test-key"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def _backend(loaded, **kw):
    model, tokenizer = loaded
    return TransformersBackend(model, tokenizer, MODEL, context_length=CONTEXT, cache_tokens=8192, **kw)


@pytest.fixture(scope="module")
def server(loaded, tiny_model_dir):
    config = ServeConfig(model=str(tiny_model_dir), context_length=CONTEXT, max_tokens_limit=4096,
                         max_request_bytes=64 * 1024)
    with LocalServer(_backend(loaded), config) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)


def _greedy_reference(loaded, prompt_ids, n):
    model, tokenizer = loaded
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)[0, len(prompt_ids):].tolist()
    return out


# ------------------------------------------------------------------ the openai client

def test_models_lists_the_served_model(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == [MODEL]


def test_completion_matches_plain_generate_and_counts_tokens(client, loaded):
    tokenizer = loaded[1]
    prompt = "Plan: find the director"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0)
    ids = tokenizer(prompt).input_ids
    ref = _greedy_reference(loaded, ids, 12)
    assert r.choices[0].text == tokenizer.decode(ref, skip_special_tokens=True)
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(ref)
    assert r.usage.total_tokens == len(ids) + len(ref)
    assert r.choices[0].finish_reason in ("length", "stop")


def test_max_completion_tokens_limits_the_output_and_wins_over_max_tokens(server):
    """``max_completion_tokens`` (OpenAI's newer name) is honoured, and over ``max_tokens`` when
    both are given (greedy on the tiny random model runs to the limit)."""
    for body, want in (({"max_completion_tokens": 3}, 3), ({"max_completion_tokens": 2, "max_tokens": 9}, 2)):
        r = _post(server, "/chat/completions",
                  json_body={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 0, **body})
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["usage"]["completion_tokens"], out["choices"][0]["finish_reason"]) == (want, "length")


def test_chat_without_template_uses_the_alpaca_format(client, loaded):
    tokenizer = loaded[1]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who directed Oppenheimer?"}]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    prompt_ids = tokenizer(formats.messages_to_alpaca(messages)).input_ids
    assert r.usage.prompt_tokens == len(prompt_ids)
    ref_text = tokenizer.decode(_greedy_reference(loaded, prompt_ids, 10), skip_special_tokens=True)
    # the Alpaca stop strings apply: the answer is the reference cut before any of them
    for stop in formats.ALPACA_STOP:
        ref_text = ref_text.split(stop)[0]
    assert r.choices[0].message.content == ref_text
    assert r.choices[0].message.role == "assistant"


def test_streaming_chunks_add_up_to_the_plain_answer(client):
    kw = dict(model=MODEL, prompt="#E1 = search_wiki[", max_tokens=20, temperature=0)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_chat_streaming_ends_with_done(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True,
            "temperature": 0}
    with httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[len("data: "):]) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_stop_sequence_cuts_the_output(client):
    kw = dict(model=MODEL, prompt="Paris is the capital of", temperature=0, extra_body={"ignore_eos": True})
    free = client.completions.create(max_tokens=30, **kw).choices[0].text
    assert len(free) > 6
    stop = free[4:7]  # a piece from the middle; the output must end right before its first occurrence
    expected = free[: free.find(stop)]
    cut = client.completions.create(max_tokens=30, stop=[stop], **kw)
    assert cut.choices[0].text == expected
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(max_tokens=30, stop=stop, stream=True, **kw))
    assert streamed == expected


def test_seeded_sampling_repeats_whatever_shares_the_batch(client):
    kw = dict(model=MODEL, prompt="The quick brown fox", max_tokens=16, temperature=1.0,
              extra_body={"ignore_eos": True})
    alone = client.completions.create(seed=7, **kw).choices[0].text
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client.completions.create, seed=s, **kw) for s in (7, 8, 9, 7)]
        texts = [f.result().choices[0].text for f in futures]
    assert texts[0] == alone and texts[3] == alone
    assert len({alone, texts[1], texts[2]}) > 1  # different seeds draw differently


def test_concurrent_requests_give_each_its_own_answer(client, loaded):
    tokenizer = loaded[1]
    prompts = [f"Task {i}: find the film number {i}" for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: client.completions.create(model=MODEL, prompt=p, max_tokens=10,
                                                                     temperature=0), prompts))
    for p, r in zip(prompts, results):
        ref = _greedy_reference(loaded, tokenizer(p).input_ids, 10)
        assert r.choices[0].text == tokenizer.decode(ref, skip_special_tokens=True)


def test_several_prompts_in_one_request_come_back_in_order(client):
    prompts = ["Paris is", "Water boils at"]
    batch = client.completions.create(model=MODEL, prompt=prompts, max_tokens=6, temperature=0)
    singles = [client.completions.create(model=MODEL, prompt=p, max_tokens=6, temperature=0).choices[0].text
               for p in prompts]
    assert [c.index for c in batch.choices] == [0, 1]
    assert [c.text for c in batch.choices] == singles


# ------------------------------------------------------------------ concurrency and disconnects

@pytest.fixture(scope="module")
def slow_server(tiny_model_dir):
    """A server whose model takes >= 5 ms a step, so a 2000-token stream is still running while
    the test acts (the tiny model alone finishes 2000 tokens in about a second)."""
    model, tokenizer = load_model(str(tiny_model_dir))
    model.register_forward_pre_hook(lambda *_: time.sleep(0.005))
    config = ServeConfig(model=str(tiny_model_dir), context_length=CONTEXT, max_tokens_limit=4096)
    with LocalServer(TransformersBackend(model, tokenizer, MODEL, context_length=CONTEXT, cache_tokens=8192),
                     config) as s:
        yield s


def _stream_first_chunks(server, n_chunks, max_tokens):
    body = {"model": MODEL, "prompt": "The planner writes", "max_tokens": max_tokens, "stream": True,
            "temperature": 0, "ignore_eos": True}
    r = httpx.stream("POST", server.base_url + "/completions", json=body, timeout=60)
    response = r.__enter__()
    lines = response.iter_lines()  # keep it referenced: closing it early closes the connection
    got = []
    for line in lines:
        if line:
            got.append(line)
        if len(got) >= n_chunks:
            break
    return r, lines, got


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_event_loop_answers_while_a_generation_runs(slow_server):
    r, _lines, got = _stream_first_chunks(slow_server, 2, 2000)
    try:
        health = httpx.get(slow_server.url + "/health", timeout=30).json()
        assert health["stats"]["running"] >= 1, (got, health)  # answered while the stream is still generating
    finally:
        r.__exit__(None, None, None)


def test_client_disconnect_stops_its_generation(slow_server):
    stats = slow_server.backend.stats
    before = stats.cancelled
    r, lines, got = _stream_first_chunks(slow_server, 3, 2000)
    assert len(got) == 3
    lines.close()
    r.__exit__(None, None, None)  # the client goes away mid-stream
    assert _wait_for(lambda: stats.cancelled > before), "the generation was not cancelled"
    assert stats.last_cancelled_tokens[-1] < 2000
    assert _wait_for(lambda: stats.running == 0)


# ------------------------------------------------------------------ bad input: 4xx with OpenAI's error body

def _post(server, path, content=None, json_body=None, headers=None):
    return httpx.post(server.base_url + path, content=content, json=json_body, headers=headers, timeout=60)


def _error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("body, param", [
    ({"prompt": "hi"}, "model"),
    ({"model": MODEL}, "prompt"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": -1}, "max_tokens"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": "many"}, "max_tokens"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": 100000}, "max_tokens"),
    ({"model": MODEL, "prompt": "hi", "max_tokens": 2047}, "max_tokens"),  # prompt + 2047 > context 2048
    ({"model": MODEL, "prompt": "hi", "temperature": 3}, "temperature"),
    ({"model": MODEL, "prompt": "hi", "top_p": 0}, "top_p"),
    ({"model": MODEL, "prompt": "hi", "n": 2}, "n"),
    ({"model": MODEL, "prompt": "hi", "logprobs": 2}, "logprobs"),
    ({"model": MODEL, "prompt": "hi", "stop": ["x"] * 17}, "stop"),
    ({"model": MODEL, "prompt": [999999]}, "prompt"),
    ({"model": MODEL, "prompt": []}, "prompt"),
    ({"model": MODEL, "prompt": 5}, "prompt"),
    ({"model": MODEL, "prompt": "hi", "guided_regex": "a+", "guided_choice": ["a"]}, "guided_choice"),
    ({"model": MODEL, "prompt": "hi", "echo": True}, "echo"),
])
def test_bad_completion_requests_get_400(server, body, param):
    err = _error(_post(server, "/completions", json_body=body), 400)
    assert param in (err["param"] or "") or param in err["message"]


def test_prompt_longer_than_the_context_is_refused(server):
    err = _error(_post(server, "/completions", json_body={"model": MODEL, "prompt": "word " * 2100}), 400)
    assert err["code"] == "context_length_exceeded"
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "word " * 2100}]}
    assert _error(_post(server, "/chat/completions", json_body=chat), 400)["code"] == "context_length_exceeded"


def test_malformed_json_and_wrong_shapes_get_400(server):
    _error(_post(server, "/chat/completions", content=b'{"model": "tiny", "messages": [', headers={
        "content-type": "application/json"}), 400)
    _error(_post(server, "/chat/completions", content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    _error(_post(server, "/chat/completions", json_body={"model": MODEL, "messages": []}), 400)
    _error(_post(server, "/chat/completions", json_body={"model": MODEL, "messages": [{"role": "robot",
                                                                                         "content": "x"}]}), 400)
    _error(_post(server, "/chat/completions", json_body={"model": MODEL, "messages": "hello"}), 400)


def test_unknown_model_and_path_get_404(server):
    err = _error(_post(server, "/completions", json_body={"model": "gpt-9", "prompt": "hi"}), 404)
    assert err["code"] == "model_not_found"
    _error(httpx.get(server.base_url + "/nothing-here", timeout=30), 404)


def test_oversized_body_gets_413(server):
    big = {"model": MODEL, "prompt": "x" * (65 * 1024)}
    assert _error(_post(server, "/completions", json_body=big), 413)["code"] == "request_too_large"


def test_openapi_schema_describes_the_routes(server):
    schema = httpx.get(server.url + "/openapi.json", timeout=30).json()
    assert {"/v1/models", "/v1/completions", "/v1/chat/completions", "/health"} <= set(schema["paths"])


# ------------------------------------------------------------------ auth

@pytest.fixture(scope="module")
def keyed_server(loaded, tiny_model_dir):
    config = ServeConfig(model=str(tiny_model_dir), api_key=KEY, context_length=CONTEXT)
    with LocalServer(_backend(loaded), config) as s:
        yield s


def test_api_key_is_required_when_set(keyed_server):
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    url = keyed_server.base_url + "/completions"
    _error(httpx.post(url, json=body, timeout=30), 401)
    _error(httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=30), 401)
    _error(httpx.post(url, json=body, headers={"x-api-key": KEY + "x"}, timeout=30), 401)
    _error(httpx.get(keyed_server.base_url + "/models", timeout=30), 401)
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30).status_code == 200
    assert httpx.post(url, json=body, headers={"x-api-key": KEY}, timeout=30).status_code == 200
    assert httpx.get(keyed_server.url + "/health", timeout=30).status_code == 200
    client = openai.OpenAI(base_url=keyed_server.base_url, api_key=KEY, max_retries=0)
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens >= 1


def test_listening_beyond_loopback_needs_a_key(tiny_model_dir, capsys):
    with pytest.raises(ValueError, match="API key is required"):
        ServeConfig(model=str(tiny_model_dir), host="0.0.0.0")
    ServeConfig(model=str(tiny_model_dir), host="0.0.0.0", api_key=KEY)  # fine with a key
    ServeConfig(model=str(tiny_model_dir), host="::1")  # loopback needs none

    from serve.__main__ import main
    assert main(["--model", str(tiny_model_dir), "--host", "0.0.0.0"]) == 2
    assert "API key is required" in capsys.readouterr().err


def test_a_bad_tool_prior_is_refused_before_the_model_loads(tmp_path, capsys):
    for bad in ("-1", "nan", "101"):
        with pytest.raises(ValueError, match="--tool-prior must be 0 to 100 logits"):
            ServeConfig(model=str(tmp_path), tool_prior=float(bad))
    from serve.__main__ import main
    assert main(["--model", str(tmp_path / "absent"), "--tool-prior", "-1"]) == 2
    assert "--tool-prior must be 0 to 100 logits, not -1" in capsys.readouterr().err


def test_serving_the_default_models_passes_the_demos_tool_prior():
    from pipeline.cli import demo_serve_args
    from pipeline.defaults import default_models

    args = demo_serve_args()
    weight = default_models()["pipeline"]["tool_prior"]
    assert weight > 0 and args[args.index("--tool-prior") + 1] == str(weight)


# ------------------------------------------------------------------ pieces

class _CharTokenizer:
    """ids are code points: decode joins them (enough for TextStream)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(map(chr, ids))


def _naive_stop(prefixes, stops):
    """The reference: generation ends at the first prefix that contains a stop string, cut
    before the earliest one in it."""
    for p in prefixes:
        hits = [p.find(s) for s in stops if s in p]
        if hits:
            return p[: min(hits)]
    return prefixes[-1] if prefixes else ""


def test_text_stream_matches_the_naive_stop_rule_with_any_token_boundaries():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from serve.backends.base import TextStream

    @settings(max_examples=300, deadline=None)
    @given(text=st.text(alphabet="ab#\n", max_size=40),
           stops=st.lists(st.text(alphabet="ab#\n", min_size=1, max_size=4), max_size=3),
           cuts=st.lists(st.integers(1, 5), max_size=40))
    def check(text, stops, cuts):
        stream, out, prefixes, i = TextStream(_CharTokenizer(), stops), [], [], 0
        stopped = False
        for step in cuts + [len(text)]:
            i = min(i + step, len(text))
            prefixes.append(text[:i])
            delta, stopped = stream.push([ord(c) for c in text[:i]])
            out.append(delta)
            if stopped or i >= len(text):
                break
        if not stopped:
            out.append(stream.flush())
        assert "".join(out) == _naive_stop(prefixes, stops)

    check()


def test_row_control_is_greedy_at_tiny_temperatures_and_repeats_by_seed():
    from serve.backends.rows import RowControl

    scores = torch.tensor([0.0, 3.0, 1.0, -2.0])
    assert RowControl([1], 1e-300, 1.0, 0).pick(scores) == 1  # no overflow into NaN
    assert RowControl([1], 1.0, 1e-6, 0).pick(scores) == 1    # top_p keeps only the best token
    assert RowControl([1], 1.0, 5e-324, 0).pick(scores) == 1  # even below float32's smallest value
    a = [RowControl([1], 1.5, 0.9, 42).pick(scores) for _ in range(5)]
    b = [RowControl([1], 1.5, 0.9, 42).pick(scores) for _ in range(5)]
    assert a == b


def test_row_control_reads_numpy_and_torch_rows_alike_and_samples_only_inside_top_p():
    """The llama.cpp paths hand RowControl numpy logits, the transformers backend torch rows: the
    same picks for the same seed; top-p keeps the fewest best tokens that hold p of the mass, and
    a token the constraint forbids (-inf) is never drawn."""
    import numpy as np

    from pipeline.sampling import RowControl

    scores = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    for temperature, top_p in ((1.0, 1.0), (1.0, 0.7), (0.7, 0.9)):
        a = RowControl([1], temperature, top_p, 5)
        b = RowControl([1], temperature, top_p, 5)
        assert [a.pick(scores) for _ in range(30)] == [b.pick(torch.from_numpy(scores)) for _ in range(30)]
    drawn = {RowControl([1], 1.0, 0.7, seed).pick(scores) for seed in range(200)}
    assert drawn == {0, 1}  # 0.5 + 0.3 hold 0.7; token 2 would only be needed past 0.8
    assert {RowControl([1], 1.0, 1.0, seed).pick(scores) for seed in range(200)} == {0, 1, 2, 3}
    for seed in (-1, -2**63, 2**64 + 3):  # any int is a seed (the fuzz test sent -1: a 500)
        assert [RowControl([1], 1.0, 1.0, seed).pick(scores) for _ in range(3)] == \
            [RowControl([1], 1.0, 1.0, seed).pick(scores) for _ in range(3)]
    forbidden = scores.copy()
    forbidden[0] = -np.inf
    assert 0 not in {RowControl([1], 1.0, 1.0, seed).pick(forbidden) for seed in range(200)}


def test_page_size_reaches_the_kv_cache_under_either_transformers_name():
    """transformers renamed ContinuousBatchingConfig's ``block_size`` to ``page_size``; the GPU
    machine's 5.17 refused ``page_size=`` and the server exited at start-up (exit 3, 2026-12-04)."""
    import dataclasses

    from transformers import ContinuousBatchingConfig

    from serve.backends.hf import page_field

    @dataclasses.dataclass
    class Older:  # the 5.17 fields the backend fills
        block_size: int = 256
        num_blocks: int | None = None
        max_batch_tokens: int | None = None
        max_requests_per_batch: int | None = None

    assert page_field(Older) == "block_size"
    assert Older(**{page_field(Older): 64}).block_size == 64
    installed = page_field()  # this machine's transformers
    assert installed in {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    assert getattr(ContinuousBatchingConfig(**{installed: 32}), installed) == 32
