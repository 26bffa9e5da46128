"""Which phase of a target's analysis is running: import, factory, forward, loss, step, probe, executions, verify, render.

The code that runs the user's model says when it enters a phase; the worker process forwards
each change to the process that owns the verdict before the phase starts, so a crash, a hang or
an exit can be said to have happened "while running forward". In-process callers pay one
assignment per change.
"""

from __future__ import annotations

from typing import Callable

PHASES = {
    "start": "starting",
    "import": "importing the target",
    "factory": "running the factory",
    "forward": "running forward",
    "loss": "computing the loss",
    "step": "running the training step",
    "probe": "running the probe pass (forward and backward with the real weights)",
    "executions": "running other executions of forward",
    "verify": "verifying with autograd (--verify)",
    "render": "drawing the flagged paths",
    "report": "sending the result",
}

_current = "start"
_listener: Callable[[str], None] | None = None


def enter(phase: str) -> None:
    """The user's code is about to run in ``phase`` (a key of :data:`PHASES`)."""
    global _current
    if phase != _current:
        _current = phase
        if _listener is not None:
            _listener(phase)


def current() -> str:
    return _current


def describe(phase: str) -> str:
    """``running forward``: the phase as a message says it."""
    return PHASES.get(phase, phase)


def listen(listener: Callable[[str], None] | None) -> None:
    """Call ``listener`` with every phase entered from now on (None: stop)."""
    global _listener
    _listener = listener
