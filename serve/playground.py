"""The web playground: ``GET /ui``, one static page that runs agents through the streaming
``POST /v1/pipeline/run`` and draws each plan as a live DAG.

    python -m serve --model ./planner-merged --port 8000      # then open http://127.0.0.1:8000/ui

The page (``serve/ui/``: ``index.html``, ``app.js``, ``style.css``; vanilla JavaScript, no CDN, no
build step) is static and open like ``/health``; everything it does goes through the API with the
server's usual key rules: it asks for the key when ``GET /v1/pipeline/tools`` answers 401 and keeps
it for the browser tab only (``sessionStorage``). The files are served from a fixed list, with a
Content-Security-Policy that allows this origin only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response

UI_DIR = Path(__file__).resolve().parent / "ui"
FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
         "style.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def add_playground_routes(app: FastAPI) -> None:
    """Install ``GET /ui`` (the page) and ``GET /ui/{app.js,style.css}`` on ``app``."""

    def serve(name: str) -> Response:
        return Response((UI_DIR / name).read_bytes(), media_type=FILES[name], headers=HEADERS)

    @app.get("/ui", tags=["playground"], include_in_schema=False)
    async def playground() -> Response:
        return serve("index.html")

    @app.get("/ui/", include_in_schema=False)
    async def playground_slash() -> RedirectResponse:
        return RedirectResponse("/ui")

    @app.get("/ui/app.js", include_in_schema=False)
    async def playground_js() -> Response:
        return serve("app.js")

    @app.get("/ui/style.css", include_in_schema=False)
    async def playground_css() -> Response:
        return serve("style.css")
