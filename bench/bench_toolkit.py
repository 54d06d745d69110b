"""python bench/bench_toolkit.py [--runs 200]

Prints the toolkit's figures: sandbox overhead per call (a fresh isolated process per call vs a
reused worker that forks per call vs the bare in-process interpreter) and search_wiki's FTS5
latency over the bundled corpus (index build, then queries).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's toolkit, not an installed one


def _timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _row(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return f"{name:<44} median {statistics.median(ms):8.3f} ms   p95 {p95:8.3f} ms   (n={len(ms)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="calls per figure (fresh-process runs use a tenth)")
    args = ap.parse_args()

    from toolkit import ToolkitConfig
    from toolkit.sandbox import Sandbox, evaluate_python_code
    from toolkit.tools.wiki import WikiIndex, load_corpus

    code = "total = 0\nfor i in range(100):\n    total += i * i\ntotal"
    print("sandbox, code: sum of 100 squares")
    print(_row("in-process AST interpreter (no isolation)", _timed(lambda: evaluate_python_code(code), args.runs)))
    with tempfile.TemporaryDirectory() as tmp:
        with Sandbox(workspace=Path(tmp) / "reuse", reuse=True) as box:
            t = time.perf_counter()
            box.run("1")
            start_ms = (time.perf_counter() - t) * 1000
            print(_row("reused isolated worker, fork per call", _timed(lambda: box.run(code), args.runs)))
            print(f"{'  (worker start + isolation, once)':<44} {start_ms:8.1f} ms   layers: {box.isolation}")
        with Sandbox(workspace=Path(tmp) / "fresh", reuse=False) as box:
            print(_row("fresh isolated process per call", _timed(lambda: box.run(code), max(5, args.runs // 10))))

    corpus = Path(ToolkitConfig().data_dir) / "wiki"
    t = time.perf_counter()
    articles = load_corpus(corpus)
    index = WikiIndex(articles)
    build_ms = (time.perf_counter() - t) * 1000
    print(f"\nsearch_wiki FTS5 over {index.size} articles: load + index {build_ms:.1f} ms")
    queries = ["Killers of the Flower Moon", "Who directed Oppenheimer?", "Martin Scorsese films",
               "speed of light", "capital of Japan", "founder of Nvidia"]
    ms = _timed(lambda: [index.search(q, 3) for q in queries], args.runs)
    print(_row("one query, top 3 (BM25)", [m / len(queries) for m in ms]))


if __name__ == "__main__":
    main()
