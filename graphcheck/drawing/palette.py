"""Colours of the drawing: each finding carries its rule family's colours; the worst finding decides a node's colour."""

from __future__ import annotations

import re
from typing import Iterable

from graphcheck.finding import Family, Finding
from graphcheck.registry import all_rules
from graphcheck.rules.base import OTHER_FAMILY

# The rule families in code order, as the rule modules declare them (a new family brings its colour).
FAMILIES: tuple[Family, ...] = tuple(dict.fromkeys(rule.family for rule in all_rules()
                                                   if rule.family is not OTHER_FAMILY))


CUT_EDGE = "#9e9e9e"


HEALTHY_FILL = "#f2f2f2"


HEALTHY_BORDER = "#9e9e9e"


def family_of(item: Finding | str) -> Family:
    """The family of a finding (it carries it), or of a rule code; unknown codes get a neutral style."""
    if isinstance(item, Finding):
        return item.family or OTHER_FAMILY
    for rule in all_rules():
        if rule.code == item:
            return rule.family
    return OTHER_FAMILY


def worst_family(findings: Iterable[Finding]) -> Family | None:
    """The family to colour with when several findings meet: the most severe, then the lowest code."""
    findings = list(findings)
    if not findings:
        return None
    best = max(findings, key=lambda f: (f.severity.rank, -int(re.sub(r"\D", "", f.code) or 0)))
    return family_of(best)


def unique_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings without repeats, in order (a Finding is a mutable dataclass, so not hashable)."""
    seen: dict[int, Finding] = {}
    for finding in findings:
        seen.setdefault(id(finding), finding)
    return list(seen.values())
