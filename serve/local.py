"""A real server on an ephemeral loopback port, in a background thread: for tests, benchmarks
and notebooks.

    with LocalServer(backend, ServeConfig(model=path)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence

import uvicorn

from serve.app import build_app
from serve.config import ServeConfig


class LocalServer:
    def __init__(self, backend, config: ServeConfig, routes: Sequence[Callable] = (), startup_timeout: float = 60.0,
                 agent=None):
        self.app = build_app(backend, config, routes, agent=agent)
        self.backend = backend
        self.startup_timeout = startup_timeout
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))  # the OS picks a free port; loopback only
        self.port = self._sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on",
                                                     timeout_graceful_shutdown=5))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="serve-local", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local server did not start; see the log above")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
