"""The one error type graphcheck raises for bad input: it carries a user-facing paragraph."""

from __future__ import annotations


class GraphcheckError(Exception):
    """A problem with the user's input (target, loss, configuration, tracing).

    The message is one paragraph that says what went wrong and what to try; the CLI
    prints it and exits with code 2. ``detail`` keeps the underlying exception text.
    """

    def __init__(self, message: str, *, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
