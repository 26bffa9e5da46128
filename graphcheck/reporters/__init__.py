"""Reporters: one module per output format; each turns a Report into text."""

from __future__ import annotations

from typing import Callable

from graphcheck.report import Report


def _formats() -> dict[str, Callable[[Report], str]]:
    from graphcheck.reporters import concise, github, json, sarif, text
    return {"text": text.render, "concise": concise.render, "json": json.render,
            "sarif": sarif.render, "github": github.render}


FORMATS = ("text", "concise", "json", "sarif", "github")


def format_report(report: Report, fmt: str) -> str:
    """The report as text in one of FORMATS."""
    return _formats()[fmt](report)
