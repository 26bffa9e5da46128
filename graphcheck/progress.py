"""The status line: what graphcheck is doing, on one line of a terminal's stderr, for runs longer than a second."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class StatusLine:
    """One line on ``stream``, overwritten in place and cleared at the end.

    Nothing is written when the stream is not a terminal, when disabled (``--quiet``), or
    before ``delay`` seconds have passed: a fast run prints nothing at all. A timer shows
    the current status once the delay is over, so a single long phase is shown too.
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True, delay: float = 1.0):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = enabled and bool(isatty and isatty())
        self.delay = delay
        self.text = ""
        self.shown = False
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        if self.enabled:
            self.timer = threading.Timer(delay, self._show)
            self.timer.daemon = True
            self.timer.start()

    def __call__(self, text: str) -> None:
        """Set the status; it is drawn now when the line is already showing or the delay is over."""
        if not self.enabled:
            return
        with self.lock:
            self.text = text
            if self.shown or time.monotonic() - self.started >= self.delay:
                self._draw()

    def _show(self) -> None:
        with self.lock:
            if self.enabled and self.text:
                self._draw()

    def _draw(self) -> None:
        width = 100
        text = self.text if len(self.text) <= width else self.text[: width - 3] + "..."
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Erase the line (if it was ever drawn) and stop."""
        if self.timer is not None:
            self.timer.cancel()
        with self.lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            self.enabled = self.shown = False
