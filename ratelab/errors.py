"""The one exception type ratelab raises for bad input."""

from __future__ import annotations


class RatelabError(ValueError):
    """Bad input: the message names the argument, what was given and what is allowed.

    Subclasses ``ValueError`` so that callers who already catch ``ValueError`` keep working; the CLI
    prints the message on one line and exits with status 2.
    """
