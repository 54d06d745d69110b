"""Fuzz the server with schemathesis from its own OpenAPI schema: no input may give a 5xx.

    python -m pytest -q tests/test_serve_fuzz.py

A real uvicorn on 127.0.0.1 with the tiny model; examples are bounded (``max_examples``) and
``max_tokens`` is capped by the server so that each generation stays short.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from serve.backends.hf import TransformersBackend, load_model  # noqa: E402
from serve.config import ServeConfig  # noqa: E402
from serve.constraints import build_processor  # noqa: E402
from serve.local import LocalServer  # noqa: E402

KEY = "fuzz-key"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    backend = TransformersBackend(model, tokenizer, "tiny", context_length=512, cache_tokens=4096,
                                  constraint_factory=build_processor)
    config = ServeConfig(model=str(tiny_model_dir), api_key=KEY, context_length=512, max_tokens_limit=32,
                         default_max_tokens=16, max_request_bytes=32 * 1024)
    with LocalServer(backend, config) as s:
        yield s


def _fuzz(server, max_examples: int, check, headers=None):
    """Run ``check(case, response)`` on ``max_examples`` generated requests per operation."""
    api = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/models"}
    for op in operations:
        @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(case=op.as_strategy(), served_model=st.booleans())
        def run(case, served_model):
            if served_model and isinstance(case.body, dict):
                case.body["model"] = "tiny"  # else nearly every case stops at the unknown-model 404
            response = case.call(base_url=server.url, headers=headers, timeout=60)
            check(case, response)

        run()


def test_no_input_gives_a_server_error(server):
    def check(case, response):
        seen.append(response.status_code)
        assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
        if response.status_code >= 400:
            assert "error" in response.json()

    seen: list[int] = []
    _fuzz(server, 60, check, headers={"Authorization": f"Bearer {KEY}"})
    assert 400 in seen and 200 in seen  # the cases reached validation and generation, not only routing


def test_no_key_gives_401_everywhere_but_health_and_metrics(server):
    def check(case, response):  # /metrics stays open, as vLLM's does: counters only, no content
        assert response.status_code == (200 if case.path in ("/health", "/metrics") else 401), case.path

    _fuzz(server, 5, check)
