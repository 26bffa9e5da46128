"""The test oracle itself: autograd's verdict on the original model, which it leaves as it found it."""

from __future__ import annotations

import torch
from torch import nn

from tests.oracle import real_no_grad


class ClosureNet(nn.Module):
    """forward reaches a submodule through a closure made in __init__ (a copy would call the original)."""

    def __init__(self):
        super().__init__()
        self.body, self.head, self.unused = nn.Linear(4, 4), nn.Linear(4, 2), nn.Linear(4, 2)
        head = self.head
        self.apply_head = lambda x: head(x)

    def forward(self, x):
        return self.apply_head(torch.relu(self.body(x)))


def test_oracle_follows_closures_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = ClosureNet().eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert real_no_grad(model, (torch.randn(3, 4),), train=True) == {"unused.weight", "unused.bias"}
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
