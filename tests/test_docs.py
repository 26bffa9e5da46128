"""Rule documentation: every rule documented in full, docs/rules/ in step with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from graphcheck.docs import expected_files
from graphcheck.registry import DOC_SECTIONS, all_rules

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.code)
def test_rule_is_documented_and_named_by_convention(rule):
    assert re.fullmatch(r"GC[0-5]\d\d", rule.code)
    assert re.fullmatch(r"[a-z]+(-[a-z0-9]+)*", rule.name)
    assert list(rule.doc_sections()) == list(DOC_SECTIONS)
    assert all(rule.doc_sections().values())
    family = ROOT / "fixtures"
    assert list(family.glob(f"*/{rule.name}/bad.py")), f"{rule.name} has no bad.py fixture"
    assert list(family.glob(f"*/{rule.name}/good.py")), f"{rule.name} has no good.py fixture"


def test_docs_rules_are_generated_from_the_docstrings():
    folder = ROOT / "docs" / "rules"
    expected = expected_files()
    actual = {p.name: p.read_text() for p in folder.glob("*.md")}
    assert actual == expected, "docs/rules is stale: run `python -m graphcheck.docs`"


def test_readme_rule_table_lists_every_rule():
    readme = (ROOT / "README.md").read_text()
    for rule in all_rules():
        assert rule.code in readme and rule.name in readme, rule.code
