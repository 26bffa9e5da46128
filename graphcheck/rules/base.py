"""The Rule base class and rule registration: a leaf module, imported by every rule family and by the catalogue.

A rule is a small class: ``code``, ``name``, ``severity``, the family it belongs to, whether its
findings are "no gradient" verdicts, which measurements it reads (``measures``), its options and
its documentation (the class docstring). Its findings carry those facts, so the checker, the
report, ``--verify`` and the drawing never test a code's prefix.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, ClassVar, Iterable

from graphcheck.errors import GraphcheckError
from graphcheck.finding import Cause, Family, Finding, Location, Severity
from graphcheck.measured import Measure

if TYPE_CHECKING:
    from graphcheck.model_graph import ModelGraph

_RULES: dict[str, type["Rule"]] = {}
DOC_SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead")
OTHER_FAMILY = Family("GC", "other finding", "#555555", "#e6e6e6")


class Rule:
    """Base class of every rule.

    A rule reads a :class:`~graphcheck.model_graph.ModelGraph` and yields findings; it
    never changes the graph. Subclasses set ``code``, ``name`` (kebab-case, reads as
    "allow <name>"), ``severity`` and, where they have thresholds, ``options`` (the
    defaults; ``[tool.graphcheck.rules.<name>]`` overrides them). The class docstring
    is the rule's documentation, with the sections of :data:`DOC_SECTIONS`.
    """

    code: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity]
    options: ClassVar[dict] = {}
    # The family (title and colours), set once per family module; its findings carry it.
    family: ClassVar[Family] = OTHER_FAMILY
    # True when a finding means "these parameters get no gradient in any execution" (GC1xx but GC105):
    # what --verify compares with autograd, and what the drawing traces to the loss.
    no_gradient: ClassVar[bool] = False
    # True when a finding means "these parameters get a gradient in some executions only" (GC105).
    conditional: ClassVar[bool] = False
    # The measurements ``check`` reads from ``graph.measured`` (the checker runs them first).
    measures: ClassVar[frozenset[Measure]] = frozenset()
    # Rules that need real weight values (or a probe pass) are skipped on meta models.
    needs_weights: ClassVar[bool] = False
    # What ``check`` reads: "graph" (the ModelGraph), or "findings" (the settled findings of
    # the graph rules and the suppression comments; GC001 unused-suppression).
    stage: ClassVar[str] = "graph"

    def __init__(self, options: dict | None = None):
        merged = dict(self.options)
        for key, value in (options or {}).items():
            key = key.replace("_", "-")
            if key not in merged:
                raise GraphcheckError(
                    f"Unknown option {key!r} for rule {self.code} ({self.name}). "
                    f"Known options: {', '.join(sorted(merged)) or 'none'}."
                )
            merged[key] = _option_value(self, key, merged[key], value)
        self.config = merged

    def check(self, graph: "ModelGraph") -> Iterable[Finding]:  # pragma: no cover - abstract
        raise NotImplementedError

    def finding(self, message: str, *, parameters=(), path=(), location: Location | None = None,
                nodes=(), severity: Severity | None = None, cause: Cause | None = None) -> Finding:
        return Finding(
            code=self.code,
            name=self.name,
            severity=severity or self.severity,
            message=message,
            parameters=tuple(parameters),
            path=tuple(path),
            location=location,
            nodes=tuple(nodes),
            cause=cause,
            family=self.family,
            no_gradient=self.no_gradient,
            conditional=self.conditional,
        )

    @classmethod
    def doc(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """The docstring split into its sections (``{"What it does": "...", ...}``)."""
        sections: dict[str, list[str]] = {}
        current = None
        for line in cls.doc().splitlines():
            heading = re.match(r"^## (.+?)\s*$", line)
            if heading:
                current = heading.group(1)
                sections[current] = []
            elif current is not None:
                sections[current].append(line)
        return {k: "\n".join(v).strip() for k, v in sections.items()}


def _option_value(rule: Rule, key: str, default, value):
    """Check a configured option against the type of its default (no silent truncation)."""
    where = f"option {key!r} of rule {rule.code} ({rule.name})"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise GraphcheckError(f"The {where} must be true or false, not {value!r}.")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise GraphcheckError(f"The {where} must be a whole number, not {value!r}.")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GraphcheckError(f"The {where} must be a number, not {value!r}.")
        return float(value)
    return value


def register(cls: type[Rule]) -> type[Rule]:
    if cls.code in _RULES and _RULES[cls.code] is not cls:
        raise ValueError(f"rule code {cls.code} registered twice")
    _RULES[cls.code] = cls
    return cls


def registered() -> dict[str, type[Rule]]:
    """Every rule registered so far, by code (the catalogue, ``graphcheck.registry``, imports the families first)."""
    return dict(_RULES)
