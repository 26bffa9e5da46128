"""The SARIF 2.1.0 format, for code-scanning dashboards."""

from __future__ import annotations

import json

from graphcheck.version import __version__
from graphcheck.finding import Severity
from graphcheck.registry import all_rules
from graphcheck.report import Report

_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def render(report: Report) -> str:
    rules = [{
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.doc().splitlines()[0] if rule.doc() else rule.name},
        "fullDescription": {"text": rule.doc_sections().get("What it does", "")},
        "defaultConfiguration": {"level": _LEVEL[rule.severity]},
        "helpUri": f"https://github.com/graphcheck/graphcheck/blob/main/docs/rules/{rule.name}.md",
    } for rule in all_rules()]
    results = []
    notifications = []
    for result in report.results:
        if result.status == "error":
            notifications.append({"level": "error", "message": {"text": f"{result.target}: {result.error}"}})
        for finding in result.findings:
            entry = {
                "ruleId": finding.code,
                "level": _LEVEL[finding.severity],
                "message": {"text": finding.message},
                "properties": {"target": result.target, "parameters": finding.parameters, "path": finding.path},
            }
            if finding.location:
                entry["locations"] = [{"physicalLocation": {
                    "artifactLocation": {"uri": finding.location.display_file()},
                    "region": {"startLine": finding.location.line},
                }}]
            results.append(entry)
    run = {
        "tool": {"driver": {"name": "graphcheck", "version": __version__, "rules": rules}},
        "results": results,
        "invocations": [{"executionSuccessful": not notifications,
                         "toolExecutionNotifications": notifications}],
    }
    return json.dumps({"version": "2.1.0",
                       "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
                       "runs": [run]}, indent=2) + "\n"
