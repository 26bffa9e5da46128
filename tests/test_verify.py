"""--verify: the runtime cross-check of the GC1xx verdict against autograd."""

from __future__ import annotations

import json
import pathlib
import textwrap

import pytest
from click.testing import CliRunner

import graphcheck
from graphcheck.cli import cli
from graphcheck.report import Report
from graphcheck.verify import verify_result

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "params"


def _write(tmp_path, body: str, name: str = "model.py") -> str:
    path = tmp_path / name
    path.write_text("import torch\nfrom torch import nn\n\n" + textwrap.dedent(body))
    return str(path)


def _gc1(result) -> set[str]:
    return {p for f in result.findings if f.code.startswith("GC1") for p in f.parameters}


@pytest.mark.parametrize("rule", ["unused-parameter", "dead-branch-parameter", "detached-parameter",
                                  "zero-gradient-parameter"])
@pytest.mark.parametrize("kind", ["bad", "good"])
def test_fixtures_verify(rule, kind):
    result = graphcheck.check(str(FIXTURES / rule / f"{kind}.py"))
    assert result.status == "ok", result.error
    verification = verify_result(result)
    assert result.status == "ok", result.error
    assert verification.status == "agree"
    assert verification.autograd == _gc1(result)
    assert all(check.confirmed for check in verification.findings)
    assert verification.method.endswith("cpu-steps")   # small real model: zeros are tested too
    assert verification.message in result.notes


def test_zero_gradient_needs_the_steps():
    """Two consecutive zero layers: grads exist (not None) but are zero, so only the steps see it."""
    result = graphcheck.check(str(FIXTURES / "zero-gradient-parameter" / "bad.py"))
    verification = verify_result(result)
    assert {"fc1.weight", "fc1.bias", "fc2.weight"} <= verification.autograd
    assert "head.weight" not in verification.autograd


def test_disagreement_is_an_error_with_both_sets(tmp_path, monkeypatch):
    """A graphcheck bug (simulated: the analysis says every parameter is fine) exits 2."""
    from graphcheck.analysis import gradient_flow

    monkeypatch.setattr(gradient_flow, "_analyse", lambda mg: {
        name: gradient_flow.Verdict(name, "ok") for name in mg.parameters})
    path = _write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)
                self.b = nn.Linear(4, 4)
            def forward(self, x):
                return self.a(x) + self.b(x).detach()

        def build_model():
            return M(), (torch.randn(2, 4),)
        """)
    # In process (the simulated bug must be in the process that verifies; the command line's worker
    # would not see the monkeypatch): the API's verify, and the exit code the report gives it.
    checked = graphcheck.check(path, verify=True)
    assert Report(results=[checked]).exit_code() == 2
    target = checked.to_dict()
    assert target["status"] == "error"
    assert "b.weight" in target["error"] and "b.bias" in target["error"]
    result = graphcheck.check(path)
    verification = verify_result(result)
    assert verification.status == "disagree"
    assert verification.missed == {"b.weight", "b.bias"}
    assert verification.spurious == set()
    assert result.status == "error" and "b.weight" in result.error


def test_spurious_finding_is_a_disagreement(tmp_path, monkeypatch):
    from graphcheck.analysis import gradient_flow

    real = gradient_flow._analyse

    def wrong(mg):
        verdicts = real(mg)
        verdicts["0.weight"] = gradient_flow.Verdict("0.weight", "detached", path=["param:0.weight"],
                                                     reason="simulated bug")
        return verdicts

    monkeypatch.setattr(gradient_flow, "_analyse", wrong)
    path = _write(tmp_path, """
        def build_model():
            return nn.Sequential(nn.Linear(4, 4)), (torch.randn(2, 4),)
        """)
    result = graphcheck.check(path + ":build_model")
    assert result.status == "ok", result.error
    verification = verify_result(result)
    assert verification.spurious == {"0.weight"}
    assert [check.confirmed for check in verification.findings] == [False]
    assert result.status == "error"


def test_meta_only_model_leaves_zero_verdicts_undecided(tmp_path):
    path = _write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(8, 8)
                self.q = nn.Linear(8, 8)
                self.cut = nn.Linear(8, 8)
            def forward(self, x):
                return self.a(x) + torch.round(self.q(x)) + self.cut(x).detach()

        def build_model():
            with torch.device("meta"):
                model = M()
            return model, (torch.randn(2, 8, device="meta"),)
        """)
    result = graphcheck.check(path)
    assert result.status == "ok", result.error
    verification = verify_result(result)
    assert verification.status == "agree", verification.message
    assert verification.method == "meta"
    assert verification.autograd == {"cut.weight", "cut.bias"}
    assert verification.undecided == {"q.weight", "q.bias"}
    assert result.status == "ok"


def test_select_narrowing_is_not_a_disagreement(tmp_path):
    path = _write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)
                self.b = nn.Linear(4, 4)
                self.never = nn.Linear(4, 4)
            def forward(self, x):
                return self.a(x) + self.b(x).detach()

        def build_model():
            return M(), (torch.randn(2, 4),)
        """)
    result = graphcheck.check(path, select="GC101")
    verification = verify_result(result)
    assert verification.status == "agree", verification.message
    assert verification.unreported == {"b.weight", "b.bias"}
    assert [f.confirmed for f in verification.findings] == [True]


def test_data_dependent_model_verifies_on_cpu(tmp_path):
    path = _write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)
                self.b = nn.Linear(4, 4)
            def forward(self, x):
                h = self.a(x)
                if h.sum().item() > 1e9:   # data-dependent: meta cannot decide it
                    h = self.b(h)
                return h

        def build_model():
            return M(), (torch.randn(2, 4),)
        """)
    result = graphcheck.check(path)
    assert result.status == "ok", result.error
    verification = verify_result(result)
    assert verification.status == "agree", verification.message
    assert verification.method.startswith("cpu")
    assert verification.autograd == {"b.weight", "b.bias"} == _gc1(result)


def test_huge_input_shape_is_verified_on_meta_only(tmp_path):
    path = _write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(100000, 2)
                self.unused = nn.Linear(2, 2)
            def forward(self, x):
                return self.a(x)

        def build_model():
            return M()
        """)
    outcome = CliRunner().invoke(cli, [path, "--input-shape", "100000,100000", "--verify", "--no-config",
                                       "--format", "json"])
    assert outcome.exit_code == 1, outcome.output
    target = json.loads(outcome.stdout)["targets"][0]
    assert target["status"] == "ok"
    params = {p for f in target["findings"] for p in f["parameters"]}
    assert params == {"unused.weight", "unused.bias"}


def test_verification_that_cannot_run_keeps_the_result(tmp_path):
    """A model that fails on the verification's fresh inputs: the check is reported as failed, the analysis stands."""
    path = _write(tmp_path, """
        class ExampleOnly(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)
            def forward(self, x):
                if x.device.type == "cpu" and not bool((x == 1).all()):
                    raise RuntimeError("runs on the example only")
                return self.a(x)

        def build_model():
            return ExampleOnly(), (torch.ones(2, 4),)
        """)
    result = graphcheck.check(path, frontends=("autograd",))
    assert result.status == "ok", result.error
    verification = verify_result(result)
    assert verification.status == "failed"
    assert result.status == "ok"
    assert any("could not verify" in note for note in result.notes)


def test_a_single_use_model_is_verified_because_its_state_is_restored(tmp_path):
    """forward counts its calls and refuses a second one: graphcheck restores the counter after each run."""
    path = _write(tmp_path, """
        class Once(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)
                self.calls = 0
            def forward(self, x):
                self.calls += 1
                if self.calls > 1:
                    raise RuntimeError("single use")
                return self.a(x)

        def build_model():
            return Once(), (torch.randn(2, 4),)
        """)
    result = graphcheck.check(path, frontends=("autograd",))
    assert result.status == "ok", result.error
    assert verify_result(result).status == "agree"


def test_error_results_are_not_verified(tmp_path):
    result = graphcheck.check(str(tmp_path / "missing.py"))
    assert result.status == "error"
    assert verify_result(result) is None
