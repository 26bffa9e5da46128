"""The supervisor: runs each target in a worker process, bounded in time, and turns every way a worker can end into a result.

The process the user started never imports torch or the user's code: it owns stdout (the report),
stderr (messages, the status line) and the exit code. Workers come from a ``multiprocessing``
forkserver that has imported the analysis once (``worker.PRELOAD``), so a worker starts in
milliseconds with a fresh state; targets run ``jobs`` at a time (a thread pool waits on them) and
the results come back in the order given.

A worker that ends without sending its result becomes an error result (exit code 2) whose message
says what happened and in which phase: an exit (``os._exit``, a C extension), a signal (a
segmentation fault, with the user's Python frames that ``faulthandler`` wrote), a kill for memory,
or the timeout (with the line that was running). Only a finished analysis gives exit code 0 or 1.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Callable

from graphcheck import phases, worker
from graphcheck.report import TargetResult

DEFAULT_TIMEOUT = 600.0          # seconds per target; 0 turns it off
STACK_GRACE = 1.0                # seconds the worker has to write its stack before the kill
EXIT_GRACE = 2.0                 # seconds the user's atexit cleanups get once the result is in
_POLL = 0.2


class Interrupted(Exception):
    """Ctrl-C: the workers were stopped."""


@dataclass
class Outcome:
    """One target's result, what its worker printed (``--debug``), and its drawing's message."""

    result: TargetResult
    captured: str = ""
    rendered: tuple | None = None


@dataclass
class _Running:
    label: str
    process: object = None
    phase: str = "start"
    progress: str = ""
    timeout: float = 0.0
    killed_by_us: bool = False
    timed_out: bool = False
    started: float = field(default_factory=time.monotonic)


def _context():
    """The forkserver (preloaded with the analysis) where there is one, else spawn.

    multiprocessing's resource tracker (started with the forkserver) warns at exit about semaphores a
    worker registered and never released (it leaves with ``os._exit``); they are cleaned up all the
    same, and stderr belongs to graphcheck's messages, so the tracker starts with that warning off.
    """
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload(worker.preload())
    quiet = "ignore::UserWarning:multiprocessing.resource_tracker"
    previous = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = f"{previous},{quiet}" if previous else quiet
    try:
        from multiprocessing import resource_tracker
        resource_tracker.ensure_running()
    finally:
        if previous is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = previous
    return context


class Supervisor:
    """Runs requests in workers; ``status`` hears one line naming every running target."""

    def __init__(self, *, jobs: int = 1, status: Callable[[str], None] | None = None):
        self.jobs = max(1, int(jobs))
        self.status = status or (lambda text: None)
        self.cancelled = threading.Event()
        self.running: dict[int, _Running] = {}
        self.lock = threading.Lock()
        self.context = _context()

    def run(self, requests: list[worker.Request]) -> list[Outcome]:
        """Every request's outcome, in the order given. Raises :class:`Interrupted` on Ctrl-C."""
        folder = tempfile.mkdtemp(prefix="graphcheck-")
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs) as pool:
                futures = [pool.submit(self._one, index, request, folder) for index, request in enumerate(requests)]
                try:
                    return [future.result() for future in futures]
                except KeyboardInterrupt:
                    self.cancelled.set()
                    for future in futures:
                        future.cancel()
                    self._kill_all()
                    raise Interrupted() from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- one worker -------------------------------------------------------------------------
    def _one(self, index: int, request: worker.Request, folder: str) -> Outcome:
        if self.cancelled.is_set():
            return Outcome(TargetResult(target=request.label, status="error", error="interrupted"))
        own = tempfile.mkdtemp(prefix=f"target-{index}-", dir=folder)
        capture = os.path.join(own, "output.txt")
        request = _with(request, capture=capture, tmpdir=os.path.join(own, "tmp"))
        os.makedirs(request.tmpdir)
        receiving, sending = self.context.Pipe(duplex=False)
        state = _Running(request.label, timeout=float(request.timeout or 0))
        process = self.context.Process(target=worker.run, args=(request, sending), daemon=True,
                                       name=f"graphcheck-worker-{index}")
        state.process = process
        with self.lock:
            self.running[index] = state
        try:
            _start(process)
            state.started = time.monotonic()   # the timeout counts from here (not the forkserver's start)
            sending.close()
            reply = self._wait(state, receiving)
            if reply is not None:
                process.join(timeout=EXIT_GRACE)
        finally:
            with self.lock:
                self.running.pop(index, None)
            self._show()
            _end(process)
            receiving.close()
        captured = _read(capture)
        if reply is not None:
            return Outcome(reply.result, captured, reply.rendered)
        result = TargetResult(target=request.label, status="error",
                              error=self._failure(state, process.exitcode, captured))
        return Outcome(result, captured)

    def _wait(self, state: _Running, channel):
        deadline = state.started + state.timeout if state.timeout > 0 else None
        while True:
            if self.cancelled.is_set():
                state.killed_by_us = True
                return None
            wait = _POLL if deadline is None else max(0.0, min(_POLL, deadline - time.monotonic()))
            try:
                ready = channel.poll(wait)
                message = channel.recv() if ready else None
            except (EOFError, OSError):   # the worker ended without a result
                return None
            if message is not None:
                kind, value = message
                if kind == "result":
                    return value
                if kind == "phase":
                    state.phase = value
                elif kind == "progress":
                    state.progress = value
                    self._show()
                continue
            if deadline is not None and time.monotonic() >= deadline:
                state.timed_out = state.killed_by_us = True
                _ask_for_stack(state.process)
                return None
            if not state.process.is_alive() and not channel.poll(0):
                return None

    def _show(self) -> None:
        with self.lock:
            texts = [state.progress or f"{state.label}: starting" for state in self.running.values()]
        if texts:
            self.status(" | ".join(texts))

    def _kill_all(self) -> None:
        with self.lock:
            states = list(self.running.values())
        for state in states:
            state.killed_by_us = True
            _end(state.process)

    # -- what happened --------------------------------------------------------------------
    def _failure(self, state: _Running, exitcode: int | None, captured: str) -> str:
        phase = phases.describe(state.phase)
        where = _user_frames(captured)
        at = f" at {where}" if where else ""
        if self.cancelled.is_set():
            return "interrupted"
        if state.timed_out:
            return (f"timed out after {state.timeout:g} s while {phase}{at}. A factory, forward or loss "
                    "that never returns (an endless loop, input(), a lock) hangs CI; if the model is just "
                    "slow, raise --timeout (or `timeout` in [tool.graphcheck]; 0 turns it off).")
        if exitcode is not None and exitcode < 0:
            number = -exitcode
            name = _signal_name(number)
            if number == signal.SIGKILL:
                peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                return (f"the worker running the model was killed (SIGKILL) while {phase}: most likely the "
                        f"system ran out of memory (peak resident memory of a worker: {peak:,.0f} MB). "
                        "Try --meta, which allocates no weights, or smaller example inputs.")
            what = {signal.SIGSEGV: "segmentation fault", signal.SIGBUS: "bus error", signal.SIGFPE:
                    "floating-point exception", signal.SIGILL: "illegal instruction",
                    signal.SIGABRT: "abort"}.get(number, name)
            return (f"the model's code crashed the process ({what}) while {phase}{at}. A C extension, "
                    "ctypes or a custom operator failed; run the model once in plain Python to see it. "
                    "--debug shows the Python stack at the crash.")
        status = exitcode if exitcode is not None else "unknown"
        return (f"the model's code ended the process with exit status {status} (os._exit, or a C extension "
                f"exiting) while {phase}{at}, before graphcheck could finish. graphcheck runs the factory, "
                "forward, the loss and the step like the training code would; they must return.")


_STARTING = threading.Lock()


def _start(process) -> None:
    """Start a worker without the caller's ``__main__``: multiprocessing would run the main script again
    in the worker (its main-module fix-up), which a script without a ``__name__`` guard, or pytest,
    turns into a second program. The worker needs nothing from it."""
    with _STARTING:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            process.start()
        finally:
            if main is not None:
                sys.modules["__main__"] = main


def _with(request: worker.Request, **changes) -> worker.Request:
    import dataclasses
    return dataclasses.replace(request, **changes)


def _ask_for_stack(process) -> None:
    """The worker writes every thread's Python stack to its capture (faulthandler), then is ended."""
    try:
        os.kill(process.pid, worker.STACK_SIGNAL)
    except (OSError, TypeError):
        return
    time.sleep(STACK_GRACE)


def _end(process) -> None:
    """End the worker and everything it started (its process group), and reap it."""
    if process is None or process.pid is None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (OSError, PermissionError):   # already gone, or not yet a group leader
        try:
            process.kill()
        except (OSError, AttributeError):
            pass
    process.join(timeout=5)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<function>\S+)')


def _user_frames(captured: str) -> str:
    """``model.py:12 in forward``: the innermost frames faulthandler wrote that are the user's own."""
    parts = re.split(r"most recent call first\):?", captured, flags=re.IGNORECASE)
    block = parts[-1] if len(parts) > 1 else ""
    frames = []
    for match in _FRAME.finditer(block):
        path = match.group("file")
        if _library(path):
            continue
        frames.append(f"{os.path.relpath(path) if os.path.isabs(path) else path}:{match.group('line')} "
                      f"in {match.group('function')}")
        if len(frames) == 3:
            break
    return ", called from ".join(frames)


def _library(path: str) -> bool:
    own = os.path.dirname(os.path.abspath(__file__))
    return (path.startswith("<") or "site-packages" in path or "dist-packages" in path
            or os.path.abspath(path).startswith(own + os.sep) or path.startswith(sys.prefix + os.sep + "lib")
            or path.startswith(sys.base_prefix + os.sep + "lib"))
