"""Tracing frontends (torch.fx, torch.export, a recorded forward pass), all building one ModelGraph.

Every frontend does the same two things:

1. It produces the *structure*: ops with their module, source line and data edges.
2. It executes that structure once (on the ``meta`` device when it can, so no weights
   are allocated and no arithmetic is done; on the CPU with the real weights when meta
   cannot run the model) with autograd on, and reads the autograd graph of every op to
   learn which of its inputs it really differentiates. Those are the ``grad`` edges.
"""

FRONTENDS = ("fx", "export", "autograd")

__all__ = ["FRONTENDS", "FrontendError", "TracingError", "build_graph", "sample_executions"]


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
