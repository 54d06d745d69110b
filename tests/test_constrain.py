"""Constrained decoding: a random tiny model yields only valid plans and valid calls."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch

from pipeline import formats
from pipeline.formats import constrain
from pipeline.plan import parse_plan

TOOLS = ["search_wiki", "llm", "calculator", "get_current_time"]
SPECS = [
    {"name": "search_wiki", "description": "Search the encyclopedia.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}},
    {"name": "save_file", "description": "Save a file.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"},
                                                     "overwrite": {"type": "boolean"}},
                    "required": ["path", "content"]}},
    {"name": "top_k", "description": "Pick k items.",
     "parameters": {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string"}},
                                                     "k": {"type": "integer"}}, "required": ["items", "k"]}},
]


@pytest.fixture(scope="module")
def model(tiny_tokenizer):
    from train.tiny import build_llama
    return build_llama(tiny_tokenizer, seed=1).eval()


def _generate(model, tok, prompts, proc, max_new_tokens, sample, seed=0):
    tok.padding_side = "left"
    batch = tok(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=sample, top_k=0,
                         logits_processor=[proc], pad_token_id=tok.pad_token_id)
    new = out[:, batch["input_ids"].shape[1]:]
    rows = []
    for row in new:
        ids = row.tolist()
        ended = tok.eos_token_id in ids
        rows.append((tok.decode(ids, skip_special_tokens=True), ended))
    return rows


@pytest.mark.parametrize("max_new_tokens", [96, 200])
def test_random_model_writes_only_valid_plans(model, tiny_tokenizer, max_new_tokens):
    grammar = constrain.plan_grammar(TOOLS, max_new_tokens)
    prompt = formats.planner_prompt("Who directed Oppenheimer?", SPECS)
    results = []
    for i, sample in enumerate([False, True, True, True, True, True]):
        proc = constrain.logits_processor(tiny_tokenizer, model.config.vocab_size, grammar=grammar)
        results += _generate(model, tiny_tokenizer, [prompt], proc, max_new_tokens, sample, seed=i)
    # a left-padded batch of 4 different prompts, sampled
    proc = constrain.logits_processor(tiny_tokenizer, model.config.vocab_size, grammar=grammar)
    prompts = [formats.planner_prompt(t, SPECS) for t in ("a", "What time is it in Paris now?", "2+2", "x y z")]
    results += _generate(model, tiny_tokenizer, prompts, proc, max_new_tokens, True, seed=7)
    assert len(results) == 10
    for text, ended in results:
        assert ended, f"no EOS within {max_new_tokens} tokens: {text!r}"
        plan = parse_plan(text, TOOLS)
        assert 1 <= len(plan) <= constrain.plan_bounds(max_new_tokens, TOOLS).max_steps
        assert all(s.tool in TOOLS for s in plan)


def test_unconstrained_random_model_does_not_plan(model, tiny_tokenizer):
    """The contrast that makes the constraint worth having."""
    prompt = formats.planner_prompt("Who directed Oppenheimer?", SPECS)
    batch = tiny_tokenizer([prompt], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=60, do_sample=False, pad_token_id=tiny_tokenizer.pad_token_id)
    text = tiny_tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    with pytest.raises(formats.PlanError):
        parse_plan(text, TOOLS)


def _accepts(tok, grammar: str, text: str) -> bool:
    import llguidance
    lltok = constrain.lltokenizer(tok, len(tok))
    m = llguidance.LLMatcher(lltok, llguidance.grammar_from("lark", grammar))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if m.try_consume_tokens(ids) != len(ids) or m.is_error():
        return False
    # the text is whole: either the grammar is already done (the last step it allows) or EOS ends it
    return m.is_stopped() or (m.try_consume_tokens([tok.eos_token_id]) == 1 and m.is_stopped())


def test_grammar_accepts_exactly_the_contract(tiny_tokenizer):
    bounds = constrain.PlanBounds(max_steps=3, max_description=30, max_input=20)
    g = constrain.plan_grammar(TOOLS, bounds=bounds)
    ok = "Plan: find him\n#E1 = search_wiki[Oppenheimer]\nPlan: combine\n#E2 = llm[who is #E1?]"
    assert _accepts(tiny_tokenizer, g, ok)
    assert _accepts(tiny_tokenizer, g, "Plan: \n#E1 = get_current_time[]")
    for bad in [
        "Plan: x\n#E1 = llm[#E1]",                     # self reference
        "Plan: x\n#E1 = llm[a]\nPlan: y\n#E2 = llm[#E3]",  # later variable
        "Plan: x\n#E2 = llm[a]",                       # numbering must start at 1
        "Plan: x\n#E1 = nope[a]",                      # unknown tool
        "Plan: x\n#E1 = llm[a]\nPlan: y\n#E2 = llm[#E10]",  # #E1 followed by a digit
        "Plan: x\n#E1 = llm[" + " ~" * 21 + "]",      # input over its bound (in tokens)
        "Plan: x\n#E1 = llm[a]\nPlan: y",              # a trailing plan with no step
        "Plan: a\n#E1 = llm[a]\nPlan: b\n#E2 = llm[b]\nPlan: c\n#E3 = llm[c]\nPlan: d\n#E4 = llm[d]",  # > 3 steps
    ]:
        assert not _accepts(tiny_tokenizer, g, bad), bad


@pytest.mark.parametrize("n, steps, description, input_", [(60, 1, 9, 18), (96, 1, 21, 42), (256, 4, 10, 21),
                                                          (1024, 6, 46, 92)])
def test_bounds_fit_the_budget(n, steps, description, input_):
    """Worked out by hand for the longest tool name here (get_current_time, 16 characters): a step's
    fixed text is "Plan: " + "\\n#E<k> = " + 16 + "[]" + a newline = 32 tokens at most; 256 new tokens
    leave 255 (EOS): 6 steps would keep 255 // 6 - 32 = 10 free tokens each, 5 keep 19, 4 keep 31
    (>= 24), split 1:2 into 10 for the description and 21 for the input."""
    assert constrain.plan_bounds(n, TOOLS) == constrain.PlanBounds(steps, description, input_)
    worst = steps * (len("Plan: ") + description + len(f"\n#E{steps} = ") + 16 + 2 + input_ + 1)
    assert worst <= n  # one token per character; the last step has no newline but EOS follows


def test_bounds_refuse_a_budget_too_small():
    with pytest.raises(ValueError, match="too small"):
        constrain.plan_bounds(20, TOOLS)
    with pytest.raises(ValueError, match="tool names must match"):
        constrain.plan_grammar(["bad name"], 256)
    with pytest.raises(ValueError, match="at least one tool"):
        constrain.plan_grammar([], 256)


@pytest.mark.parametrize("kind", ["grammar", "json_schema"])
def test_random_model_writes_only_valid_calls(model, tiny_tokenizer, kind):
    for spec in SPECS:
        given = ({"grammar": constrain.call_grammar(spec, 96)} if kind == "grammar"
                 else {"json_schema": constrain.call_schema(spec, max_string=12)})
        step = formats.Step("#E2", spec["name"], "something with #E1", "do it", ("#E1",))
        prompt = formats.caller_prompt(step, SPECS)
        for i, sample in enumerate([False, True, True]):
            proc = constrain.logits_processor(tiny_tokenizer, model.config.vocab_size, **given)
            (text, ended), = _generate(model, tiny_tokenizer, [prompt], proc, 256, sample, seed=i)
            assert ended, text
            call = formats.parse_call(text, SPECS)
            assert call.name == spec["name"]
            jsonschema.validate(call.arguments, spec["parameters"])
            assert json.loads(text) == call.to_dict()  # no text around it


def test_regex_constraint_and_bad_constraints(model, tiny_tokenizer):
    proc = constrain.logits_processor(tiny_tokenizer, model.config.vocab_size, regex=r"(yes|no)")
    (text, ended), = _generate(model, tiny_tokenizer, ["Answer:"], proc, 10, True)
    assert text in ("yes", "no") and ended
    with pytest.raises(ValueError, match="invalid constraint"):
        constrain.logits_processor(tiny_tokenizer, model.config.vocab_size, grammar="start: /[/")
    with pytest.raises(ValueError, match="exactly one"):
        constrain.logits_processor(tiny_tokenizer, model.config.vocab_size)


def test_processor_is_single_use(model, tiny_tokenizer):
    proc = constrain.logits_processor(tiny_tokenizer, model.config.vocab_size, regex=r"[a-z]{1,3}")
    _generate(model, tiny_tokenizer, ["a"], proc, 5, False)
    with pytest.raises(RuntimeError, match="single-use"):
        _generate(model, tiny_tokenizer, ["a", "b"], proc, 5, False)


def test_a_replanning_round_continues_the_numbering(tiny_tokenizer):
    g = constrain.plan_grammar(TOOLS, 256, max_steps=2, first=3)
    assert _accepts(tiny_tokenizer, g, "Plan: again\n#E3 = llm[use #E1 and #E2]\nPlan: then\n#E4 = llm[#E3]")
    for bad in ["Plan: x\n#E1 = llm[a]", "Plan: x\n#E3 = llm[#E3]", "Plan: x\n#E4 = llm[a]",
                "Plan: a\n#E3 = llm[a]\nPlan: b\n#E4 = llm[b]\nPlan: c\n#E5 = llm[c]"]:
        assert not _accepts(tiny_tokenizer, g, bad), bad


def test_fields_are_bounded_in_tokens_not_characters(tiny_tokenizer):
    """At a 512-token budget with 4 steps (the default models' settings) a real SQL input fits
    whole. (A bound of one character per token cut a tuned planner's SQL at 22 characters and its
    exact answers fell from 0.909 to 0.136.)"""
    names = ["get_current_time", "search_wiki", "search_web", "search_bilibili", "save_file", "query_sql",
             "python_interpreter", "calculator", "llm"]
    g = constrain.plan_grammar(names, 512, max_steps=4)
    sql = ("SELECT title FROM films WHERE director = (SELECT director FROM films WHERE title = "
           "'Killers of the Flower Moon')")
    assert _accepts(tiny_tokenizer, g, f"Plan: List the films by the director.\n#E1 = query_sql[{sql}]")


def test_call_constraint_accepts_the_spacing_the_caller_is_trained_on(tiny_tokenizer):
    """The JSON a caller learns (``formats.render_call``, spaced ``", "`` and ``": "``) is exactly
    what its constraint allows: a constraint that forced compact JSON held the tuned caller to a
    spacing it never saw in training."""
    import llguidance
    lltok = constrain.lltokenizer(tiny_tokenizer, len(tiny_tokenizer))
    calls = {"search_wiki": {"query": "Ada Lovelace"}, "save_file": {"path": "a.txt", "content": "hi #E1"},
             "top_k": {"items": ["x", "y"], "k": 1}}
    for spec in SPECS:
      for grammar in (constrain._compile(lltok, None, None, constrain.call_schema(spec, max_string=40)),
                      constrain._compile(lltok, constrain.call_grammar(spec, 256), None, None)):
        trained = formats.render_call(spec["name"], calls[spec["name"]])
        compact = json.dumps(json.loads(trained), separators=(",", ":"))
        for text, want in ((trained, True), (compact, False)):
            m = llguidance.LLMatcher(lltok, grammar)
            ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
            got = m.try_consume_tokens(ids) == len(ids) and m.is_accepting() and not m.is_error()
            assert got is want, (text, want)


def test_the_bitmask_forbids_exactly_the_tokens_whose_bit_is_0():
    """apply_bitmask against the layout read bit by bit: token 32 w + j is bit j of word w;
    tokens past the words are forbidden; rows are independent; a CPU mask for any device."""
    g = torch.Generator().manual_seed(0)
    for vocab, columns in ((100, 100), (96, 96), (70, 90), (64, 40), (40, 100)):
        words = (vocab + 31) // 32
        mask = torch.randint(-2**31, 2**31 - 1, (3, words), generator=g, dtype=torch.int64).to(torch.int32)
        scores = torch.randn(3, columns, generator=g)
        want = scores.clone()
        for row in range(3):
            for t in range(columns):
                bit = t < 32 * words and (int(mask[row, t // 32]) >> (t % 32)) & 1
                if not bit:
                    want[row, t] = float("-inf")
        got = scores.clone()
        constrain.apply_bitmask(got, mask)
        assert torch.equal(got, want), (vocab, columns)
        as_numpy = scores.numpy().copy()  # the llama.cpp paths' logits, and the mask as allocate_bitmask makes it
        constrain.apply_bitmask(as_numpy, mask.numpy())
        assert (as_numpy == want.numpy()).all(), (vocab, columns)
        cut = scores.clone()  # the tokenizer's vocabulary ends before the words do: the rest forbidden too
        constrain.apply_bitmask(cut, mask, vocab)
        assert torch.equal(cut[:, :vocab], want[:, :vocab]) and torch.isinf(cut[:, vocab:]).all(), (vocab, columns)


def test_constrained_decoding_compiles_nothing(model, tiny_tokenizer):
    """Observed: the first constrained token of every new process took 5.2 s on a 2-core EPYC,
    llguidance's mask kernel being torch.compile'd (Dynamo, Inductor, a C++ build) on first use;
    the CLI's one task took 10-12 s where later tasks take 1-2. No frame is compiled now."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # whatever an earlier test compiled would have to compile again
    before = dict(counters["frames"])
    proc = constrain.logits_processor(tiny_tokenizer, model.config.vocab_size, regex=r"(yes|no)")
    (text, ended), = _generate(model, tiny_tokenizer, ["Answer:"], proc, 10, True)
    assert text in ("yes", "no") and ended
    assert dict(counters["frames"]) == before


def test_constrained_decoding_never_imports_llguidance_torch(tiny_model_dir):
    """Importing llguidance.torch loads TorchDynamo and Inductor for its torch.compile'd kernel
    (3.3 s on a 2-core EPYC), in the first constrained call of every process. A fresh process that
    masks a token must not import it."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, torch\n"
            "from transformers import AutoTokenizer\n"
            "from pipeline.formats import constrain\n"
            "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
            "proc = constrain.logits_processor(tok, len(tok), regex=r'(yes|no)')\n"
            "scores = proc(torch.tensor([[1, 2]]), torch.zeros(1, len(tok)))\n"
            "assert 0 < int(torch.isfinite(scores).sum()) < len(tok)\n"
            "print(sorted(m for m in ('llguidance.torch', 'torch._dynamo', 'torch._inductor') if m in sys.modules))\n")
    root = Path(constrain.__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir)], capture_output=True, text=True,
                         cwd=root, env={**__import__("os").environ, "PYTHONPATH": str(root)}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_call_strings_are_bounded_in_tokens_not_characters(tiny_tokenizer):
    """At the caller's 256 tokens a save_file call holds a 76-character text whole (a bound of
    four tokens a character held it to 22, and this three-argument save_file to 14: "Simplicity is the soul of efficiency" was saved as
    "Simplicity is the soul", valid JSON, silently cut); at a string's token cap only its closing
    quote is allowed, so the call still ends as JSON."""
    import llguidance

    save = SPECS[1]
    grammar = constrain.call_grammar(save, 256)
    text = "Simplicity is the soul of efficiency. " * 2  # 49 of this tokenizer's tokens, 58 the share
    assert _accepts(tiny_tokenizer, grammar, formats.render_call("save_file", {"path": "quote.txt", "content": text}))
    assert _accepts(tiny_tokenizer, grammar, formats.render_call("save_file", {"path": "a \\\"b\\\".txt",
                                                                                "content": "x", "overwrite": True}))
    assert not _accepts(tiny_tokenizer, grammar, '{"name": "save_file", "arguments": {"path": "a.txt"}}')
    assert not _accepts(tiny_tokenizer, grammar, '{"name": "save_file", "arguments": {"content": "x", "path": "a"}}')
    small = constrain.call_grammar(save, 100)  # 80 characters of fixed text: 6 tokens a string
    share = int(re.search(r"\[max_tokens=(\d+)\]", small).group(1))  # every string: one cap
    lltok = constrain.lltokenizer(tiny_tokenizer, len(tiny_tokenizer))
    m = llguidance.LLMatcher(lltok, llguidance.grammar_from("lark", small))
    head = tiny_tokenizer('{"name": "save_file", "arguments": {"path": "', add_special_tokens=False)["input_ids"]
    assert m.try_consume_tokens(head) == len(head)
    word = tiny_tokenizer("a", add_special_tokens=False)["input_ids"]
    for _ in range(share):
        assert m.try_consume_tokens(word) == 1
    assert m.try_consume_tokens(word) == 0 and not m.is_error()  # the cap: only the closing quote now
    close = tiny_tokenizer('", "content": "b"}}', add_special_tokens=False)["input_ids"]
    assert m.try_consume_tokens(close) == len(close)
    with pytest.raises(ValueError, match="too small"):
        constrain.call_grammar(save, 40)  # its fixed text alone: 80 characters


def test_optional_arguments_may_open_the_object_or_be_left_out(tiny_tokenizer):
    spec = {"name": "find", "description": "Find.", "parameters": {"type": "object", "properties": {
        "where": {"type": "string"}, "limit": {"type": "integer"}, "query": {"type": "string"},
        "kind": {"type": "string", "enum": ["a", "b"]}}, "required": ["query"]}}
    grammar = constrain.call_grammar(spec, 256)
    for args, ok in (({"query": "q"}, True), ({"where": "w", "query": "q"}, True), ({"limit": 3, "query": "q"}, True),
                     ({"where": "w", "limit": 3, "query": "q", "kind": "b"}, True), ({"query": "q", "kind": "a"}, True),
                     ({"query": "q", "kind": "c"}, False), ({"where": "w"}, False), ({"query": "q", "where": "w"}, False),
                     ({"limit": "3", "query": "q"}, False)):
        assert _accepts(tiny_tokenizer, grammar, formats.render_call("find", args)) is ok, args
    assert _accepts(tiny_tokenizer, constrain.call_grammar({"name": "opt", "description": "x", "parameters": {
        "type": "object", "properties": {"a": {"type": "string"}}}}, 64), '{"name": "opt", "arguments": {}}')
