"""What the checker measures by running the model, before the rules: the measurements rules declare, and their typed results.

A rule says which measurements it reads (``Rule.measures``); the checker runs each one that a
selected rule needs, once, through the one door that runs the model (``graphcheck.measuring``),
and hands the results to every rule with the graph (``ModelGraph.measured``). The analysis
passes only read them: nothing under ``graphcheck/analysis`` runs the user's code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from graphcheck.probe_data import Probe

if TYPE_CHECKING:
    import torch


class Measure(str, enum.Enum):
    """A measurement a rule can declare."""

    WEIGHTS = "weights"                  # the initial weight values (real weights only)
    PROBE = "probe"                      # the probe's activation statistics (forward passes, real weights)
    PROBE_GRADIENTS = "probe-gradients"  # the probe's layer gradients too (its backward pass)
    DEAD_UNITS = "dead-units"            # the probe, when the graph has a ReLU-family call to be dead
    EXECUTIONS = "executions"            # other executions, when forward makes a Python decision


@dataclass
class ExecutionSample:
    """Which trainable parameters got a gradient in the extra executions (other seeds, inputs, calls)."""

    runs: int = 0                    # executions that completed
    failed: int = 0
    with_gradient: set[str] = field(default_factory=set)      # in at least one of them
    without_gradient: set[str] = field(default_factory=set)   # missing in at least one of them


@dataclass(frozen=True)
class Measured:
    """The results of the measurements that ran (None: not needed, or not possible on this model)."""

    weights: Mapping[str, "torch.Tensor"] | None = None   # canonical name -> the weight's values, detached
    probe: Probe | None = None
    executions: ExecutionSample | None = None
