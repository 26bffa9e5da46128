"""Tracing frontends (torch.fx, torch.export, a recorded forward pass), all building one ModelGraph.

Every frontend does the same two things:

1. It produces the *structure*: ops with their module, source line and data edges.
2. It executes that structure once (on the ``meta`` device when it can, so no weights
   are allocated and no arithmetic is done; on the CPU with the real weights when meta
   cannot run the model) with autograd on, and reads the autograd graph of every op to
   learn which of its inputs it really differentiates. Those are the ``grad`` edges.

:data:`TABLE` is the one list of frontends: the command line's choices and help, the default
order, the tests' ids and the docs all come from it. This module imports no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Frontend:
    """One tracer: its name, where its trace function lives, what it can run, its place in the default order."""

    name: str
    function: str          # "module:function" of the trace function, imported on first use
    runs_steps: bool       # can run a whole training step (several forward calls, user code around them)
    rank: int              # place in the default order (cheapest first)
    summary: str           # one line for --help and the docs

    def trace(self) -> Callable:
        """The trace function (imports torch)."""
        module, _, function = self.function.partition(":")
        return getattr(importlib.import_module(module), function)


TABLE: tuple[Frontend, ...] = (
    Frontend("fx", "graphcheck.frontends.fx:trace_fx", runs_steps=False, rank=0,
             summary="torch.fx symbolic tracing, with grad-mode switches recorded"),
    Frontend("autograd", "graphcheck.frontends.recorded:trace_autograd", runs_steps=True, rank=1,
             summary="one recorded forward pass (every torch call, with its module and grad mode)"),
    Frontend("export", "graphcheck.frontends.export:trace_export", runs_steps=False, rank=2,
             summary="torch.export.export(strict=False) with the example inputs"),
)

BY_NAME: dict[str, Frontend] = {frontend.name: frontend for frontend in TABLE}
# Every frontend's name, in the default order.
FRONTENDS: tuple[str, ...] = tuple(f.name for f in sorted(TABLE, key=lambda f: f.rank))
STEP_FRONTENDS: tuple[str, ...] = tuple(name for name in FRONTENDS if BY_NAME[name].runs_steps)
FRONTEND_HELP = ("Use only this tracer (repeatable; tried in the order given). Default: "
                 + ", then ".join(FRONTENDS) + ", skipping a tracer known to fail on the model.")

__all__ = ["BY_NAME", "FRONTENDS", "FRONTEND_HELP", "STEP_FRONTENDS", "TABLE", "Frontend", "FrontendError",
           "TracingError", "build_graph", "sample_executions"]


def __getattr__(name: str):
    """The frontends import torch: loaded on first use, so `graphcheck --help` stays fast."""
    if name == "FrontendError":
        from graphcheck.frontends.builder import FrontendError
        return FrontendError
    if name in ("TracingError", "build_graph"):
        from graphcheck.frontends import chain
        return getattr(chain, name)
    if name == "sample_executions":
        from graphcheck.frontends.executions import sample_executions
        return sample_executions
    raise AttributeError(name)
