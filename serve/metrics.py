"""``GET /metrics``: the server's counters in Prometheus' text format (version 0.0.4), as vLLM and
TabbyAPI expose theirs.

    curl -s http://127.0.0.1:8000/metrics

Series (all prefixed ``rewoo_``):

- ``requests_total{route, status}``: finished HTTP requests by route and status code;
- ``prompt_tokens_total``, ``completion_tokens_total``: tokens of generation requests;
- ``requests_running``: generations in the batch; ``requests_waiting``: admitted, not yet streaming;
- ``generations_cancelled_total``: generations stopped because their client left;
- ``request_duration_seconds`` (histogram, by route) and ``time_to_first_token_seconds`` (histogram).

Kept by hand (no client library): a few counters under one lock.
"""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/pipeline/run", "/health", "/metrics")


class _Histogram:
    def __init__(self):
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b}"}} {c}' for b, c in zip(BUCKETS, self.counts)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        out.append(f"{name}_sum{{{labels}}} {self.sum:.6f}" if labels else f"{name}_sum {self.sum:.6f}")
        out.append(f"{name}_count{{{labels}}} {self.total}" if labels else f"{name}_count {self.total}")
        return out


class Metrics:
    """What ``/metrics`` reports; the app and the backend's stats feed it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.durations: dict[str, _Histogram] = defaultdict(_Histogram)
        self.first_token = _Histogram()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.waiting = 0

    @staticmethod
    def route(path: str) -> str:
        return path if path in ROUTES else "other"  # bounded label values

    def request_done(self, path: str, status: int, seconds: float) -> None:
        route = self.route(path)
        with self._lock:
            self.requests[(route, status)] += 1
            self.durations[route].observe(seconds)

    def tokens(self, prompt: int, completion: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def first_token_after(self, seconds: float) -> None:
        with self._lock:
            self.first_token.observe(seconds)

    def add_waiting(self, n: int) -> None:
        with self._lock:
            self.waiting += n

    def render(self, stats) -> str:
        """The exposition text; ``stats`` is the backend's ``Stats``."""
        with self._lock:
            lines = ["# HELP rewoo_requests_total HTTP requests answered, by route and status.",
                     "# TYPE rewoo_requests_total counter"]
            lines += [f'rewoo_requests_total{{route="{r}",status="{s}"}} {n}'
                      for (r, s), n in sorted(self.requests.items())]
            lines += ["# HELP rewoo_prompt_tokens_total Prompt tokens of generation requests.",
                      "# TYPE rewoo_prompt_tokens_total counter", f"rewoo_prompt_tokens_total {self.prompt_tokens}",
                      "# HELP rewoo_completion_tokens_total Tokens generated.",
                      "# TYPE rewoo_completion_tokens_total counter",
                      f"rewoo_completion_tokens_total {max(self.completion_tokens, stats.completion_tokens)}",
                      "# HELP rewoo_requests_running Generations in the running batch.",
                      "# TYPE rewoo_requests_running gauge", f"rewoo_requests_running {stats.running}",
                      "# HELP rewoo_requests_waiting Requests admitted whose generation has not started.",
                      "# TYPE rewoo_requests_waiting gauge", f"rewoo_requests_waiting {self.waiting}",
                      "# HELP rewoo_generations_cancelled_total Generations stopped early (client gone, error).",
                      "# TYPE rewoo_generations_cancelled_total counter",
                      f"rewoo_generations_cancelled_total {stats.cancelled}",
                      "# HELP rewoo_request_duration_seconds Time from request to the end of its answer.",
                      "# TYPE rewoo_request_duration_seconds histogram"]
            for route, h in sorted(self.durations.items()):
                lines += h.lines("rewoo_request_duration_seconds", f'route="{route}"')
            lines += ["# HELP rewoo_time_to_first_token_seconds Time from admission to the first generated text.",
                      "# TYPE rewoo_time_to_first_token_seconds histogram"]
            lines += self.first_token.lines("rewoo_time_to_first_token_seconds", "")
        return "\n".join(lines) + "\n"
