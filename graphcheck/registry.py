"""The rule registry: the Rule base class, registration by code, and --select/--ignore matching."""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, ClassVar, Iterable, Iterator

from graphcheck.errors import GraphcheckError
from graphcheck.finding import Cause, Finding, Location, Severity

if TYPE_CHECKING:
    from graphcheck.model_graph import ModelGraph

_RULES: dict[str, type["Rule"]] = {}
DOC_SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead")


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

    # Whether the rule reads the probe pass's layer gradients (a backward pass with real weights).
    probe_gradients: ClassVar[bool] = False

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


def _load_builtin_rules() -> None:
    # Importing the family modules registers their rules (GC001 lives with the suppressions it checks).
    from graphcheck import rules, suppressions  # noqa: F401


def all_rules() -> list[type[Rule]]:
    _load_builtin_rules()
    return [_RULES[code] for code in sorted(_RULES)]


def find_rule(code_or_name: str) -> type[Rule]:
    _load_builtin_rules()
    key = code_or_name.strip()
    for rule in _RULES.values():
        if rule.code.upper() == key.upper() or rule.name == key.lower():
            return rule
    raise GraphcheckError(
        f"There is no rule {key!r}. Run `graphcheck rule --all` to list the rules "
        f"(codes GC001..GC5xx, names such as `detached-parameter`)."
    )


def _prefix_match(code: str, prefixes: Iterable[str]) -> int:
    """Length of the longest prefix in ``prefixes`` that ``code`` starts with (-1 if none)."""
    best = -1
    for prefix in prefixes:
        if prefix == "ALL" or code.startswith(prefix):
            best = max(best, 0 if prefix == "ALL" else len(prefix))
    return best


def is_selected(code: str, select: Iterable[str], ignore: Iterable[str]) -> bool:
    """flake8 semantics: the longer matching prefix of --select and --ignore wins."""
    select = list(select) or ["GC"]
    chosen = _prefix_match(code, select)
    ignored = _prefix_match(code, ignore)
    return chosen >= 0 and ignored < chosen


def parse_codes(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item.strip().upper() for item in items if item and item.strip()]


def selected_rules(select=(), ignore=(), rule_options: dict | None = None, stage: str = "graph") -> Iterator[Rule]:
    """The selected rules of one stage ("graph" or "findings"), configured."""
    rule_options = rule_options or {}
    for cls in all_rules():
        if cls.stage == stage and is_selected(cls.code, select, ignore):
            yield cls(rule_options.get(cls.name) or rule_options.get(cls.code))
