"""The GitHub Actions format: workflow commands that annotate the pull request's lines."""

from __future__ import annotations

from graphcheck.finding import Severity
from graphcheck.report import Report

_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _escape(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape(text).replace(":", "%3A").replace(",", "%2C")


def render(report: Report) -> str:
    lines = []
    for result in report.results:
        if result.status == "error":
            lines.append(f"::error title={_escape_property('graphcheck ' + result.target)}::{_escape(result.error or '')}")
        for finding in result.findings:
            props = []
            if finding.location:
                props += [f"file={_escape_property(finding.location.display_file())}",
                          f"line={finding.location.line}"]
            props.append(f"title={_escape_property(finding.code + ' ' + finding.name)}")
            lines.append(f"::{_LEVEL[finding.severity]} {','.join(props)}::{_escape(finding.message)}")
    return "".join(line + "\n" for line in lines)
