"""The worker process: everything that runs the user's code for one target, apart from the process that owns the verdict.

The command line starts one worker per target (``graphcheck.supervisor``). The worker imports the
target, calls the factory, traces, measures, runs the rules, ``--verify`` and the drawing, then
sends the result back as data over a pipe of its own, never through its stdout. Inside it:

* file descriptors 1 and 2 go to a capture file (what the model, torch and the libraries print;
  ``--debug`` shows it), 0 reads ``/dev/null`` (``input()`` gets end-of-file, never a hang);
* it leads its own process group, so the supervisor can end it with everything it started;
* ``faulthandler`` writes the Python stack to the capture on a crash (SIGSEGV...) and on SIGUSR1
  (the supervisor's timeout), so a message can name the user's line that was running;
* temporary files (torch's compile caches included) go to a folder the supervisor removes;
* once the result is sent, it runs the user's ``atexit`` cleanups and leaves with ``os._exit``:
  threads the user's code started cannot keep it alive, and the supervisor ends what is left
  after a grace period (its process group).

This module imports no torch at module level: the supervisor imports it to name the worker's
entry point; the forkserver preloads the analysis (:data:`PRELOAD`).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from typing import Any

from graphcheck import phases

# What the forkserver imports once, so each worker starts without paying torch's import. A repository
# of library models can add modules with GRAPHCHECK_PRELOAD (comma separated, e.g. "transformers"):
# a worker forked after that import does not pay it again for every target.
PRELOAD = ["torch", "graphcheck.checker", "graphcheck.verify", "graphcheck.drawing"]


def preload() -> list[str]:
    """The modules the forkserver imports: :data:`PRELOAD` and those named in ``GRAPHCHECK_PRELOAD``."""
    extra = [name.strip() for name in os.environ.get("GRAPHCHECK_PRELOAD", "").split(",") if name.strip()]
    return PRELOAD + [name for name in extra if name not in PRELOAD]

STACK_SIGNAL = signal.SIGUSR1   # the supervisor asks for the Python stack before a timeout kill


@dataclass(frozen=True)
class Request:
    """One target to analyse, with everything the worker needs (plain data, pickled to the worker)."""

    target: str
    label: str
    options: dict                       # keyword arguments of graphcheck.checker.check
    input_shapes: tuple = ()            # --input-shape strings (the worker makes the tensors)
    render: tuple | None = None         # (path, depth, full) when --render asks for this target's drawing
    cwd: str = "."
    environ: dict = field(default_factory=dict)
    sys_path: tuple = ()
    timeout: float = 0.0                # seconds the supervisor allows; 0: no limit
    capture: str = ""                   # file that receives the worker's fd 1 and 2
    tmpdir: str = ""                    # the worker's temporary folder (removed by the supervisor)


@dataclass
class Reply:
    """What the worker sends back once the analysis is finished."""

    result: Any                         # graphcheck.report.TargetResult without graph and subject
    rendered: tuple | None = None       # (message, image written) of the drawing


def run(request: Request, channel) -> None:
    """The worker's entry point (in the child process): analyse, send the reply, leave."""
    os.setsid()
    _isolate(request)
    phases.listen(lambda phase: channel.send(("phase", phase)))
    reply = _analyse(request, lambda text: channel.send(("progress", text)))
    phases.listen(None)
    phases.enter("report")
    channel.send(("result", reply))
    channel.close()
    _leave()


def _leave() -> None:
    """Run the cleanups the user's code registered with ``atexit`` (the supervisor gives them
    ``EXIT_GRACE`` seconds), then leave without waiting for any thread it started."""
    import atexit
    try:
        atexit._run_exitfuncs()
    except BaseException:   # the verdict is already sent; a failing cleanup changes nothing
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _isolate(request: Request) -> None:
    """Output to the capture, input from /dev/null, the caller's folder, environment and path."""
    capture = os.open(request.capture, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((null, 0), (capture, 1), (capture, 2)):
        os.dup2(source, target)
    os.close(null)
    faulthandler.enable(file=capture, all_threads=True)
    faulthandler.register(STACK_SIGNAL, file=capture, all_threads=True)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.environ)
    if request.tmpdir:
        for name in ("TMPDIR", "TEMP", "TMP"):
            os.environ[name] = request.tmpdir
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(request.tmpdir, "inductor"))
        os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(request.tmpdir, "triton"))
        tempfile.tempdir = request.tmpdir
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # never download anything while linting
    sys.path[:] = list(request.sys_path) or sys.path


def _analyse(request: Request, progress) -> Reply:
    from graphcheck.report import TargetResult
    result = TargetResult(target=request.label)
    rendered = None
    try:
        from graphcheck.checker import check
        from graphcheck.loader import parse_input_shapes
        inputs = parse_input_shapes(list(request.input_shapes))
        result = check(request.target, inputs or None, name=request.label, progress=progress, **request.options)
        if request.render is not None and result.graph is not None:
            rendered = _render(result, *request.render)
    except SystemExit as exc:
        _error(result, f"the model's code called sys.exit({exc.code!r}) while {phases.describe(phases.current())}. "
                       "graphcheck runs the factory, forward, the loss and the step like the training code "
                       "would; they must return, not end the process.")
    except KeyboardInterrupt:
        _error(result, f"the model's code raised KeyboardInterrupt while {phases.describe(phases.current())}"
                       f"{_innermost(sys.exc_info()[2])}.")
    except BaseException as exc:   # anything else escaping check() is graphcheck's own bug
        _error(result, f"graphcheck failed with an internal error ({type(exc).__name__}: {exc}). "
                       "Please report it with the output of --debug.")
    result.graph = None
    result.subject = None
    return Reply(result=result, rendered=rendered)


def _error(result, message: str) -> None:
    result.status, result.error = "error", message
    result.detail = (result.detail or "") + traceback.format_exc()
    result.findings = []


def _innermost(tb) -> str:
    frames = [f for f in traceback.extract_tb(tb) if "graphcheck" not in f.filename.split(os.sep)[-2:-1]]
    return f" ({os.path.relpath(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""


def _render(result, path: str, depth: int, full: bool) -> tuple[str, bool]:
    phases.enter("render")
    from graphcheck.drawing import render_one
    try:
        rendered = render_one(result, path, depth=depth, full=full)
    except Exception as exc:   # a drawing must never cost the user the report or exit code
        return f"could not draw ({type(exc).__name__}: {exc})", False
    return rendered.message, rendered.image
