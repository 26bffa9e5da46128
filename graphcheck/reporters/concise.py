"""The concise format: exactly one line per finding, nothing else (for editors and grep)."""

from __future__ import annotations

from graphcheck.report import Report
from graphcheck.reporters.location import prefix


def render(report: Report) -> str:
    lines = []
    for result in report.results:
        if result.status == "error":
            lines.append(f"{result.target}: error: {result.error}")
        for finding in result.findings:
            lines.append(f"{prefix(finding, result.target)}: {finding.code} {finding.message}")
    return "".join(line + "\n" for line in lines)
