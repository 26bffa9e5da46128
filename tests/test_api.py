"""The Python API: check() on modules and targets, assert_clean for pytest, meta models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphcheck
from graphcheck.testing import assert_clean


class Tied(nn.Module):
    """An embedding tied to the output layer, plus an unused layer: reported once, by canonical name."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.out = nn.Linear(8, 10, bias=False)
        self.out.weight = self.embed.weight
        self.unused = nn.Linear(8, 8)

    def forward(self, ids):
        return self.out(self.embed(ids))


def test_tied_parameters_use_the_canonical_name():
    result = graphcheck.check(Tied(), (torch.randint(0, 10, (2, 5)),))
    assert result.status == "ok"
    assert result.parameters == {"total": 3, "trainable": 3, "frozen": 0}
    assert result.parameters_without_gradient() == {"unused.weight", "unused.bias"}


def test_assert_clean_passes_and_fails_with_the_report():
    healthy = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    assert_clean(healthy, (torch.randn(3, 4),))
    with pytest.raises(AssertionError, match="GC101 unused-parameter"):
        assert_clean(Tied(), (torch.randint(0, 10, (2, 5)),))


def test_meta_models_are_analysed_without_weights():
    with torch.device("meta"):
        model = Tied()
        model.body = nn.Sequential(nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 4096))
        model.spare = nn.Linear(4096, 4096)
        model.unused = nn.Linear(4096, 4096)
        model.forward = lambda x: model.body(x)
    result = graphcheck.check(model, (torch.randn(2, 4096, device="meta"),))
    assert result.status == "ok" and result.device == "meta"
    assert {"GC302", "GC503"} <= set(result.skipped_rules)   # they need real weights
    assert result.parameters_without_gradient() == {
        "spare.weight", "spare.bias", "unused.weight", "unused.bias", "embed.weight"}


def test_eval_mode_changes_what_is_analysed():
    class ModeDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Linear(4, 4)
            self.aux = nn.Linear(4, 4)

        def forward(self, x):
            h = self.main(x)
            return h + self.aux(x) if self.training else h

    inputs = (torch.randn(2, 4),)
    assert graphcheck.check(ModeDependent(), inputs).parameters_without_gradient() == set()
    evaluated = graphcheck.check(ModeDependent(), inputs, mode="eval")
    assert evaluated.mode == "eval"
    assert evaluated.parameters_without_gradient() == {"aux.weight", "aux.bias"}


def test_bad_input_is_a_result_not_an_exception():
    result = graphcheck.check("no/such/file.py:build_model")
    assert result.status == "error" and "Cannot find the file" in result.error


def test_a_finding_is_immutable_and_names_its_cause():
    """The drawing draws what the rule found: the cutting op and the edge it cuts."""
    import dataclasses

    from tests.fixture_files import FIXTURES
    result = graphcheck.check(str(FIXTURES / "params" / "detached-parameter" / "bad.py"), select=["GC103"])
    assert result.status == "ok", result.error
    finding = next(f for f in result.findings if "proj.weight" in f.parameters)
    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.parameters = ()
    cause = finding.cause
    assert cause.kind == "cut" and cause.label == "detach"
    graph = result.graph.graph
    assert graph.nodes[cause.node]["target"] == "detach"
    u, v = cause.edge
    assert v == cause.node and graph.edges[u, v].get("data") and not graph.edges[u, v].get("grad")
    no_grad = next(f for f in result.findings if "backbone.weight" in f.parameters)
    assert no_grad.cause.label == "no_grad"
