"""The command line: exit codes, formats, selection, configuration and bad input."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from graphcheck.cli import cli
from graphcheck.registry import all_rules

ROOT = Path(__file__).resolve().parent.parent
DETACHED = ROOT / "fixtures/params/detached-parameter/bad.py"
CLEAN = ROOT / "fixtures/seed/linear_relu_linear.py"
DEAD = ROOT / "fixtures/params/dead-branch-parameter/bad.py"


def run(*args, cwd=None):
    runner = CliRunner()
    result = runner.invoke(cli, [*map(str, args), "--no-config"], catch_exceptions=False)
    return result


def test_findings_exit_1_and_name_file_line_code():
    result = run(DETACHED)
    assert result.exit_code == 1
    assert f"{DETACHED.relative_to(Path.cwd()) if DETACHED.is_relative_to(Path.cwd()) else DETACHED}:22: GC103 detached-parameter:" in result.output


def test_clean_model_exits_0():
    result = run(CLEAN)
    assert result.exit_code == 0, result.output
    assert "no findings" in result.output


def test_bare_file_uses_build_model_and_module_form(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent("""
        import torch
        def make():
            return torch.nn.Linear(3, 1), (torch.randn(2, 3),)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert run("mypkg.models:make").exit_code == 0
    assert run(CLEAN).exit_code == 0


def test_json_schema_version_1():
    result = run(DEAD, "--loss", f"{DEAD}:loss", "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["version"] == 1
    (target,) = data["targets"]
    assert {"target", "status", "frontend", "parameters", "findings"} <= set(target)
    assert target["status"] == "ok" and target["frontend"] == "fx"
    assert target["parameters"] == {"total": 8, "trainable": 8, "frozen": 0}
    codes = {(f["code"], f["name"], f["severity"]) for f in target["findings"]}
    assert codes == {("GC102", "dead-branch-parameter", "error")}
    params = sorted(p for f in target["findings"] for p in f["parameters"])
    assert params == ["aux_head.bias", "aux_head.weight", "probe.bias", "probe.weight"]
    for finding in target["findings"]:
        assert set(finding) == {"code", "name", "severity", "message", "parameters", "path", "location"}
        assert finding["location"]["line"] in (17, 18)


@pytest.mark.parametrize("fmt", ["text", "concise", "json", "sarif", "github"])
def test_every_format_and_output_file(fmt, tmp_path):
    out = tmp_path / "report.txt"
    result = run(DETACHED, "--format", fmt, "--output", out)
    assert result.exit_code == 1
    text = out.read_text()
    assert "GC103" in text
    if fmt == "sarif":
        sarif = json.loads(text)
        assert sarif["version"] == "2.1.0"
        assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {"GC103"}
    if fmt == "github":
        assert all(line.startswith("::error ") for line in text.splitlines())


def test_select_ignore_longest_prefix_wins():
    assert run(DETACHED, "--ignore", "GC1").exit_code == 0
    assert run(DETACHED, "--ignore", "GC1", "--select", "GC103").exit_code == 1
    assert run(DETACHED, "--select", "GC101").exit_code == 0
    assert run(DETACHED, "--select", "GC1", "--ignore", "GC103").exit_code == 0
    result = run(DETACHED, "--select", "GC9")
    assert result.exit_code == 2 and "matches no rule" in result.output


def test_fail_on_and_exit_zero():
    assert run(DETACHED, "--exit-zero").exit_code == 0
    assert run(DETACHED, "--fail-on", "warning").exit_code == 1


def test_input_shape_feeds_a_model_without_example_inputs(tmp_path):
    model = tmp_path / "m.py"
    model.write_text(textwrap.dedent("""
        import torch
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Linear(6, 4)
            def forward(self, x):
                if x.sum() > 0:          # data-dependent: fx fails, a recorded pass works
                    return self.a(x)
                return self.a(x) * 2
        def build_model():
            return M()
    """))
    result = run(model, "--input-shape", "2,6", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["targets"][0]["frontend"] in ("export", "autograd")
    missing = run(model)
    assert missing.exit_code == 2
    assert "--input-shape" in missing.output


def test_eval_mode_is_reported():
    data = json.loads(run(CLEAN, "--eval", "--format", "json").stdout)
    assert data["targets"][0]["mode"] == "eval"


def test_several_targets_one_report():
    result = run(CLEAN, DETACHED, "--format", "json")
    assert result.exit_code == 1
    assert [t["status"] for t in json.loads(result.stdout)["targets"]] == ["ok", "ok"]


def rule(*args):
    return CliRunner().invoke(cli, ["rule", *args])


def test_rule_command_prints_documentation():
    result = rule("GC103")
    assert result.exit_code == 0
    for section in ("## What it does", "## Why is this bad?", "## Example", "## Use instead"):
        assert section in result.output
    assert rule("detached-parameter").output == result.output
    assert rule("GC999").exit_code == 2
    everything = rule("--all").output
    assert all(rule.code in everything for rule in all_rules())


def test_configuration_from_pyproject_and_command_line_override(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [tool.graphcheck]
        ignore = ["GC103"]
        ignore-parameters = ["probe.*"]
        colour = "red"
    """))
    # The nearest pyproject.toml above the target file counts, wherever graphcheck runs from.
    project = tmp_path / "models"
    project.mkdir()
    detached, dead = project / "detached.py", project / "dead.py"
    detached.write_text(DETACHED.read_text())
    dead.write_text(DEAD.read_text())
    monkeypatch.chdir(ROOT)
    runner = CliRunner()
    quiet = runner.invoke(cli, [str(detached)])
    assert quiet.exit_code == 0, quiet.output
    assert "unknown key 'colour'" in quiet.output
    loud = runner.invoke(cli, [str(detached), "--ignore", "GC104"])
    assert loud.exit_code == 1
    dead = runner.invoke(cli, [str(dead), "--format", "json"])
    params = [p for f in json.loads(dead.stdout)["targets"][0]["findings"] for p in f["parameters"]]
    assert not any(p.startswith("probe.") for p in params)
    assert runner.invoke(cli, [str(detached), "--no-config"]).exit_code == 1


def test_rule_option_types_are_checked(tmp_path):
    config = tmp_path / "graphcheck.toml"
    config.write_text('[rules.partial-detach]\nmin-share = "abc"\n')
    result = CliRunner().invoke(cli, [str(CLEAN), "--config", str(config)])
    assert result.exit_code == 2
    assert "must be a number" in result.output and "internal error" not in result.output


def test_unwritable_output_and_unknown_image_format_are_usage_errors(tmp_path):
    missing = run(CLEAN, "--output", tmp_path / "no" / "such" / "dir.json")
    assert missing.exit_code == 2 and "cannot write the report" in missing.output
    image = run(CLEAN, "--render", tmp_path / "graph.xyz")
    assert image.exit_code == 2 and ".svg" in image.output


def test_rule_options_in_configuration_are_validated(tmp_path):
    config = tmp_path / "graphcheck.toml"
    config.write_text('[rules.unused-parameter]\nthreshold = 3\n')
    result = CliRunner().invoke(cli, [str(CLEAN), "--config", str(config)])
    assert result.exit_code == 2
    assert "Unknown option 'threshold'" in result.output


BAD_INPUTS = {
    "missing file": ("missing.py", None, "Cannot find the file"),
    "syntax error": ("def broken(:\n", None, "syntax error"),
    "raises at import": ("raise RuntimeError('boom at import')\n", None, "boom at import"),
    "missing factory": ("import torch\ndef other():\n    return torch.nn.Linear(2, 2)\n", None, "no factory named 'build_model'"),
    "factory raises": ("def build_model():\n    raise ValueError('bad config')\n", None, "bad config"),
    "not a module": ("def build_model():\n    return 42\n", None, "not an nn.Module"),
    "loss not a tensor": ("import torch\ndef build_model():\n    return torch.nn.Linear(2, 2), (torch.randn(3, 2),)\n"
                          "def loss(out):\n    return 1.5\n", "loss", "not a tensor"),
    "loss not scalar": ("import torch\ndef build_model():\n    return torch.nn.Linear(2, 2), (torch.randn(3, 2),)\n"
                        "def loss(out):\n    return out\n", "loss", "not a scalar"),
    "loss raises": ("import torch\ndef build_model():\n    return torch.nn.Linear(2, 2), (torch.randn(3, 2),)\n"
                    "def loss(out):\n    return out.logits.mean()\n", "loss", "The loss raised an error"),
    "untraceable": ("import torch\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                    "        self.a = torch.nn.Linear(2, 2)\n    def forward(self, x):\n"
                    "        raise RuntimeError('cannot run')\n"
                    "def build_model():\n    return M(), (torch.randn(3, 2),)\n", None, "The model fails on the example inputs"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_a_message_and_no_traceback(case, tmp_path):
    source, loss, expected = BAD_INPUTS[case]
    path = tmp_path / "model.py"
    if case != "missing file":
        path.write_text(source)
    args = [path] + (["--loss", f"{path}:{loss}"] if loss else [])
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "model.py"
    path.write_text("def build_model():\n    raise ValueError('bad config')\n")
    result = run(path, "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.output


# --------------------------------------------------------------------------- leaving the process

ATEXIT_MODEL = textwrap.dedent('''
    import atexit, sys
    import torch
    from torch import nn

    atexit.register(lambda: open(__file__ + ".done", "w").write("cleaned up"))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.used(x)

    def build_model():
        return Net(), (torch.randn(3, 4),)
''')


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_command_exits_fast_with_its_code_its_output_and_atexit_cleanups(tmp_path, fmt):
    # The console entry point skips the interpreter's teardown (os._exit) after flushing and
    # running every atexit handler: the exit code, the whole report and the cleanups survive.
    import subprocess
    import sys
    model = tmp_path / "model.py"
    model.write_text(ATEXIT_MODEL)
    out = tmp_path / "report.txt"
    with out.open("w") as stdout:
        done = subprocess.run([sys.executable, "-m", "graphcheck", str(model), "--format", fmt],
                              stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr == ""
    report = out.read_text()
    if fmt == "json":
        assert [f["code"] for f in json.loads(report)["targets"][0]["findings"]] == ["GC101"]
    else:
        assert "GC101" in report and report.endswith("\n")
    assert (tmp_path / "model.py.done").read_text() == "cleaned up"
    missing = subprocess.run([sys.executable, "-m", "graphcheck", str(tmp_path / "missing.py")],
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "Cannot find the file" in missing.stdout + missing.stderr
