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
        for finding in result.findings:
            lines.append(f"{prefix(finding, result.target)}: {finding.code} {finding.name}: {finding.message}")
            if finding.path:
                lines.append(f"    path: {' -> '.join(finding.path)}")
        counts = result.parameters
        by_severity: dict[str, int] = {}
        for finding in result.findings:
            by_severity[finding.severity.value] = by_severity.get(finding.severity.value, 0) + 1
        summary = ", ".join(f"{n} {sev}{'s' if n != 1 else ''}" for sev, n in sorted(by_severity.items())) or "no findings"
        lines.append(
            f"{result.target}: {summary} ({result.frontend} frontend on {result.device}, {result.mode} mode "
            f"{'(the factory' + chr(39) + 's choice)' if result.mode_source == 'factory' else '(' + result.mode_source + ')'}; "
            f"{counts['total']} parameters: {counts['trainable']} trainable, {counts['frozen']} frozen)")
        if result.skipped_rules:
            lines.append(f"{result.target}: skipped on the meta device (they need real weights): "
                         f"{', '.join(result.skipped_rules)}")
        if result.verification is not None:
            lines.append(f"{result.target}: {result.verification.message}")
    return "\n".join(lines) + "\n"
