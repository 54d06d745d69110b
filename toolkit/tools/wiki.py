"""``search_wiki(query)``: encyclopedia passages, offline by default.

Offline (the default): the corpus in ``data/wiki/*.txt`` (articles that start with ``# Title``)
is loaded into an in-memory SQLite FTS5 table on the first call and ranked with BM25, the title
weighted above the body. Online (``wiki_api`` set to a MediaWiki ``api.php``): the API's full-text
search, then the plain-text intro of each hit.

The result is the top passages, each ``Title: text``, separated by blank lines.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from toolkit.tool import Tool
from toolkit.tools.http import ServiceError, get_json

# Words that carry no topic; dropped from the FTS query so BM25 ranks on the rest.
_STOPWORDS = frozenset("""a an and are as at be by did do does for from had has have he her his how i in
is it its list me movies name of on one or she that the their them they this to was were what when where
which who whom whose why with""".split())
# Above the rest: a title hit should beat a passing mention in a body.
TITLE_WEIGHT, BODY_WEIGHT = 8.0, 1.0
PASSAGE_CHARS = 800


@dataclass(frozen=True)
class Article:
    title: str
    text: str


def load_corpus(folder: str | Path) -> list[Article]:
    """Every article of every ``*.txt`` file in ``folder``."""
    folder = Path(folder)
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no wiki corpus in {folder}: expected *.txt files with '# Title' articles")
    articles = []
    for path in files:
        title, lines = None, []
        for line in path.read_text(encoding="utf-8").splitlines() + ["# "]:
            if line.startswith("# "):
                if title and " ".join(lines).strip():
                    articles.append(Article(title, " ".join(x.strip() for x in lines if x.strip())))
                title, lines = line[2:].strip(), []
            elif title is not None:
                lines.append(line)
    return articles


def fts_query(query: str) -> str:
    """An FTS5 MATCH expression: the query's words (stopwords dropped), each quoted, OR-ed."""
    words = [w for w in re.findall(r"\w+", query.lower()) if w not in _STOPWORDS]
    if not words:
        words = re.findall(r"\w+", query.lower())
    seen = list(dict.fromkeys(words))
    return " OR ".join(f'"{w}"' for w in seen)


class WikiIndex:
    """An in-memory FTS5 index over articles; ``search`` is safe from several threads."""

    def __init__(self, articles: list[Article]):
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("CREATE VIRTUAL TABLE pages USING fts5(title, body, tokenize='porter unicode61')")
        self._db.executemany("INSERT INTO pages(title, body) VALUES (?, ?)", [(a.title, a.text) for a in articles])
        self._db.commit()
        self.size = len(articles)

    def search(self, query: str, k: int = 3) -> list[tuple[str, str, float]]:
        """``[(title, text, bm25)]``, best first (lower bm25 is better)."""
        expr = fts_query(query)
        if not expr:
            return []
        with self._lock:
            rows = self._db.execute(
                "SELECT title, body, bm25(pages, ?, ?) AS rank FROM pages WHERE pages MATCH ? "
                "ORDER BY rank LIMIT ?", (TITLE_WEIGHT, BODY_WEIGHT, expr, k)).fetchall()
        return rows


def _format(passages: list[tuple[str, str]]) -> str:
    out = []
    for title, text in passages:
        if len(text) > PASSAGE_CHARS:
            text = text[:PASSAGE_CHARS].rsplit(" ", 1)[0] + " ..."
        out.append(f"{title}: {text}")
    return "\n\n".join(out)


class SearchWikiTool(Tool):
    name = "search_wiki"
    description = ("Search an encyclopedia for facts about people, places, science, history, "
                   "companies and films; returns the best passages.")
    inputs = {"query": {"type": "string", "description": "what to look up, e.g. 'Killers of the Flower Moon'"}}
    output_type = "string"

    def __init__(self, corpus_dir: str | Path | None = None, api_url: str | None = None,
                 results: int = 3, timeout: float = 10.0):
        super().__init__()
        self.corpus_dir = Path(corpus_dir) if corpus_dir else None
        self.api_url = api_url
        self.results = results
        self.timeout = timeout
        self.index: WikiIndex | None = None
        if not self.api_url and self.corpus_dir is None:
            raise ValueError("search_wiki needs a corpus folder or a MediaWiki api_url")

    def setup(self) -> None:
        if not self.api_url:
            self.index = WikiIndex(load_corpus(self.corpus_dir))

    def forward(self, query: str) -> str:
        if not query.strip():
            raise ValueError("the query is empty; give words to search for")
        if self.api_url:
            return self._search_api(query)
        hits = self.index.search(query, self.results)
        if not hits:
            return f"No article matches {query!r}."
        return _format([(t, b) for t, b, _ in hits])

    def _search_api(self, query: str) -> str:
        found = get_json(self.api_url, {"action": "query", "list": "search", "srsearch": query,
                                        "srlimit": self.results, "format": "json", "formatversion": 2},
                         timeout=self.timeout)
        if "error" in found:
            raise ServiceError(f"the MediaWiki API refused the search: {found['error'].get('info', found['error'])}")
        try:
            titles = [hit["title"] for hit in found["query"]["search"]]
        except (KeyError, TypeError) as e:
            raise ServiceError(f"unexpected MediaWiki search response: {str(found)[:200]}") from e
        if not titles:
            return f"No article matches {query!r}."
        pages = get_json(self.api_url, {"action": "query", "prop": "extracts", "exintro": 1, "explaintext": 1,
                                        "titles": "|".join(titles), "format": "json", "formatversion": 2},
                         timeout=self.timeout)
        try:
            extracts = {p["title"]: p.get("extract", "") for p in pages["query"]["pages"]}
        except (KeyError, TypeError) as e:
            raise ServiceError(f"unexpected MediaWiki extracts response: {str(pages)[:200]}") from e
        return _format([(t, " ".join(extracts.get(t, "").split()) or "(no text)") for t in titles])
