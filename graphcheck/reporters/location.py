"""How reporters print a source location: relative to the working directory when inside it."""

from __future__ import annotations

from graphcheck.finding import Finding


def prefix(finding: Finding, target: str) -> str:
    """``file.py:27`` for a finding with a location, else the target itself."""
    if finding.location is None:
        return target
    return f"{finding.location.display_file()}:{finding.location.line}"
