"""``search_web(query)`` and ``search_bilibili(keyword)``: real HTTP clients.

- ``search_web`` queries a SearxNG instance's JSON API (``GET {search_url}/search?q=...&format=json``;
  enable ``json`` under ``search.formats`` in SearxNG's settings). With no ``search_url`` it says
  so instead of guessing a public endpoint.
- ``search_bilibili`` queries bilibili's public web search API
  (``GET {bilibili_url}/x/web-interface/search/type?search_type=video&keyword=...``).

Both return numbered results, one per line; offline they fail fast with a "no network" error.
"""

from __future__ import annotations

import html
import re

from toolkit.tool import Tool
from toolkit.tools.http import ServiceError, get_json

_TAG_RE = re.compile(r"<[^>]+>")


def _clean(text) -> str:
    return " ".join(html.unescape(_TAG_RE.sub("", str(text or ""))).split())


class NoSearchBackendError(RuntimeError):
    """search_web was called without a configured search backend."""


class SearchWebTool(Tool):
    name = "search_web"
    description = "Search the web for news, prices, weather and other recent things; returns top results."
    inputs = {"query": {"type": "string", "description": "the search query"}}
    output_type = "string"

    def __init__(self, search_url: str | None = None, results: int = 10, timeout: float = 10.0):
        super().__init__()
        self.search_url = search_url.rstrip("/") if search_url else None
        self.results = results
        self.timeout = timeout

    def forward(self, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is empty")
        if not self.search_url:
            raise NoSearchBackendError(
                "search_web has no search backend: set REWOO_SEARCH_URL (or default_toolbox(search_url=...)) "
                "to a SearxNG instance with its JSON format enabled, e.g. http://127.0.0.1:8888")
        data = get_json(f"{self.search_url}/search", {"q": query, "format": "json"}, timeout=self.timeout)
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise ServiceError(f"unexpected SearxNG response: {str(data)[:200]}")
        lines = []
        for answer in data.get("answers") or []:
            text = answer.get("answer") if isinstance(answer, dict) else answer
            if text:
                lines.append(f"Answer: {_clean(text)}")
        for i, r in enumerate(data["results"][: self.results], 1):
            lines.append(f"{i}. {_clean(r.get('title'))} ({r.get('url', '')}): {_clean(r.get('content'))}")
        if not lines:
            return f"No web results for {query!r}."
        return "\n".join(lines)


class SearchBilibiliTool(Tool):
    name = "search_bilibili"
    description = "Search videos on Bilibili (anime, comics, games); returns titles, uploaders and links."
    inputs = {"keyword": {"type": "string", "description": "the search keyword"}}
    output_type = "string"

    def __init__(self, base_url: str = "https://api.bilibili.com", results: int = 10, timeout: float = 10.0):
        super().__init__()
        self.base_url = base_url.rstrip("/")
        self.results = results
        self.timeout = timeout

    def forward(self, keyword: str) -> str:
        if not keyword.strip():
            raise ValueError("the keyword is empty")
        data = get_json(f"{self.base_url}/x/web-interface/search/type",
                        {"search_type": "video", "keyword": keyword, "page": 1},
                        timeout=self.timeout, headers={"Referer": "https://www.bilibili.com/"})
        if not isinstance(data, dict) or "code" not in data:
            raise ServiceError(f"unexpected bilibili response: {str(data)[:200]}")
        if data["code"] != 0:
            raise ServiceError(f"bilibili refused the search: code {data['code']}, {data.get('message', '')!r}")
        results = (data.get("data") or {}).get("result") or []
        videos = [r for r in results if isinstance(r, dict) and r.get("type", "video") == "video"]
        if not videos:
            return f"No bilibili videos for {keyword!r}."
        lines = []
        for i, v in enumerate(videos[: self.results], 1):
            link = v.get("arcurl") or (f"https://www.bilibili.com/video/{v['bvid']}" if v.get("bvid") else "")
            lines.append(f"{i}. {_clean(v.get('title'))} | by {_clean(v.get('author'))} | "
                         f"{v.get('play', '?')} plays | {v.get('duration', '?')} | {link}")
        return "\n".join(lines)
