"""The rule catalogue: every built-in rule, lookup by code or name, and --select/--ignore matching.

Importing this module imports the rule families (``graphcheck.rules``) and GC001 (with the
suppressions it checks), which register their rules with :func:`graphcheck.rules.base.register`.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from graphcheck import rules as _families  # noqa: F401  registers the built-in rules
from graphcheck import suppressions as _suppressions  # noqa: F401  registers GC001
from graphcheck.errors import GraphcheckError
from graphcheck.rules.base import DOC_SECTIONS, Rule, registered

__all__ = ["DOC_SECTIONS", "Rule", "all_rules", "find_rule", "is_selected", "parse_codes", "selected_rules"]


def all_rules() -> list[type[Rule]]:
    rules = registered()
    return [rules[code] for code in sorted(rules)]


def find_rule(code_or_name: str) -> type[Rule]:
    key = code_or_name.strip()
    for rule in registered().values():
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
