"""Findings: what a rule reports, as plain data (code, parameters, path, source location)."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


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


@dataclass
class Finding:
    code: str
    name: str
    severity: Severity
    message: str
    parameters: list[str] = field(default_factory=list)
    path: list[str] = field(default_factory=list)
    location: Location | None = None
    # Graph node ids the finding is about (renderer input); not part of the JSON schema.
    nodes: list[str] = field(default_factory=list)

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
