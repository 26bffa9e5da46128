"""Layers and structure: ops that apply a weight matrix, their widths, normalisations and merges (for GC4xx)."""

from __future__ import annotations

from dataclasses import dataclass

from graphcheck.analysis.cuts import reachable, value_view
from graphcheck.finding import Location
from graphcheck.model_graph import ModelGraph
from graphcheck.ops import CHANNEL_FIRST, ELEMENTWISE_WITH_PARAM, SUM_LIKE, is_normalisation

@dataclass
class Layer:
    node: str
    name: str                 # readable (module path or op)
    params: list[str]
    width_in: int | None
    width_out: int | None
    location: Location | None


def _width(shape, channel_first: bool) -> int | None:
    if not shape:
        return None
    if channel_first and len(shape) >= 3:
        return int(shape[1])
    return int(shape[-1])


class Structure:
    """The layers of a model graph and which nodes carry activations (shared by GC4xx)."""

    def __init__(self, mg: ModelGraph):
        self.mg = mg
        graph = mg.graph
        self.view = value_view(mg)
        inputs = [n for n, d in graph.nodes(data=True) if d.get("kind") == "input"]
        self.inputs = inputs
        self.active = reachable(self.view, inputs)
        params = [n for n, d in graph.nodes(data=True) if d.get("kind") == "parameter"]
        # Parameters and what is computed from them alone (``weight.t()``), before any activation.
        weight_like = set(reachable(self.view.subgraph(set(graph) - self.active), params))
        self.norms = {n for n in self.active if graph.nodes[n].get("kind") == "op" and is_normalisation(graph.nodes[n].get("target", ""), graph.nodes[n].get("module_type", ""))}
        self.merges = {n for n in self.active if self._is_merge(n)}
        self._static_reversed = self.view.subgraph(weight_like).reverse(copy=False)
        self.layers: dict[str, Layer] = {}
        self._param_order = {name: index for index, name in enumerate(mg.parameters)}
        for node in self.active:
            data = graph.nodes[node]
            if data.get("kind") != "op" or node in self.norms or data.get("target") in ELEMENTWISE_WITH_PARAM:
                continue
            weights = [a for a in graph.predecessors(node) if a in weight_like and self._is_matrix(a)]
            if not weights:
                continue
            self.layers[node] = self._layer(node, weight_like)

    def _is_matrix(self, node: str) -> bool:
        shape = self.mg.graph.nodes[node].get("shape") or ()
        return len(shape) >= 2

    def _is_merge(self, node: str) -> bool:
        data = self.mg.graph.nodes[node]
        if data.get("target") not in SUM_LIKE:
            return False
        computed = {a for a in data.get("args") or [] if a in self.active}
        return len(computed) >= 2

    def _layer(self, node: str, weight_like: set[str]) -> Layer:
        graph = self.mg.graph
        data = graph.nodes[node]
        channel_first = data.get("target") in CHANNEL_FIRST or data.get("module_type") in CHANNEL_FIRST \
            and data.get("module_call")
        order = self._param_order
        weights = [p for p in graph.predecessors(node) if p in weight_like]
        params = sorted({graph.nodes[p]["param"] for p in reachable(self._static_reversed, weights)
                         if graph.nodes[p].get("kind") == "parameter"}, key=lambda n: order.get(n, 0))
        width_in = None
        for arg in data.get("args") or []:
            arg_data = graph.nodes[arg]
            if arg in self.active and arg_data.get("tensor") and arg_data.get("floating", True):
                width_in = _width(arg_data.get("shape"), channel_first)
                break
        width_out = _width(data.get("shape"), channel_first) if data.get("floating", True) else None
        name = data.get("module") if data.get("module") else self.mg.describe(node)
        return Layer(node, name, params, width_in, width_out, data.get("location"))


def structure(mg: ModelGraph) -> Structure:
    return mg.analysis(Structure)
