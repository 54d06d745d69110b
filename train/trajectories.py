"""ReAct-JSON and code-action trajectories of the demo's grounded tasks, recorded from the real agents.

    rows, dropped = agent_rows(grounded, box, "react", limit=30)  # {"messages": [...]} rows, one per model call
    rows, dropped = agent_rows(grounded, box, "code", limit=30)
    prompts = as_prompts(rows, tokenizer)                           # {"prompt", "completion"}, as the engine renders

Each grounded task (:func:`train.demo_data.ground`: a plan, its real evidence, the answer) is
turned into what a good model would write at each step of a ReAct agent: one tool call per step
(``Thought:`` and a JSON ``Action:`` for :class:`~pipeline.agents.ReactJsonAgent`, ``Thought:`` and
a ``Code:`` block for :class:`~pipeline.agents.ReactCodeAgent`), then ``final_answer``. The script
is then *replayed* through the real agent with an engine that answers it and records the messages
it is sent, and the tools run for real (code in the sandbox, ``save_file`` in the workspace); the
clock answers the task's grounded moment and ``llm`` its stand-in answers. So a training row's
prompt is the prompt the agent builds at run time, by construction: the same system prompt and
tool descriptions, the same observations and error messages. A replay that goes another way than
its script (an observation that differs from the grounded evidence, an error, another answer) is
dropped, and counted.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from typing import Any

from pipeline.formats import agents as fmt

__all__ = ["MODES", "script", "replay", "agent_rows", "as_prompts"]

MODES = ("react", "code")
_VAR = re.compile(r"#E(\d+)")


def _failed(evidence: str) -> bool:
    """Whether a step's grounded evidence is its tool's error (the worker records it so)."""
    return evidence.startswith("Error")


def _thought(description: str, tool: str) -> str:
    d = description.rstrip(".")
    return f"I will use {tool} to {d[:1].lower()}{d[1:]}."


def _final_thought(failed: bool) -> str:
    return ("The tool could not run, so I will say why." if failed
            else "The observation answers the task.")


def _json_action(name: str, arguments: dict) -> str:
    return ('Action:\n{\n  "action": ' + json.dumps(name) + ',\n  "action_input": '
            + json.dumps(arguments, ensure_ascii=False) + "\n}")


def _py_value(text: str) -> str:
    """``text`` as a Python expression: a string literal, or an f-string where it names ``#En``
    (the variable ``en`` that holds step n's output)."""
    if not _VAR.search(text):
        return json.dumps(text, ensure_ascii=False)
    escaped = text.replace("{", "{{").replace("}", "}}")
    body = json.dumps(_VAR.sub(lambda m: "{e" + m.group(1) + "}", escaped), ensure_ascii=False)
    return "f" + body


def _code_call(var: str, tool: str, arguments: dict, computed: set[str]) -> str:
    """``e1 = tool(arg="...")``; an argument that is exactly ``#En`` is the variable itself (as
    text, ``f"{en}"``, when step n computed it in Python rather than called a tool)."""
    parts = []
    for k, v in arguments.items():
        m = _VAR.fullmatch(v) if isinstance(v, str) else None
        if m and f"#E{m.group(1)}" not in computed:
            parts.append(f"{k}=e{m.group(1)}")
        else:
            parts.append(f"{k}={_py_value(v)}")
    return f"{var} = {tool}({', '.join(parts)})"


def _inline_python(var: str, code: str) -> str:
    """A ``python_interpreter`` step's code as a code agent writes it: its printed value kept in
    ``var`` for later steps (``import m; print(x)`` becomes ``import m`` / ``var = x`` /
    ``print(var)``)."""
    m = re.fullmatch(r"(?s)(.*?)print\((.*)\)\s*", code)
    if not m:
        return code
    head = [part.strip() for part in re.split(r";|\n", m.group(1)) if part.strip()]
    return "\n".join(head + [f"{var} = {m.group(2)}", f"print({var})"])


def script(g: dict, mode: str) -> list[str]:
    """What a good model writes at each step of ``mode``'s agent for grounded task ``g`` (each
    without the ``<end_action>`` the engine's stop sequence cuts)."""
    from train.demo_data import call_arguments

    if mode not in MODES:
        raise ValueError(f"unknown agent mode {mode!r}; use one of {', '.join(MODES)}")
    evidence_of = g["evidence"]
    outputs, failed, computed = [], False, set()
    for i, step in enumerate(g["plan"]):
        n = i + 1
        arguments = call_arguments(step)
        thought = "Thought: " + _thought(step.description, step.tool)
        if mode == "react":
            # The model reads an observation and writes it into the next call (no #E variables).
            shown = {k: _VAR.sub(lambda m: evidence_of[f"#E{m.group(1)}"].strip(), v) for k, v in arguments.items()}
            outputs.append(f"{thought}\n{_json_action(step.tool, shown)}")
        elif step.tool == "python_interpreter":  # a code agent runs its Python itself
            computed.add(step.var)
            thought = "Thought: I will compute it in Python."
            outputs.append(f"{thought}\nCode:\n```py\n{_inline_python(f'e{n}', arguments['code'])}\n```")
        else:
            call = _code_call(f"e{n}", step.tool, arguments, computed)
            outputs.append(f"{thought}\nCode:\n```py\n{call}\nprint(e{n})\n```")
        failed = failed or _failed(evidence_of[step.var])
    answer = g["answer"]
    final = "Thought: " + _final_thought(failed)
    if mode == "react":
        outputs.append(f"{final}\n{_json_action('final_answer', {'answer': answer})}")
    else:
        outputs.append(f"{final}\nCode:\n```py\nfinal_answer({json.dumps(answer, ensure_ascii=False)})\n```")
    return outputs


def _replay_tools(box, g: dict) -> list:
    """The toolbox for one replay: the real tools, the clock at the task's grounded moment, the
    ``llm`` tool answering as in the grounded evidence."""
    from train.demo_data import llm_stand_in

    tools = []
    clock = next((g["evidence"][s.var] for s in g["plan"] if s.tool == "get_current_time"), None)
    for name in box:
        tool = box[name]
        if name == "get_current_time" and clock is not None:
            tool = copy.copy(tool)
            tool.forward = lambda clock=clock: clock
        elif name == "llm":
            tool = copy.copy(tool)
            tool.engine = llm_stand_in
        tools.append(tool)
    return tools


def replay(g: dict, box, mode: str) -> list[dict] | None:
    """Run ``mode``'s real agent on ``g``'s task with :func:`script` as the model; returns one chat
    row per model call (the messages it was sent, then the scripted output + ``<end_action>``),
    or None when the run did not follow the script."""
    from pipeline.agents.cli import make_agent

    outputs = script(g, mode)
    sent: list[list[dict]] = []

    def engine(messages, stop_sequences=None, **kw):
        sent.append([dict(m) for m in messages])
        return outputs[len(sent) - 1] if len(sent) <= len(outputs) else "Thought: off script."

    agent = make_agent(mode, engine, _replay_tools(box, g), max_iterations=len(outputs))
    answer = agent.run(g["draft"].text)
    errors = [log["error"] for log in agent.logs if "iteration" in log and "error" in log]
    expected_errors = sum(1 for s in g["plan"] if _failed(g["evidence"][s.var]))
    observed = [a.output.strip() for a in agent.actions if a.status == "ok"]
    grounded = [g["evidence"][s.var].strip() for s in g["plan"] if not _failed(g["evidence"][s.var])
                and not (mode == "code" and s.tool == "python_interpreter")]
    if (len(sent) != len(outputs) or len(errors) != expected_errors or str(answer) != str(g["answer"])
            or observed != grounded):
        return None
    return [{"messages": messages + [{"role": "assistant", "content": out + fmt.END_ACTION}]}
            for messages, out in zip(sent, outputs)]


def agent_rows(grounded: Sequence[dict], box, mode: str, limit: int) -> tuple[list[dict], int]:
    """Chat rows of up to ``limit`` trajectories of ``mode`` over ``grounded`` tasks that have an
    answer (in order); returns ``(rows, dropped)``, ``dropped`` counting replays that left their
    script. Each row's ``meta`` names the task's intent, phrasing, tools and the mode."""
    rows: list[dict] = []
    done = dropped = 0
    for g in grounded:
        if done >= limit:
            break
        if not g["answer"]:
            continue
        got = replay(g, box, mode)
        if got is None:
            dropped += 1
            continue
        done += 1
        info: dict[str, Any] = {"intent": g["draft"].intent, "phrasing": g["draft"].template,
                                "tools": [s.tool for s in g["plan"]], "mode": mode}
        rows += [dict(r, meta=info) for r in got]
    return rows, dropped


def as_prompts(rows: Sequence[dict], tokenizer, template: str = "auto") -> list[dict]:
    """Chat rows as prompt-completion rows rendered as the engine renders the agent's calls
    (``pipeline.engines.render_messages``: the base's chat template under the default engines)."""
    from pipeline.engines import render_messages

    out = []
    for r in rows:
        messages = r["messages"]
        row = {"prompt": render_messages(messages[:-1], tokenizer, template), "completion": messages[-1]["content"]}
        if "meta" in r:
            row["meta"] = r["meta"]
        out.append(row)
    return out
