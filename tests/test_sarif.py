"""`--format sarif`: valid against the official SARIF 2.1.0 schema, and what GitHub code scanning needs."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import graphcheck
from graphcheck.cli import cli
from graphcheck.finding import Finding, Location, Severity
from graphcheck.registry import all_rules
from graphcheck.report import Report, TargetResult
from graphcheck.reporters import format_report
from tests.fixture_files import FIXTURES, markers
from tests.sarif_schema import SCHEMA_FILE, validate

MODELS = {
    "detached.py": FIXTURES / "params/detached-parameter/bad.py",
    "dead.py": FIXTURES / "params/dead-branch-parameter/bad.py",
    "clean.py": FIXTURES / "params/detached-parameter/good.py",
}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A checkout: repo/.git and repo/models/*.py; the working directory is repo/models, not the root."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "models").mkdir()
    for name, source in MODELS.items():
        shutil.copy(source, root / "models" / name)
    monkeypatch.chdir(root / "models")
    return root


def sarif(*args, code: int) -> dict:
    result = CliRunner().invoke(cli, [*map(str, args), "--format", "sarif", "--no-config"], catch_exceptions=False)
    assert result.exit_code == code, result.output
    document = json.loads(result.stdout)
    validate(document)
    return document


def artifact_uris(document: dict) -> list[str]:
    return [loc["physicalLocation"]["artifactLocation"]["uri"]
            for res in document["runs"][0]["results"] for loc in res.get("locations", [])]


def test_the_schema_is_the_official_file_verbatim():
    """OASIS SARIF 2.1.0 with Errata 01 (sarif-2.1/schema/ in github.com/oasis-tcs/sarif-spec), unchanged."""
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest == "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"


def test_findings_are_valid_sarif_with_what_code_scanning_needs(repo):
    document = sarif("detached.py", repo / "models" / "dead.py", code=1)
    assert document["version"] == "2.1.0"
    run, = document["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "graphcheck" and driver["version"] == graphcheck.__version__
    rules = {rule["id"]: rule for rule in driver["rules"]}
    assert set(rules) == {rule.code for rule in all_rules()}
    for rule in rules.values():
        assert rule["name"] and rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert rule["help"]["text"] and rule["help"]["markdown"].startswith(f"# {rule['name']} ({rule['id']})")
        assert rule["defaultConfiguration"]["level"] in ("error", "warning", "note")

    results = run["results"]
    assert {r["ruleId"] for r in results} == {"GC102", "GC103"}
    expected_lines = {f"models/{name}": {line for line, _ in markers(repo / "models" / name)}
                      for name in ("detached.py", "dead.py")}
    for result in results:
        assert result["ruleId"] in rules and result["level"] == "error" and result["message"]["text"]
        location, = result["locations"]
        physical = location["physicalLocation"]
        # Relative to the repository root (the folder with .git), not to the working directory.
        assert physical["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        assert physical["artifactLocation"]["uri"] in expected_lines
        assert physical["region"]["startLine"] in expected_lines[physical["artifactLocation"]["uri"]]
    # Every marked line of the detached fixture is reported, as the text format does.
    assert {r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in results
            if r["ruleId"] == "GC103"} == expected_lines["models/detached.py"]
    fingerprints = [r["partialFingerprints"]["graphcheck/v1"] for r in results]
    assert len(set(fingerprints)) == len(fingerprints)
    assert run["invocations"] == [{"executionSuccessful": True, "toolExecutionNotifications": []}]
    # No machine-specific paths in locations (the target property keeps the TARGET as typed).
    assert not any(str(repo) in uri or uri.startswith(("/", "file:")) for uri in artifact_uris(document))


def test_fingerprints_survive_edits_that_move_lines(repo):
    """Python API: the same finding one line lower keeps its fingerprint, so the alert is not re-opened."""
    def fingerprints():
        report = Report(results=[graphcheck.check("detached.py")])
        document = json.loads(format_report(report, "sarif"))
        validate(document)
        return {r["partialFingerprints"]["graphcheck/v1"]: r["locations"][0]["physicalLocation"]["region"]["startLine"]
                for r in document["runs"][0]["results"]}

    before = fingerprints()
    model = repo / "models" / "detached.py"
    model.write_text("# a new first line\n" + model.read_text())
    after = fingerprints()
    assert set(after) == set(before)
    assert all(after[key] == before[key] + 1 for key in before)


def test_clean_model_is_a_valid_empty_run(repo):
    document = sarif("clean.py", code=0)
    run, = document["runs"]
    assert run["results"] == []
    assert run["invocations"][0]["executionSuccessful"] is True


def test_target_error_is_a_tool_notification(repo):
    document = sarif("missing.py", "dead.py", code=2)
    run, = document["runs"]
    invocation, = run["invocations"]
    assert invocation["executionSuccessful"] is False
    notification, = invocation["toolExecutionNotifications"]
    assert notification["level"] == "error" and notification["message"]["text"].startswith("missing.py: ")
    assert artifact_uris(document) == ["models/dead.py"]     # the other target is still reported


def test_findings_without_a_line_in_the_repository_point_at_the_target_file(repo):
    """GitHub needs a location in the repository: no line, or a library's line, falls back to line 1."""
    findings = [Finding("GC101", "unused-parameter", Severity.ERROR, "unused", ["a.weight"]),
                Finding("GC301", "saturating-activation-chain", Severity.WARNING, "chain", [],
                        location=Location(str(Path(shutil.__file__)), 40)),
                Finding("GC501", "zero-initialised-weight", Severity.INFO, "zero", ["b.weight"],
                        location=Location(str(repo / "models" / "dead.py"), 7))]
    report = Report(results=[TargetResult(target="dead.py:build_model", findings=findings),
                             TargetResult(target="pkg.not_imported:build", findings=findings[:1])])
    document = json.loads(format_report(report, "sarif"))
    validate(document)
    results = document["runs"][0]["results"]
    assert [r["level"] for r in results] == ["error", "warning", "note", "error"]
    assert [r.get("locations", [{}])[0].get("physicalLocation", {}).get("region", {}).get("startLine")
            for r in results] == [1, 1, 7, None]
    assert artifact_uris(document) == ["models/dead.py"] * 3
