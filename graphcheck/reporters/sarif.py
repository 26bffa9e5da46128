"""The SARIF 2.1.0 format, for GitHub code scanning and other SARIF dashboards.

Files are named relative to the repository root (the nearest folder with `.git` above the
working directory, else the working directory) under the uri base id `%SRCROOT%`, so the
log holds no machine-specific paths and code scanning can place every result. A finding
without a source line in the repository points at line 1 of its target's file. A target
that failed is a tool execution notification, and the invocation is then unsuccessful.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from urllib.parse import quote

from graphcheck.docs import rule_markdown
from graphcheck.errors import GraphcheckError
from graphcheck.finding import Finding, Severity
from graphcheck.loader import split_spec
from graphcheck.registry import all_rules
from graphcheck.report import Report, TargetResult
from graphcheck.version import __version__

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
HOME = "https://github.com/graphcheck/graphcheck"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _source_root() -> Path:
    cwd = Path.cwd()
    return next((folder for folder in (cwd, *cwd.parents) if (folder / ".git").exists()), cwd)


def _artifact(file: str | None, root: Path) -> dict | None:
    """``{"uri": "models/net.py", "uriBaseId": "%SRCROOT%"}`` for a file under root, else None."""
    if not file:
        return None
    try:
        relative = Path(os.path.realpath(file)).relative_to(os.path.realpath(root))
    except ValueError:
        return None
    return {"uri": quote(relative.as_posix()), "uriBaseId": "%SRCROOT%"}


def _target_file(target: str) -> str | None:
    """The file a target string names (``net.py:build`` or an imported ``package.module:build``)."""
    try:
        where, _, is_file = split_spec(target, "build_model")
    except (GraphcheckError, ValueError):   # a malformed target names no file
        return None
    return where if is_file else getattr(sys.modules.get(where), "__file__", None)


def _location(finding: Finding, result: TargetResult, root: Path) -> dict | None:
    """The finding's own line when it lies in the repository, else line 1 of the target's file."""
    if finding.location and (artifact := _artifact(finding.location.file, root)):
        line = finding.location.line
    elif artifact := _artifact(_target_file(result.target), root):
        line = 1
    else:
        return None
    return {"physicalLocation": {"artifactLocation": artifact, "region": {"startLine": max(line, 1)}}}


def _fingerprint(finding: Finding, location: dict | None) -> str:
    """Line-independent: the rule, the file and the parameters, so editing the file keeps the alert."""
    uri = location["physicalLocation"]["artifactLocation"]["uri"] if location else ""
    key = "\n".join([finding.code, uri, *sorted(finding.parameters)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _rule(rule) -> dict:
    summary = rule.doc().splitlines()[0] if rule.doc() else rule.name
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": rule.doc_sections().get("What it does") or summary},
        "help": {"text": rule.doc(), "markdown": rule_markdown(rule)},
        "helpUri": f"{HOME}/blob/main/docs/rules/{rule.name}.md",
        "defaultConfiguration": {"level": _LEVEL[rule.severity]},
    }


def _result(finding: Finding, result: TargetResult, root: Path) -> dict:
    location = _location(finding, result, root)
    entry = {
        "ruleId": finding.code,
        "level": _LEVEL[finding.severity],
        "message": {"text": finding.message},
        "partialFingerprints": {"graphcheck/v1": _fingerprint(finding, location)},
        "properties": {"target": result.target, "parameters": finding.parameters, "path": finding.path},
    }
    if location:
        entry["locations"] = [location]
    return entry


def render(report: Report) -> str:
    root = _source_root()
    results = [_result(finding, result, root) for result in report.results for finding in result.findings]
    notifications = [{"level": "error", "message": {"text": f"{result.target}: {result.error}"}}
                     for result in report.results if result.status == "error"]
    run = {
        "tool": {"driver": {"name": "graphcheck", "version": __version__, "semanticVersion": __version__,
                            "informationUri": HOME, "rules": [_rule(rule) for rule in all_rules()]}},
        "results": results,
        "invocations": [{"executionSuccessful": not notifications,
                         "toolExecutionNotifications": notifications}],
    }
    return json.dumps({"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}, indent=2) + "\n"
