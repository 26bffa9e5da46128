"""The JSON format, schema version 1 (DESIGN.md section 2)."""

from __future__ import annotations

import json

from graphcheck.report import Report


def render(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"
