"""action.yml: its shape, and its shell steps run with bash the way a GitHub runner runs them.

Everything but `actions/setup-python` and the upload is executed here: the `run:` bodies
are taken from action.yml, their `env:` expressions are filled in from the inputs, and
bash runs them (`bash --noprofile --norc -eo pipefail`, as `shell: bash` does) in a fresh
workspace with `graphcheck` and `python` on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixture_files import FIXTURES, ROOT
from tests.sarif_schema import validate

ACTION = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
STEPS = {step["name"]: step for step in ACTION["runs"]["steps"]}
INSTALL, RUN, GATE = "Install torch and graphcheck", "Run graphcheck (SARIF report)", "Fail on findings"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def inputs(**given) -> dict[str, str]:
    """The inputs as the runner passes them: strings, defaults filled in."""
    values = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
    values.update({name.replace("_", "-"): value for name, value in given.items()})
    return values


def expand(value: str, values: dict[str, str]) -> str:
    def one(match):
        name = match.group(1)
        if name == "github.action_path":
            return str(ROOT)
        assert name.startswith("inputs."), f"unexpected expression {match.group(0)} in a step's env"
        return values[name.removeprefix("inputs.")]
    return EXPRESSION.sub(one, str(value))


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def workspace(tmp_path):
    """A user's checkout: .git, a pyproject.toml without [tool.graphcheck], models/ with a bad and a clean model."""
    root = tmp_path / "workspace"
    (root / ".git").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "user-models"\nversion = "0"\n')
    (root / "models").mkdir()
    shutil.copy(FIXTURES / "params/detached-parameter/bad.py", root / "models" / "bad.py")
    shutil.copy(FIXTURES / "params/detached-parameter/good.py", root / "models" / "clean.py")
    return root


def shims(tmp_path, graphcheck: str | None = None, pip_log: Path | None = None) -> Path:
    """`python` (recording `python -m pip install ...` to pip_log instead of running it) and `graphcheck`."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    record = (f'if [ "$1 $2" = "-m pip" ]; then printf "%s\\0" "$@" >> "{pip_log}"; echo >> "{pip_log}"; exit 0; fi\n'
              if pip_log else "")
    executable(folder / "python", f'#!/bin/sh\n{record}exec "{sys.executable}" "$@"\n')
    executable(folder / "graphcheck", graphcheck or f'#!/bin/sh\nexec "{sys.executable}" -m graphcheck "$@"\n')
    return folder


def run_step(name: str, cwd: Path, bin_dir: Path, **given) -> subprocess.CompletedProcess:
    step = STEPS[name]
    assert step["shell"] == "bash"
    values = inputs(**given)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           **{key: expand(value, values) for key, value in step.get("env", {}).items()}}
    script = cwd.parent / f"step-{len(list(cwd.parent.glob('step-*')))}.sh"
    script.write_text(step["run"])
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                          check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_action_shape():
    assert ACTION["name"] == "graphcheck" and ACTION["runs"]["using"] == "composite"
    assert set(ACTION["inputs"]) >= {"args", "fail-on", "python-version", "torch", "torch-index-url",
                                     "sarif-file", "upload"}
    assert inputs()["sarif-file"] == "graphcheck.sarif" and inputs()["upload"] == "true"
    assert inputs()["torch-index-url"] == "https://download.pytorch.org/whl/cpu"
    uses = [step.get("uses", "").split("@")[0] for step in ACTION["runs"]["steps"]]
    assert uses[0] == "actions/setup-python" and "github/codeql-action/upload-sarif" in uses
    upload = ACTION["runs"]["steps"][uses.index("github/codeql-action/upload-sarif")]
    assert upload["if"] == "inputs.upload == 'true'" and upload["with"]["sarif_file"] == "${{ inputs.sarif-file }}"
    names = list(STEPS)
    assert names.index(INSTALL) < names.index(RUN) < names.index(upload["name"]) < names.index(GATE)
    for step in ACTION["runs"]["steps"]:
        if "run" in step:   # no ${{ }} inside scripts: inputs cannot inject shell code
            assert step["shell"] == "bash" and "${{" not in step["run"], step["name"]


def test_install_step_passes_inputs_to_pip_as_words(tmp_path, workspace):
    log = tmp_path / "pip.log"
    bin_dir = shims(tmp_path, pip_log=log)
    done = run_step(INSTALL, workspace, bin_dir, torch="torch==2.13.0 'numpy<3'",
                    packages="-r 'requirements dev.txt' $(touch pwned)")
    assert done.returncode == 0, done.stderr
    calls = [line.split("\0")[:-1] for line in log.read_text().splitlines()]
    assert calls == [
        ["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
         "--index-url", "https://download.pytorch.org/whl/cpu", "torch==2.13.0", "numpy<3"],
        ["-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
         str(ROOT), "-r", "requirements dev.txt", "$(touch", "pwned)"],
    ]
    assert not (workspace / "pwned").exists()


def test_args_are_split_like_a_shell_and_never_executed(tmp_path, workspace):
    argv_file = tmp_path / "argv.json"
    dump = f'import json, sys; json.dump(sys.argv[1:], open("{argv_file}", "w"))'
    fake = f'#!/bin/sh\nexec "{sys.executable}" -c \'{dump}\' "$@"\n'
    bin_dir = shims(tmp_path, graphcheck=fake)
    done = run_step(RUN, workspace, bin_dir, args="'models/my net.py:build' --loss \"$HOME\" `touch pwned` *.py",
                    sarif_file="out/report.sarif")
    assert done.returncode == 0, done.stderr
    assert json.loads(argv_file.read_text()) == ["models/my net.py:build", "--loss", "$HOME", "`touch", "pwned`",
                                                 "*.py", "--format", "sarif", "--output", "out/report.sarif",
                                                 "--exit-zero"]
    assert (workspace / "out").is_dir() and not (workspace / "pwned").exists()

    for upload, fmt in [("true", "text"), ("false", "github")]:
        done = run_step(GATE, workspace, bin_dir, args="models/a.py --meta", fail_on="warning", upload=upload)
        assert done.returncode == 0, done.stderr
        assert json.loads(argv_file.read_text()) == ["models/a.py", "--meta", "--format", fmt, "--fail-on", "warning"]
    run_step(GATE, workspace, bin_dir, args="models/a.py")     # empty fail-on: the configuration decides
    assert json.loads(argv_file.read_text()) == ["models/a.py", "--format", "text"]

    done = run_step(RUN, workspace, bin_dir, args="  ")     # empty: the targets in [tool.graphcheck]
    assert done.returncode == 0, done.stderr
    assert json.loads(argv_file.read_text()) == ["--format", "sarif", "--output", "graphcheck.sarif", "--exit-zero"]


def test_empty_args_lint_the_configured_targets(tmp_path, workspace):
    (workspace / "pyproject.toml").write_text('[tool.graphcheck]\ntargets = ["models/bad.py", "models/clean.py"]\n')
    done = run_step(RUN, workspace, shims(tmp_path), args="")
    assert done.returncode == 0, done.stderr
    document = json.loads((workspace / "graphcheck.sarif").read_text())
    assert {r["ruleId"] for r in document["runs"][0]["results"]} == {"GC103"}
    gate = run_step(GATE, workspace, shims(tmp_path), args="")
    assert gate.returncode == 1 and "GC103" in gate.stdout


def test_sarif_step_writes_a_valid_report(tmp_path, workspace):
    done = run_step(RUN, workspace, shims(tmp_path), args="models/bad.py models/clean.py",
                    sarif_file="reports/graphcheck.sarif")
    assert done.returncode == 0, done.stderr     # findings do not fail this step
    document = json.loads((workspace / "reports" / "graphcheck.sarif").read_text())
    validate(document)
    results = document["runs"][0]["results"]
    assert results and {r["ruleId"] for r in results} == {"GC103"}
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"] == {"uri": "models/bad.py",
                                                                             "uriBaseId": "%SRCROOT%"}
               for r in results)


def test_sarif_step_fails_when_a_model_cannot_be_loaded(tmp_path, workspace):
    done = run_step(RUN, workspace, shims(tmp_path), args="models/missing.py")
    assert done.returncode == 2 and "models/missing.py" in done.stderr


@pytest.mark.parametrize("model, code", [("bad.py", 1), ("clean.py", 0)])
def test_gate_fails_on_findings_and_annotates_them(tmp_path, workspace, model, code):
    # Without the upload, findings become annotations on the pull request.
    done = run_step(GATE, workspace, shims(tmp_path), args=f"models/{model}", upload="false")
    assert done.returncode == code, done.stderr
    assert ("::error file=models/bad.py,line=22,title=GC103 detached-parameter::" in done.stdout) == (code == 1)


@pytest.mark.parametrize("page", ["README.md", "docs/github.md"])
def test_documented_workflows_use_real_inputs(page):
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / page).read_text(encoding="utf-8"), re.DOTALL)
    uses = [step for block in blocks for step in _steps(yaml.safe_load(block))
            if str(step.get("uses", "")).startswith("graphcheck/graphcheck@")]
    assert uses, f"{page} shows no workflow using the action"
    for step in uses:
        assert set(step.get("with", {})) <= set(ACTION["inputs"]) and step["with"]["args"]


def _steps(document) -> list[dict]:
    if isinstance(document, dict):
        return [*document.get("steps", []), *(s for job in document.get("jobs", {}).values() for s in _steps(job))]
    return []
