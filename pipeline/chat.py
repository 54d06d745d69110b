"""Talk to the agent: a multi-turn prompt in the terminal, the models loaded once.

    python -m pipeline.chat                                   (or: rewoo chat) on the demo models
    rewoo chat --planner ./outputs/planner-merged --mode react
    printf 'Compute 12 + 30.\\nAnd that times 2?\\n' | rewoo chat --planner http://127.0.0.1:8000/v1

Each line is one task for the agent, run in this process with the same view as ``pipeline.run``
(the plan as it is written, each step's evidence as it lands, the answer). Lines that start with
``/`` are commands: ``/exit`` (also ``/quit`` or Ctrl-D), ``/reset`` (forget the conversation),
``/tools`` (list the toolbox), ``/mode rewoo|react|code`` (switch the agent), ``/help``.

How earlier turns reach the next task: the models see one task at a time (the planner was trained
on single tasks, and ReWOO's planner sees nothing but its prompt), so the conversation travels in
the task text itself. With earlier turns, the task the agent gets is::

    Conversation so far:
    User: <an earlier line>
    Assistant: <its answer, cut at 300 characters>
    ...
    Current task: <the line just typed>

holding the last ``--history`` turns (default 3; ``--history 0`` sends each line alone). A turn that
failed (a plan that does not parse, an unreachable model) prints one ``error:`` line, is left out
of the conversation, and the session goes on. Typed lines are kept in a readline history
(``~/.cache/rewoo-stack/chat_history``) when the input is a terminal; piped input (one task or
command per line) works too and ends at end of input. Bad flags: one line and exit code 2, as
``pipeline.run``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.run import add_tool_prior_arg, check_tool_prior
from pipeline.usage import EXIT_BAD_INPUT, UsageError
from toolkit.helpformat import HelpFormatter

MODES = ("rewoo", "react", "code")
ANSWER_CHARS = 300  # of each earlier answer, in the context block
COMMANDS_HELP = ("/exit (or /quit, Ctrl-D) ends; /reset forgets the conversation; /tools lists the toolbox; "
                 "/mode rewoo|react|code switches the agent; /help shows this")


@dataclass
class Turn:
    """One finished exchange: the line typed and the agent's answer."""

    task: str
    answer: str


def with_context(task: str, turns: list[Turn], history: int) -> str:
    """The text the agent gets for ``task``: the last ``history`` turns, then the task (the task
    alone when there are none)."""
    kept = turns[-history:] if history > 0 else []
    if not kept:
        return task
    lines = ["Conversation so far:"]
    for t in kept:
        answer = " ".join(t.answer.split())
        if len(answer) > ANSWER_CHARS:
            answer = answer[:ANSWER_CHARS] + " ..."
        lines += [f"User: {' '.join(t.task.split())}", f"Assistant: {answer}"]
    lines.append(f"Current task: {task}")
    return "\n".join(lines)


@dataclass
class ChatSession:
    """The engines and toolbox (loaded once), the agent mode and the conversation so far.

    ``settings``: ``Pipeline`` keyword arguments (template, constrain, budgets, replan, ...);
    ``max_new_tokens``: the ReAct / Code agents' budget per step (None: theirs); ``agent``: the
    engine they run on (None: the planner's)."""

    planner: Any
    caller: Any
    solver: Any
    toolbox: Any
    console: Any
    mode: str = "rewoo"
    history: int = 3
    settings: dict = field(default_factory=dict)
    max_new_tokens: int | None = None
    turns: list[Turn] = field(default_factory=list)
    agent: Any = None
    _pipeline: Any = None

    def ask(self, text: str) -> str:
        """Run one task (with the conversation as context) and show it; returns the answer."""
        from pipeline.run import TerminalView

        task = with_context(text, self.turns, self.history)
        if self.mode == "rewoo":
            if self._pipeline is None:
                from pipeline.rewoo import Pipeline
                self._pipeline = Pipeline(self.planner, self.caller, self.solver, self.toolbox, **self.settings)
            result = self._pipeline.run(task, on_event=TerminalView(self.console))
            answer, stats = result.answer, result.stats
            self.console.print(f"[dim]{stats['llm_calls']} model calls, {stats['prompt_tokens']} prompt + "
                               f"{stats['completion_tokens']} completion tokens, {stats['wall_s']:.2f} s[/dim]")
        else:
            from rich.panel import Panel

            from pipeline.agents import make_agent
            agent = make_agent(self.mode, self.agent or self.planner, self.toolbox, verbose=1,
                               max_new_tokens=self.max_new_tokens)
            answer = agent.run(task)
            answer = answer if isinstance(answer, str) else str(answer)
            self.console.print(Panel(answer or "(empty answer)", title="Answer", expand=False))
        self.turns.append(Turn(text, answer))
        return answer

    def command(self, line: str) -> bool:
        """Handle a ``/command``; False when the session should end."""
        name, _, rest = line.partition(" ")
        name, rest = name.lower(), rest.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/reset":
            self.turns.clear()
            self.console.print("[dim]conversation forgotten[/dim]")
        elif name == "/tools":
            for tool_name in self.toolbox:
                description = " ".join(str(getattr(self.toolbox[tool_name], "description", "")).split())
                self.console.print(f"[bold]{tool_name}[/bold]  {description[:120]}", highlight=False)
        elif name == "/mode":
            if rest not in MODES:
                self.console.print(f"error: /mode takes one of {', '.join(MODES)}; the mode is {self.mode}",
                                   highlight=False)
            else:
                self.mode = rest
                self.console.print(f"[dim]mode: {rest}[/dim]")
        elif name == "/help":
            self.console.print(COMMANDS_HELP, highlight=False)
        else:
            self.console.print(f"error: unknown command {name}; {COMMANDS_HELP}", highlight=False)
        return True


def run_session(session: ChatSession, lines: Iterable[str], debug: bool = False) -> int:
    """Feed ``lines`` to ``session`` until ``/exit`` or the end of the lines; returns 0."""
    from pipeline.engines import EngineError
    from pipeline.plan import PlanError

    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not session.command(line):
                break
            continue
        try:
            session.ask(line)
        except (PlanError, EngineError, UsageError, ValueError) as e:
            if debug:
                traceback.print_exc()
            raw_plan = getattr(e, "raw_output", None)
            shown = f" (the planner wrote: {raw_plan!r})" if raw_plan is not None else ""
            session.console.print(f"error: {e}{shown}", highlight=False, markup=False)
    return 0


def terminal_lines(prompt: str = "you> ") -> Iterator[str]:
    """Lines typed at a terminal, with readline editing and a history file; ends at Ctrl-D."""
    history_file = None
    try:
        import readline

        from pipeline.defaults import cache_root
        history_file = cache_root() / "chat_history"
        if history_file.is_file():
            readline.read_history_file(history_file)
        readline.set_history_length(1000)
    except (ImportError, OSError):
        readline = None
    try:
        while True:
            try:
                yield input(prompt)
            except EOFError:
                print()
                return
            except KeyboardInterrupt:  # Ctrl-C clears the line, as in a shell
                print()
    finally:
        if readline is not None and history_file is not None:
            try:
                history_file.parent.mkdir(parents=True, exist_ok=True)
                readline.write_history_file(history_file)
            except OSError:
                pass


def piped_lines(stream, console) -> Iterator[str]:
    """Lines of a non-interactive input, each echoed after the prompt so the transcript reads as a chat."""
    for line in stream:
        line = line.rstrip("\n")
        console.print(f"[bold]you>[/bold] {line}", highlight=False)
        yield line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewoo chat", formatter_class=HelpFormatter,
                                description="Talk to the agent: a multi-turn prompt in the terminal (one task per "
                                            "line; " + COMMANDS_HELP + "). Earlier turns reach the next task as a "
                                            "'Conversation so far' block in its text.")
    p.add_argument("--planner", help="planner model: local path, model name or http://host:port/v1 "
                                     "(default: the demo models)")
    p.add_argument("--caller", help="function-caller model (same forms); default: the default caller adapter "
                                    "when the planner is the default, else none")
    p.add_argument("--solver", help="solver model (same forms); default: the planner's engine")
    p.add_argument("--tools", action="append", metavar="SPEC",
                   help="replace the toolbox (as pipeline.run --tools; repeat to combine)")
    p.add_argument("--mode", choices=MODES, default="rewoo", help="the agent to start with (/mode switches)")
    p.add_argument("--history", type=int, default=3, metavar="N",
                   help="earlier turns given to each task as context (0: none)")
    p.add_argument("--template", choices=["alpaca", "chat"], default="alpaca",
                   help="prompt template the models were trained on")
    p.add_argument("--max-new-tokens", type=int, help="planner token budget (default: as pipeline.run)")
    add_tool_prior_arg(p)
    p.add_argument("--no-constrain", action="store_true", help="decode without the plan grammar / call schemas")
    p.add_argument("--tool-timeout", type=float, default=60.0, help="seconds per tool call")
    p.add_argument("--replan", type=int, metavar="N", help="rounds of replanning while steps fail (default: as "
                                                         "pipeline.run)")
    p.add_argument("--load-in-4bit", action="store_true", help="load local models in 4-bit NF4 (bitsandbytes)")
    p.add_argument("--threads", type=int, help="torch threads for local models (default: as pipeline.run)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true", help="show the libraries' progress bars and notes")
    return p


def _check(args) -> None:
    import math

    if args.history < 0:
        raise UsageError(f"--history must be 0 or more turns, got {args.history}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not (math.isfinite(args.tool_timeout) and args.tool_timeout > 0):
        raise UsageError(f"--tool-timeout must be a positive number of seconds, got {args.tool_timeout:g}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    check_tool_prior(args)
    if args.replan is not None and args.replan < 0:
        raise UsageError(f"--replan must be 0 or more rounds, not {args.replan}")


def main(argv: list[str] | None = None, stdin=None) -> int:
    args = build_parser().parse_args(argv)
    stdin = sys.stdin if stdin is None else stdin
    from rich.console import Console

    from pipeline.run import agent_engine, build_engines, pipeline_settings
    from toolkit.quiet import quiet_libraries

    console = Console(highlight=False)
    try:
        _check(args)
        quiet_libraries(verbose=args.verbose, progress_bars=args.verbose)
        toolbox, demo, planner, caller, solver = build_engines(args)
    except UsageError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    settings = {"template": args.template, "constrain": not args.no_constrain, "tool_timeout": args.tool_timeout,
                **pipeline_settings(args, demo)}
    session = ChatSession(planner, caller, solver, toolbox, console, mode=args.mode, history=args.history,
                          settings=settings, max_new_tokens=args.max_new_tokens, agent=agent_engine(demo, planner))
    interactive = stdin.isatty()
    if interactive:
        console.print(f"[bold]rewoo chat[/bold] ({args.mode}, {len(toolbox)} tools). {COMMANDS_HELP}")
    lines = terminal_lines() if interactive else piped_lines(stdin, console)
    return run_session(session, lines, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
