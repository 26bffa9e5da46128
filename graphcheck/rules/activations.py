"""GC3xx: vanishing signal: saturating activation chains, saturation, dead units and gradient gain at init.

GC301 reads the graph only (which activations follow which). GC302-GC305 need numbers:
they read the shared probe pass (``graph.measured.probe``, :mod:`graphcheck.probing`): a forward + backward with the
model's real initial weights on the first sample of the example batch, and forward-only passes
while a statistic lacks samples (:mod:`graphcheck.probing`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from graphcheck.analysis.paths import first_location, readable_path
from graphcheck.probe_data import ActivationStats
from graphcheck.analysis.signal import chain_path, node_activation, on_main_path, saturating_chains
from graphcheck.analysis.weights import compared_weights
from graphcheck.finding import Family, Finding, Location, Severity, fmt
from graphcheck.model_graph import ModelGraph
from graphcheck.ops import MAX_DERIVATIVE, RELU_FAMILY, SATURATING
from graphcheck.measured import Measure
from graphcheck.rules.base import Rule, register


def _line(location: Location | None) -> str:
    return f"line {location.line}" if location else "no source line"


FAMILY = Family("GC3", "saturating chain", "#f57c00", "#ffe3c2")

@register
class SaturatingActivationChain(Rule):
    """Several saturating activations in a row, with nothing that restores the signal between them.

    ## What it does
    Finds sequences of `k` or more saturating activations (sigmoid, tanh, hardtanh,
    hardsigmoid, softsign, logsigmoid) where each one feeds the next through layers that
    neither normalise (LayerNorm, BatchNorm, ...) nor join a skip connection.

    ## Why is this bad?
    The gradient through such a chain is multiplied by every activation's derivative,
    and those are at most 1 (tanh) or 1/4 (sigmoid): `k` sigmoids scale the gradient by
    at most `4**-k`. Early layers learn orders of magnitude more slowly than late ones:
    the classic vanishing gradient.

    ## Example
    ```python
    self.net = nn.Sequential(
        nn.Linear(64, 64), nn.Sigmoid(),
        nn.Linear(64, 64), nn.Sigmoid(),
        nn.Linear(64, 64), nn.Sigmoid(),
    )
    ```

    ## Use instead
    Use ReLU / GELU / SiLU in hidden layers, or put a normalisation layer or a residual
    connection between the saturating activations (`x = x + torch.tanh(self.fc(x))`).
    Option `min-length` (default 3) sets `k`.
    """

    family = FAMILY
    code = "GC301"
    name = "saturating-activation-chain"
    severity = Severity.WARNING
    options = {"min-length": 3}

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        for chain in saturating_chains(graph):
            if len(chain) < self.config["min-length"]:
                continue
            path = chain_path(graph, chain)
            kinds = [node_activation(graph, n) for n in chain]
            bound = 1.0
            for kind in kinds:
                bound *= MAX_DERIVATIVE[kind]
            steps = [f"{k} ({_line(graph.location_of(n))})" for k, n in zip(kinds, chain)]
            shown = " -> ".join(steps if len(steps) <= 6 else steps[:3] + ["..."] + steps[-2:])
            counts = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
            # The layers inside the chain and the one feeding it.
            layers = list(graph.graph.predecessors(chain[0])) + path
            params = list(dict.fromkeys(
                graph.graph.nodes[p]["param"] for n in layers for p in graph.graph.predecessors(n)
                if graph.graph.nodes[p].get("kind") == "parameter"))
            message = (f"{len(chain)} saturating activations in a row ({counts}) with no normalisation "
                       f"or skip connection between them: {shown}; the gradient through them is "
                       f"scaled by at most {fmt(bound)}")
            yield self.finding(message, parameters=params,
                               path=readable_path(graph, path),
                               location=graph.location_of(chain[0]) or first_location(graph, path),
                               nodes=path)


def _layer_params(graph: ModelGraph, node: str | None) -> list[str]:
    """Parameters of the layer that computes the activation's input."""
    if node is None:
        return []
    params = []
    for pred in graph.graph.predecessors(node):
        for source in graph.graph.predecessors(pred):
            if graph.graph.nodes[source].get("kind") == "parameter":
                params.append(graph.graph.nodes[source]["param"])
    return list(dict.fromkeys(params))


class _ProbeActivationRule(Rule):
    """Reports probed activation calls that fail a test, one finding per source line."""

    family = FAMILY
    needs_weights = True
    measures = frozenset({Measure.PROBE})
    kinds: frozenset

    def flagged(self, stats: ActivationStats) -> bool:
        raise NotImplementedError

    def message(self, group: list[ActivationStats]) -> str:
        raise NotImplementedError

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        result = graph.measured.probe
        if result is None or result.error:
            return
        groups: dict[tuple, list[tuple[ActivationStats, str | None]]] = defaultdict(list)
        for stats in result.activations:
            if stats.kind not in self.kinds or not self.flagged(stats):
                continue
            node = stats.node
            location = stats.location or (graph.location_of(node) if node else None)
            key = (location, stats.kind) if location else (stats.module, stats.kind, stats.occurrence)
            groups[key].append((stats, node))
        for key, members in groups.items():
            stats_list = [s for s, _ in members]
            node_ids = [n for _, n in members if n is not None]
            params = list(dict.fromkeys(p for n in node_ids for p in _layer_params(graph, n)))
            location = stats_list[0].location or first_location(graph, node_ids)
            yield self.finding(self.message(stats_list), parameters=params,
                               path=[_describe_call(s) for s in stats_list][:8],
                               location=location, nodes=node_ids)


def _describe_call(stats: ActivationStats) -> str:
    return f"{stats.module}.{stats.kind}" if stats.module else f"{stats.kind} #{stats.occurrence + 1}"


def _where(group: list[ActivationStats]) -> str:
    if len(group) == 1:
        return f"`{_describe_call(group[0])}`"
    return f"{len(group)} calls of `{group[0].kind}` ({', '.join(_describe_call(s) for s in group[:4])}" \
           f"{', ...' if len(group) > 4 else ''})"


@register
class SaturatedAtInit(_ProbeActivationRule):
    """Saturating activations whose inputs are already saturated with the initial weights.

    ## What it does
    Runs the model with its real initial weights on the example inputs (the first sample,
    and more while a call has fewer than 256 input entries) and measures, at every sigmoid /
    tanh / hardtanh / hardsigmoid / softsign / logsigmoid, the distribution of its input. It reports those where the mean
    derivative, relative to the activation's largest derivative, is below
    `min-mean-derivative` (default 0.25; for tanh that is an input std of about 3.2),
    with the fraction of saturated entries (derivative below 10% of the maximum).

    ## Why is this bad?
    A saturated unit passes almost no gradient: the layers before it barely learn, and
    the unit itself may never leave saturation. Large initial weights (`normal_(std=1)`
    on a wide layer) or unnormalised inputs are the usual cause.

    ## Example
    ```python
    self.fc = nn.Linear(512, 512)
    nn.init.normal_(self.fc.weight, std=1.0)   # pre-activation std ~ 20
    ...
    h = torch.tanh(self.fc(x))
    ```

    ## Use instead
    Initialise with `nn.init.xavier_uniform_` (or keep PyTorch's default), normalise the
    inputs, or put a LayerNorm before the activation.
    """

    code = "GC302"
    name = "saturated-at-init"
    severity = Severity.WARNING
    options = {"min-mean-derivative": 0.25}
    kinds = SATURATING

    def flagged(self, stats):
        return stats.mean_derivative is not None and stats.mean_derivative < self.config["min-mean-derivative"]

    def message(self, group):
        worst = min(group, key=lambda s: s.mean_derivative)
        kind = worst.kind
        derivative = worst.mean_derivative * MAX_DERIVATIVE[kind]
        return (f"{_where(group)} {'is' if len(group) == 1 else 'are'} saturated with the initial weights: input std {fmt(worst.std)}, "
                f"mean derivative {fmt(derivative)} (at most {fmt(MAX_DERIVATIVE[kind])}, "
                f"{worst.mean_derivative:.0%} of it), {worst.saturated_fraction:.0%} of the entries saturated"
                + (" (worst of the calls)" if len(group) > 1 else ""))


@register
class DeadReluAtInit(_ProbeActivationRule):
    """ReLU units that are inactive for every probe sample with the initial weights.

    ## What it does
    Runs forward passes with the model's real initial weights and counts, at every ReLU
    (and ReLU6), the units (features, or channels after a convolution) whose input is
    negative for every sample and position. It takes samples of the example batch, then
    inputs redrawn like it, until every unit has 16 entries (one image or one sequence is
    often enough: a channel or a feature has one per position). It reports layers where that fraction is
    above `max-dead-fraction` (default 0.75: a deep ReLU MLP with PyTorch's default init already
    has half of the last layer's units inactive on a small probe batch, and trains fine).

    ## Why is this bad?
    A unit that is negative for every input has output 0 and derivative 0: it passes no
    gradient and its incoming weights get none, so it may never come back. A strongly
    negative bias initialisation is the usual cause.

    ## Example
    ```python
    self.fc = nn.Linear(64, 128)
    nn.init.constant_(self.fc.bias, -5.0)
    ...
    h = torch.relu(self.fc(x))   # almost every unit dead
    ```

    ## Use instead
    Initialise biases to zero (or a small positive value), use Kaiming initialisation,
    or use LeakyReLU / GELU, which pass a gradient for negative inputs.
    """

    code = "GC303"
    name = "dead-relu-at-init"
    severity = Severity.WARNING
    options = {"max-dead-fraction": 0.75}
    kinds = RELU_FAMILY

    def flagged(self, stats):
        return stats.dead_fraction is not None and stats.dead_fraction > self.config["max-dead-fraction"]

    def message(self, group):
        worst = max(group, key=lambda s: s.dead_fraction)
        dead = round(worst.dead_fraction * worst.units)
        return (f"{_where(group)}: {dead} of {worst.units} units ({worst.dead_fraction:.0%}) are inactive "
                f"for every probe sample with the initial weights (input mean {fmt(worst.mean)}, std "
                f"{fmt(worst.std)}), so they pass no gradient"
                + (" (worst of the calls)" if len(group) > 1 else ""))


class _GradientGainRule(Rule):
    family = FAMILY
    needs_weights = True
    measures = frozenset({Measure.PROBE, Measure.PROBE_GRADIENTS})
    severity = Severity.WARNING

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        result = graph.measured.probe
        if result is None:
            return
        # Layers inside a residual branch are compared with nothing: LayerScale / zero-init
        # branch ends give them tiny gradients on purpose, and the skip carries the signal.
        # Embedding tables are not layers of depth (compared_weights): their gradient is sparse
        # and, when tied to an output head, dominated by the head (Whisper, GPT-2).
        weights = compared_weights(graph)
        layers = [g for g in result.gradients if g.grad_norm > 0 and g.param in weights
                  and on_main_path(graph, g.param)] \
            if not result.error else []
        if len(layers) < 2:
            return
        first, last = layers[0], layers[-1]
        ratio = first.grad_norm / last.grad_norm
        if not self.flagged(ratio):
            return
        steps = [(a, b, a.grad_norm / b.grad_norm) for a, b in zip(layers, layers[1:])]
        steps.sort(key=lambda step: step[2], reverse=not self.vanishing)
        where = "; ".join(f"x{fmt(r)} from `{b.module or b.param}` to `{a.module or a.param}`"
                          for a, b, r in steps[:3])
        victims = [g.param for g in layers if self.flagged(g.grad_norm / last.grad_norm)]
        message = (f"the gradient of the first trainable layer `{first.param}` has norm {fmt(first.grad_norm)}, "
                   f"the last one's (`{last.param}`) {fmt(last.grad_norm)}: ratio {fmt(ratio)} "
                   f"({self.verb} the limit {fmt(self.limit)}) over {len(layers)} layers. The gain "
                   f"{'collapses' if self.vanishing else 'grows'} most at: {where}")
        node = graph.parameters[first.param].node if first.param in graph.parameters else None
        users = list(graph.graph.successors(node)) if node in graph.graph else []
        location = first_location(graph, users) or (graph.parameters[first.param].location
                                                      if first.param in graph.parameters else None)
        nodes = [graph.parameters[g.param].node for g in layers if g.param in graph.parameters]
        yield self.finding(message, parameters=victims,
                           path=[g.module or g.param for g in layers], location=location, nodes=nodes)


@register
class VanishingGradientAtInit(_GradientGainRule):
    """The first layers' gradient is orders of magnitude smaller than the last layer's, at init.

    ## What it does
    Runs one forward + backward pass with the model's real initial weights on the first
    sample of the example inputs (the whole batch when one sample fails or gives no
    gradient, as a contrastive loss does), with the loss if given, and compares the gradient norm of the first trainable
    weight (in the order forward uses them) with the last one's. It reports a ratio below
    `min-ratio` (default 1e-4) and names the layers where the gradient shrinks most. Only
    weights that carry the whole signal count (not those a skip connection goes around),
    and not embedding tables, whose gradient is sparse and, when tied to the output head,
    the head's.

    ## Why is this bad?
    With a gradient 10^4 times smaller, the first layers effectively do not train at a
    learning rate that suits the last ones: the network behaves like a shallow one on
    top of random features.

    ## Example
    ```python
    layers = []
    for _ in range(20):
        layers += [nn.Linear(64, 64), nn.Sigmoid()]
    ```

    ## Use instead
    Use non-saturating activations, normalisation layers or residual connections, and
    an initialisation matched to the activation (Kaiming for ReLU, Xavier for tanh).
    """

    code = "GC304"
    name = "vanishing-gradient-at-init"
    options = {"min-ratio": 1e-4}
    vanishing = True
    verb = "below"

    @property
    def limit(self):
        return self.config["min-ratio"]

    def flagged(self, ratio):
        return ratio < self.config["min-ratio"]


@register
class ExplodingGradientAtInit(_GradientGainRule):
    """The first layers' gradient is orders of magnitude larger than the last layer's, at init.

    ## What it does
    Runs one forward + backward pass with the model's real initial weights (on the first
    sample of the example inputs, as GC304 does) and compares the gradient norm of the first trainable weight with the last one's. It reports a
    ratio above `max-ratio` (default 1e4) and names the layers where the gradient grows
    most.

    ## Why is this bad?
    The first layers get huge updates at any learning rate small enough for the last
    ones: training diverges or needs aggressive clipping.

    ## Example
    ```python
    for layer in self.layers:            # 30 plain Linear + ReLU layers
        nn.init.normal_(layer.weight, std=0.5)
    ```

    ## Use instead
    Use Kaiming / Xavier initialisation for the activation, normalisation layers or
    residual connections.
    """

    code = "GC305"
    name = "exploding-gradient-at-init"
    options = {"max-ratio": 1e4}
    vanishing = False
    verb = "above"

    @property
    def limit(self):
        return self.config["max-ratio"]

    def flagged(self, ratio):
        return ratio > self.config["max-ratio"]
