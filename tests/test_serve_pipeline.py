"""The pipeline over HTTP: our OpenAIEngine against our server (whole and streamed over SSE), and
POST /v1/pipeline/run (whole and streamed as server-sent events), GET /v1/pipeline/tools.

All against a real uvicorn on 127.0.0.1 serving the tiny random Llama (one raw loopback server
scripts a stream that fails half-way, which our server cannot be made to do on purpose).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from pipeline.engines import Constraint, EngineError, OpenAIEngine, recording
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
    # streamed dispatch over SSE: the first step started while the planner was still writing
    assert result.stats["streamed"] and len(result.plan) > 1
    planner_end = next(c["t_end"] for c in result.trace if c["role"] == "planner")
    assert min(c["t_start"] for c in result.trace if c["role"] == "tool") < planner_end
    parse_plan(result.plan.render(), TOOLS)
    # a planner call per round (a failing step is replanned once) and the solver's
    assert result.stats["llm_calls"] == result.stats["rounds"] + 1 and result.stats["prompt_tokens"] > 100
    assert set(result.evidence) == set(result.plan.vars)


def test_http_engine_streams_over_sse(server):
    eng = OpenAIEngine(server.base_url, api_key=KEY)
    assert eng.streams
    whole = eng.complete("Plan: find", max_new_tokens=12)
    with recording() as calls:
        pieces = list(eng.complete_stream("Plan: find", max_new_tokens=12))
    assert len(pieces) > 1 and "".join(pieces) == whole.text
    # usage from stream_options.include_usage, accounted and recorded as a whole call
    assert calls[0]["completion_tokens"] == whole.completion_tokens and calls[0]["prompt_tokens"] == whole.prompt_tokens
    assert calls[0]["output"] == whole.text and eng.usage.calls == 2
    # the official client's stream of the same request gives the same text
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    ref = client.completions.create(model="tiny", prompt="Plan: find", max_tokens=12, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in ref if c.choices) == whole.text
    if len(whole.text) > 4:  # stop strings, as complete cuts them
        stop = whole.text[3:5]
        assert "".join(eng.complete_stream("Plan: find", [stop], 12)) == eng.complete("Plan: find", [stop], 12).text
    hello = [{"role": "user", "content": "Hello"}]
    assert "".join(eng.chat_stream(hello, max_new_tokens=5)) == eng.chat(hello, max_new_tokens=5).text
    # the constraint fields go with the stream
    assert re.fullmatch("[ab]{3}", "".join(eng.complete_stream("x", max_new_tokens=8,
                                                               constraint=Constraint("regex", "[ab]{3}"))))


def test_closing_an_http_stream_stops_its_generation(server):
    eng = OpenAIEngine(server.base_url, api_key=KEY)
    before = server.backend.stats.cancelled
    pieces = eng.complete_stream("Plan: find", max_new_tokens=1500)
    next(pieces)
    pieces.close()  # closes the HTTP response: the server sees the client leave
    deadline = time.monotonic() + 30
    while server.backend.stats.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.backend.stats.cancelled == before + 1 and eng.usage.calls == 0


class _BreakingStream(BaseHTTPRequestHandler):
    """An OpenAI-style server whose stream sends one piece, then an error event."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b'data: {"choices": [{"index": 0, "text": "Plan:", "finish_reason": null}]}\n\n'
                         b'data: {"error": {"message": "the constraint broke", "type": "invalid_request_error"}}\n\n'
                         b"data: [DONE]\n\n")

    def log_message(self, *a):
        pass


def test_http_engine_stream_errors_are_engine_errors(server):
    eng = OpenAIEngine(server.base_url, api_key=KEY, model="no-such-model")
    with pytest.raises(EngineError, match="answered 404"):
        list(eng.complete_stream("x", max_new_tokens=2))
    broken = ThreadingHTTPServer(("127.0.0.1", 0), _BreakingStream)
    threading.Thread(target=broken.serve_forever, daemon=True).start()
    try:
        eng = OpenAIEngine(f"http://127.0.0.1:{broken.server_address[1]}/v1", model="m", api_key="k")
        got = []
        with pytest.raises(EngineError, match="failed after the stream began: the constraint broke"):
            for piece in eng.complete_stream("x"):
                got.append(piece)
        assert got == ["Plan:"] and eng.usage.calls == 0
    finally:
        broken.shutdown()


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
    # streamed requests are validated before the stream starts: 4xx JSON, never an event
    ({"task": "x", "tools": ["serch_web"], "stream": True}, 400, "unknown tools ['serch_web']"),
    ({"task": "x", "tools": TOOLS, "max_new_tokens": 32, "stream": True}, 400, "max_new_tokens"),
    ({"task": "x", "mode": "chat", "stream": True}, 400, "mode"),
    ({"task": "x", "tool_prior": -1}, 400, "tool_prior"),
    ({"task": "x", "tool_prior": "strong"}, 400, "tool_prior"),
])
def test_pipeline_run_bad_requests_are_4xx(server, body, status, fragment):
    r = _post(server, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err["message"] + str(err.get("param"))


def _events(server, body, key=KEY) -> list[dict]:
    """The events of a streamed run, checked to end with ``data: [DONE]``."""
    with httpx.stream("POST", f"{server.url}/v1/pipeline/run", json={**body, "stream": True}, timeout=300,
                      headers={"Authorization": f"Bearer {key}"}) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: {") for line in lines[:-1])
    return [json.loads(line[6:]) for line in lines[:-1]]


def test_pipeline_run_streams_events(server):
    events = _events(server, {"task": "What is 6 times 7?", "tools": TOOLS, "max_new_tokens": 160})
    kinds = [e["event"] for e in events]
    assert kinds[-2:] == ["answer", "result"] and "error" not in kinds
    result = events[-1]
    assert set(result) == {"event", "task", "plan", "evidence", "answer", "stats"}
    assert events[-2] == {"event": "answer", "answer": result["answer"], "stats": result["stats"]}
    steps = [e for e in events if e["event"] == "step"]
    assert [{k: e[k] for k in ("var", "tool", "input", "description")} for e in steps] == result["plan"]
    plans = [e for e in events if e["event"] == "plan"]
    assert [p["round"] for p in plans] == list(range(1, result["stats"]["rounds"] + 1))
    assert [s for p in plans for s in p["steps"]] == result["plan"]
    at = {(e["event"], e.get("var")): i for i, e in enumerate(events)}
    for e in events:
        if e["event"] == "done":
            assert e["status"] in ("ok", "error", "skipped") and e["evidence"] == result["evidence"][e["var"]]
            assert at[("step", e["var"])] < at[("done", e["var"])]
            if e["status"] != "skipped":
                assert at[("step", e["var"])] < at[("start", e["var"])] < at[("done", e["var"])]
    assert {e["var"] for e in events if e["event"] == "done"} == set(result["evidence"])
    # streamed dispatch: a step started before the first round's plan was complete
    assert min(i for (kind, _), i in at.items() if kind == "start") < kinds.index("plan")


def test_pipeline_run_stream_reports_a_failure_as_an_event(server):
    events = _events(server, {"task": "Who?", "tools": TOOLS, "constrain": False, "max_new_tokens": 32})
    assert events[-1]["event"] == "error" and "answer" not in [e["event"] for e in events]
    err = events[-1]["error"]
    assert err["code"] == "invalid_plan" and "the planner wrote" in err["message"] and err["type"]


def test_pipeline_run_streams_react_agent_steps(server):
    """Each ReAct step is an event as it ends; the tiny model's malformed outputs are fed back as
    errors. Its 2048-token context fills after a few steps (the memory grows by each error): the
    run then ends with the refusal as an error event, else with the answer."""
    events = _events(server, {"task": "What is 6 times 7?", "tools": TOOLS, "mode": "react", "max_new_tokens": 32})
    steps = [e for e in events if e["event"] == "agent_step"]
    assert steps and [e["n"] for e in steps] == list(range(1, len(steps) + 1))
    assert all("error" in e or "observation" in e or "final_answer" in e for e in steps)
    assert "Action:" in steps[0]["error"]  # what the model is told to write instead
    assert events[:len(steps)] == steps  # streamed before the end, in order
    if events[-1]["event"] == "error":
        assert events[-1]["error"]["code"] == "pipeline_request_refused" and "context" in events[-1]["error"]["message"]
    else:
        assert [e["event"] for e in events[-2:]] == ["answer", "result"]
        # one event per iteration, and one more for the answer written after the last iteration
        assert len(steps) - events[-1]["stats"]["iterations"] in (0, 1)


def test_pipeline_run_plans_with_the_tool_prior_asked_else_the_servers(tiny_model_dir):
    """POST /v1/pipeline/run's planner request carries the tool prior (pipeline.formats.toolprior)
    to the server's plan constraint: the request's ``tool_prior``, else ``--tool-prior`` (which
    ``rewoo serve --model default`` sets to the demo's); the toolbox's tools and descriptions."""
    from serve.constraints import build_processor

    seen = []

    def factory(constraint, *args):
        if constraint.kind == "grammar" and "#E1 = " in constraint.value:  # the planner's, not a caller's
            seen.append(constraint.tool_prior)
        return build_processor(constraint, *args)

    backend = TransformersBackend(*load_model(str(tiny_model_dir)), "tiny", context_length=2048, cache_tokens=8192,
                                  constraint_factory=factory)
    config = ServeConfig(model=str(tiny_model_dir), context_length=2048, api_key=KEY, tool_prior=2.5)
    with LocalServer(backend, config, routes=[add_pipeline_routes]) as s:
        for body, weight in (({}, 2.5), ({"tool_prior": 6}, 6.0), ({"tool_prior": 0}, None)):
            seen.clear()
            r = _post(s, {"task": "What is 6 times 7?", "tools": TOOLS, "max_new_tokens": 160, **body})
            assert r.status_code == 200, r.text
            assert len(seen) == 1
            if weight is None:
                assert seen[0] is None
            else:
                assert seen[0].weight == weight and [n for n, _ in seen[0].tools] == TOOLS
                assert all(d for _, d in seen[0].tools)  # with the tools' descriptions


def test_the_agents_run_on_the_agents_model_when_the_server_has_one(tiny_model_dir, monkeypatch):
    """A server with an agents' model (`python -m serve --agent-adapter`, which `rewoo serve --model
    default` gives the demo's agent adapter): GET /v1/models lists both, each OpenAI request runs on the
    model it names (an unknown one is a 404 naming both), and POST /v1/pipeline/run runs react and code
    on the agents' model, rewoo on the main one. Before, every request ran on the main model: on the
    default models, the planner adapter, which never learned the agents' format."""
    from serve import app as app_module
    from serve.constraints import build_processor

    def backend(name):
        return TransformersBackend(*load_model(str(tiny_model_dir)), name, context_length=2048, cache_tokens=8192,
                                   constraint_factory=build_processor)

    main, agent = backend("tiny"), backend("tiny-agent")
    config = ServeConfig(model=str(tiny_model_dir), context_length=2048, api_key=KEY)
    with pytest.raises(ValueError, match="id of its own"):
        app_module.build_app(main, config, agent=backend("tiny"))
    named, pick = [], app_module.backend_for
    monkeypatch.setattr(app_module, "backend_for", lambda state, model: named.append(model) or pick(state, model))

    def ran(call) -> tuple[int, int, set[str]]:
        """(main's generations, the agents' generations, the models the requests named)"""
        before = (main.stats.submitted, agent.stats.submitted)
        named.clear()
        call()
        return main.stats.submitted - before[0], agent.stats.submitted - before[1], set(named)

    with LocalServer(main, config, routes=[add_pipeline_routes], agent=agent) as s:
        client = openai.OpenAI(base_url=s.base_url, api_key=KEY, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny", "tiny-agent"]
        assert ran(lambda: client.completions.create(model="tiny-agent", prompt="Hi", max_tokens=3)) == \
            (0, 1, {"tiny-agent"})
        assert ran(lambda: client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)) == (1, 0, {"tiny"})
        assert ran(lambda: client.completions.create(model=str(tiny_model_dir), prompt="Hi", max_tokens=3))[:2] == (1, 0)
        with pytest.raises(openai.NotFoundError, match="serves 'tiny', 'tiny-agent'"):
            client.completions.create(model="tiny-planner", prompt="Hi", max_tokens=3)
        # the code agent's prompt is over the tiny model's context: refused, but asked of the agents' model
        for mode in ("react", "code"):
            calls = ran(lambda: _post(s, {"task": "What is 6 times 7?", "tools": TOOLS, "mode": mode,
                                          "max_new_tokens": 32}))
            assert calls[0] == 0 and calls[2] == {"tiny-agent"}, mode
        assert ran(lambda: _post(s, {"task": "What is 6 times 7?", "tools": TOOLS, "max_new_tokens": 160}))[1:] == \
            (0, {"tiny"})
        health = httpx.get(f"{s.url}/health").json()
        assert health["model"] == "tiny" and health["agent"]["model"] == "tiny-agent"


def test_pipeline_tools_lists_the_servers_toolbox(server):
    r = httpx.get(f"{server.url}/v1/pipeline/tools", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    body = r.json()
    assert [t["name"] for t in body["data"]] == list(default_toolbox()) and body["modes"] == ["rewoo", "react", "code"]
    assert all(t["description"] and t["parameters"]["type"] == "object" for t in body["data"])
    assert httpx.get(f"{server.url}/v1/pipeline/tools").status_code == 401


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
