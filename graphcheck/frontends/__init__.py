"""Tracing frontends (torch.fx, torch.export, a recorded forward pass), all building one ModelGraph.

Every frontend does the same two things:

1. It produces the *structure*: ops with their module, source line and data edges.
2. It executes that structure once (on the ``meta`` device when it can, so no weights
   are allocated and no arithmetic is done; on the CPU with the real weights when meta
   cannot run the model) with autograd on, and reads the autograd graph of every op to
   learn which of its inputs it really differentiates. Those are the ``grad`` edges.
"""

from graphcheck.frontends.builder import FrontendError
from graphcheck.frontends.chain import FRONTENDS, TracingError, build_graph
from graphcheck.frontends.executions import sample_executions

__all__ = ["FRONTENDS", "FrontendError", "TracingError", "build_graph", "sample_executions"]
