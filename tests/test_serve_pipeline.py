"""The pipeline over HTTP: our OpenAIEngine against our server, and POST /v1/pipeline/run.

Both against a real uvicorn on 127.0.0.1 serving the tiny random Llama.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from pipeline.engines import EngineError, OpenAIEngine
from pipeline.plan import parse_plan
from pipeline.rewoo import Pipeline
from serve.backends.hf import TransformersBackend, load_model
from serve.config import ServeConfig
from serve.local import LocalServer
from serve.pipeline_route import add_pipeline_routes
from toolkit import default_toolbox

KEY = "sk-pipeline-test"
TOOLS = ["search_wiki", "calculator", "get_current_time"]


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    from serve.constraints import build_processor
    backend = TransformersBackend(model, tokenizer, "tiny", context_length=2048, cache_tokens=8192,
                                  constraint_factory=build_processor)
    config = ServeConfig(model=str(tiny_model_dir), context_length=2048, api_key=KEY)
    with LocalServer(backend, config, routes=[add_pipeline_routes]) as s:
        yield s


def test_http_engine_completes_chats_and_counts_tokens(server):
    eng = OpenAIEngine(server.base_url, api_key=KEY)
    assert eng.model == "tiny"  # the first of GET /v1/models
    full = eng.complete("Plan: find", max_new_tokens=12)
    assert full.prompt_tokens > 0 and 0 < full.completion_tokens <= 12
    # the same request through the official client gives the same greedy text
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    ref = client.completions.create(model="tiny", prompt="Plan: find", max_tokens=12, temperature=0)
    assert ref.choices[0].text == full.text
    calls = 1
    if len(full.text) > 4:
        stop = full.text[3:5]
        cut = eng.complete("Plan: find", stop_sequences=[stop], max_new_tokens=12).text
        assert stop not in cut and full.text.startswith(cut)
        calls += 1
    chat = eng.chat([{"role": "user", "content": "Hello"}], max_new_tokens=5)
    assert chat.completion_tokens <= 5 and eng.usage.calls == calls + 1


def test_constrained_pipeline_through_the_http_engine(server):
    eng = OpenAIEngine(server.base_url, api_key=KEY)
    box = default_toolbox(tools=TOOLS)
    result = Pipeline(eng, None, eng, box, planner_max_new_tokens=160, solver_max_new_tokens=8).run(
        "Who directed Oppenheimer?")
    assert all(s.tool in TOOLS for s in result.plan)  # guided_grammar reached the server
    parse_plan(result.plan.render(), TOOLS)
    # a planner call per round (a failing step is replanned once) and the solver's
    assert result.stats["llm_calls"] == result.stats["rounds"] + 1 and result.stats["prompt_tokens"] > 100
    assert set(result.evidence) == set(result.plan.vars)


def test_http_engine_errors_are_clear(server):
    with pytest.raises(EngineError, match="answered 401"):
        OpenAIEngine(server.base_url, api_key="wrong")
    eng = OpenAIEngine(server.base_url, api_key=KEY, model="no-such-model")
    with pytest.raises(EngineError, match="answered 404"):
        eng.complete("x", max_new_tokens=2)


def _post(server, body, key=KEY):
    return httpx.post(f"{server.url}/v1/pipeline/run", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=300)


def test_pipeline_run_route(server):
    r = _post(server, {"task": "What is 6 times 7?", "tools": TOOLS, "max_new_tokens": 160})
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"task", "plan", "evidence", "answer", "stats"}
    assert out["task"] == "What is 6 times 7?"
    assert out["plan"] and all(s["tool"] in TOOLS for s in out["plan"])
    assert set(out["evidence"]) == {s["var"] for s in out["plan"]}
    assert out["stats"]["llm_calls"] == out["stats"]["rounds"] + 1 and out["stats"]["prompt_tokens"] > 100


@pytest.mark.parametrize("body, status, fragment", [
    ({"task": "x", "tools": ["search_wiki", "serch_web"]}, 400, "unknown tools ['serch_web']"),
    ({"tools": ["search_wiki"]}, 400, "task"),
    ({"task": ""}, 400, "task"),
    ({"task": "x", "max_new_tokens": 1}, 400, "max_new_tokens"),
    ({"task": "x", "surprise": 1}, 400, "surprise"),
    ({"task": "Who?", "tools": TOOLS, "constrain": False, "max_new_tokens": 32}, 422, "the planner wrote"),
    # found by adversarial tests: each of these was a 500, the last a 502
    ({"task": "x", "tools": []}, 400, "tools"),
    ({"task": "x", "tools": ["calculator", "calculator"]}, 400, "more than once"),
    ({"task": "x", "tools": TOOLS, "max_new_tokens": 32}, 400, "max_new_tokens"),
    ({"task": "x", "tools": TOOLS, "max_new_tokens": 40}, 400, "max_new_tokens"),
    ({"task": "word " * 790, "tools": TOOLS}, 400, "context"),
])
def test_pipeline_run_bad_requests_are_4xx(server, body, status, fragment):
    r = _post(server, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err["message"] + str(err.get("param"))


def test_pipeline_run_refuses_lone_surrogates(server):
    r = httpx.post(f"{server.url}/v1/pipeline/run", content=b'{"task": "a \\ud800 b"}', timeout=60,
                   headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"})
    assert r.status_code == 400 and "surrogate" in r.json()["error"]["message"]


def test_pipeline_run_needs_the_key(server):
    assert _post(server, {"task": "x"}, key="wrong").status_code == 401


def test_pipeline_run_uses_the_toolbox_serve_loaded(server):
    """``python -m serve --tools SPEC`` puts its toolbox at ``app.state.pipeline_toolbox``."""
    from toolkit import Toolbox, tool

    @tool
    def shout(text: str) -> str:
        """Upper-case a text.

        Args:
            text: the text
        """
        return text.upper()

    server.app.state.pipeline_toolbox = Toolbox([shout])
    try:
        r = _post(server, {"task": "x", "tools": ["search_wiki"]})
        assert r.status_code == 400 and "the server's tools: shout" in r.json()["error"]["message"]
        r = _post(server, {"task": "Shout hello.", "max_new_tokens": 64})
        assert r.status_code == 200, r.text
        assert all(s["tool"] == "shout" for s in r.json()["plan"])
    finally:
        server.app.state.pipeline_toolbox = None
