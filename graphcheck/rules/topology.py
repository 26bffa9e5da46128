"""GC4xx: topology read from the model graph alone: feature bottlenecks on the main path, deep plain stacks.

Both rules work on the *layers* of the graph: ops that apply a weight matrix or kernel
(a parameter with at least two dimensions larger than one) to an activation, such as
Linear, Conv, Embedding or a matmul with a parameter. Normalisation ops (any op that
runs inside a module whose class name ends in ``Norm``, or a functional norm) are not
layers: for GC402 they break a plain chain, like residual merges do.
"""

from __future__ import annotations

from typing import Iterable

import networkx as nx

from graphcheck.analysis.structure import Layer, Structure, structure
from graphcheck.finding import Family, Finding, Severity
from graphcheck.model_graph import ModelGraph
from graphcheck.rules.base import Rule, register


FAMILY = Family("GC4", "bottleneck / topology", "#1f77b4", "#d6e6f5")

@register
class Bottleneck(Rule):
    """A hidden layer on the main path that squeezes the features far below the widths around it.

    ## What it does
    Follows the main path of the model (the nodes every value from the inputs to an
    output must pass through, so skip connections and side branches such as
    squeeze-and-excitation or LoRA adapters are not on it) and reads the feature width
    of each layer (the last dimension for Linear-like layers, the channels for
    convolutions). It reports a hidden layer whose width drops below `1/ratio` of both
    the widest feature before it and the widest after it (default `ratio = 16`), or to
    `min-width` (default 2) or less. The model's final output layer is never a finding.
    ResNet bottleneck blocks (4x, and bypassed by their skip connection) and MobileNet
    inverted residuals (6x expansion) are not findings.

    ## Why is this bad?
    Everything downstream sees only the few numbers that pass the bottleneck, and the
    backward pass to every earlier layer is squeezed through the same rank: a
    `Linear(512, 8)` between two 512-wide stages caps the rank of the whole model's
    Jacobian at 8. A width of 1 or 2 in a hidden layer is almost always a mistake
    (`nn.Linear(hidden, 1)` where `hidden` was meant), and a narrow layer after a ReLU
    dies easily. Autoencoders narrow on purpose: raise `ratio` or ignore the rule there.

    ## Example
    ```python
    self.net = nn.Sequential(
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 8), nn.ReLU(),     # 64x narrower than both neighbours
        nn.Linear(8, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )
    ```

    ## Use instead
    ```python
    self.net = nn.Sequential(
        nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 128), nn.ReLU(),   # 4x, like a ResNet bottleneck
        nn.Linear(128, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )
    ```
    or add a skip connection around the narrow part, so the main path keeps its width.
    """

    family = FAMILY
    code = "GC401"
    name = "bottleneck"
    severity = Severity.WARNING
    options = {"ratio": 16.0, "min-width": 2}

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        found = structure(graph)
        if not found.layers or not found.inputs:
            return
        chains = self._main_paths(graph, found)
        reported: set[str] = set()
        for chain in chains:
            for segment, before, after in self._narrow_segments(chain):
                if segment[0].node in reported:
                    continue
                reported.update(layer.node for layer in segment)
                yield self._finding(graph, segment, before, after)

    @staticmethod
    def _main_paths(mg: ModelGraph, found: Structure) -> list[list[Layer]]:
        """Per model output, the layers that dominate it (every input-to-output path passes them)."""
        start = ("__graphcheck_start__",)
        flow = nx.DiGraph(found.view.subgraph(found.active))
        flow.add_edges_from((start, node) for node in found.inputs)
        dominators = nx.immediate_dominators(flow, start)
        chains, seen = [], set()
        for node, data in mg.graph.nodes(data=True):
            if data.get("kind") != "output" or node not in dominators:
                continue
            chain, current = [], node
            while current != start:
                if current in found.layers:
                    chain.append(found.layers[current])
                current = dominators[current]
            key = tuple(layer.node for layer in chain)
            if len(chain) >= 2 and key not in seen:
                seen.add(key)
                chains.append(chain[::-1])
        return chains

    def _narrow_segments(self, chain: list[Layer]):
        """Runs of consecutive narrow layers, each with the widest layer before and after it."""
        ratio, min_width = self.config["ratio"], self.config["min-width"]
        narrow: list[tuple[int, tuple[int, Layer], tuple[int, Layer]]] = []
        widths = [[(w, item) for w in (item.width_in, item.width_out) if w] for item in chain]
        # The widest width before / after each position: a layer with nothing wide enough on
        # one side is skipped without a scan, so a uniform stack costs one pass, not n^2.
        widest_up_to, widest = [], 0
        for pairs in widths:
            widest_up_to.append(widest)
            widest = max([widest] + [w for w, _ in pairs])
        widest_from, widest = [0] * len(chain), 0
        for index in range(len(chain) - 1, -1, -1):
            widest_from[index] = widest
            widest = max([widest] + [w for w, _ in widths[index]])
        for index, layer in enumerate(chain[:-1]):   # the last layer produces the output
            width = layer.width_out
            if width is None:
                continue
            # A wider layer qualifies when it is ``ratio`` times wider, or wider than ``min-width``
            # while this one is at most that: both say "wider than a threshold".
            threshold = min(width * ratio, min_width if width <= min_width else float("inf"))
            own = layer.width_in or 0
            if max(widest_up_to[index], own) <= threshold or widest_from[index] <= threshold:
                continue
            before = [pair for item in widths[:index] for pair in item]
            if layer.width_in:
                before.append((layer.width_in, layer))
            widest_before = next((pair for pair in reversed(before) if pair[0] > threshold), None)
            widest_after = next((pair for item in widths[index + 1:] for pair in item if pair[0] > threshold), None)
            if widest_before and widest_after:
                narrow.append((index, widest_before, widest_after))
        group: list = []
        for item in narrow:
            if group and item[0] != group[-1][0] + 1:
                yield [chain[i] for i, _, _ in group], group[0][1], group[-1][2]
                group = []
            group.append(item)
        if group:
            yield [chain[i] for i, _, _ in group], group[0][1], group[-1][2]

    def _finding(self, mg: ModelGraph, segment: list[Layer], before: tuple[int, Layer],
                 after: tuple[int, Layer]) -> Finding:
        first = segment[0]
        width = min(layer.width_out for layer in segment)
        span = f"`{first.name}`" if len(segment) == 1 else f"`{first.name}` .. `{segment[-1].name}`"
        (wide_before, layer_before), (wide_after, layer_after) = before, after
        before_name = f"its input ({wide_before})" if layer_before is first else \
            f"`{layer_before.name}` ({wide_before}) before it"
        message = (f"{span} narrows the main path to {width} features, {wide_before / width:.3g}x below "
                   f"{before_name} and {wide_after / width:.3g}x below `{layer_after.name}` "
                   f"({wide_after}) after it (limits: {self.config['ratio']:g}x, "
                   f"or {self.config['min-width']} features); every later layer sees, and every earlier "
                   f"one is trained through, only {width} numbers")
        params = [p for layer in segment for p in layer.params]
        around = ([] if layer_before is first else [layer_before]) + segment + [layer_after]
        return self.finding(message, parameters=params, path=[layer.name for layer in around],
                            location=first.location, nodes=[layer.node for layer in around])


@register
class DeepPlainStack(Rule):
    """A long chain of layers with neither skip connections nor normalisation between them.

    ## What it does
    Builds the graph of parametrised layers (Linear, Conv, Embedding, matmuls with a
    weight; normalisation layers excluded) in which one layer follows another when a
    value flows from the first to the second through no other layer, no normalisation
    and no residual merge (an `add` or `cat` of two computed tensors). It reports the
    longest such chain when it has more than `max-depth` layers (default 10).

    ## Why is this bad?
    The gradient reaching the first layers of the chain is a product of as many
    Jacobians as there are layers. Without a skip connection to carry it around, or a
    normalisation to rescale it, it vanishes or explodes geometrically with depth
    unless the initialisation is exactly right, and a plain stack deeper than about
    ten layers trains worse than a shallower one (the degradation problem that
    motivated ResNet).

    ## Example
    ```python
    layers = []
    for _ in range(16):
        layers += [nn.Linear(256, 256), nn.Tanh()]
    self.body = nn.Sequential(*layers)
    ```

    ## Use instead
    ```python
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(256)
            self.fc = nn.Linear(256, 256)

        def forward(self, x):
            return x + torch.tanh(self.fc(self.norm(x)))

    self.body = nn.Sequential(*[Block() for _ in range(16)])
    ```
    """

    family = FAMILY
    code = "GC402"
    name = "deep-plain-stack"
    severity = Severity.WARNING
    options = {"max-depth": 10}

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        found = structure(graph)
        chain_graph = self._chain_graph(found)
        limit = self.config["max-depth"]
        while chain_graph.number_of_nodes():
            chain = nx.dag_longest_path(chain_graph)
            if len(chain) <= limit:
                break
            yield self._finding(graph, [found.layers[n] for n in chain])
            chain_graph.remove_nodes_from(chain)

    @staticmethod
    def _chain_graph(found: Structure) -> nx.DiGraph:
        """Layer -> next layer, when a value passes between them through no layer, norm or merge."""
        chains = nx.DiGraph()
        chains.add_nodes_from(found.layers)
        barriers = found.norms | found.merges
        for layer in found.layers:
            stack, seen = list(found.view.successors(layer)), set()
            while stack:
                node = stack.pop()
                if node in seen or node not in found.active:
                    continue
                seen.add(node)
                if node in found.layers:
                    chains.add_edge(layer, node)
                elif node not in barriers:
                    stack.extend(found.view.successors(node))
        return chains

    def _finding(self, mg: ModelGraph, chain: list[Layer]) -> Finding:
        first, last = chain[0], chain[-1]
        message = (f"{len(chain)} parametrised layers in sequence, from `{first.name}` to `{last.name}`, "
                   "with no skip connection or normalisation between them (more than "
                   f"{self.config['max-depth']}); the gradient reaching `{first.name}` is a product of "
                   f"{len(chain)} layer Jacobians")
        params = [p for layer in chain for p in layer.params]
        return self.finding(message, parameters=params, path=[layer.name for layer in chain],
                            location=first.location, nodes=[layer.node for layer in chain])
