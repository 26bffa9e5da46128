"""The probe pass as the rules see it: one forward + backward with the real initial weights, run once per graph.

The measurement itself lives in :mod:`graphcheck.probing` (it runs the model); this module
only memoises it on the graph, so rules import no torch until a probe really runs.
"""

from __future__ import annotations

from graphcheck.analysis.weights import compared_weights
from graphcheck.model_graph import ModelGraph
from graphcheck.probe_data import ActivationStats, LayerGradient, Probe

__all__ = ["ActivationStats", "LayerGradient", "Probe", "probe", "probe_if_run"]

def probe(graph: ModelGraph) -> Probe:
    """The memoised probe of ``graph`` (run once, shared by every numeric rule)."""
    return graph.analysis(_probe)


def probe_if_run(graph: ModelGraph) -> Probe | None:
    """The probe of ``graph`` if a rule needed it, else None."""
    return graph.analysed(_probe)


def _probe(graph: ModelGraph) -> Probe:
    from graphcheck.probing import run_probe
    # Only the weights the gradient rules compare are measured.
    return run_probe(graph.model, graph.inputs, graph.loss_fn, train=graph.mode == "train",
                     kwargs=graph.kwargs, step=graph.step, gradients=graph.probe_gradients,
                     weights=compared_weights(graph))
