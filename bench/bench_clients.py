"""Which OpenAI clients the server works with: function calling and structured outputs, as a matrix.

    pip install -e '.[clients]'          # openai, smolagents, langchain-openai, litellm (not in CI)
    python bench/bench_clients.py [--model PATH]

Starts ``python -m serve`` on 127.0.0.1 (a random tiny Llama unless ``--model`` names a model
folder) and drives, each against the same server:

- openai: ``tools`` with ``tool_choice="required"``, the same streamed, ``chat.completions.parse``;
- smolagents: ``OpenAIServerModel`` in a ``ToolCallingAgent`` (two steps);
- langchain-openai: ``ChatOpenAI.bind_tools`` (named tool), ``with_structured_output`` by
  ``function_calling`` and by ``json_schema``;
- litellm: ``completion`` with ``tools``.

A cell says ``ok`` when the client got what its API promises (``tool_calls`` it parsed, an object of
the schema), else the error. A random model's arguments are nonsense, but they match the schemas:
this checks the API, not the model.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"}},
                   "required": ["city"]}}}
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _film():
    import pydantic

    class Film(pydantic.BaseModel):
        title: str
        year: int

    return Film


def check_openai(base: str) -> dict:
    import openai
    client = openai.OpenAI(base_url=base, api_key="none", max_retries=0)
    out = {}
    r = client.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER], tool_choice="required",
                                       max_tokens=128, temperature=0)
    calls = r.choices[0].message.tool_calls
    json.loads(calls[0].function.arguments)
    out["tool_calls"] = f"ok ({calls[0].function.name}, finish {r.choices[0].finish_reason})"
    names, args = [], ""
    for chunk in client.chat.completions.create(model="m", messages=MESSAGES, tools=[WEATHER], tool_choice="required",
                                                max_tokens=128, temperature=0, stream=True):
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if tc.function.name:
                names.append(tc.function.name)
            args += tc.function.arguments or ""
    json.loads(args)
    out["streamed tool_calls"] = f"ok ({names})"
    parsed = client.chat.completions.parse(model="m", messages=MESSAGES, response_format=_film(), max_tokens=64,
                                           temperature=1.0, seed=0).choices[0].message.parsed
    out["structured output"] = f"ok ({type(parsed).__name__})" if parsed is not None else "None"
    return out


def check_smolagents(base: str) -> dict:
    from smolagents import OpenAIServerModel, ToolCallingAgent, tool

    @tool
    def get_weather(city: str) -> str:
        """Weather of a city.

        Args:
            city: the city
        """
        return f"18 C in {city}"

    model = OpenAIServerModel(model_id="m", api_base=base, api_key="none", max_tokens=128, temperature=0)
    agent = ToolCallingAgent(tools=[get_weather], model=model, max_steps=2, verbosity_level=0)
    agent.run("What is the weather in Paris?")
    calls = [tc.name for step in agent.memory.steps for tc in (getattr(step, "tool_calls", None) or [])]
    errors = [str(step.error)[:80] for step in agent.memory.steps if getattr(step, "error", None)]
    if not calls:
        raise RuntimeError(f"no tool calls reached the agent; errors: {errors}")
    return {"ToolCallingAgent": f"ok ({len(calls)} calls: {', '.join(calls)})"}


def check_langchain(base: str) -> dict:
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Weather of a city."""
        return f"18 C in {city}"

    llm = ChatOpenAI(model="m", base_url=base, api_key="none", max_tokens=128, temperature=0, max_retries=0)
    out = {}
    msg = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    if not msg.tool_calls:
        raise RuntimeError("bind_tools: no tool_calls")
    out["bind_tools"] = f"ok ({msg.tool_calls[0]['name']})"
    film = _film()
    for method in ("function_calling", "json_schema"):
        try:
            got = llm.with_structured_output(film, method=method).invoke("Name a film.")
            out[f"with_structured_output({method})"] = f"ok ({type(got).__name__})" if got is not None else "None"
        except Exception as e:  # one cell fails, the matrix goes on
            out[f"with_structured_output({method})"] = f"error: {type(e).__name__}: {str(e)[:120]}"
    return out


def check_litellm(base: str) -> dict:
    import litellm
    r = litellm.completion(model="openai/m", api_base=base, api_key="none", messages=MESSAGES, tools=[WEATHER],
                           tool_choice="required", max_tokens=128, temperature=0)
    calls = r.choices[0].message.tool_calls
    if not calls:
        raise RuntimeError("no tool_calls")
    json.loads(calls[0].function.arguments)
    return {"completion(tools)": f"ok ({calls[0].function.name})"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a local model folder (default: a random tiny Llama)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = a.model
        if model_dir is None:
            from train.tiny import save_tiny
            model_dir = str(save_tiny(Path(tmp) / "model", hidden_size=64, num_layers=2, num_heads=4))
            # smolagents' system prompt alone is ~2.3k tokens of this 512-token vocabulary
            cfg_path = Path(model_dir) / "config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["max_position_embeddings"] = 8192
            cfg_path.write_text(json.dumps(cfg))
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "serve", "--model", model_dir, "--served-model-name", "m", "--port", str(port),
             "--threads", "1", "--cache-tokens", "8192", "--log-level", "warning"],
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
            rows = []
            for client, check in (("openai", check_openai), ("smolagents", check_smolagents),
                                  ("langchain-openai", check_langchain), ("litellm", check_litellm)):
                try:
                    result = check(base)
                except ImportError as e:
                    result = {"-": f"not installed ({e.name})"}
                except Exception as e:
                    traceback.print_exc(limit=2)
                    result = {"-": f"error: {type(e).__name__}: {str(e)[:160]}"}
                rows += [(client, feature, cell) for feature, cell in result.items()]
        finally:
            server.terminate()
            server.wait(timeout=30)
    width = max(len(f"{c} / {f}") for c, f, _ in rows)
    print(f"\n{'client / feature'.ljust(width)}  result")
    for client, feature, cell in rows:
        print(f"{f'{client} / {feature}'.ljust(width)}  {cell}")


if __name__ == "__main__":
    main()
