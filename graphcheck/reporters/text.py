"""The default text format: one `path:line: CODE name: message` line per finding, with the path."""

from __future__ import annotations

from graphcheck.report import Report
from graphcheck.reporters.location import prefix


def render(report: Report) -> str:
    lines: list[str] = []
    for result in report.results:
        if result.status == "error":
            lines.append(f"{result.target}: error: {result.error}")
            continue
        shown = [(f, "") for f in result.findings]
        if report.show_suppressed:
            shown = sorted(shown + [(f, " (suppressed)") for f in result.suppressed],
                           key=lambda item: (item[0].location.file if item[0].location else "",
                                             item[0].location.line if item[0].location else 0, item[0].code))
        for finding, mark in shown:
            lines.append(f"{prefix(finding, result.target)}: {finding.code} {finding.name}{mark}: {finding.message}")
            if finding.path:
                lines.append(f"    path: {' -> '.join(finding.path)}")
        counts = result.parameters
        by_severity: dict[str, int] = {}
        for finding in result.findings:
            by_severity[finding.severity.value] = by_severity.get(finding.severity.value, 0) + 1
        summary = ", ".join(f"{n} {sev}{'s' if n != 1 else ''}" for sev, n in sorted(by_severity.items())) or "no findings"
        if result.suppressed:
            summary += f", {len(result.suppressed)} suppressed"
        lines.append(
            f"{result.target}: {summary} ({result.frontend} frontend on {result.device}, {result.mode} mode "
            f"{'(the factory' + chr(39) + 's choice)' if result.mode_source == 'factory' else '(' + result.mode_source + ')'}; "
            f"{counts['total']} parameters: {counts['trainable']} trainable, {counts['frozen']} frozen; "
            f"loss: {_loss_text(result.loss)})")
        if result.skipped_rules:
            lines.append(f"{result.target}: skipped on the meta device (they need real weights): "
                         f"{', '.join(result.skipped_rules)}")
        if result.verification is not None:
            lines.append(f"{result.target}: {result.verification.message}")
    return "\n".join(lines) + "\n"


def _loss_text(loss: str | None) -> str:
    """``loss: file.py:fn`` reads as ``loss: file.py:fn`` in the summary, not ``loss: loss: ...``."""
    if not loss:
        return "unknown"
    return loss.removeprefix("loss: ")
