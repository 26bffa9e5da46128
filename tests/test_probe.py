"""The probe pass's plan: which passes run on which samples, and statistics that add up exactly.

The probe (graphcheck.probing) runs the backward pass on the first sample only, falls back to
the whole batch when one sample fails or gives no gradient, and adds forward-only passes
only while a statistic lacks samples. Its sums over several passes must equal the
statistics of all those samples at once.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from graphcheck.subject import Subject
from graphcheck.probing import SATURATED_BELOW, relative_derivative, run_probe


class Mlp(nn.Module):
    def __init__(self, features=16, hidden=32):
        super().__init__()
        self.fc1, self.fc2, self.head = nn.Linear(features, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


def _loss(output):
    return output.pow(2).mean()


def test_gradient_pass_on_one_sample_and_the_rest_forward_only():
    torch.manual_seed(0)
    model, x = Mlp(), torch.randn(8, 16)
    probe = run_probe(Subject(model, (x,), loss_fn=_loss), min_samples=8)
    # One sample with backward, then the other seven forward only: 8 entries per unit, enough.
    assert (probe.draws, probe.samples) == (2, 8)
    assert [g.param for g in probe.gradients] == ["fc1.weight", "fc2.weight", "head.weight"]


def test_statistics_over_passes_equal_those_of_the_whole_batch():
    torch.manual_seed(0)
    model, x = Mlp(), 3 * torch.randn(8, 16)
    probe = run_probe(Subject(model, (x,), loss_fn=_loss), min_samples=8)
    relu_in = model.fc1(x).detach()
    tanh_in = model.fc2(torch.relu(relu_in)).detach()
    relu, tanh = probe.activations
    assert (relu.kind, tanh.kind) == ("relu", "tanh")
    for stats, measured in ((relu, relu_in), (tanh, tanh_in)):
        assert stats.mean == pytest.approx(float(measured.mean()), rel=1e-4, abs=1e-5)
        assert stats.std == pytest.approx(float(measured.std()), rel=1e-4)
    assert relu.dead_fraction == pytest.approx(float((relu_in.amax(dim=0) < 0).float().mean()))
    derivative = relative_derivative("tanh", tanh_in)
    assert tanh.mean_derivative == pytest.approx(float(derivative.mean()), rel=1e-4)
    assert tanh.saturated_fraction == pytest.approx(float((derivative < SATURATED_BELOW).float().mean()))


def test_gradient_norms_are_those_of_the_first_sample():
    torch.manual_seed(0)
    model, x = Mlp(), torch.randn(8, 16)
    probe = run_probe(Subject(model, (x,), loss_fn=_loss))
    grads = torch.autograd.grad(_loss(model(x[:1])), [model.fc1.weight, model.head.weight])
    norms = {g.param: g.grad_norm for g in probe.gradients}
    assert norms["fc1.weight"] == pytest.approx(float(grads[0].norm()), rel=1e-4)
    assert norms["head.weight"] == pytest.approx(float(grads[1].norm()), rel=1e-4)
    assert all(p.grad is None for p in model.parameters())   # the model's .grad untouched


def test_images_need_one_sample():
    # A convolution's channels see every position: one image gives 64 entries per unit.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 2))
    probe = run_probe(Subject(model, (torch.randn(4, 3, 8, 8),), loss_fn=_loss))
    assert (probe.draws, probe.samples) == (1, 1)


class BatchNormHead(nn.Module):
    """BatchNorm1d on (batch, features) in train mode: one sample raises."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.head = nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Linear(32, 2)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.fc(x))))


def test_one_sample_failing_falls_back_to_the_whole_batch():
    model, x = BatchNormHead().train(), torch.randn(4, 16)
    with pytest.raises(ValueError):
        model(x[:1])
    probe = run_probe(Subject(model, (x,), loss_fn=_loss))
    assert probe.error is None
    assert probe.samples >= 4 and probe.gradients
    assert float(model.bn.running_mean.abs().sum()) == 0.0   # buffers untouched


class Contrastive(nn.Module):
    """A loss over the pairs of the batch: one sample gives a 1x1 problem and no gradient."""

    def __init__(self):
        super().__init__()
        self.image, self.text = nn.Linear(16, 8), nn.Linear(12, 8)

    def forward(self, images, texts):
        a = nn.functional.normalize(self.image(images), dim=-1)
        b = nn.functional.normalize(self.text(texts), dim=-1)
        logits = a @ b.t()
        return nn.functional.cross_entropy(logits, torch.arange(len(logits)))


def test_no_gradient_on_one_sample_falls_back_to_the_whole_batch():
    torch.manual_seed(0)
    model, inputs = Contrastive(), (torch.randn(4, 16), torch.randn(4, 12))
    probe = run_probe(Subject(model, inputs, loss_fn=lambda loss: loss))
    norms = {g.param: g.grad_norm for g in probe.gradients}
    assert norms and all(norm > 0 for norm in norms.values())
    assert probe.samples == 4


def test_only_the_named_weights_are_measured():
    model = nn.Sequential(nn.Embedding(50, 16), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 2))
    probe = run_probe(Subject(model, (torch.randint(0, 50, (2, 8)),), loss_fn=_loss), weights={"1.weight", "3.weight"})
    assert [g.param for g in probe.gradients] == ["1.weight", "3.weight"]
    forward_only = run_probe(Subject(model, (torch.randint(0, 50, (2, 8)),), loss_fn=_loss), weights=set())
    assert forward_only.gradients == [] and forward_only.activations


def test_forward_only_probe_also_starts_with_one_sample():
    # GC1 alone reads dead ReLUs only: no backward, and one image is enough for a convolution.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 2))
    probe = run_probe(Subject(model, (torch.randn(4, 3, 8, 8),), loss_fn=_loss), gradients=False)
    assert (probe.draws, probe.samples, probe.gradients) == (1, 1, [])
    mlp = run_probe(Subject(Mlp(), (torch.randn(8, 16),), loss_fn=_loss), gradients=False, min_samples=8)
    assert (mlp.draws, mlp.samples) == (2, 8)
