"""Fuzz the server with schemathesis from its own OpenAPI schema: no input may give a 5xx.

    python -m pytest -q tests/test_serve_fuzz.py

A real uvicorn on 127.0.0.1 with the tiny model; examples are bounded (``max_examples``) and
``max_tokens`` is capped by the server so that each generation stays short.

On the generation routes the examples come in equal shares: one left as schemathesis made it, and
one per request feature the server decodes differently (``stop``, ``response_format``,
``guided_regex`` / ``_json`` / ``_choice`` / ``_grammar``, ``rewoo_plan``, or none), steered towards
generation: the served model's name (from ``GET /v1/models``), a short ``max_tokens`` (room for a
grammar to close where there is one), and the feature's value drawn by hypothesis, valid or not. The test counts the examples that reached a 200 per feature, so a
fuzz run that stops at routing or validation fails, and a 500 anywhere on the way fails it too
(``bench/mutation_check.py`` injects one).
"""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis  # a dev dependency: a missing one is an error, not a skip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve.backends.hf import TransformersBackend, load_model
from serve.config import ServeConfig
from serve.constraints import build_processor
from serve.local import LocalServer

KEY = "fuzz-key"
GENERATION = ("/v1/completions", "/v1/chat/completions")
CONSTRAINTS = ("response_format", "guided_json", "guided_regex", "guided_grammar", "guided_choice",
               "structured_outputs", "rewoo_plan")

_short = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=6)
_schemas = st.sampled_from([
    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    {"type": "string", "maxLength": 5},
    {"type": "object", "properties": {"ok": {"type": "boolean"}}},
    {"type": "array", "items": {"type": "integer"}, "maxItems": 2},
])
# one request feature per example: hypothesis draws its value, valid or not
FEATURES = {
    "none": st.just({}),
    "stop": st.one_of(_short, st.lists(_short, min_size=0, max_size=4)).map(lambda s: {"stop": s}),
    "response_format": st.one_of(
        st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
        _schemas.map(lambda s: {"type": "json_schema", "json_schema": {"name": "out", "schema": s}}),
        st.just({"type": "json_schema"}),  # no schema given
    ).map(lambda f: {"response_format": f}),
    "guided_regex": st.one_of(st.sampled_from(["[a-z]{1,5}", r"\d{1,3}", "(yes|no)", "a+b?"]), _short)
                      .map(lambda r: {"guided_regex": r}),
    "guided_json": st.one_of(_schemas, _schemas.map(json.dumps), _short)
                     .map(lambda s: {"guided_json": s}),
    "guided_choice": st.lists(_short, min_size=0, max_size=3).map(lambda c: {"guided_choice": c}),
    "guided_grammar": st.one_of(st.sampled_from(['start: "yes" | "no"', 'start: /[0-9]{1,3}/']), _short)
                        .map(lambda g: {"guided_grammar": g}),
    "rewoo_plan": st.one_of(st.lists(st.sampled_from(["search_wiki", "calculator", "llm"]), min_size=1, max_size=3,
                                     unique=True),
                            st.lists(_short, max_size=3)).map(lambda t: {"rewoo_plan": {"tools": t}}),
}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    backend = TransformersBackend(model, tokenizer, "tiny", context_length=512, cache_tokens=4096,
                                  constraint_factory=build_processor)
    config = ServeConfig(model=str(tiny_model_dir), api_key=KEY, context_length=512, max_tokens_limit=64,
                         default_max_tokens=16, max_request_bytes=32 * 1024)
    with LocalServer(backend, config, startup_timeout=600) as s:  # a loaded 2-core machine can take minutes
        yield s


def _served_model(server) -> str:
    r = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    return r.json()["data"][0]["id"]


def _steer(body: dict, path: str, model: str, feature: str, data) -> None:
    """Point a generated body at generation: the served model, a short output, one feature."""
    body["model"] = model
    for key in ("logprobs", "n", "echo", "max_completion_tokens", "tools", "tool_choice", *CONSTRAINTS):
        body.pop(key, None)
    # a grammar (a JSON schema, a plan) needs room to close: the server refuses a budget too small for it
    roomy = feature in ("response_format", "guided_json", "rewoo_plan")
    body["max_tokens"] = data.draw(st.integers(56, 64) if roomy else st.integers(1, 8), label="max_tokens")
    if path == "/v1/chat/completions" and data.draw(st.booleans(), label="plain messages"):
        body["messages"] = [{"role": "user", "content": data.draw(_short, label="content")}]
    if path == "/v1/completions" and data.draw(st.integers(0, 3), label="plain prompt") > 0:
        body["prompt"] = data.draw(_short, label="prompt")
    body.pop("stop", None)
    body.update(data.draw(FEATURES[feature], label=feature))


def _fuzz(server, max_examples: int, check, headers=None, steer: bool = True):
    """Run ``check(case, response, feature)`` on about ``max_examples`` generated requests per
    operation: on the generation routes an equal share per feature, and one share left as
    schemathesis made it (``feature`` None)."""
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {*GENERATION, "/v1/models"}
    model = _served_model(server)
    for op in operations:
        generation = op.path in GENERATION
        features = [None, *sorted(FEATURES)] if steer and generation else [None]
        n = max(1, max_examples // len(features)) if generation else 3  # the others take no body worth fuzzing
        for feature in features:
            @settings(max_examples=n, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                      derandomize=True)
            @given(case=op.as_strategy(), data=st.data())
            def run(case, data):
                if feature is not None and isinstance(case.body, dict):
                    _steer(case.body, op.path, model, feature, data)
                response = case.call(base_url=server.url, headers=headers, timeout=60)
                check(case, response, feature if isinstance(case.body, dict) else None)

            run()


def test_no_input_gives_a_server_error_and_most_reach_generation(server):
    seen: list[int] = []
    ok: dict[str, int] = {}
    refused: dict[str, list[str]] = {}

    def check(case, response, feature):
        seen.append(response.status_code)
        if response.status_code >= 400 and feature:
            refused.setdefault(feature, []).append(response.text[:120])
        assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
        if response.status_code >= 400:
            assert "error" in response.json()
        elif case.path in GENERATION and feature is not None:
            ok[feature] = ok.get(feature, 0) + 1

    _fuzz(server, 60, check, headers={"Authorization": f"Bearer {KEY}"})
    assert 400 in seen and 404 in seen  # validation and the unknown-model path are fuzzed too
    # every feature reached generation more than once, and so did most of the steered examples
    assert set(ok) == set(FEATURES) and min(ok.values()) >= 3, (ok, refused)
    assert sum(ok.values()) >= 50, ok


def test_no_key_gives_401_everywhere_but_health_and_metrics(server):
    def check(case, response, feature):  # /metrics stays open, as vLLM's does: counters only, no content
        assert response.status_code == (200 if case.path in ("/health", "/metrics") else 401), case.path

    _fuzz(server, 5, check, steer=False)
