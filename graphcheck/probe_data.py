"""What the probe pass measures (plain data): activation statistics and layer gradients at initialisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from graphcheck.finding import Location

if TYPE_CHECKING:
    import torch

@dataclass
class ActivationStats:
    """What the probe saw at the input of one activation call."""
    kind: str
    module: str
    module_type: str
    occurrence: int                       # index among calls with the same (module, kind)
    location: Location | None
    std: float
    mean: float
    units: int
    unit_dim: int
    mean_derivative: float | None = None  # relative to the maximum (saturating kinds)
    saturated_fraction: float | None = None
    dead_fraction: float | None = None    # ReLU family: units negative for every sample
    node: str | None = None               # the graph node of this call, written by the probe as it runs
    # Running reductions over several draws (dead units): max pre-activation per unit.
    unit_max: torch.Tensor | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.module, self.kind)


@dataclass
class LayerGradient:
    param: str
    module: str
    grad_norm: float


@dataclass
class Probe:
    activations: list[ActivationStats] = field(default_factory=list)
    gradients: list[LayerGradient] = field(default_factory=list)
    samples: int = 0
    draws: int = 0
    error: str | None = None
