"""Models whose parameters are used in some executions only (GC105), and the mode cases (issue 11).

Factories for tests/test_executions.py and the command line
(``graphcheck tests/conditional_models.py:bart_layerdrop``).
"""

from __future__ import annotations

import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # build from configs only, never download

import torch  # noqa: E402
from torch import nn  # noqa: E402


class StochasticDepthMLP(nn.Module):
    def __init__(self, width=16, depth=3, p=0.3):
        super().__init__()
        self.stem = nn.Linear(8, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, 2)
        self.p = p

    def forward(self, x):
        h = self.stem(x)
        for block in self.blocks:
            if self.training and random.random() < self.p:  # [conditionally-used-parameter]
                continue
            h = h + torch.relu(block(h))
        return self.head(h)


def stochastic_depth_mlp():
    return StochasticDepthMLP(), (torch.randn(4, 8),)


class Toggle(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.use_a = True

    def forward(self, x):
        self.use_a = not self.use_a  # [conditionally-used-parameter]
        return (self.a if self.use_a else self.b)(x)


def toggle():
    return Toggle(), (torch.randn(4, 8),)


class EqualBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.special = nn.Linear(8, 8)
        self.usual = nn.Linear(8, 8)

    def forward(self, x):
        if torch.equal(x, torch.ones(4, 8)):  # [conditionally-used-parameter]
            return self.special(x)
        return self.usual(x)


def equal_branch():
    return EqualBranch(), (torch.ones(4, 8),)


class AuxInTraining(nn.Module):
    """Returns (main, aux) in training and main in eval."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(8, 8)
        self.main = nn.Linear(8, 2)
        self.aux = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(self.body(x))
        if self.training:
            return self.main(h), self.aux(h)
        return self.main(h)


def aux_model_in_eval():
    return AuxInTraining().eval(), (torch.randn(4, 8),)


def main_output_loss(output):
    main = output[0] if isinstance(output, tuple) else output
    return main.pow(2).mean()


class TrainOnlyScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.train_scale = nn.Parameter(torch.ones(8))

    def forward(self, x):
        h = self.proj(x)
        return h * self.train_scale if self.training else h


class FrozenSubmoduleInEval(nn.Module):
    """A training model with one submodule the factory put in eval (like a frozen BatchNorm)."""

    def __init__(self):
        super().__init__()
        self.frozen = TrainOnlyScale()
        self.live = TrainOnlyScale()

    def forward(self, x):
        return self.live(self.frozen(x))


def frozen_submodule_in_eval():
    model = FrozenSubmoduleInEval()
    model.frozen.eval()
    return model, (torch.randn(4, 8),)


def bart_layerdrop():
    from transformers import BartConfig, BartModel
    config = BartConfig(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_position_embeddings=32, encoder_layerdrop=0.5, decoder_layerdrop=0.5, use_cache=False)
    torch.manual_seed(0)
    ids = torch.randint(3, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    return BartModel(config), (ids,)


def bart_layerdrop_eval():
    model, inputs = bart_layerdrop()
    return model.eval(), inputs


def last_hidden_state_loss(output):
    return output.last_hidden_state.pow(2).mean()


def switch_transformers():
    from transformers import SwitchTransformersConfig, SwitchTransformersEncoderModel
    config = SwitchTransformersConfig(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                                      num_experts=4, encoder_sparse_step=1, expert_capacity=8,
                                      router_jitter_noise=0.0, use_cache=False)
    torch.manual_seed(0)
    ids = torch.randint(3, 64, (1, 4), generator=torch.Generator().manual_seed(0))
    return SwitchTransformersEncoderModel(config), (ids,)


def main_and_aux_loss(output):
    """The training loss: main + 0.4 * aux when the model returns both, else main."""
    if isinstance(output, tuple):
        return output[0].pow(2).mean() + 0.4 * output[1].pow(2).mean()
    return output.pow(2).mean()
