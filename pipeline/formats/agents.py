"""The agents' formats: system prompt templates and output parsers of the Code and ReAct agents.

    from pipeline.formats.agents import REACT_CODE_SYSTEM_PROMPT, parse_code_blob, parse_json_action

What the models write (the transformers Agents formats):

- Code agents: ``Thought: ...`` then ``Code:\\n```py\\n...\\n```<end_action>``;
- the JSON agent: ``Thought: ...`` then ``Action:\\n{"action": <tool>, "action_input": {...}}<end_action>``;
- what the agent answers with, after each step: ``Observation:\\n...`` or ``Error: ...``.

A template holds the placeholders ``<<tool_descriptions>>`` (required), ``<<tool_names>>``,
``<<authorized_imports>>`` and ``<<managed_agents_descriptions>>``; :func:`render_system_prompt`
fills them. The parsers raise :class:`AgentParseError`, whose message is written for the model:
the agent feeds it back so the model can fix its next output.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "END_ACTION", "REACT_STOP_SEQUENCES", "CODE_STOP_SEQUENCES", "PLACEHOLDERS",
    "CODE_SYSTEM_PROMPT", "REACT_CODE_SYSTEM_PROMPT", "REACT_JSON_SYSTEM_PROMPT", "TOOL_DESCRIPTION_TEMPLATE",
    "AgentParseError", "check_system_prompt", "render_system_prompt", "managed_agents_text", "task_text",
    "task_message", "observation_message", "error_message", "stuck_messages",
    "split_thought", "parse_code_blob", "parse_json_action",
]

END_ACTION = "<end_action>"
# The model stops after its action; "Observation:" too, in case it starts writing one itself.
REACT_STOP_SEQUENCES = [END_ACTION, "Observation:"]
CODE_STOP_SEQUENCES = [END_ACTION]
PLACEHOLDERS = ("<<tool_descriptions>>", "<<tool_names>>", "<<authorized_imports>>",
                "<<managed_agents_descriptions>>")

# How one tool is described in the prompt (``Toolbox.show_tool_descriptions`` fills it).
TOOL_DESCRIPTION_TEMPLATE = ("- {name}: {description}\n"
                             "    Takes inputs: {inputs}\n"
                             "    Returns an output of type: {output_type}\n")

CODE_SYSTEM_PROMPT = """You solve a task by writing one block of Python that calls tools, all in one go.
Each tool is a Python function; its description below says what it does, what it takes and what it returns.
First write 'Thought:' and say which tools you will use and why. Then write 'Code:' and the code, in a block that opens with ```py and ends with ```<end_action>.
Keep each line simple: one tool call or one computation per assignment. Print intermediate results when it helps.
End the code with final_answer(...): its argument is what the run returns.
You may import only these modules: <<authorized_imports>>

Tools:
<<tool_descriptions>>

<<managed_agents_descriptions>>

Examples (their tools are made up):
---
Task: "Translate the text in the variable `text` from German to English and count its words."

Thought: I will use `translator` to translate `text`, then count the words in Python.
Code:
```py
english = translator(text=text, src_lang="German", tgt_lang="English")
print(f"Translation: {english}")
final_answer(len(english.split()))
```<end_action>

---
Task: "Describe the picture in the variable `photo` in one French sentence."

Thought: I will use `captioner` to describe `photo` in English, then `translator` to put the caption into French.
Code:
```py
caption = captioner(image=photo)
french = translator(text=caption, src_lang="English", tgt_lang="French")
final_answer(french)
```<end_action>

---
The examples used made-up tools. You have only these: <<tool_names>>

Use only variables that you define or that the task gives you.
Pass tool arguments by name, as in translator(text=text, ...), never as one dict.
Always write 'Code:', then ```py, the code, and ```<end_action>.

Now begin.
"""

REACT_CODE_SYSTEM_PROMPT = """You solve a task step by step, writing Python code that calls tools.
Each step is a cycle of 'Thought:', 'Code:' and 'Observation:'.
In 'Thought:', say what you know so far, what you will do next and which tools you will use.
In 'Code:', write simple Python in a block that opens with ```py and ends with ```<end_action>.
Print what you will need later: what the code prints comes back to you in 'Observation:' at the next step.
Variables and imports persist from one step to the next.
When you know the answer, call final_answer(answer) in a code block.

Examples (their tools are made up):
---
Task: "How many days are there between the two dates in the variable `dates`?"

Thought: The dates are ISO strings in `dates`; the datetime module computes the difference, no tool is needed.
Code:
```py
from datetime import date
first = date.fromisoformat(dates[0])
second = date.fromisoformat(dates[1])
final_answer(abs((second - first).days))
```<end_action>

---
Task: "Which river is longer, the Danube or the Rhine?"

Thought: I will look up both lengths with `search` and print them, then compare them at the next step.
Code:
```py
danube = search(query="length of the Danube")
print("Danube:", danube)
rhine = search(query="length of the Rhine")
print("Rhine:", rhine)
```<end_action>
Observation:
Danube: The Danube is 2,850 km long.
Rhine: The Rhine is about 1,230 km long.

Thought: 2,850 km is more than 1,230 km, so the Danube is longer.
Code:
```py
final_answer("the Danube")
```<end_action>

---
The examples used made-up tools. Besides computing in Python, you can call these tools (and no others), as functions with keyword arguments:

<<tool_descriptions>>

<<managed_agents_descriptions>>

Rules:
1. Every step has a 'Thought:' and a 'Code:' block that opens with ```py and ends with ```<end_action>.
2. Use only variables you have defined.
3. Pass tool arguments by name, as in search(query="..."), never as one dict.
4. When a tool's output is unpredictable (a search), end the block after it: print the result and use it at the next step.
5. Do not repeat a tool call with the same arguments.
6. Do not give a variable the name of a tool, such as final_answer.
7. You may import only these modules: <<authorized_imports>>
8. Keep going until you can call final_answer; solve the task rather than explain how to.

Now begin.
"""

REACT_JSON_SYSTEM_PROMPT = """You solve a task step by step, calling one tool per step.
Each step is a cycle of 'Thought:', 'Action:' and 'Observation:'.
In 'Thought:', say what you know so far, which tool you will call next and why.
In 'Action:', write one JSON object with two keys, "action" (the tool's name) and "action_input" (its arguments, as an object), then <end_action>:

Action:
{
  "action": "search",
  "action_input": {"query": "population of Lyon"}
}<end_action>

The tool's output comes back to you in 'Observation:'. To use it in a later call, write it into that call's arguments.
When you know the answer, call the final_answer tool:

Action:
{
  "action": "final_answer",
  "action_input": {"answer": "the answer"}
}<end_action>

Examples (their tools are made up):
---
Task: "Which river is longer, the Danube or the Rhine?"

Thought: I will look up the length of the Danube first.
Action:
{
  "action": "search",
  "action_input": {"query": "length of the Danube"}
}<end_action>
Observation: The Danube is 2,850 km long.

Thought: Now the length of the Rhine.
Action:
{
  "action": "search",
  "action_input": {"query": "length of the Rhine"}
}<end_action>
Observation: The Rhine is about 1,230 km long.

Thought: 2,850 km is more than 1,230 km, so the Danube is longer.
Action:
{
  "action": "final_answer",
  "action_input": {"answer": "the Danube"}
}<end_action>

---
The examples used made-up tools. You can call these tools, and no others:

<<tool_descriptions>>

<<managed_agents_descriptions>>

Rules:
1. Every step has a 'Thought:' and an 'Action:' with exactly one JSON object, then <end_action>.
2. "action" is one of: <<tool_names>>.
3. "action_input" holds the tool's arguments by name. A string that is the name of a variable you were given stands for its value.
4. Do not repeat a tool call with the same arguments.
5. Keep going until you can call final_answer; solve the task rather than explain how to.

Now begin.
"""

_MANAGED_INTRO = ("You can also hand work to these team members. Call one like a tool, with one argument, "
                  "`request`: a string that says everything it needs to know.\n")
_STUCK_INTRO = ("An agent worked on the request below but stopped before it gave an answer. "
                "Its memory follows: its steps and what it observed.")


class AgentParseError(ValueError):
    """Model output that does not follow the format. The message is addressed to the model."""


# --------------------------------------------------------------------------------------------
# System prompts and messages
# --------------------------------------------------------------------------------------------

def check_system_prompt(template: str) -> None:
    """Refuse a template the agent cannot work with (one without ``<<tool_descriptions>>``)."""
    if not isinstance(template, str) or not template.strip():
        raise ValueError("system_prompt must be a non-empty string")
    if "<<tool_descriptions>>" not in template:
        raise ValueError("system_prompt has no <<tool_descriptions>> placeholder, so the model would never learn "
                         "which tools it has; put <<tool_descriptions>> where the tool list belongs")


def managed_agents_text(managed: Mapping[str, str]) -> str:
    """The ``<<managed_agents_descriptions>>`` text: empty without managed agents."""
    if not managed:
        return ""
    return _MANAGED_INTRO + "\n".join(f"- {name}: {description}" for name, description in managed.items())


def render_system_prompt(template: str, tool_descriptions: str, tool_names: Iterable[str],
                         authorized_imports: Iterable[str] = (), managed_agents: Mapping[str, str] | None = None) -> str:
    """The template with its placeholders filled."""
    check_system_prompt(template)
    text = template.replace("<<tool_descriptions>>", tool_descriptions)
    text = text.replace("<<tool_names>>", ", ".join(tool_names))
    text = text.replace("<<authorized_imports>>", ", ".join(sorted(set(authorized_imports))) or "(none)")
    text = text.replace("<<managed_agents_descriptions>>", managed_agents_text(managed_agents or {}))
    return re.sub(r"\n{3,}", "\n\n", text)  # an empty placeholder leaves no hole


def task_text(task: str, arguments: Mapping[str, Any]) -> str:
    """The task as the agent states it: with the run's keyword arguments, when there are any."""
    if not arguments:
        return task
    return f"{task}\nYou have been provided with these initial arguments: {dict(arguments)}."


def task_message(task: str) -> dict:
    return {"role": "user", "content": f"Task: {task}"}


def observation_message(observation: str) -> dict:
    return {"role": "user", "content": f"Observation:\n{observation}"}


def error_message(error: str) -> dict:
    return {"role": "user", "content": f"Error: {error}\nFix this in your next step. If the same approach has "
                                       "failed more than once, try a different one."}


def stuck_messages(memory: list[dict], task: str) -> list[dict]:
    """The prompt that asks for an answer when the agent used all its iterations: the memory
    (without its system prompt), then the request."""
    return ([{"role": "system", "content": _STUCK_INTRO}] + [m for m in memory if m["role"] != "system"]
            + [{"role": "user", "content": f"From what the memory above holds, answer this request:\n{task}"}])


# --------------------------------------------------------------------------------------------
# Parsers
# --------------------------------------------------------------------------------------------

def split_thought(output: str, token: str) -> tuple[str, str]:
    """``(thought, action)`` around the last ``token`` ("Action:" or "Code:") of a model output;
    the thought loses its ``Thought:`` label."""
    head, sep, action = output.rpartition(token)
    if not sep:
        example = ('Action:\n{"action": "tool_name", "action_input": {"argument": "value"}}' if token == "Action:"
                   else "Code:\n```py\nprint(\"hello\")\n```")
        raise AgentParseError(f"your output has no '{token}'. Write 'Thought:' with your reasoning, then "
                              f"'{token}' and the action, like this:\n{example}{END_ACTION}\nYour output was:\n{output}")
    thought = head.strip()
    if thought.startswith("Thought:"):
        thought = thought[len("Thought:"):].strip()
    return thought, action.strip()


_FENCE = re.compile(r"```[ \t]*(?:py|python|python3)?[ \t]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)


def parse_code_blob(text: str) -> str:
    """The Python code of a ``Code:`` action: the contents of its ```py fences (joined, when there
    are several), or the text itself when it has no fence but parses as Python."""
    text = text.replace(END_ACTION, "")
    blocks = [b.strip("\n") for b in _FENCE.findall(text)]
    blocks = [b for b in blocks if b.strip()]
    if blocks:
        return "\n\n".join(blocks)
    candidate = text.strip()
    if candidate:
        try:
            ast.parse(candidate)
        except SyntaxError:
            pass
        else:
            return candidate
    raise AgentParseError("no code block found. Put your code between ```py and ```, then write " + END_ACTION +
                          ", like this:\nCode:\n```py\nresult = 2 + 2\nprint(result)\n```" + END_ACTION +
                          f"\nYour output was:\n{text}")


def parse_json_action(text: str) -> tuple[str, Any]:
    """``(tool name, arguments)`` of an ``Action:`` JSON object ``{"action", "action_input"}``.

    ``arguments`` is a dict of arguments, or a single value when ``action_input`` is not an
    object. Text around the object (a ```json fence, <end_action>) is ignored.
    """
    start = text.find("{")
    if start < 0:
        raise AgentParseError('the action is not a JSON object. Write it as {"action": "tool_name", '
                              f'"action_input": {{"argument": "value"}}}}{END_ACTION}\nYour action was:\n{text}')
    try:
        blob, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        raise AgentParseError(f"the action is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}). "
                              "Use double quotes around keys and strings and escape quotes inside strings.\n"
                              f"Your action was:\n{text[start:]}") from e
    if not isinstance(blob, dict) or "action" not in blob:
        raise AgentParseError('the JSON object has no "action" key. Write {"action": "tool_name", "action_input": '
                              f'{{...}}}}.\nYour action was:\n{text[start:]}')
    name = blob["action"]
    if not isinstance(name, str) or not name.strip():
        raise AgentParseError(f'"action" must be a tool name (a string), not {name!r}.')
    unknown = sorted(set(blob) - {"action", "action_input"})
    if unknown:
        raise AgentParseError(f"the action has unknown keys {unknown}; it takes only \"action\" and \"action_input\".")
    return name.strip(), blob.get("action_input", {})
