"""The analysis never changes the user's model, and stdout belongs to the report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import graphcheck
from graphcheck.cli import cli
from graphcheck.frontends import FRONTENDS
from tests.fixture_files import FIXTURES, load_module
from tests.oracle import real_no_grad

STATEFUL = FIXTURES / "regressions" / "stateful-forward" / "good.py"


def _snapshot(model: torch.nn.Module) -> dict:
    """Everything forward could change: attributes (tensors by identity and value), registries, modes."""
    state = {}
    for name, module in model.named_modules():
        for key, value in module.__dict__.items():
            if isinstance(value, torch.Tensor):
                state[(name, key)] = ("tensor", id(value), value.detach().clone())
            elif isinstance(value, dict):
                state[(name, key)] = ("dict", {k: (id(v), v.detach().clone() if isinstance(v, torch.Tensor) else v)
                                               for k, v in value.items()})
            else:
                state[(name, key)] = ("value", id(value), repr(value))
    return state


def _assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys(), set(before) ^ set(after)
    for key, old in before.items():
        new = after[key]
        if old[0] == "tensor":
            assert old[1] == new[1] and torch.equal(old[2], new[2]), key
        elif old[0] == "dict":
            assert old[1].keys() == new[1].keys(), key
            for k, (identity, value) in old[1].items():
                assert new[1][k][0] == identity, (key, k)
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, new[1][k][1]), (key, k)
        else:
            assert old[1:] == new[1:], key


class _TracesBadly(torch.nn.Module):
    """fx fails on it after assigning a Proxy into an attribute; export and the recorded pass still run."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.scale = torch.ones(4)

    def forward(self, x):
        self.scale = self.scale * 1.0
        if x.sum() > 0:          # data-dependent: fx cannot trace past it
            return self.fc(x) * self.scale
        return self.fc(x)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_every_frontend_leaves_the_model_as_it_found_it(frontend, capsys):
    model, inputs = load_module(STATEFUL).build_model()
    model(*inputs)                       # state as after a first call: the hook exists, the counter moved
    model.train()
    model.block.norm.eval()              # a submodule in another mode stays so
    before = _snapshot(model)
    result = graphcheck.check(model, inputs, frontends=(frontend,), mode="train")
    assert result.status == "ok", result.error
    _assert_same(before, _snapshot(model))
    assert model.training and not model.block.norm.training


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_failing_frontends_leave_the_model_too(frontend):
    model, inputs = _TracesBadly(), (torch.ones(2, 4),)
    before = _snapshot(model)
    graphcheck.check(model, inputs, frontends=(frontend,))
    _assert_same(before, _snapshot(model))
    assert isinstance(model.scale, torch.Tensor)
    model(*inputs)                       # and it still runs


class _MomentumEncoder(torch.nn.Module):
    """MoCo's forward: the key encoder follows the query encoder by an in-place update under no_grad."""

    def __init__(self):
        super().__init__()
        self.query, self.key = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
        for p in self.key.parameters():
            p.requires_grad = False

    def forward(self, x):
        with torch.no_grad():
            for q, k in zip(self.query.parameters(), self.key.parameters()):
                k.mul_(0.9).add_(q.detach(), alpha=0.1)
            self.key.weight.data.mul_(0.5)                       # through .data, in place
            self.key.bias.data = self.key.bias.data * 0.5 + 1.0  # .data assigned
        return (self.query(x) * self.key(x)).sum(-1)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_weights_forward_writes_to_keep_their_values(frontend):
    # Small real-weight models are traced on the CPU: on copies, so the update above leaves
    # the user's key encoder as it was (found by the research-code trial on MoCo v3).
    torch.manual_seed(0)
    model, inputs = _MomentumEncoder(), (torch.randn(3, 8),)
    before = _snapshot(model)
    result = graphcheck.check(model, inputs, frontends=(frontend,))
    if frontend == "export" and result.status == "error":   # `.data` in forward (docs/limitations.md)
        assert "fake tensor in the exported program constant" in result.error, result.error
    else:
        assert result.status == "ok", result.error
    _assert_same(before, _snapshot(model))


def test_the_whole_run_with_every_rule_and_verify_leaves_the_model():
    from graphcheck.verify import verify_result
    model, inputs = load_module(STATEFUL).build_model()
    before = _snapshot(model)
    result = graphcheck.check(model, inputs)
    verify_result(result)
    assert result.status == "ok", result.error
    _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_stdout_holds_only_the_report_when_the_target_prints(fmt):
    outcome = CliRunner().invoke(cli, [f"{STATEFUL}:build_model", "--loss", f"{STATEFUL}:loss",
                                       "--format", fmt, "--no-config"])
    assert outcome.exit_code == 0, outcome.output
    json.loads(outcome.stdout)           # parses: nothing the model printed is in it
    assert "forward called" not in outcome.stdout


def test_prints_reach_stderr_in_a_real_process_and_output_file_is_clean(tmp_path):
    out = tmp_path / "report.json"
    process = subprocess.run([sys.executable, "-m", "graphcheck", f"{STATEFUL}:build_model", "--loss",
                              f"{STATEFUL}:loss", "--format", "json", "--no-config"],
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    json.loads(process.stdout)
    assert "building the model" not in process.stdout
    process = subprocess.run([sys.executable, "-m", "graphcheck", f"{STATEFUL}:build_model", "--format", "json",
                              "--output", str(out), "--no-config", "--debug"],
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    json.loads(out.read_text())
    assert "building the model" in process.stderr      # --debug shows what the target printed


def test_custom_autograd_function_is_one_op_with_autograds_edges():
    """A hand-written checkpoint Function: no finding, as autograd says (fx/export hand it over)."""
    module = load_module(FIXTURES / "regressions" / "custom-autograd-function" / "good.py")
    model, inputs = module.build_model()
    result = graphcheck.check(model, inputs, loss=module.loss)
    assert result.status == "ok", result.error
    assert result.frontend == "autograd"
    assert result.findings == [] and real_no_grad(model, inputs, module.loss) == set()


class _SharedAndBroken(torch.nn.Module):
    """One Linear registered under two names, and a forward that fails (a shape bug)."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
        self.alias = torch.nn.Sequential(*self.stem[1:])
        self.bias = torch.nn.Parameter(torch.zeros(5))

    def forward(self, x):
        return self.alias(self.stem[0](x)) + self.bias


def test_a_failing_model_with_shared_modules_gets_its_own_error_and_keeps_its_weights():
    model = _SharedAndBroken()
    result = graphcheck.check(model, (torch.randn(2, 8),))
    assert result.status == "error"
    assert "fails on the example inputs" in result.error and "size of tensor" in result.error
    assert {p.device.type for p in model.parameters()} == {"cpu"}


def test_without_numpy_the_first_readme_command_prints_only_its_report():
    """A fresh `pip install torch -e .` has no NumPy: torch warns at import, graphcheck must not."""
    code = ("import sys\nsys.modules['numpy'] = None\n"
            f"sys.argv = ['graphcheck', {str(FIXTURES / 'params' / 'detached-parameter' / 'bad.py')!r}, '--no-config']\n"
            "from graphcheck.cli import main\nmain()\n")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert process.returncode == 1, process.stderr
    assert process.stderr == ""
    assert "7 errors" in process.stdout


def test_a_mode_override_with_verify_leaves_every_module_in_its_own_mode():
    from graphcheck.verify import verify_result
    model, inputs = load_module(STATEFUL).build_model()
    model.block.norm.eval()
    result = graphcheck.check(model, inputs, mode="eval")
    verify_result(result)
    assert result.status == "ok", result.error
    assert model.training and model.head.training and not model.block.norm.training
