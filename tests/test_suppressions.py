"""`# graphcheck: ignore[...]` comments, --show-suppressed, GC001 unused-suppression, and the pytest plugin."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from click.testing import CliRunner

from graphcheck.cli import cli

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parent.parent

MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.frozen_path = nn.Linear(4, 4)
            self.other = nn.Linear(4, 4)

        def forward(self, x):
            h = self.body(x)
            f = self.frozen_path(x).detach()  {comment_a}
            g = self.other(x).detach()  {comment_b}
            return h + f + g

    def build_model():
        return M(), (torch.randn(2, 4),)
''')


def lint(tmp_path, comment_a="", comment_b="", *args):
    path = tmp_path / "model.py"
    path.write_text(MODEL.format(comment_a=comment_a, comment_b=comment_b))
    result = CliRunner().invoke(cli, [str(path), "--no-config", "--format", "json", *args])
    return result, json.loads(result.stdout)["targets"][0]


def params(findings, code):
    return {p for f in findings if f["code"] == code for p in f["parameters"]}


def test_without_comments_both_paths_are_flagged(tmp_path):
    result, target = lint(tmp_path)
    assert result.exit_code == 1
    assert params(target["findings"], "GC103") == {"frozen_path.weight", "frozen_path.bias", "other.weight", "other.bias"}


def test_a_comment_suppresses_the_finding_on_its_line(tmp_path):
    result, target = lint(tmp_path, "# graphcheck: ignore[GC103]", "# graphcheck: ignore[GC1]", "--show-suppressed")
    assert result.exit_code == 0, result.output
    assert not target["findings"]
    assert params(target["suppressed"], "GC103") == {"frozen_path.weight", "frozen_path.bias", "other.weight", "other.bias"}
    bare, target = lint(tmp_path, "# graphcheck: ignore")
    assert params(target["findings"], "GC103") == {"other.weight", "other.bias"} and "suppressed" not in target


def test_an_unused_suppression_is_an_info_finding(tmp_path):
    result, target = lint(tmp_path, "# graphcheck: ignore[GC103]", "# graphcheck: ignore[GC103, GC104]")
    assert result.exit_code == 0
    (unused,) = [f for f in target["findings"] if f["code"] == "GC001"]
    assert unused["severity"] == "info" and "GC104" in unused["message"] and unused["location"]["line"] == 15
    ignored, target = lint(tmp_path, "# graphcheck: ignore[GC103]", "# graphcheck: ignore[GC103, GC104]",
                           "--ignore", "GC001")
    assert not target["findings"]


def test_text_output_marks_suppressed_findings(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL.format(comment_a="# graphcheck: ignore[GC103]", comment_b=""))
    result = CliRunner().invoke(cli, [str(path), "--no-config", "--show-suppressed"])
    assert "GC103 detached-parameter (suppressed):" in result.stdout
    assert "1 suppressed" in result.stdout


def test_rule_command_documents_gc001():
    result = CliRunner().invoke(cli, ["rule", "GC001"])
    assert result.exit_code == 0 and "# unused-suppression (GC001)" in result.output


def test_the_plugin_is_an_entry_point():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["pytest11"] == {"graphcheck": "graphcheck.pytest_plugin"}


def test_pytest_fixture_fails_with_the_report(pytester):
    # The fixture comes from the installed package's pytest11 entry point, as for a user.
    pytester.makepyfile(textwrap.dedent('''
        import torch
        from torch import nn

        class Detached(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(3, 3)
                self.b = nn.Linear(3, 3)
            def forward(self, x):
                return self.a(x) + self.b(x).detach()

        def test_clean(graphcheck):
            result = graphcheck(nn.Linear(3, 1), (torch.randn(2, 3),))
            assert result.status == "ok"

        def test_detached(graphcheck):
            graphcheck(Detached(), (torch.randn(2, 3),))

        def test_warnings_allowed(graphcheck):
            graphcheck(Detached(), (torch.randn(2, 3),), ignore="GC1", fail_on="error")

        def test_step(graphcheck):
            graphcheck(Detached(), (torch.randn(2, 3),), step=lambda model, batch: model.a(batch[0]).sum(),
                       ignore_parameters=["b.*"])
    '''))
    outcome = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=3, failed=1)
    outcome.stdout.fnmatch_lines(["*graphcheck found problems:*", "*GC103 detached-parameter*"])
