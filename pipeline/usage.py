"""What every command line of the pipeline shares: the error a user can fix and its exit code.

Here, not in :mod:`pipeline.run`, so that ``pipeline.run`` and the agents' CLI
(:mod:`pipeline.agents.cli`), which ``pipeline.run`` calls, can both raise it without importing each
other.
"""

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Something the user can fix: printed as one line, exit code 2."""
