"""GC5xx: initialisation: zero, constant (symmetric) and badly scaled weights, read from the real values."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING, Iterable

import networkx as nx

from graphcheck.analysis.gradient_flow import VERDICT_MEASURES, analyse
from graphcheck.analysis.signal import bypassed, is_normalisation, node_activation
from graphcheck.analysis.weights import WeightUse, parameter_values, value_facts, weight_uses
from graphcheck.finding import Family, Finding, Location, Severity, fmt, name_list
from graphcheck.model_graph import LOSS, ModelGraph
from graphcheck.ops import RIGHT_OPERAND, SATURATING, is_relu_like
from graphcheck.measured import Measure
from graphcheck.rules.base import Rule, register

if TYPE_CHECKING:
    import torch


def _location(graph: ModelGraph, use: WeightUse) -> Location | None:
    info = graph.parameters.get(use.param)
    return (info.location if info else None) or graph.location_of(use.op)


def _names(params: list[str]) -> str:
    return name_list(params, 5, quote=True)


def _group(findings: list[tuple[Location | None, WeightUse, str]]):
    """Weights initialised on the same source line (a loop over layers) give one finding."""
    groups: dict = defaultdict(list)
    for location, use, detail in findings:
        groups[location if location else use.param].append((use, detail))
    return groups.items()


FAMILY = Family("GC5", "initialisation", "#2e7d32", "#d7ecd8")

@register
class ZeroInitialisedWeight(Rule):
    """A weight that is all zeros and lies on every path from the layers before it to the loss.

    ## What it does
    Finds weight matrices (Linear, Conv, `x @ W`) whose initial values are all zeros
    when every gradient path from the trainable parameters upstream of them to the loss
    multiplies by them. A zero-initialised last layer of a residual branch is not
    reported: the skip connection carries the gradient around it. Zero weights that
    stay zero forever are GC104 (`zero-gradient-parameter`), not this rule.

    ## Why is this bad?
    At step 0 every parameter upstream gets an exactly zero gradient; with Adam and
    weight decay, or with a warm-up schedule, the first steps are wasted, and any code
    that checks for "no gradient" at the first step raises false alarms. Usually the
    zeros were meant for the bias, or for a residual branch that has no skip here.

    ## Example
    ```python
    self.body = nn.Linear(64, 64)
    self.head = nn.Linear(64, 10)
    nn.init.zeros_(self.head.weight)    # body gets no gradient at step 0
    ```

    ## Use instead
    Initialise the weight randomly (PyTorch's default, Xavier, Kaiming) and keep zeros
    for biases, or zero only the last layer of a branch that has a skip connection.
    """

    family = FAMILY
    measures = VERDICT_MEASURES
    code = "GC501"
    name = "zero-initialised-weight"
    severity = Severity.WARNING
    needs_weights = True

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        facts = value_facts(graph)
        verdicts = analyse(graph)
        grad_view = graph.grad_view()
        data_view = graph.data_view()
        for use in weight_uses(graph):
            if use.param not in facts or not facts[use.param].zero or verdicts.get(use.param) is None \
                    or verdicts[use.param].kind == "zero" or use.x is None or bypassed(graph, use.op):
                continue
            upstream = [graph.graph.nodes[n]["param"] for n in nx.ancestors(data_view, use.x) | {use.x}
                        if graph.graph.nodes[n].get("kind") == "parameter"]
            if not upstream:
                continue
            around = nx.ancestors(nx.restricted_view(grad_view, [use.op], []), LOSS) \
                if LOSS in graph.graph else set()
            starved = sorted(p for p in upstream if p != use.param and verdicts.get(p) is not None
                             and verdicts[p].kind == "ok" and graph.parameters[p].node not in around)
            if not starved:
                continue
            message = (f"`{use.param}` is all zeros and every gradient path from {_names(starved)} to the "
                       f"loss multiplies by it, so {'its' if len(starved) == 1 else 'their'} gradient is "
                       f"exactly zero at step 0 (they start learning only once `{use.param}` has moved)")
            yield self.finding(message, parameters=[use.param, *starved],
                               path=[graph.describe(use.op), "loss"], location=_location(graph, use),
                               nodes=[graph.parameters[use.param].node, use.op])


def _downstream_affine(graph: ModelGraph, op: str, uses_by_op: dict[str, WeightUse]) -> list[WeightUse] | None:
    """The affine layers that first read ``op``'s output, or None if the output reaches the
    loss (or an op with non-parameter weights) before any of them."""
    found, stack, seen = [], [op], {op}
    data_view = graph.data_view()
    while stack:
        node = stack.pop()
        for succ in data_view.successors(node):
            if succ in seen:
                continue
            seen.add(succ)
            kind = graph.graph.nodes[succ].get("kind")
            if kind in ("output", "loss"):
                return None
            use = uses_by_op.get(succ)
            if use is not None:
                if use.x == node:
                    found.append(use)
                    continue
                return None
            if graph.graph.nodes[succ].get("target") in RIGHT_OPERAND | {"bmm", "einsum"}:
                return None
            stack.append(succ)
    return found or None


@register
class SymmetricInitialisation(Rule):
    """A weight whose entries are all equal, so its units stay identical forever.

    ## What it does
    Finds weight matrices with more than one output unit whose entries all have the
    same value (a constant or zero initialisation), with an equal bias for every unit,
    when the layers reading their output also treat those units alike (their weights
    are equal across the input units). Then every unit gets the same gradient at every
    step and they never become different.

    ## Why is this bad?
    The layer has the capacity of a single unit: 512 copies of one feature. No amount of
    training breaks the symmetry (only dropout noise does, slowly).

    ## Example
    ```python
    self.fc1 = nn.Linear(32, 64)
    self.fc2 = nn.Linear(64, 1)
    nn.init.constant_(self.fc1.weight, 0.1)
    nn.init.constant_(self.fc2.weight, 0.1)
    ```

    ## Use instead
    Initialise weights randomly (PyTorch's default, `xavier_uniform_`,
    `kaiming_normal_`); constant values are for biases and normalisation scales.
    """

    family = FAMILY
    measures = VERDICT_MEASURES
    code = "GC502"
    name = "symmetric-initialisation"
    severity = Severity.WARNING
    needs_weights = True

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        values, facts = parameter_values(graph), value_facts(graph)
        verdicts = analyse(graph)
        uses = weight_uses(graph)
        uses_by_op = {use.op: use for use in uses}
        flagged = []
        for use in uses:
            weight = values.get(use.param)
            if weight is None or weight.shape[use.out_dim] < 2 or not facts[use.param].constant \
                    or (verdicts.get(use.param) and verdicts[use.param].kind == "zero"):
                continue
            bias = values.get(use.bias) if use.bias else None
            if bias is not None and not facts[use.bias].constant:
                continue
            following = _downstream_affine(graph, use.op, uses_by_op)
            if not following:
                continue
            if not all(values.get(f.param) is not None and _equal_across(values[f.param], f.in_dim)
                       for f in following):
                continue
            value = float(weight.reshape(-1)[0])
            units = weight.shape[use.out_dim]
            detail = (f"all {units} units of `{use.param}` start identical (every entry is {fmt(value)}"
                      f"{', equal biases' if bias is not None else ''}) and "
                      f"{_names([f.param for f in following])} weights them equally, so they get the same "
                      "gradient at every step and never become different")
            flagged.append((_location(graph, use), use, detail))
        for _, members in _group(flagged):
            use, detail = members[0]
            params = [u.param for u, _ in members]
            message = detail if len(members) == 1 else f"{detail} (and the same for {_names(params[1:])})"
            yield self.finding(message, parameters=params, path=[graph.describe(u.op) for u, _ in members],
                               location=_location(graph, use),
                               nodes=[graph.parameters[p].node for p in params] + [u.op for u, _ in members])


def _equal_across(weight: torch.Tensor, dim: int) -> bool:
    return bool((weight == weight.narrow(dim, 0, 1)).all())


def _following_activation(graph: ModelGraph, op: str, uses_by_op: dict, depth: int = 4) -> str:
    """What the layer's output meets first: 'norm', 'relu', 'saturating' or 'linear'."""
    frontier, seen = [op], {op}
    data_view = graph.data_view()
    for _ in range(depth):
        following = []
        for node in frontier:
            for succ in data_view.successors(node):
                if succ in seen:
                    continue
                seen.add(succ)
                data = graph.graph.nodes[succ]
                if data.get("kind") != "op" or succ in uses_by_op:
                    continue
                if is_normalisation(graph, succ):
                    return "norm"
                kind = node_activation(graph, succ)
                if kind in SATURATING:
                    return "saturating"
                if kind is not None or is_relu_like(data.get("target", ""), data.get("module_type", "")):
                    return "relu"
                following.append(succ)
        frontier = following
    return "linear"


def prescribed_std(activation: str, fan_in: int, fan_out: int) -> float:
    """Kaiming (ReLU family), Xavier (saturating) or LeCun (no activation) standard deviation."""
    if activation == "relu":
        return math.sqrt(2.0 / fan_in)
    if activation == "saturating":
        return math.sqrt(2.0 / (fan_in + fan_out))
    return math.sqrt(1.0 / fan_in)


@register
class BadlyScaledInitialisation(Rule):
    """A weight whose initial scale is far from what Kaiming / Xavier prescribe.

    ## What it does
    Compares the standard deviation of every weight matrix (Linear, Conv, `x @ W`) with
    the one its fan-in and the activation that follows call for: Kaiming
    (`sqrt(2 / fan_in)`) before ReLU-like activations, Xavier
    (`sqrt(2 / (fan_in + fan_out))`) before sigmoid / tanh, `sqrt(1 / fan_in)` before
    none. It reports weights more than `max-factor` (default 10) times too large or too
    small. PyTorch's default initialisation is never reported. Weights whose output is
    normalised right away (LayerNorm, BatchNorm: the scale cancels) are skipped, and so
    are too-small weights in a branch that a skip connection bypasses (small-init
    residual branches, as in transformers, are deliberate).

    ## Why is this bad?
    On a plain path the scale multiplies layer after layer: too large saturates tanh /
    sigmoid units or makes activations and gradients explode, too small makes them
    vanish. Training is slow or diverges before it starts.

    ## Example
    ```python
    for layer in self.layers:
        nn.init.normal_(layer.weight, std=1.0)   # fan-in 256: Xavier says 0.0625
    ```

    ## Use instead
    `nn.init.kaiming_normal_(w, nonlinearity="relu")` before ReLU,
    `nn.init.xavier_uniform_(w)` before tanh / sigmoid, or keep PyTorch's default.
    """

    family = FAMILY
    measures = frozenset({Measure.WEIGHTS})
    code = "GC503"
    name = "badly-scaled-initialisation"
    severity = Severity.WARNING
    needs_weights = True
    options = {"max-factor": 10.0}

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        values, facts = parameter_values(graph), value_facts(graph)
        uses = weight_uses(graph)
        uses_by_op = {use.op: use for use in uses}
        limit = self.config["max-factor"]
        flagged, seen = [], set()
        for use in uses:
            weight = values.get(use.param)
            if weight is None or use.param in seen or weight.numel() < 2 or facts[use.param].constant \
                    or not graph.parameters[use.param].requires_grad:
                continue
            seen.add(use.param)
            activation = _following_activation(graph, use.op, uses_by_op)
            if activation == "norm":
                continue
            std = float(weight.float().std())
            reference = prescribed_std(activation, use.fan_in, use.fan_out)
            # PyTorch's default, 1/sqrt(3 fan_in), lies between these two bounds for every shape.
            upper = max(reference, math.sqrt(1.0 / use.fan_in))
            scheme = {"relu": "Kaiming", "saturating": "Xavier", "linear": "LeCun"}[activation]
            if std > limit * upper:
                detail = f"std {fmt(std)} is {std / upper:.0f}x what {scheme} prescribes ({fmt(reference)})"
            elif std < reference / limit and not bypassed(graph, use.op):
                detail = f"std {fmt(std)} is {reference / std:.0f}x below what {scheme} prescribes ({fmt(reference)})"
            else:
                continue
            before = {"relu": "a ReLU-like activation", "saturating": "a saturating activation",
                      "linear": "no activation"}[activation]
            flagged.append((_location(graph, use), use,
                            f"`{use.param}` (fan-in {use.fan_in}, fan-out {use.fan_out}, before {before}): {detail}"))
        for _, members in _group(flagged):
            use, detail = members[0]
            params = [u.param for u, _ in members]
            message = detail if len(members) == 1 else f"{detail}; the same for {_names(params[1:])}"
            yield self.finding(message, parameters=params, path=[graph.describe(u.op) for u, _ in members],
                               location=_location(graph, use),
                               nodes=[graph.parameters[p].node for p in params] + [u.op for u, _ in members])
