"""The ``--help`` of every command line of the stack: each option shows its default.

    p = argparse.ArgumentParser(prog="python -m pipeline.run", description=summary(__doc__),
                                formatter_class=HelpFormatter)

:class:`HelpFormatter` is argparse's ``ArgumentDefaultsHelpFormatter`` with two differences: an
option whose help already says its default ("(default 60)", "default: the planner's engine") is
left as it is, and nothing is added for an option that has no default (``None``, an off switch,
an empty string), where "(default: None)" would tell the user nothing. A default that comes from
the environment (an API key) must be described in the help, never printed: say "default
$REWOO_API_KEY" in its help.
"""

from __future__ import annotations

import argparse

__all__ = ["HelpFormatter", "summary"]


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless it says its default already or has none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is False or default == ""
                or default == [] or default is argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"
        return text


def summary(doc: str | None) -> str:
    """The first paragraph of a module docstring as one line (a ``description`` that never stops
    mid-sentence, as the first line alone may)."""
    first = (doc or "").strip().split("\n\n", 1)[0]
    return " ".join(first.split())
