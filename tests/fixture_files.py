"""Discovering fixtures and reading their `# [rule-name]` markers."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MARKER = re.compile(r"#\s*\[([a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*)\]\s*$")


def fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*.py") if p.name != "__init__.py")


def markers(path: Path) -> set[tuple[int, str]]:
    """(line, rule-name) for every line that ends with a `# [rule-name]` or `# [a, b]` marker."""
    found = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = MARKER.search(line)
        if match:
            found.update((number, name.strip()) for name in match.group(1).split(","))
    return found


def rule_of(path: Path) -> str | None:
    """fixtures/<family>/<rule-name>/bad.py -> rule-name (None for other fixtures)."""
    if path.name in ("bad.py", "good.py") and path.parent.parent.name != "regressions":
        return path.parent.name
    return None


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"fixture_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
