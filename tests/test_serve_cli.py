"""`python -m serve` as a command: a busy port is reported before the model loads, and the server
serves on the socket it bound first (a real process, the tiny model, loopback)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest


def test_busy_port_is_one_line_exit_2_before_the_model_loads(tmp_path, capsys):
    """The model path does not exist: had it been loaded first, the error would be about the model."""
    from serve.__main__ import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--model", str(tmp_path / "no-model-here"), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert err == (f"python -m serve: port {port} on 127.0.0.1 is busy (another server listens there): "
                   "stop it or pick another --port")


def test_unknown_host_is_one_line_exit_2(tmp_path, capsys):
    from serve.__main__ import main

    assert main(["--model", str(tmp_path / "m"), "--host", "no-such-host.invalid", "--port", "8765",
                 "--api-key", "k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("python -m serve: cannot listen on no-such-host.invalid:8765")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("model, why", [
    ("{tmp}/no-model-here", "--model {tmp}/no-model-here does not exist; give a local transformers model folder "
                            "or a model name"),
    ("{tmp}", "--model {tmp}: no config.json there; give a local transformers model folder (for an EXL2 folder "
              "use --backend exllamav2)"),
])
def test_a_bad_model_is_one_line_exit_2(tmp_path, capsys, model, why):
    """It used to exit 1 (the README promises 2 for what the user must fix)."""
    from serve.__main__ import main

    model = model.format(tmp=tmp_path)
    assert main(["--model", model, "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"python -m serve: cannot load {model}: {why.format(tmp=tmp_path)}"


def test_a_bad_agent_adapter_is_one_line_exit_2_naming_it(tiny_model_dir, tmp_path, capsys):
    """--agent-adapter (the agents' model beside --model) that is no adapter: one line naming it, exit 2;
    with a backend other than transformers: refused before anything loads."""
    from serve.__main__ import main

    assert main(["--model", str(tiny_model_dir), "--agent-adapter", str(tmp_path / "nothing"),
                 "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith(f"python -m serve: cannot load --agent-adapter {tmp_path}/nothing: ")
    assert main(["--model", str(tmp_path / "m.gguf"), "--backend", "llamacpp", "--agent-adapter", str(tmp_path),
                 "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[0].startswith("python -m serve: invalid server settings") and "--agent-adapter works with" in err


def test_a_model_name_loads_from_the_hugging_face_cache(tiny_model_dir, tmp_path):
    """`serve --model NAME` takes a model name as pipeline.run does (it used to ask for a folder):
    here the tiny model in an offline Hugging Face cache under the name tiny-org/tiny-llama."""
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_model_dir, snapshot)
    (tmp_path / "hub" / "models--tiny-org--tiny-llama" / "refs").mkdir()
    (tmp_path / "hub" / "models--tiny-org--tiny-llama" / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    code = ("from serve.backends.hf import load_model\n"
            "model, tok = load_model('tiny-org/tiny-llama')\n"
            "print(type(model).__name__, model.config.hidden_size, tok.eos_token)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["LlamaForCausalLM", "64", "</s>"]


def test_server_serves_on_the_socket_it_bound_first_and_quietly(tiny_model_dir):
    """At the default log level: no notes of the libraries at start (continuous batching's six INFO
    lines, DeepSpeed's accelerator guess, the weight-loading bar) and no httpx line per loopback
    call that /v1/pipeline/run makes to the server itself; the access log stays."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DS_ACCELERATOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "serve", "--model", str(tiny_model_dir), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("the server did not answer within 240 s")
                time.sleep(0.3)
        assert r.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
        run = httpx.post(f"http://127.0.0.1:{port}/v1/pipeline/run", timeout=240,
                         json={"task": "What is 2 + 3?", "tools": ["calculator"], "max_new_tokens": 64})
        assert run.status_code in (200, 400, 422), run.text  # the tiny random model may plan nonsense
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert '"POST /v1/completions HTTP/1.1"' in out, out  # the pipeline called the server over loopback ...
    for noise in ("ContinuousBatchingLogger", "httpx", "Setting accelerator to CPU", "Loading weights",
                  "Background generation thread"):
        assert noise not in out, f"{noise!r} in the server's output:\n{out[-3000:]}"  # ... quietly