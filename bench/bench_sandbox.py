"""python bench/bench_sandbox.py [--steps 200] [--no-corpus]

Prints the code agents' sandbox figures:

- per-step overhead of a code agent step's code (one tool call, a print, variables kept)
  through the isolated worker (kept worker, fork per call, tool called back over the channel,
  variables sent both ways) against the bare in-process interpreter;
- a whole ``ReactCodeAgent`` step with a scripted engine, for scale;
- the escape corpus (``tests/test_escape_corpus.py``) per entry point: how many techniques were
  refused with an error (``python_interpreter``, ``CodeAgent``, ``ReactCodeAgent``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an installed one

STEP = "hits = search(query='BERT base blocks')\nprint('found:', hits)\ncount = len(hits) + count"


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
    return f"{name:<52} median {statistics.median(ms):8.3f} ms   p95 {p95:8.3f} ms   (n={len(ms)})"


def search(query: str) -> str:
    """Search (a stand-in that answers at once).

    Args:
        query: what to look for
    """
    return "twelve encoder blocks"


def corpus_counts(box) -> None:
    from pipeline.agents import CodeAgent, ReactCodeAgent
    from tests.kit import ScriptedEngine
    from tests.test_escape_corpus import CORPUS, echo
    from toolkit import ToolError
    from toolkit.tools.python import PythonInterpreterTool

    tool = PythonInterpreterTool(sandbox=box)
    refused = 0
    for code in CORPUS.values():
        try:
            tool(code=code)
        except ToolError:
            refused += 1
    print(f"\nescape corpus: {len(CORPUS)} techniques")
    print(f"  python_interpreter  refused {refused}/{len(CORPUS)}")
    for cls in (CodeAgent, ReactCodeAgent):
        refused = 0
        for code in CORPUS.values():
            engine = ScriptedEngine([f"Thought: t\nCode:\n```py\n{code}\n```<end_action>", "gave up"])
            agent = cls(tools=[echo], llm_engine=engine, max_iterations=1, sandbox=box)
            agent.run("Do it.")
            refused += "error" in agent.logs[1]
        print(f"  {cls.__name__:<19} refused {refused}/{len(CORPUS)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="runs per figure")
    ap.add_argument("--no-corpus", action="store_true", help="skip running the escape corpus")
    args = ap.parse_args()

    from pipeline.agents import ReactCodeAgent
    from tests.kit import ScriptedEngine
    from toolkit import tool
    from toolkit.sandbox import Sandbox, evaluate_python_code

    search_tool = tool(search)
    print(f"one code agent step: {STEP!r}")
    state = {"count": 0}
    print(_row("in-process interpreter (no isolation)",
               _timed(lambda: evaluate_python_code(STEP, tools={"search": search_tool}, state=state), args.steps)))
    with tempfile.TemporaryDirectory() as tmp:
        with Sandbox(workspace=Path(tmp) / "py", timeout=10, workers=2) as box:
            t = time.perf_counter()
            box.run("1")
            start_ms = (time.perf_counter() - t) * 1000
            state = {"count": 0}
            worker = _timed(lambda: box.run(STEP, tools={"search": search_tool}, state=state), args.steps)
            print(_row("isolated worker (kept), tool over the channel", worker))
            print(_row("isolated worker (kept), bare '1'", _timed(lambda: box.run("1"), args.steps)))
            print(f"{'  (worker start + isolation, once)':<52} {start_ms:8.1f} ms   layers: {box.isolation}")

            steps = 20
            script = [f"Thought: step {i}\nCode:\n```py\n{STEP}\n```<end_action>" for i in range(steps)]
            agent = ReactCodeAgent(tools=[search_tool], llm_engine=ScriptedEngine(script + ["done"]),
                                   max_iterations=steps, sandbox=box)
            t = time.perf_counter()
            agent.run("Count.", count=0)
            per_step = (time.perf_counter() - t) * 1000 / steps
            print(f"{'ReactCodeAgent step, scripted engine (whole step)':<52} mean   {per_step:8.3f} ms   (n={steps})")
            if not args.no_corpus:
                corpus_counts(Sandbox(workspace=Path(tmp) / "corpus", timeout=0.5, memory_mb=256, workers=2))


if __name__ == "__main__":
    main()
