"""Quantization and the exllamav2 backend: CPU checks of the wrapper, GPU runs end to end.

    python -m pytest -q tests/test_serve_quantize.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from serve.quantize import EXL2_CONVERTER, count_parameters, exl2_plan, exl3_plan, size_report

REPO = Path(__file__).resolve().parents[1]


def test_parameters_and_effective_bpw_come_from_safetensors_headers(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    n = sum(p.numel() for p in model.parameters())
    assert count_parameters(tiny_model_dir) == n
    report = size_report(tiny_model_dir, tiny_model_dir)  # fp32 weights: 32 bits each, plus headers
    assert 32.0 <= report.effective_bpw < 32.5
    assert any("effective bits per weight" in line for line in report.lines())


def _arg(command, flag):
    """The value after ``flag`` among the converter's own arguments (after ``python -m module``)."""
    args = command[3:]
    return args[args.index(flag) + 1]


def test_exl2_measures_once_then_reuses_the_measurement(tmp_path):
    src, out, work, meas = tmp_path / "in", tmp_path / "out", tmp_path / "work", tmp_path / "m.json"
    first = exl2_plan(src, out, 2.5, 6, work, meas, None, None, None, fresh=False, python="py")
    assert len(first.commands) == 2
    measure, quant = first.commands
    assert measure[:3] == ["py", "-m", EXL2_CONVERTER] and "-om" in measure and "-b" not in measure
    assert _arg(quant, "-m") == str(meas) and _arg(quant, "-b") == "2.5"
    assert _arg(quant, "-hb") == "6" and _arg(quant, "-cf") == str(out)
    assert "-nr" not in measure + quant  # reruns resume in their working folders
    meas.write_text("{}")
    again = exl2_plan(src, out, 4.0, 8, work, meas, tmp_path / "cal.parquet", 50, 1024, fresh=False, python="py")
    assert len(again.commands) == 1  # the saved measurement is reused
    (quant,) = again.commands
    assert _arg(quant, "-c") == str(tmp_path / "cal.parquet")
    assert _arg(quant, "-r") == "50" and _arg(quant, "-l") == "1024"
    fresh = exl2_plan(src, out, 4.0, 8, work, meas, None, None, None, fresh=True, python="py")
    assert len(fresh.commands) == 2 and all("-nr" in c for c in fresh.commands)


def test_exl3_resumes_an_interrupted_job(tmp_path):
    work = tmp_path / "work"
    (new,) = exl3_plan(tmp_path / "in", tmp_path / "out", 2.5, 6, work, None, None, fresh=False).commands
    assert "-b" in new and "--resume" not in new
    (work / "exl3-2.5bpw").mkdir(parents=True)
    (work / "exl3-2.5bpw" / "args.json").write_text("{}")
    (resume,) = exl3_plan(tmp_path / "in", tmp_path / "out", 2.5, 6, work, None, None, fresh=False).commands
    assert "--resume" in resume and "-b" not in resume


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_quantize_script_refuses_clearly_without_a_gpu(tiny_model_dir, tmp_path):
    r = subprocess.run(["bash", str(REPO / "scripts/quantize.sh"), str(tiny_model_dir), str(tmp_path / "q"), "2.5"],
                       capture_output=True, text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2
    assert "needs a CUDA GPU" in r.stderr
    assert not (tmp_path / "q").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_exllamav2_backend_refuses_clearly_without_a_gpu(tiny_model_dir):
    from serve.backends.exl2 import ExLlamaV2Backend

    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        ExLlamaV2Backend(str(tiny_model_dir), "tiny")


# ------------------------------------------------------------------ GPU

@pytest.fixture(scope="module")
def exl2_model(tmp_path_factory):
    """A random Llama big enough for exllamav2's kernels, converted to EXL2 at 4.0 bpw."""
    from train.tiny import build_llama, build_tokenizer

    root = tmp_path_factory.mktemp("exl2")
    src, out = root / "src", root / "q4"
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(src)
    build_llama(tokenizer, hidden_size=512, num_layers=4, num_heads=8).to(torch.float16).save_pretrained(src)
    # a bare environment, but what finds the GPU packages and the built extension passes through
    # (bench/gpu_check.py installs carried wheels on PYTHONPATH and builds for this GPU's arch only)
    keep = ("PYTHONPATH", "HOME", "CUDA_HOME", "TORCH_CUDA_ARCH_LIST", "MAX_JOBS", "TORCH_EXTENSIONS_DIR")
    r = subprocess.run(["bash", str(REPO / "scripts/quantize.sh"), str(src), str(out), "4.0", "--rows", "8",
                        "--length", "256"], capture_output=True, text=True,
                       # the interpreter's bin: torch's extension loader wants the ninja pip put there
                       env={"PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
                            **{k: os.environ[k] for k in keep if k in os.environ}})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "effective bits per weight" in r.stdout
    return src, out, r.stdout


@pytest.mark.gpu
@pytest.mark.slow
def test_exl2_conversion_is_smaller_and_serves_with_stops_and_batching(exl2_model):
    import concurrent.futures

    import openai

    from serve.backends.exl2 import ExLlamaV2Backend
    from serve.config import ServeConfig
    from serve.local import LocalServer

    src, out, log = exl2_model
    assert size_report(src, out).output_bytes < size_report(src, src).output_bytes
    assert (src.parent / f"{src.name}.measurement.json").is_file()
    backend = ExLlamaV2Backend(str(out), "q4", context_length=1024, max_batch_size=8, cache_tokens=8192)
    with LocalServer(backend, ServeConfig(model=str(out))) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        kw = dict(model="q4", prompt="The planner writes", temperature=0, extra_body={"ignore_eos": True})
        free = client.completions.create(max_tokens=24, **kw).choices[0].text
        assert free
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            texts = [f.result().choices[0].text for f in
                     [pool.submit(client.completions.create, max_tokens=24, **kw) for _ in range(8)]]
        assert texts == [free] * 8
        if len(free) > 6:
            stop = free[3:6]
            cut = client.completions.create(max_tokens=24, stop=[stop], **kw).choices[0]
            assert cut.text == free[: free.find(stop)] and cut.finish_reason == "stop"
        streamed = "".join(c.choices[0].text for c in client.completions.create(max_tokens=24, stream=True, **kw))
        assert streamed == free


@pytest.mark.gpu
def test_exllamav2_imports_on_a_gpu_machine():
    from serve.backends.exl2 import import_exllamav2

    assert import_exllamav2().__name__ == "exllamav2"
