"""The layout holds: small modules, imports that run one way, no private names across modules, rules that never import each other."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "graphcheck"

# Lower layers never import higher ones (cli -> checker -> {measuring, frontends, rules, verify} -> analysis
# -> {model graph, ops, running, subject, sources} -> finding). Rank: a module may import only equal or lower ranks.
LAYERS = [
    ("graphcheck.finding", "graphcheck.errors", "graphcheck.version", "graphcheck.probe_data", "graphcheck.measured",
     "graphcheck.phases"),
    ("graphcheck.ops", "graphcheck.model_graph", "graphcheck.sources", "graphcheck.running", "graphcheck.subject",
     "graphcheck.probing"),
    ("graphcheck.analysis",),
    ("graphcheck.rules.base", "graphcheck.report"),
    ("graphcheck.rules", "graphcheck.frontends", "graphcheck.verify", "graphcheck.loader", "graphcheck.config",
     "graphcheck.suppressions", "graphcheck.measuring"),
    ("graphcheck.checker", "graphcheck.registry", "graphcheck.docs", "graphcheck.reporters", "graphcheck.drawing",
     "graphcheck.progress"),
    ("graphcheck.cli", "graphcheck.quiet", "graphcheck.testing", "graphcheck.pytest_plugin", "graphcheck.__main__", "graphcheck"),
]

# Modules that run the user's code (import it, call forward, the loss or a step).
RUNS_USER_CODE = ("graphcheck.running", "graphcheck.subject", "graphcheck.probing", "graphcheck.frontends",
                  "graphcheck.measuring", "graphcheck.verify", "graphcheck.loader", "graphcheck.checker")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """(module, imported names, at module level) for every graphcheck import in the file.

    Imports only a type checker runs (under ``if TYPE_CHECKING:``) are left out.
    """
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            node.body = []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("graphcheck"):
            found.append((node.module, [a.name for a in node.names], id(node) in top_level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("graphcheck"):
                    found.append((alias.name, [], id(node) in top_level))
    return found


def _rank(module: str) -> int:
    best = (-1, -1)
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[1]:
                best = (rank, len(prefix))
    assert best[0] >= 0, f"{module} is in no layer of tests/test_architecture.py"
    return best[0]


def _target(module: str, name: str) -> str:
    candidate = f"{module}.{name}"
    return candidate if candidate in MODULES else module


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module):
    lines = MODULES[module].read_text().count("\n")
    assert lines <= 500, f"{module} has {lines} lines; a module past ~500 lines holds more than one concern"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_docstring_says_what_lives_there(module):
    assert ast.get_docstring(ast.parse(MODULES[module].read_text())), f"{module} has no docstring"


def test_no_private_names_across_modules():
    offenders = [f"{module} imports {name} from {source}"
                 for module, path in MODULES.items() for source, names, _ in _imports(path)
                 for name in names if name.startswith("_") and not name.endswith("__")
                 and _target(source, name) == source]
    assert not offenders, offenders


def test_imports_run_one_way():
    offenders = []
    for module, path in MODULES.items():
        for source, names, top in _imports(path):
            for target in ({_target(source, n) for n in names} or {source}):
                if target in MODULES and _rank(target) > _rank(module):
                    offenders.append(f"{module} (layer {_rank(module)}) imports {target} (layer {_rank(target)})")
    assert not offenders, offenders


def test_no_import_cycles():
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        for source, names, _ in _imports(path):
            for target in ({_target(source, n) for n in names} or {source}):
                if target in MODULES and target != module and not module.startswith(target + "."):
                    graph.add_edge(module, target)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, cycles


def test_rules_never_import_each_other():
    """Rule family modules import the base class (``rules.base``), never another family."""
    rules = {m for m in MODULES if m.startswith("graphcheck.rules.") and m != "graphcheck.rules.base"}
    offenders = [f"{module} imports {source}" for module in rules
                 for source, names, _ in _imports(MODULES[module])
                 for target in ({_target(source, n) for n in names} or {source}) if target in rules]
    assert not offenders, offenders


def test_help_and_rule_docs_do_not_import_torch():
    """`graphcheck --help` and `graphcheck rule CODE` answer without torch's 2-second import."""
    import subprocess
    import sys
    code = ("import sys\nfrom click.testing import CliRunner\nfrom graphcheck.cli import cli\n"
            "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
            "assert 'GC103' in CliRunner().invoke(cli, ['rule', 'GC103']).output\n"
            "assert CliRunner().invoke(cli, ['rule', '--all']).exit_code == 0\n"
            "import graphcheck.pytest_plugin\n"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "[]", process.stdout


def test_analysis_only_reads():
    """Nothing under graphcheck/analysis imports a module that runs the user's code (the checker measures first)."""
    offenders = [f"{module} imports {target}"
                 for module, path in MODULES.items() if module.startswith("graphcheck.analysis")
                 for source, names, _ in _imports(path)
                 for target in ({_target(source, n) for n in names} or {source})
                 if any(target == m or target.startswith(m + ".") for m in RUNS_USER_CODE)]
    assert not offenders, offenders


# A finding's family and verdict travel with it (``Finding.family``, ``.no_gradient``, ``.conditional``):
# outside the rules, no code asks a code string what kind of finding it is.
_CODE_TESTS = re.compile(r"""code\s*\[:\d*\]|startswith\(\s*\(?\s*["']GC|["']GC\d{1,3}["']\s*(in|==|!=)|(==|!=)\s*["']GC\d""")


def test_no_code_prefix_tests_outside_rules():
    offenders = []
    for module, path in MODULES.items():
        if module.startswith("graphcheck.rules"):
            continue   # the rules themselves
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if _CODE_TESTS.search(line):
                offenders.append(f"{module}:{number}: {line.strip()}")
    assert not offenders, offenders
