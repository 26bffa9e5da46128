"""Writing the drawing: the ``dot`` program with a timeout and bounded PNGs, or the ``.dot`` source with a hint."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from graphcheck.drawing.style import dot_source

if TYPE_CHECKING:
    from graphcheck.report import TargetResult

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot"}


DOT_TIMEOUT = 60.0


# Unbounded PNGs of real models reach 24577x16187 px and take 50 s (docs/rendering.md).
PNG_ARGS = ("-Gsize=20,200", "-Gdpi=72")


INSTALL_HINT = ("install graphviz to get images: `apt-get install graphviz` (Debian/Ubuntu), "
                "`brew install graphviz` (Homebrew), or `conda install graphviz`")


@dataclass
class Rendered:
    path: Path                 # the file written (the .dot source when no image could be made)
    message: str               # one line for the user
    image: bool                # an image of the requested format was written


def run_dot(source_path: Path, out: Path, fmt: str, timeout: float) -> str | None:
    """Run dot; None on success, else why it failed."""
    executable = shutil.which("dot")
    if executable is None:
        return "missing"
    command = [executable, f"-T{fmt}", "-o", str(out), str(source_path)]
    if fmt == "png":
        command[1:1] = list(PNG_ARGS)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        out.unlink(missing_ok=True)
        return "timeout"
    except OSError as exc:
        return f"could not run dot ({exc})"
    if completed.returncode != 0:
        return f"dot failed: {completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else completed.returncode}"
    return None


def render_one(result: "TargetResult", path: str | Path, *, depth: int = 2, full: bool = False,
               timeout: float | None = None) -> Rendered:
    """Draw one analysed target to ``path``; never raises for a missing or slow ``dot``."""
    path = Path(path)
    timeout = DOT_TIMEOUT if timeout is None else timeout
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot draw to {path.name!r}: use a .svg, .png, .pdf or .dot file name")
    if result.graph is None:
        raise ValueError(f"{result.target}: nothing to draw, the model could not be analysed")
    source = dot_source(result, depth=depth, full=full)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".dot":
        path.write_text(source, encoding="utf-8")
        return Rendered(path, f"wrote {path}", True)
    source_path = path.with_suffix(".dot")
    source_path.write_text(source, encoding="utf-8")
    failure = run_dot(source_path, path, FORMATS[suffix], timeout)
    if failure is None:
        source_path.unlink(missing_ok=True)
        return Rendered(path, f"wrote {path}", True)
    if failure == "missing":
        return Rendered(source_path, f"wrote {source_path} instead of {path.name}: the graphviz program "
                        f"`dot` is not installed; {INSTALL_HINT}; then run "
                        f"`dot -T{FORMATS[suffix]} {source_path} -o {path}`", False)
    if failure == "timeout":
        return Rendered(source_path, f"wrote {source_path} instead of {path.name}: dot took longer than "
                        f"{timeout:g} s; try a smaller --render-depth, drop --render-all, or use .svg", False)
    return Rendered(source_path, f"wrote {source_path} instead of {path.name}: {failure}", False)


def render(result: "TargetResult", path: str | Path, *, depth: int = 2, full: bool = False) -> Path:
    """Draw the flagged paths of one result (from :func:`graphcheck.check`) and return the file written.

    The format follows the suffix (.svg, .png, .pdf, .dot). When the graphviz program is
    missing or too slow, the ``.dot`` source is written instead, a warning says why, and
    its path is returned.
    """
    rendered = render_one(result, path, depth=depth, full=full)
    if not rendered.image:
        warnings.warn(rendered.message, RuntimeWarning, stacklevel=2)
    return rendered.path


def output_paths(path: str | Path, count: int) -> list[Path]:
    """One file name per target: PATH itself for one, PATH-1, PATH-2... (same suffix) for several."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{index}{path.suffix}") for index in range(1, count + 1)]


def render_results(results: list["TargetResult"], path: str | Path, *, depth: int = 2,
                   full: bool = False) -> list[str]:
    """Draw every target of a report (the CLI's --render); returns the lines to tell the user."""
    messages: list[str] = []
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        return [f"cannot draw to {Path(path).name!r}: use a .svg, .png, .pdf or .dot file name"]
    missing_hint_given = False
    for result, out in zip(results, output_paths(path, len(results))):
        if result.graph is None:
            messages.append(f"{result.target}: not drawn, the model could not be analysed")
            continue
        try:
            rendered = render_one(result, out, depth=depth, full=full)
        except Exception as exc:   # a drawing must never cost the user the report or exit code
            messages.append(f"{result.target}: could not draw ({type(exc).__name__}: {exc})")
            continue
        message = rendered.message
        if len(results) > 1:
            message = f"{result.target}: {message}"
        if not rendered.image and "not installed" in message:
            if missing_hint_given:
                message = message.split(": the graphviz program")[0] + ": `dot` is not installed"
            missing_hint_given = True
        messages.append(message)
    return messages


def render_messages(drawn: list[tuple["TargetResult", tuple | None]]) -> list[str]:
    """What to tell the user about drawings made elsewhere (in the workers): ``(result, (message, image))``
    per target, None where nothing was drawn."""
    messages: list[str] = []
    missing_hint_given = False
    for result, rendered in drawn:
        if rendered is None:
            messages.append(f"{result.target}: not drawn, the model could not be analysed")
            continue
        message, image = rendered
        if len(drawn) > 1:
            message = f"{result.target}: {message}"
        if not image and "not installed" in message:
            if missing_hint_given:
                message = message.split(": the graphviz program")[0] + ": `dot` is not installed"
            missing_hint_given = True
        messages.append(message)
    return messages
