"""The HTTP client the web tools share: JSON over GET, with errors that say what went wrong.

Offline, a request fails at once (DNS or connect) or after ``connect_timeout`` at worst, as
:class:`NoNetworkError`; it never hangs past ``timeout``.
"""

from __future__ import annotations

from typing import Any

# A browser-like agent: some public APIs (bilibili's among them) refuse default client agents.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) rewoo-stack-toolkit/0.1"


class NoNetworkError(ConnectionError):
    """The service cannot be reached (no network, DNS failure, refused or timed-out connection)."""


class ServiceError(RuntimeError):
    """The service answered, but not with what the tool expects (HTTP error, not JSON, an API error)."""


def get_json(url: str, params: dict | None = None, *, timeout: float = 10.0, headers: dict | None = None) -> Any:
    """GET ``url`` and decode its JSON body."""
    import httpx

    connect = min(timeout, 3.0)
    try:
        # trust_env=False: a stray proxy variable must not reroute (or stall) a tool's request.
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=connect), trust_env=False,
                          headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
                          follow_redirects=True) as client:
            response = client.get(url, params=params)
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:
        raise NoNetworkError(f"no network: cannot reach {_origin(url)} ({type(e).__name__}: {e})") from e
    except httpx.TimeoutException as e:
        raise NoNetworkError(f"no answer from {_origin(url)} within {timeout:g} s ({type(e).__name__})") from e
    except httpx.HTTPError as e:
        raise NoNetworkError(f"request to {_origin(url)} failed: {type(e).__name__}: {e}") from e
    if response.status_code >= 400:
        raise ServiceError(f"{_origin(url)} answered HTTP {response.status_code}: {response.text[:200]!r}")
    try:
        return response.json()
    except ValueError as e:
        raise ServiceError(f"{_origin(url)} did not answer JSON: {response.text[:200]!r}") from e


def _origin(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else url
