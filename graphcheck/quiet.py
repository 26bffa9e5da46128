"""Holding back what the user's code and the libraries print while graphcheck runs them.

stdout belongs to the report (JSON and SARIF must parse) and stderr to graphcheck's own
messages: a model that prints, transformers' and torch's logs and warnings, and
torch.export's graph dumps are captured while the analysis runs. ``--debug`` shows them
on stderr afterwards, marked as the target's output.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from typing import Iterator, TextIO


@contextlib.contextmanager
def held_back(show: bool = False, stream: TextIO | None = None) -> Iterator[io.StringIO]:
    """Capture prints (stdout and stderr), Python warnings and logging inside the block.

    With ``show``, what was captured is written to ``stream`` (stderr) at the end.
    """
    stream = stream if stream is not None else sys.stderr
    buffer = io.StringIO()
    previous_disable = logging.root.manager.disable
    handler = logging.StreamHandler(buffer)
    root = logging.getLogger()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(buffer))
        stack.enter_context(contextlib.redirect_stderr(buffer))
        stack.enter_context(warnings.catch_warnings())
        if show:
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: \
                buffer.write(warnings.formatwarning(message, category, filename, lineno, line))
            root.addHandler(handler)
            stack.callback(root.removeHandler, handler)
        else:
            warnings.simplefilter("ignore")
            logging.disable(logging.CRITICAL)
            stack.callback(logging.disable, previous_disable)
        yield buffer
    if show and buffer.getvalue().strip():
        stream.write("graphcheck: --debug: what the target and the libraries printed:\n")
        stream.write(buffer.getvalue())
        if not buffer.getvalue().endswith("\n"):
            stream.write("\n")
