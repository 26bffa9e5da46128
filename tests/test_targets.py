"""Targets in [tool.graphcheck], keyword inputs, the model's own loss and training steps, from the command line."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner

from graphcheck.cli import cli

MODELS = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(torch.relu(self.body(x)))


    class WithOwnLoss(nn.Module):
        """Computes its loss from `labels`, like a transformers model; `aux` is never in it."""
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 8)
            self.lm = nn.Linear(8, 3)
            self.aux = nn.Linear(8, 1)

        def forward(self, features, labels=None):
            h = torch.relu(self.body(features))
            logits = self.lm(h)
            out = {"logits": logits, "aux": self.aux(h)}
            if labels is not None:
                out["loss"] = F.cross_entropy(logits, labels)
            return out


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 8)
            self.proj = nn.Linear(8, 4)
            self.spare = nn.Linear(8, 4)

        def forward(self, x):
            return self.proj(torch.relu(self.body(x)))


    def plain():
        return Plain(), (torch.randn(4, 6),)


    def own_loss():
        return WithOwnLoss(), {"features": torch.randn(4, 6), "labels": torch.tensor([0, 1, 2, 0])}


    def encoder():
        return Encoder(), (torch.randn(4, 6),)


    def simclr(model, batch):
        (x,) = batch
        a = F.normalize(model(x + 0.1 * torch.randn_like(x)), dim=-1)
        b = F.normalize(model(x + 0.1 * torch.randn_like(x)), dim=-1)
        return {"loss": -(a * b).sum(-1).mean()}


    def raising(model, batch):
        raise ValueError("no augmentations configured")


    def not_a_tensor(model, batch):
        return 3.0
''')

PYPROJECT = textwrap.dedent('''
    [tool.graphcheck]
    targets = ["models/nets.py:plain"]

    [[tool.graphcheck.target]]
    model = "models/nets.py:own_loss"

    [[tool.graphcheck.target]]
    model = "models/nets.py:encoder"
    step = "models/nets.py:simclr"
    colour = "red"
''')


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "nets.py").write_text(MODELS)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def test_bare_graphcheck_lints_every_configured_target(repo):
    result = invoke("--format", "json")
    assert result.exit_code == 1, result.output
    assert "unknown key 'colour' in [[tool.graphcheck.target]] number 2" in result.stderr
    targets = json.loads(result.stdout)["targets"]
    assert [t["target"] for t in targets] == ["models/nets.py:plain", "models/nets.py:own_loss", "models/nets.py:encoder"]
    assert [t["status"] for t in targets] == ["ok", "ok", "ok"]
    found = [{(f["code"], p) for f in t["findings"] for p in f["parameters"]} for t in targets]
    assert found == [set(),
                     {("GC102", "aux.weight"), ("GC102", "aux.bias")},
                     {("GC101", "spare.weight"), ("GC101", "spare.bias")}]
    assert [t["loss"] for t in targets] == ["default: every floating-point output", "output.loss",
                                           "step: models/nets.py:simclr"]
    assert targets[2]["frontend"] == "autograd"


def test_text_report_says_which_loss(repo):
    result = invoke()
    assert result.exit_code == 1
    assert "loss: output.loss)" in result.stdout and "loss: step: models/nets.py:simclr)" in result.stdout


def test_targets_on_the_command_line_replace_the_configured_ones(repo):
    result = invoke("models/nets.py:plain", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [t["target"] for t in json.loads(result.stdout)["targets"]] == ["models/nets.py:plain"]


def test_configured_paths_are_relative_to_the_pyproject(repo, monkeypatch):
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "models")
    result = invoke("--format", "json")
    assert result.exit_code == 1, result.output
    assert [t["status"] for t in json.loads(result.stdout)["targets"]] == ["ok", "ok", "ok"]


def test_without_targets_anywhere_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("--no-config")
    assert result.exit_code == 2 and "no TARGET given" in result.output


def test_step_and_loss_from_the_command_line(repo):
    result = invoke("models/nets.py:encoder", "--step", "models/nets.py:simclr", "--no-config", "--format", "json")
    (target,) = json.loads(result.stdout)["targets"]
    assert result.exit_code == 1 and target["loss"] == "step: models/nets.py:simclr"
    assert {p for f in target["findings"] for p in f["parameters"]} == {"spare.weight", "spare.bias"}


BAD = {
    "step raises": ('step = "models/nets.py:raising"', "The training step raising raised ValueError: no augmentations"),
    "step returns a float": ('step = "models/nets.py:not_a_tensor"', "returned float, not a loss"),
    "no model": ('step = "models/nets.py:simclr"', "has no `model`"),
    "bad mode": ('mode = "sideways"', "must be \"train\" or \"eval\""),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_one_paragraph(repo, case):
    line, expected = BAD[case]
    model = "" if case == "no model" else 'model = "models/nets.py:encoder"\n'
    (repo / "pyproject.toml").write_text(f"[[tool.graphcheck.target]]\n{model}{line}\n")
    result = invoke()
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
