"""Constrained output over REST: JSON schema, regex, choice, Lark grammar and the ReWOO plan grammar.

    python -m pytest -q tests/test_serve_constrained.py
"""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import openai
import pytest

from pipeline.plan import parse_plan
from serve.backends.hf import TransformersBackend, load_model
from serve.config import ServeConfig
from serve.constraints import build_processor
from serve.local import LocalServer

MODEL = "tiny"
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "year"],
          "properties": {"name": {"type": "string", "maxLength": 8},
                         "year": {"type": "integer", "minimum": 1900, "maximum": 2030}}}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    backend = TransformersBackend(model, tokenizer, MODEL, cache_tokens=8192, constraint_factory=build_processor)
    with LocalServer(backend, ServeConfig(model=str(tiny_model_dir))) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.mark.parametrize("temperature, seed", [(0, None), (1.0, 3)])
def test_response_format_json_schema_gives_valid_json(client, temperature, seed):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a film and its year."}], max_tokens=80,
        temperature=temperature, seed=seed,
        response_format={"type": "json_schema", "json_schema": {"name": "film", "schema": SCHEMA}})
    jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)
    assert r.choices[0].finish_reason == "stop"


def test_guided_fields_of_vllm(client):
    regex = client.completions.create(model=MODEL, prompt="Code:", max_tokens=20, temperature=0,
                                      extra_body={"guided_regex": r"[a-c]{3}-[0-9]{2}"})
    assert re.fullmatch(r"[a-c]{3}-[0-9]{2}", regex.choices[0].text)
    choice = client.completions.create(model=MODEL, prompt="Yes or no?", max_tokens=5, temperature=1.0, seed=1,
                                       extra_body={"guided_choice": ["yes", "no"]})
    assert choice.choices[0].text in ("yes", "no")
    schema = client.completions.create(model=MODEL, prompt="JSON:", max_tokens=80, temperature=0,
                                       extra_body={"structured_outputs": {"json": SCHEMA}})
    jsonschema.validate(json.loads(schema.choices[0].text), SCHEMA)
    lark = client.completions.create(model=MODEL, prompt="Say:", max_tokens=10, temperature=0,
                                     extra_body={"guided_grammar": 'start: "go " DIR\nDIR: "left" | "right"'})
    assert lark.choices[0].text in ("go left", "go right")


def test_a_constrained_request_compiles_nothing(client):
    """The server's constraints mask logits without llguidance's torch.compile'd kernel, which
    built itself (5.2 s on a 2-core EPYC) on the first constrained request of every server."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    before = dict(counters["frames"])
    r = client.completions.create(model=MODEL, prompt="Code:", max_tokens=20, temperature=0,
                                  extra_body={"guided_regex": r"[a-c]{3}"})
    assert re.fullmatch(r"[a-c]{3}", r.choices[0].text)
    assert dict(counters["frames"]) == before


def test_plan_grammar_gives_a_plan_that_parses(client):
    tools = ["search_wiki", "calculator"]
    for seed in (0, 1):
        r = client.completions.create(model=MODEL, prompt="Task: who directed Oppenheimer?\n", max_tokens=160,
                                      temperature=0.8, seed=seed, extra_body={"rewoo_plan": {"tools": tools}})
        plan = parse_plan(r.choices[0].text, tools)
        assert plan.steps and all(step.tool in tools for step in plan.steps)


def test_streamed_constrained_output_matches(client):
    kw = dict(model=MODEL, prompt="Code:", max_tokens=20, temperature=0,
              extra_body={"guided_regex": r"[a-c]{3}-[0-9]{2}"})
    whole = client.completions.create(**kw).choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kw))
    assert streamed == whole


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("extra", [
    {"guided_regex": "a(b"},
    {"guided_grammar": "start: UNDEFINED_RULE"},
    {"guided_json": "{not json"},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
    {"structured_outputs": {"regex": "a", "choice": ["a"]}},
    {"guided_choice": []},
    {"rewoo_plan": {"tools": []}},
    {"tool_prior": {"tools": [{"name": "llm"}], "weight": 4}},  # no plan grammar to lean
    {"guided_regex": "a", "tool_prior": {"tools": [{"name": "llm"}], "weight": 4}},
    {"rewoo_plan": {"tools": ["llm"]}, "tool_prior": {"tools": [{"name": "llm"}], "weight": -1}},
    {"rewoo_plan": {"tools": ["llm"]}, "tool_prior": {"tools": [], "weight": 4}},
    {"rewoo_plan": {"tools": ["llm"]}, "tool_prior": {"tools": [{"name": "llm"}], "weight": 4, "goals": 2}},
    {"rewoo_plan": {"tools": ["llm"]}, "tool_prior": {"tools": [{"name": "llm"}], "weight": 4, "goals": ["a"] * 65}},
    {"rewoo_plan": {"tools": ["llm"]}, "tool_prior": {"tools": [{"name": "llm"}], "weight": 4, "goals": [3]}},
    {"rewoo_plan": {"tools": ["llm"]},
     "tool_prior": {"tools": [{"name": "llm"}], "weight": 4, "holds": [{"tool": "query_sql", "value": "Hero"}]}},
    {"rewoo_plan": {"tools": ["llm"]}, "tool_prior": {"tools": [{"name": "llm"}], "weight": 4, "holds": ["Hero"]}},
    {"rewoo_plan": {"tools": ["llm"]},
     "tool_prior": {"tools": [{"name": "llm"}], "weight": 4, "holds": [{"tool": "llm", "value": ""}]}},
])
def test_bad_constraints_get_400_before_any_stream(server, extra, stream):
    body = {"model": MODEL, "prompt": "x", "max_tokens": 5, "stream": stream, **extra}
    r = httpx.post(server.base_url + "/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"]


TOOLS = {"llm": "A language model.", "sports_scores": "Get the latest results of a sports team.",
         "detect_language": "Detect the language a text is written in."}
ASKED = {"Get the latest results of the Yankees.": "sports_scores", "Detect the language of the text.": "detect_language"}


def _fixed_description_grammar(description: str) -> str:
    names = " | ".join(f'"{t}"' for t in TOOLS)
    return f'start: "Plan: {description}\\n#E1 = " tool "[x]"\ntool: {names}\n'


def test_the_tool_prior_over_rest_and_from_the_http_engine(server, client):
    """A plan grammar that fixes the step's description, and a strong tool prior: the tool named is
    the one the description says, sent with the openai client (extra_body) or by pipeline.engines'
    HTTP engine (its tool_prior field); without the prior the random model names another for at
    least one of the two."""
    from pipeline.engines import Constraint, OpenAIEngine
    from pipeline.formats.toolprior import ToolPrior

    def name(text: str) -> str:
        return text.split(" = ")[1].split("[")[0]

    prior = {"tools": [{"name": n, "description": d} for n, d in TOOLS.items()], "weight": 100}
    got, own = {}, {}
    for description in ASKED:
        grammar = _fixed_description_grammar(description)
        kw = dict(model=MODEL, prompt="Plan:\n", max_tokens=100, temperature=0)
        got[description] = name(client.completions.create(
            **kw, extra_body={"guided_grammar": grammar, "tool_prior": prior}).choices[0].text)
        own[description] = name(client.completions.create(**kw, extra_body={"guided_grammar": grammar}).choices[0].text)
    assert got == ASKED and own != ASKED
    engine = OpenAIEngine(server.base_url, model=MODEL, api_key="unused")
    for description, tool in ASKED.items():
        c = Constraint("grammar", _fixed_description_grammar(description), ToolPrior(tuple(TOOLS.items()), 100.0))
        assert name(engine.complete("Plan:\n", max_new_tokens=100, constraint=c).text) == tool


def test_the_tool_priors_goals_go_from_the_http_engine_to_the_servers_processor():
    """The prior's ``goals`` (pipeline.formats.toolprior.task_goals) and ``holds`` (task_holdings)
    travel in the HTTP engine's ``tool_prior`` field and come out of the request body on the
    server's constraint, which builds the processor that leans a short plan towards going on and a
    step about a held value towards its tool (tests/test_toolprior.py)."""
    from pipeline.engines import Constraint, OpenAIEngine
    from pipeline.formats.constrain import plan_grammar
    from pipeline.formats.toolprior import ToolPrior, ToolPriorProcessor
    from serve.constraints import build_processor, constraint_from_request
    from serve.protocol import CompletionRequest
    from train.tiny import build_tokenizer

    prior = ToolPrior(tuple(TOOLS.items()), 8.0, ("find a hotel", "detect its language", "summarize it"),
                      (("sports_scores", "New York Yankees"),))
    sent = OpenAIEngine._guided(Constraint("grammar", plan_grammar(list(TOOLS)), prior))
    assert sent["tool_prior"]["goals"] == ["find a hotel", "detect its language", "summarize it"]
    assert sent["tool_prior"]["holds"] == [{"tool": "sports_scores", "value": "New York Yankees"}]
    body = CompletionRequest(model=MODEL, prompt="x", **sent)
    got = constraint_from_request(body).tool_prior
    assert got == prior
    tokenizer = build_tokenizer()
    proc = build_processor(constraint_from_request(body), tokenizer, len(tokenizer), 256)
    assert isinstance(proc, ToolPriorProcessor) and proc.priors == [prior]
    del sent["tool_prior"]["goals"], sent["tool_prior"]["holds"]  # a client that does not read them: none
    bare = constraint_from_request(CompletionRequest(model=MODEL, prompt="x", **sent)).tool_prior
    assert bare.goals == () and bare.holds == ()


def test_the_distributors_call_grammar_is_served_and_every_call_parses(server):
    """The function caller over HTTP: the distributor sends each call's token-bounded grammar
    (``guided_grammar``: llguidance Lark with ``[max_tokens=N]`` strings and ``%json`` scalars) to
    our server, and the tiny random model's calls all parse and match their tools' schemas."""
    from pipeline import formats
    from pipeline.distributor import call_constraint, distribute
    from pipeline.engines import OpenAIEngine
    from toolkit import tool

    @tool
    def book(city: str, nights: int, note: str = "") -> str:
        """Book a room.

        Args:
            city: where
            nights: how many nights
            note: anything to tell the hotel
        """
        return f"{city} {nights}"

    box = {"book": book}
    assert call_constraint(formats.tool_spec(book), 96).kind == "grammar"
    plan = parse_plan("Plan: Book Paris.\n#E1 = book[Paris, 3 nights]\nPlan: Again.\n#E2 = book[Rome for #E1]")
    calls = distribute(plan, box, OpenAIEngine(server.base_url, api_key="unused", model=MODEL, temperature=0),
                       max_new_tokens=96)
    for var in ("#E1", "#E2"):
        assert calls[var].error is None and calls[var].via == "caller", calls[var]
        assert isinstance(calls[var].arguments["city"], str) and isinstance(calls[var].arguments["nights"], int)
