"""A forward that packs its outputs (NamedTuple, dataclass, dict, ModelOutput) keeps one edge per field."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import pytest
import torch
from torch import nn

import graphcheck
from graphcheck.frontends import FRONTENDS
from tests.fixture_files import FIXTURES, load_module
from tests.oracle import meta_no_grad

AUX = {"aux1.weight", "aux1.bias", "aux2.weight", "aux2.bias"}


class _Pair(NamedTuple):
    logits: torch.Tensor
    aux: torch.Tensor


@dataclasses.dataclass
class _Result:
    logits: torch.Tensor
    aux1: torch.Tensor
    aux2: torch.Tensor


def _model(pack):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(8, 8)
            self.head = nn.Linear(8, 3)
            self.aux1 = nn.Linear(8, 2)
            self.aux2 = nn.Linear(8, 2)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return pack(self.head(h), self.aux1(h), self.aux2(h))
    return Net()


PACKINGS = {
    "dataclass": (lambda a, b, c: _Result(a, b, c), lambda out: out.logits),
    "dict": (lambda a, b, c: {"logits": a, "aux1": b, "aux2": c}, lambda out: out["logits"]),
    "nested": (lambda a, b, c: (_Pair(a, b), {"aux2": c}), lambda out: out[0].logits),
}


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_namedtuple_fixture(frontend):
    module = load_module(FIXTURES / "regressions" / "packed-outputs" / "bad.py")
    model, inputs = module.build_model()
    result = graphcheck.check(model, inputs, loss=module.loss, select=["GC1"], frontends=(frontend,))
    assert result.status == "ok", result.error
    assert result.parameters_without_gradient() == meta_no_grad(model, inputs, module.loss) == AUX
    assert {f.code for f in result.findings} == {"GC102"}


@pytest.mark.parametrize("frontend", FRONTENDS)
@pytest.mark.parametrize("packing", sorted(PACKINGS))
def test_every_packing_keeps_one_edge_per_field(frontend, packing):
    pack, loss_of = PACKINGS[packing]
    model, inputs = _model(pack), (torch.randn(4, 8),)

    def loss(out):
        return loss_of(out).pow(2).mean()
    result = graphcheck.check(model, inputs, loss=loss, select=["GC1"], frontends=(frontend,))
    if result.status == "error":
        pytest.skip(f"{frontend} cannot trace a {packing} output: {result.error[:120]}")
    assert result.parameters_without_gradient() == meta_no_grad(model, inputs, loss) == AUX
