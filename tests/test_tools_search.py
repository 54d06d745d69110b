"""search_wiki (offline FTS5 corpus and the MediaWiki API), search_web (SearxNG) and
search_bilibili, the web ones against a real HTTP server on loopback serving responses of the
recorded shapes."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from toolkit import ToolError, default_toolbox
from toolkit.tools.wiki import fts_query, load_corpus

# Shapes recorded from the real services (values shortened).
SEARXNG_RESPONSE = {
    "query": "Martin Scorsese", "number_of_results": 0,
    "results": [
        {"url": "https://en.wikipedia.org/wiki/Martin_Scorsese", "title": "Martin Scorsese - Wikipedia",
         "content": "Martin Charles Scorsese is an American filmmaker ...", "engine": "wikipedia",
         "engines": ["wikipedia", "duckduckgo"], "score": 3.0, "category": "general"},
        {"url": "https://www.imdb.com/name/nm0000217/", "title": "Martin Scorsese &amp; films",
         "content": "<b>Director</b> of Taxi Driver", "engine": "duckduckgo", "score": 1.0},
    ],
    "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": [],
}
BILIBILI_RESPONSE = {
    "code": 0, "message": "0", "ttl": 1,
    "data": {"seid": "1", "page": 1, "pagesize": 20, "numResults": 2, "numPages": 1, "result": [
        {"type": "video", "id": 1, "author": "影视飓风", "mid": 946974, "typename": "影视",
         "arcurl": "http://www.bilibili.com/video/av1", "aid": 1, "bvid": "BV1xx411c7mD",
         "title": "<em class=\"keyword\">花月杀手</em> Killers of the Flower Moon 预告", "description": "...",
         "play": 123456, "duration": "2:31", "pubdate": 1684000000},
        {"type": "video", "id": 2, "author": "film&amp;more", "bvid": "BV1yy411c7mE",
         "title": "Scorsese interview", "play": 42, "duration": "10:02"},
    ]},
}
MEDIAWIKI_SEARCH = {"batchcomplete": True, "query": {"searchinfo": {"totalhits": 2}, "search": [
    {"ns": 0, "title": "Martin Scorsese", "pageid": 1, "snippet": "American <span>film</span> director"},
    {"ns": 0, "title": "Taxi Driver", "pageid": 2, "snippet": "1976 film"}]}}
MEDIAWIKI_EXTRACTS = {"batchcomplete": True, "query": {"pages": [
    {"pageid": 1, "ns": 0, "title": "Martin Scorsese", "extract": "Martin Charles Scorsese is an American filmmaker."},
    {"pageid": 2, "ns": 0, "title": "Taxi Driver", "extract": "Taxi Driver is a 1976 film."}]}}


class _Handler(BaseHTTPRequestHandler):
    routes: dict = {}
    requests: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        type(self).requests.append((url.path, query, dict(self.headers)))
        key = url.path + ("?" + query["prop"] if "prop" in query else "")
        status, body = type(self).routes.get(key, (404, {"error": "not found"}))
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """A real HTTP server on 127.0.0.1; set ``server.routes[path] = (status, json_or_text)``."""
    handler = type("Handler", (_Handler,), {"routes": {}, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.routes, server.requests = handler.routes, handler.requests
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------------------------------------
# search_wiki, offline
# ------------------------------------------------------------------------------------------------

def test_corpus_is_large_and_well_formed():
    from toolkit import ToolkitConfig
    articles = load_corpus(ToolkitConfig().data_dir + "/wiki")
    assert len(articles) >= 150
    titles = [a.title for a in articles]
    assert len(set(titles)) == len(titles), "article titles are unique"
    assert all(20 <= len(a.text) <= 1200 for a in articles)


def test_search_wiki_answers_the_demo_tasks():
    wiki = default_toolbox()["search_wiki"]
    director = wiki(query="Who directed the film 'Killers of the Flower Moon'?")
    assert director.startswith("Killers of the Flower Moon (film): ")
    assert "directed by Martin Scorsese" in director
    filmography = wiki(query="Martin Scorsese")
    assert filmography.startswith("Martin Scorsese: ")
    first = filmography.split("\n\n")[0]
    for film in ("Taxi Driver", "Goodfellas", "The Departed", "The Irishman"):
        assert film in first
    nolan = wiki(query="Oppenheimer director")
    assert nolan.startswith("Oppenheimer (film): ") and "Christopher Nolan" in nolan.split("\n\n")[0]
    assert len(wiki(query="Christopher Nolan").split("\n\n")) == 3


def test_search_wiki_odd_queries():
    wiki = default_toolbox()["search_wiki"]
    # FTS5 operators and quotes in a query are searched as words, never parsed as syntax
    assert "\n\nNile: " in wiki(query='"Nile" OR NOT (*) NEAR')
    assert wiki(query="qwxzv nonsenseword") == "No article matches 'qwxzv nonsenseword'."
    with pytest.raises(ToolError, match="the query is empty"):
        wiki(query="   ")
    assert fts_query("Who is the director of Dune?") == '"director" OR "dune"'


def test_search_wiki_reports_a_missing_corpus(tmp_path):
    wiki = default_toolbox(data_dir=str(tmp_path))["search_wiki"]
    with pytest.raises(ToolError, match="no wiki corpus in"):
        wiki(query="x")


def test_search_wiki_over_the_mediawiki_api(http_server):
    http_server.routes["/w/api.php"] = (200, MEDIAWIKI_SEARCH)
    http_server.routes["/w/api.php?extracts"] = (200, MEDIAWIKI_EXTRACTS)
    wiki = default_toolbox(wiki_api=http_server.url + "/w/api.php")["search_wiki"]
    out = wiki(query="Scorsese")
    assert out == ("Martin Scorsese: Martin Charles Scorsese is an American filmmaker.\n\n"
                   "Taxi Driver: Taxi Driver is a 1976 film.")
    (path, q, _), (_, q2, _) = http_server.requests
    assert q["list"] == "search" and q["srsearch"] == "Scorsese" and q["srlimit"] == "3"
    assert q2["titles"] == "Martin Scorsese|Taxi Driver" and q2["explaintext"] == "1"


# ------------------------------------------------------------------------------------------------
# search_web, search_bilibili
# ------------------------------------------------------------------------------------------------

def test_search_web_over_searxng(http_server):
    http_server.routes["/search"] = (200, SEARXNG_RESPONSE)
    web = default_toolbox(search_url=http_server.url + "/")["search_web"]
    out = web(query="Martin Scorsese")
    assert out.splitlines() == [
        "1. Martin Scorsese - Wikipedia (https://en.wikipedia.org/wiki/Martin_Scorsese): Martin Charles Scorsese is an American filmmaker ...",
        "2. Martin Scorsese & films (https://www.imdb.com/name/nm0000217/): Director of Taxi Driver"]
    assert http_server.requests[0][1] == {"q": "Martin Scorsese", "format": "json"}


def test_search_web_without_a_backend_says_how_to_set_one():
    with pytest.raises(ToolError, match="search_web has no search backend: set REWOO_SEARCH_URL"):
        default_toolbox(search_url=None)["search_web"](query="x")


def test_search_bilibili(http_server):
    http_server.routes["/x/web-interface/search/type"] = (200, BILIBILI_RESPONSE)
    bili = default_toolbox(bilibili_url=http_server.url)["search_bilibili"]
    out = bili(keyword="花月杀手")
    assert out.splitlines() == [
        "1. 花月杀手 Killers of the Flower Moon 预告 | by 影视飓风 | 123456 plays | 2:31 | http://www.bilibili.com/video/av1",
        "2. Scorsese interview | by film&more | 42 plays | 10:02 | https://www.bilibili.com/video/BV1yy411c7mE"]
    path, query, headers = http_server.requests[0]
    assert query == {"search_type": "video", "keyword": "花月杀手", "page": "1"}
    assert headers["Referer"] == "https://www.bilibili.com/"


@pytest.mark.parametrize("route, fragment", [
    ((200, {"code": -412, "message": "request was banned", "ttl": 1}), "bilibili refused the search: code -412, 'request was banned'"),
    ((503, "busy"), "answered HTTP 503"),
    ((200, "<html>not json</html>"), "did not answer JSON"),
    ((200, {"code": 0, "data": {"result": []}}), None),
])
def test_search_bilibili_service_errors(http_server, route, fragment):
    http_server.routes["/x/web-interface/search/type"] = route
    bili = default_toolbox(bilibili_url=http_server.url)["search_bilibili"]
    if fragment is None:
        assert bili(keyword="zzz") == "No bilibili videos for 'zzz'."
    else:
        with pytest.raises(ToolError, match=fragment):
            bili(keyword="zzz")


def test_offline_is_a_clear_no_network_error(closed_port):
    box = default_toolbox(search_url=f"http://127.0.0.1:{closed_port}", bilibili_url=f"http://127.0.0.1:{closed_port}",
                          wiki_api=f"http://127.0.0.1:{closed_port}/w/api.php")
    for name, arg in (("search_web", "query"), ("search_bilibili", "keyword"), ("search_wiki", "query")):
        with pytest.raises(ToolError, match=rf"no network: cannot reach http://127.0.0.1:{closed_port}"):
            box[name](**{arg: "x"})


def test_a_server_that_never_answers_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections, never replies
    try:
        web = default_toolbox(search_url=f"http://127.0.0.1:{listener.getsockname()[1]}", http_timeout=0.3)["search_web"]
        with pytest.raises(ToolError, match="no answer from .* within 0.3 s"):
            web(query="x")
    finally:
        listener.close()
