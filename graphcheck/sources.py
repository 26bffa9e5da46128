"""Source locations: which line of the user's code an op, a parameter or a finding points to."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import re
import sys
import traceback
from typing import Iterable

import torch

from graphcheck.finding import Location

TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_GRAPHCHECK_DIR = os.path.dirname(__file__) + os.sep
_SKIP_DIRS = (TORCH_DIR, _GRAPHCHECK_DIR, os.path.dirname(contextlib.__file__) + os.sep + "contextlib.py")

_PREFERRED_FILES: contextvars.ContextVar[frozenset] = contextvars.ContextVar("preferred", default=frozenset())


@contextlib.contextmanager
def prefer_sources(*files: str | None):
    """Point findings at lines of these files (the target's) when the stack passes through them."""
    extra = {os.path.abspath(f) for f in files if f}
    token = _PREFERRED_FILES.set(_PREFERRED_FILES.get() | extra)
    try:
        yield
    finally:
        _PREFERRED_FILES.reset(token)


def location_from_frames(frames: Iterable[tuple[str, int]]) -> Location | None:
    """The innermost frame in the target's own files, else the innermost that is not torch or graphcheck.

    A wrapper around a library model should hear about *its* line (``h = self.bert(x)`` under
    ``no_grad``), not about a line deep inside the library.
    """
    preferred = _PREFERRED_FILES.get()
    best = best_own = best_preferred = None
    for filename, lineno in frames:
        if not filename or filename.startswith("<") or filename.startswith(_SKIP_DIRS):
            continue
        best = Location(filename, int(lineno))
        if not is_library_file(filename):
            best_own = best
        if preferred and os.path.abspath(filename) in preferred:
            best_preferred = best
    return best_preferred or best_own or best


def _library_dirs() -> tuple[str, ...]:
    import site
    import sysconfig
    dirs = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:   # virtualenvs without site.getsitepackages
        pass
    return tuple(os.path.join(os.path.abspath(d), "") for d in dirs)


_LIBRARY_DIRS = _library_dirs()


@functools.lru_cache(maxsize=4096)
def is_library_file(filename: str) -> bool:
    """Installed packages (transformers, timm): code the user did not write."""
    path = os.path.abspath(filename)
    return path.startswith(_LIBRARY_DIRS) or f"{os.sep}site-packages{os.sep}" in path \
        or f"{os.sep}dist-packages{os.sep}" in path


_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+)')


def location_from_stack_trace(stack_trace: str | None) -> Location | None:
    if not stack_trace:
        return None
    return location_from_frames((m.group(1), int(m.group(2))) for m in _FRAME_RE.finditer(stack_trace))


_STACK_BASE: contextvars.ContextVar[int] = contextvars.ContextVar("stack_base", default=0)


@contextlib.contextmanager
def calling_the_model():
    """Mark the frame that calls the model: frames above it (the CLI, pytest) are never a location."""
    token = _STACK_BASE.set(len(_stack()) - 2)   # the caller's frame, inside `with`
    try:
        yield
    finally:
        _STACK_BASE.reset(token)


def location_here() -> Location | None:
    """Source line of the op running now (under ``calling_the_model``)."""
    return location_from_frames(_stack()[_STACK_BASE.get():])


def _stack() -> list[tuple[str, int]]:
    """(file, line) of every frame of the caller's stack, outermost first (like traceback.extract_stack,
    without reading source lines: this runs once per recorded op)."""
    frame = sys._getframe(1)
    frames = []
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    frames.reverse()
    return frames



def assignment_location(model: torch.nn.Module, param_name: str) -> Location | None:
    """Source line where the parameter's module (or the parameter) is assigned in ``__init__``."""
    parts = param_name.split(".")
    owner = model
    for depth in range(len(parts) - 1):
        child = getattr(owner, parts[depth], None) if not parts[depth].isdigit() else None
        if child is None and hasattr(owner, "__getitem__"):
            try:
                child = owner[int(parts[depth])]
            except Exception:
                child = None
        if not isinstance(child, torch.nn.Module) or _is_library(type(child)):
            return _attribute_line(type(owner), parts[depth])
        owner = child
    return _attribute_line(type(owner), parts[-1])


@functools.lru_cache(maxsize=None)
def _is_library(cls: type) -> bool:
    try:
        return inspect.getsourcefile(cls).startswith(TORCH_DIR)
    except (TypeError, OSError):
        return True


@functools.lru_cache(maxsize=None)
def _attribute_line(cls: type, attribute: str) -> Location | None:
    if attribute.isdigit():
        return None
    pattern = re.compile(r"\b\w+\." + re.escape(attribute) + r"\s*(:[^=]*)?=(?!=)")
    for klass in cls.__mro__:
        if klass is torch.nn.Module or _is_library(klass):
            continue
        try:
            lines, start = inspect.getsourcelines(klass)
            filename = inspect.getsourcefile(klass)
        except (TypeError, OSError):
            continue
        for offset, line in enumerate(lines):
            if pattern.search(line):
                return Location(filename, start + offset)
    return None


def short_location(exc: BaseException) -> str:
    """`` (file.py:12)``: the innermost frame of ``exc`` in user code, for an error message."""
    frames = [(f.filename, f.lineno) for f in traceback.extract_tb(exc.__traceback__)]
    location = location_from_frames(frames)
    return f" ({location.display_file()}:{location.line})" if location else ""
