"""One definition per op family (graphcheck/ops.py): every rule and pass agrees on what an op is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphcheck
from graphcheck import ops
from tests.oracle import real_no_grad

FRONTENDS = ["fx", "export", "autograd"]


@pytest.mark.parametrize("name, module_type, expected", [
    ("layer_norm", "", True), ("batch_norm", "", True), ("normalize", "", True),
    ("mean", "LlamaRMSNorm", True), ("LayerNorm", "", True), ("BatchNorm2d", "", True),
    ("norm", "", False),                      # torch.norm / Tensor.norm: a reduction, not a layer
    ("linear", "NormalizedLinear", False),    # a class name that merely contains "norm"
    ("mul", "Denormalizer", False),
])
def test_normalisation_is_one_definition(name, module_type, expected):
    assert ops.is_normalisation(name, module_type) is expected


def test_sum_like_and_merges_are_one_family():
    assert {"add", "__iadd__", "sub", "__rsub__", "cat", "concatenate", "stack", "hstack"} <= ops.SUM_LIKE
    assert "_convolution" in ops.AFFINE_FUNCTIONS and ops.BIAS_LAST == ops.AFFINE_FUNCTIONS
    assert {"conv2d", "batch_norm", "max_pool2d", "Conv2d", "BatchNorm2d"} <= ops.CHANNEL_FIRST


class _NormalizedLinear(nn.Linear):
    """A weight-normalised linear layer: a layer, not a normalisation of the activations."""

    def forward(self, x):
        return nn.functional.linear(x, self.weight / self.weight.norm(dim=1, keepdim=True), self.bias)


class _SigmoidsThroughNormalizedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([_NormalizedLinear(8, 8) for _ in range(4)])

    def forward(self, x):
        for layer in self.layers:
            x = torch.sigmoid(layer(x))
        return x


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_a_class_named_like_a_norm_does_not_break_a_saturating_chain(frontend):
    result = graphcheck.check(_SigmoidsThroughNormalizedLinear(), (torch.randn(4, 8),), select=["GC301"],
                              frontends=(frontend,))
    assert result.status == "ok", result.error
    assert [f.code for f in result.findings] == ["GC301"]


class _ZeroConcatenation(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        gate = torch.concatenate([torch.zeros_like(x[:, :2]), torch.zeros_like(x[:, 2:])], dim=1)
        return self.head(self.fc(x) * gate)


@pytest.mark.parametrize("frontend", FRONTENDS)
def test_concatenate_of_zeros_is_zero_like_cat(frontend):
    model, inputs = _ZeroConcatenation(), (torch.randn(3, 4),)
    result = graphcheck.check(model, inputs, select=["GC1"], frontends=(frontend,))
    assert result.status == "ok", result.error
    assert result.parameters_without_gradient() == real_no_grad(model, inputs) == {"fc.weight", "fc.bias", "head.weight"}
