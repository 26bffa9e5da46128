"""Findings: what a rule reports, as plain data (code, parameters, path, source location)."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


def name_list(names, limit: int = 6, *, quote: bool = False, empty: str = "") -> str:
    """``a, b, c and 4 more``: parameter names in a message, cut to ``limit``."""
    names = list(names)
    shown = ", ".join(f"`{n}`" if quote else n for n in names[:limit]) or empty
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def fmt(value: float) -> str:
    """A number in a message: two significant digits, scientific below 0.001."""
    return f"{value:.2g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


@dataclass(frozen=True)
class Location:
    file: str
    line: int

    def display_file(self) -> str:
        """The file relative to the working directory when it lies inside it, else absolute."""
        try:
            relative = os.path.relpath(self.file)
        except ValueError:   # another drive on Windows
            return self.file
        return self.file if relative.startswith("..") else relative

    def to_dict(self) -> dict:
        return {"file": self.display_file(), "line": self.line}


@dataclass(frozen=True)
class Cause:
    """What a finding is about in the graph: the node (and edge) a rule found, for the drawing.

    ``kind`` is "cut" (an op autograd does not differentiate: ``detach``, ``no_grad``,
    ``argmax``), "zero" (an op whose gradient is identically zero), "dead-end" (where a
    branch's value stops short of the loss) or "chain" (a structure: the nodes are the finding's).
    ``label`` is the short name the drawing shows (``detach``, ``no_grad``).
    """
    kind: str
    node: str
    edge: tuple[str, str] | None = None
    label: str = ""


@dataclass(frozen=True)
class Family:
    """A rule family as findings carry it: its title and the colours the drawing gives it."""
    prefix: str     # the codes' common start ("GC1"), for the legend
    title: str      # "no gradient"
    colour: str     # border, edges, badges
    fill: str       # light fill of flagged parameters and boxes
    # Findings drawn by the path from their parameters to their cause (the cut, the dead end),
    # not by every node they name (the no-gradient family).
    traced: bool = False


@dataclass(frozen=True)
class Finding:
    """One finding, immutable: a reporter writes it, the drawing draws its cause, nothing changes it."""
    code: str
    name: str
    severity: Severity
    message: str
    parameters: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    location: Location | None = None
    # Graph node ids the finding is about, and its cause (renderer input); not part of the JSON schema.
    nodes: tuple[str, ...] = ()
    cause: Cause | None = None
    # Facts of the rule that made it (not part of the JSON schema): its family, whether it is a
    # "no gradient in any execution" verdict (GC1xx but GC105), and whether its parameters get a
    # gradient in some executions only (GC105).
    family: Family | None = None
    no_gradient: bool = False
    conditional: bool = False

    def __post_init__(self):
        for name in ("parameters", "path", "nodes"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity.value,
            "message": self.message,
            "parameters": list(self.parameters),
            "path": list(self.path),
            "location": self.location.to_dict() if self.location else None,
        }
