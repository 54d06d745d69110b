"""`python -m serve` as a command: a busy port is reported before the model loads, and the server
serves on the socket it bound first (a real process, the tiny model, loopback)."""

from __future__ import annotations

import os
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


def test_server_serves_on_the_socket_it_bound_first(tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "serve", "--model", str(tiny_model_dir), "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
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
    finally:
        proc.terminate()
        proc.wait(timeout=30)
