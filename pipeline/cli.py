"""One command for the whole stack: ``rewoo COMMAND [ARGS ...]`` (also ``python -m pipeline``).

    rewoo run "TASK" [--mode rewoo|react|code] [--json] ...   = python -m pipeline.run
    rewoo chat [--planner ...] [--mode ...]                    an interactive, multi-turn agent (pipeline.chat)
    rewoo eval --tasks FILE [--json] [--limit N]               = python -m pipeline.eval
    rewoo serve --model PATH|default [--port P] ...            = python -m serve (default: the demo models)
    rewoo train planner|caller [key=value ...]                 = bash scripts/train_planner.sh / train_caller.sh
    rewoo merge BASE ADAPTER OUT [--dtype D]                   = bash scripts/merge.sh (python -m train merge)
    rewoo quantize IN OUT BPW [...]                            = python -m serve.quantize (scripts/quantize.sh)
    rewoo datagen [--out DIR] ...                              = python -m train.datagen
    rewoo demo [--check] ...                                   = python -m train.demo
    rewoo ui [--host H] [--port P] [--model PATH]              the server on the demo models, then its playground address

Each command hands its arguments to the module it names, unchanged, so its options, output, errors
and exit codes are that module's (bad input: one line, exit code 2); ``rewoo COMMAND --help`` shows
the module's own help with every default. The modules are imported only when their command runs:
``rewoo run`` never imports ``train`` or ``serve``.

``--model default`` (``rewoo serve``, and what ``rewoo ui`` uses unless ``--model`` is given) means
the demo models of ``pipeline.defaults``: the base (converted once into the user cache) with the
planner adapter merged at load (``python -m serve --model BASE --adapter data/demo/planner``; the
served model is the planner and the solver of ``POST /v1/pipeline/run``), and beside it the base with
the agent adapter (``--agent-adapter data/demo/agent``, served as ``rewoo-demo-agent``), on which the
route's react and code modes run.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from toolkit.helpformat import HelpFormatter

EXIT_BAD_INPUT = 2
REPO = Path(__file__).resolve().parent.parent
DEMO_MODEL_NAME = "rewoo-demo"
RECIPES = {"planner": ("train/configs/planner_lora.yaml", "scripts/train_planner.sh"),
           "caller": ("train/configs/caller_qlora.yaml", "scripts/train_caller.sh")}


def _fail(message: str) -> int:
    print(f"rewoo: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


# ------------------------------------------------------------------------------------------------
# The commands: each takes the arguments after its name and returns the exit code
# ------------------------------------------------------------------------------------------------

def _run(argv: list[str]) -> int:
    from pipeline.run import main
    return main(argv)


def _chat(argv: list[str]) -> int:
    from pipeline.chat import main
    return main(argv)


def _eval(argv: list[str]) -> int:
    from pipeline.eval import main
    return main(argv)


def _train_module(argv: list[str]) -> int:
    """``python -m train ARGV``, with its ``__main__`` block's handling of user mistakes (one line, exit 2)."""
    from train.__main__ import main
    from train.data import DataError
    from train.merge import MergeError
    from train.recipe import RecipeError

    try:
        return main(argv)
    except (RecipeError, DataError, MergeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def demo_serve_args() -> list[str]:
    """``python -m serve`` arguments for the demo models: the base folder, the planner adapter,
    when the manifest has one, the agent adapter (served as ``rewoo-demo-agent``: the react and code
    modes of ``POST /v1/pipeline/run`` run on it), and the demo's tool prior for that route's planner."""
    from pipeline import defaults

    models = defaults.default_models()
    agent = models["adapters"].get("agent")
    prior = models["pipeline"].get("tool_prior")
    return ["--model", models["base"], "--adapter", models["adapters"]["planner"]] + (
        ["--agent-adapter", agent] if agent else []) + (["--tool-prior", str(prior)] if prior else [])


def _with_default_model(argv: list[str]) -> list[str]:
    """``argv`` with ``--model default`` (or ``--model=default``) replaced by the demo models."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--model", "--model=default") and (arg == "--model=default" or argv[i + 1:i + 2] == ["default"]):
            out += demo_serve_args()
            if "--served-model-name" not in argv and not any(a.startswith("--served-model-name=") for a in argv):
                out += ["--served-model-name", DEMO_MODEL_NAME]
            i += 1 if arg == "--model=default" else 2
            continue
        out.append(arg)
        i += 1
    return out


def _serve(argv: list[str]) -> int:
    from pipeline.defaults import DefaultModelError

    if "-h" not in argv and "--help" not in argv:
        try:
            argv = _with_default_model(argv)
        except DefaultModelError as e:
            return _fail(f"serve --model default: {e}")
    from serve.__main__ import main
    return main(argv)


def _train(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="rewoo train", formatter_class=HelpFormatter,
        description="LoRA SFT of the planner (train/configs/planner_lora.yaml) or QLoRA SFT of the function "
                    "caller (train/configs/caller_qlora.yaml) through python -m train sft. In a checkout this runs "
                    "scripts/train_planner.sh / train_caller.sh (the same checks, the generated dataset on first "
                    "use, several GPUs with NUM_GPUS=N, several nodes with HOSTFILE, train.log in output_dir); "
                    "installed without the scripts, it runs python -m train sft in this process (give dataset=).",
        epilog="Every recipe key, its default and meaning: python -m train sft --help-recipe")
    p.add_argument("role", choices=sorted(RECIPES), help="which model to train")
    p.add_argument("--recipe", help="YAML recipe instead of the role's (default: train/configs/planner_lora.yaml "
                                    "or caller_qlora.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe keys, e.g. model_name_or_path=PATH dataset=FILE max_steps=10 (model_name_or_path "
                        "is required)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the libraries' notes that are hidden by default (as the scripts' -v)")
    a = p.parse_args(argv)
    bad = [o for o in a.overrides if "=" not in o]
    if bad:
        return _fail(f"train {a.role}: {bad[0]!r} is not key=value (e.g. model_name_or_path=PATH)")
    recipe_rel, script_rel = RECIPES[a.role]
    script = REPO / script_rel
    if script.is_file():
        env = {**os.environ}
        env.setdefault("PYTHON", sys.executable)
        if a.recipe:
            env["RECIPE"] = str(Path(a.recipe).resolve()) if Path(a.recipe).exists() else a.recipe
        return subprocess.call(["bash", str(script), *a.overrides, *(["-v"] if a.verbose else [])], env=env)
    if os.environ.get("NUM_GPUS", "1") not in ("", "1") or os.environ.get("HOSTFILE"):
        return _fail(f"NUM_GPUS / HOSTFILE need {script_rel} from the repository checkout; this install has none")
    import train

    recipe = a.recipe or str(Path(train.__file__).parent / Path(recipe_rel).relative_to("train"))
    return _train_module(["sft", "--config", recipe, *a.overrides, *(["-v"] if a.verbose else [])])


def _merge(argv: list[str]) -> int:
    """``rewoo merge BASE ADAPTER OUT [--dtype D] [--max-shard-size S]`` (as scripts/merge.sh), or the
    flag form of ``python -m train merge`` (``--base B --adapter A --out O``)."""
    if len(argv) >= 3 and not any(x.startswith("-") for x in argv[:3]):
        argv = ["--base", argv[0], "--adapter", argv[1], "--out", argv[2], *argv[3:]]
    return _train_module(["merge", *argv])


def _quantize(argv: list[str]) -> int:
    from serve.quantize import main
    return main(argv)


def _datagen(argv: list[str]) -> int:
    return _train_module(["datagen", *argv])


def _demo(argv: list[str]) -> int:
    from train.demo import main
    return main(argv)


def ui_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewoo ui", formatter_class=HelpFormatter,
        description="Start python -m serve (with its pipeline route, POST /v1/pipeline/run) on the demo models "
                    "and print the address of its web playground, http://HOST:PORT/ui. Ctrl-C stops the server. "
                    "Any other option goes to python -m serve (python -m serve --help).")
    p.add_argument("--model", default="default",
                   help="model folder to serve; default: the demo models (base + planner adapter, pipeline.defaults)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (beyond loopback needs --api-key)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--startup-timeout", type=float, default=600.0,
                   help="seconds to wait for the server to answer /health (the first run converts the base model)")
    return p


def _ui(argv: list[str]) -> int:
    import httpx

    a, rest = ui_parser().parse_known_args(argv)
    if a.startup_timeout <= 0:
        return _fail(f"ui: --startup-timeout must be a positive number of seconds, not {a.startup_timeout:g}")
    serve_argv = ["--model", a.model, "--host", a.host, "--port", str(a.port), *rest]
    if a.model == "default":
        from pipeline.defaults import DefaultModelError
        try:
            serve_argv = _with_default_model(serve_argv)
        except DefaultModelError as e:
            return _fail(f"ui: {e}")
    shown = "127.0.0.1" if a.host in ("0.0.0.0", "::", "") else a.host
    base = f"http://{'[' + shown + ']' if ':' in shown else shown}:{a.port}"
    proc = subprocess.Popen([sys.executable, "-m", "serve", *serve_argv])

    def stop(signum, frame):  # SIGTERM to rewoo ui stops its server too (Ctrl-C reaches both)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        deadline = time.monotonic() + a.startup_timeout
        while proc.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=2.0).status_code == 200:
                    print(f"[rewoo ui] playground: {base}/ui   (API: {base}/v1; Ctrl-C stops the server)", flush=True)
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                stop_process(proc)
                return _fail(f"ui: the server did not answer {base}/health within {a.startup_timeout:g} s")
            time.sleep(0.25)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_process(proc)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a child process if it still runs: SIGTERM, 30 s to exit, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (_run, "run an agent on one task (python -m pipeline.run)"),
    "chat": (_chat, "talk to the agent: a multi-turn prompt with the plan/evidence view (pipeline.chat)"),
    "eval": (_eval, "evaluate an agent on a task file (python -m pipeline.eval)"),
    "serve": (_serve, "the OpenAI-compatible server (python -m serve); --model default serves the demo models"),
    "train": (_train, "train planner|caller from its recipe (scripts/train_planner.sh, train_caller.sh)"),
    "merge": (_merge, "merge a LoRA adapter into its base: BASE ADAPTER OUT (scripts/merge.sh)"),
    "quantize": (_quantize, "EXL2/EXL3 quantization on a GPU: IN OUT BPW (python -m serve.quantize)"),
    "datagen": (_datagen, "generate planner and caller datasets (python -m train.datagen)"),
    "demo": (_demo, "build or check the demo adapters (python -m train.demo)"),
    "ui": (_ui, "start the server on the demo models and print its playground address (/ui)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level ``rewoo`` parser (for ``--help``; the commands parse their own arguments)."""
    p = argparse.ArgumentParser(
        prog="rewoo", formatter_class=HelpFormatter,
        description="rewoo-stack: plan-first agents, their training and their server. Each command takes the "
                    "options of the module it names.",
        epilog="rewoo COMMAND --help shows a command's options with their defaults.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, (_, summary) in COMMANDS.items():
        sub.add_parser(name, help=summary, add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:
            parser.print_usage(sys.stderr)
            return _fail("give a command: " + ", ".join(COMMANDS) + " (rewoo --help)")
        parser.print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return _fail(f"unknown command {command!r}; the commands: {', '.join(COMMANDS)} (rewoo --help)")
    rc = COMMANDS[command][0](rest)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
