"""Colours of the drawing: one family per rule family, the worst finding decides a node's colour."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from graphcheck.finding import Finding

@dataclass(frozen=True)
class Family:
    prefix: str
    title: str
    colour: str     # border, edges, badges
    fill: str       # light fill of flagged parameters and boxes


FAMILIES = (
    Family("GC1", "no gradient", "#d62728", "#fcd5d5"),
    Family("GC2", "partial gradient cut", "#9c27b0", "#efd9f3"),
    Family("GC3", "saturating chain", "#f57c00", "#ffe3c2"),
    Family("GC4", "bottleneck / topology", "#1f77b4", "#d6e6f5"),
    Family("GC5", "initialisation", "#2e7d32", "#d7ecd8"),
)


OTHER_FAMILY = Family("GC", "other finding", "#555555", "#e6e6e6")


CUT_EDGE = "#9e9e9e"


HEALTHY_FILL = "#f2f2f2"


HEALTHY_BORDER = "#9e9e9e"


def family_of(code: str) -> Family:
    """The rule family of a finding code (GC103 -> GC1xx); unknown families get a neutral style."""
    for family in FAMILIES:
        if code.startswith(family.prefix):
            return family
    return OTHER_FAMILY


def worst_family(findings: Iterable[Finding]) -> Family | None:
    """The family to colour with when several findings meet: the most severe, then the lowest code."""
    findings = list(findings)
    if not findings:
        return None
    best = max(findings, key=lambda f: (f.severity.rank, -int(re.sub(r"\D", "", f.code) or 0)))
    return family_of(best.code)


def unique_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings without repeats, in order (a Finding is a mutable dataclass, so not hashable)."""
    seen: dict[int, Finding] = {}
    for finding in findings:
        seen.setdefault(id(finding), finding)
    return list(seen.values())
