"""Loading targets: import a file or module, call its factory, validate what it returns."""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Callable

from typing import TYPE_CHECKING

from graphcheck import phases
from graphcheck.errors import GraphcheckError

if TYPE_CHECKING:   # torch is imported when a target is loaded, not when the CLI starts
    import torch

DEFAULT_FACTORY = "build_model"
DEFAULT_LOSS = "loss"
DEFAULT_STEP = "step"


@dataclass
class LoadedTarget:
    spec: str
    model: torch.nn.Module
    inputs: tuple
    file: str | None
    kwargs: dict = field(default_factory=dict)   # keyword inputs: model(*inputs, **kwargs)


def split_spec(spec: str, default_name: str) -> tuple[str, str, bool]:
    """``file.py:name`` / ``file.py`` / ``pkg.module:name`` -> (where, name, is_file)."""
    where, sep, name = spec.rpartition(":")
    if not sep or (len(where) == 1 and where.isalpha()):   # no colon, or a Windows drive letter
        where, name = spec, ""
    if not where:
        raise GraphcheckError(f"{spec!r} is not a target: write path/to/file.py:factory or package.module:factory.")
    is_file = where.endswith(".py") or os.sep in where or "/" in where or os.path.exists(where)
    if not name:
        if not is_file:
            raise GraphcheckError(
                f"{spec!r} names a module but no factory: write {spec}:{default_name} "
                f"(the factory is the function that builds the model).")
        name = default_name
    if not name.isidentifier() and not all(part.isidentifier() for part in name.split(".")):
        raise GraphcheckError(f"{name!r} in {spec!r} is not a Python name.")
    return where, name, is_file


def display_spec(spec: str) -> str:
    """``file.py:fn`` with the file relative to the working directory when it lies inside it."""
    try:
        where, _, is_file = split_spec(spec, DEFAULT_FACTORY)
    except GraphcheckError:
        return spec
    if not is_file or not os.path.isabs(where):
        return spec
    try:
        relative = os.path.relpath(where)
    except ValueError:   # another drive on Windows
        return spec
    return spec if relative.startswith("..") else relative + spec[len(where):]


def _short_traceback(exc: BaseException, file: str | None) -> str:
    """The innermost frame in the user's file, as ' (file.py:12)'."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if file and os.path.abspath(f.filename) == os.path.abspath(file)]
    frame = (user or frames or [None])[-1]
    return f" ({os.path.relpath(frame.filename)}:{frame.lineno})" if frame else ""


def import_module_from(where: str, is_file: bool, spec: str):
    phases.enter("import")
    if is_file:
        path = os.path.abspath(where)
        if os.path.isdir(path):
            raise GraphcheckError(
                f"{where!r} (from target {spec!r}) is a folder, not a Python file. Name the file that "
                "holds the factory: path/to/model.py:build_model, or package.module:factory for a package.")
        if not os.path.isfile(path):
            raise GraphcheckError(
                f"Cannot find the file {where!r} (from target {spec!r}). Check the path; it is "
                f"relative to the current directory {os.getcwd()}.")
        folder = os.path.dirname(path)
        if folder not in sys.path:
            sys.path.insert(0, folder)   # so the model file's sibling imports work
        module_name = "graphcheck_target_" + os.path.splitext(os.path.basename(path))[0].replace("-", "_")
        # A file without the .py suffix (a script named `train`) is read as Python source too.
        import_spec = importlib.util.spec_from_file_location(
            module_name, path, loader=importlib.machinery.SourceFileLoader(module_name, path))
        module = importlib.util.module_from_spec(import_spec)
        sys.modules[module_name] = module
        writes_bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True   # no __pycache__ left next to the user's model
        try:
            import_spec.loader.exec_module(module)
        except SystemExit as exc:
            raise GraphcheckError(
                f"Importing {where} called sys.exit({exc.code!r}). graphcheck runs the file like "
                "`python` would; put script code under `if __name__ == \"__main__\":`.") from None
        except SyntaxError as exc:
            raise GraphcheckError(
                f"{os.path.relpath(exc.filename or path)}:{exc.lineno}: syntax error: {exc.msg}. "
                "Fix the file so that `python` can import it.", detail=traceback.format_exc()) from exc
        except Exception as exc:
            raise GraphcheckError(
                f"Importing {where} raised {type(exc).__name__}: {exc}{_short_traceback(exc, path)}. "
                "graphcheck runs the file like `python` would; make it importable without side "
                "effects (put training code under `if __name__ == \"__main__\":`).",
                detail=traceback.format_exc()) from exc
        finally:
            sys.dont_write_bytecode = writes_bytecode
        return module, path
    try:
        module = importlib.import_module(where)
    except SystemExit as exc:
        raise GraphcheckError(f"Importing {where} called sys.exit({exc.code!r}).") from None
    except ModuleNotFoundError as exc:
        raise GraphcheckError(
            f"Cannot import module {where!r}: {exc}. Install the package or run graphcheck from "
            "the folder that contains it, or give a file path (path/to/model.py:factory).",
            detail=traceback.format_exc()) from exc
    except Exception as exc:
        raise GraphcheckError(
            f"Importing {where} raised {type(exc).__name__}: {exc}.", detail=traceback.format_exc()) from exc
    return module, getattr(module, "__file__", None)


def load_callable(spec: str, default_name: str, what: str) -> tuple[Callable, str | None]:
    where, name, is_file = split_spec(spec, default_name)
    module, file = import_module_from(where, is_file, spec)
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            candidates = sorted(n for n, v in vars(module).items()
                                if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
            raise GraphcheckError(
                f"{where} has no {what} named {name!r}. "
                + (f"Callables defined there: {', '.join(candidates)}. " if candidates else "")
                + f"Name it explicitly: {where}:<name>.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise GraphcheckError(f"{where}:{name} is a {type(obj).__name__}, not a callable {what}.")
    return obj, file


def _as_inputs(value: Any, spec: str) -> tuple:
    import torch
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise GraphcheckError(
        f"The factory {spec} returned example inputs of type {type(value).__name__}; return a "
        "tuple of positional inputs, e.g. (model, (torch.randn(2, 8),)), or a dict of keyword "
        "inputs, e.g. (model, {\"input_ids\": ids, \"labels\": ids}).")


def _as_keywords(value: Any, spec: str) -> dict:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise GraphcheckError(
            f"The factory {spec} returned keyword inputs of type {type(value).__name__}; return "
            "(model, args, kwargs) with a dict of keyword inputs named like forward's arguments.")
    return dict(value)


def split_inputs(value: Any, spec: str) -> tuple[tuple, dict]:
    """Example inputs as the factory gave them -> (positional, keyword): a dict means ``model(**batch)``."""
    if isinstance(value, Mapping):
        return (), _as_keywords(value, spec)
    return _as_inputs(value, spec), {}


def load_target(spec: str, *, meta: bool = False) -> LoadedTarget:
    """Import the target and call its factory: a module, or ``(module, example_inputs)``.

    With ``meta``, the factory runs under ``torch.device("meta")``: parameters are created
    without storage, so a model of any size can be analysed.
    """
    import torch
    factory, file = load_callable(spec, DEFAULT_FACTORY, "factory")
    phases.enter("factory")
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            result = factory()
    except GraphcheckError:
        raise
    except SystemExit as exc:
        raise GraphcheckError(
            f"The factory {spec} called sys.exit({exc.code!r}); it must return the model instead.") from None
    except Exception as exc:
        what = str(exc) or ("out of memory" if isinstance(exc, MemoryError) else "(no message)")
        raise GraphcheckError(
            f"The factory {spec} raised {type(exc).__name__}: {what}{_short_traceback(exc, file)}. "
            "It is called with no arguments and must return an nn.Module or (module, example_inputs).",
            detail=traceback.format_exc()) from exc
    inputs: tuple = ()
    kwargs: dict = {}
    model = result
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module):
        model, (inputs, kwargs) = result[0], split_inputs(result[1], spec)
    elif isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], torch.nn.Module):
        model, inputs, kwargs = result[0], _as_inputs(result[1], spec), _as_keywords(result[2], spec)
    if not isinstance(model, torch.nn.Module):
        raise GraphcheckError(
            f"The factory {spec} returned {type(result).__name__}, not an nn.Module. Return the "
            "model, (model, args) with a tuple of positional inputs, (model, kwargs) with a dict "
            "of keyword inputs, or (model, args, kwargs).")
    return LoadedTarget(spec=spec, model=model, inputs=inputs, file=file, kwargs=kwargs)


def load_loss(spec: str) -> Callable:
    loss, _ = load_callable(spec, DEFAULT_LOSS, "loss function")
    return loss


def load_step(spec: str) -> Callable:
    """A training step ``step(model, batch) -> loss`` (``file.py:fn``; a bare file means ``step``)."""
    step, _ = load_callable(spec, DEFAULT_STEP, "training step")
    return step


def check_input_shapes(shapes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The ``--input-shape`` texts, each checked (no torch: the process that reports runs this)."""
    for text in shapes or ():
        _dims(text)
    return tuple(shapes or ())


def _dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise GraphcheckError(f"--input-shape {text!r} is not a shape; write it like 1,3,224,224.") from None
    if not dims or any(d <= 0 for d in dims):
        raise GraphcheckError(f"--input-shape {text!r} needs positive sizes, like 1,3,224,224.")
    return dims


def parse_input_shapes(shapes: list[str] | tuple[str, ...]) -> tuple:
    """One float32 input on the meta device per ``--input-shape`` text (``1,3,224,224``)."""
    if not shapes:
        return ()
    import torch
    inputs = []
    for text in shapes:
        dims = _dims(text)
        try:
            inputs.append(torch.randn(dims, device="meta"))
        except (TypeError, RuntimeError, OverflowError) as exc:
            raise GraphcheckError(f"--input-shape {text!r} is too large ({type(exc).__name__}); "
                                  "give realistic sizes like 1,3,224,224.") from None
    return tuple(inputs)
