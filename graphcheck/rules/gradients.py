"""GC2xx: partial gradient cuts, where a stop-gradient removes some but not all of a parameter's paths to the loss.

The cut points are the graph's ``data`` edges that carry no ``grad`` edge (the same
evidence GC103 uses), restricted to values that carry a gradient from a trainable
parameter and still flow on to the loss. Parameters cut on *every* path are GC1xx's
business; GC201 reports the ones that keep a gradient through other paths, and how many
of their paths (as a share of all value paths to the loss) the cut removes.
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction
from typing import Iterable

import networkx as nx

from graphcheck.analysis.cuts import (count_paths_to, cut_kind, cut_label, describe_cut, is_detached_target, is_straight_through,
                                      reachable, reads_values, value_view)
from graphcheck.analysis.gradient_flow import VERDICT_MEASURES, analyse
from graphcheck.analysis.paths import readable_path
from graphcheck.finding import Cause, Family, Finding, Severity, name_list
from graphcheck.model_graph import LOSS, ModelGraph
from graphcheck.rules.base import Rule, register


def _share(value: Fraction) -> str:
    percent = float(value) * 100
    return f"{percent:.0f}%" if percent >= 1 else f"{percent:.2g}%"


def _names(params: list[str]) -> str:
    return name_list(params, 4)


FAMILY = Family("GC2", "partial gradient cut", "#9c27b0", "#efd9f3")

@register
class PartialDetach(Rule):
    """A stop-gradient that cuts some, but not all, of a parameter's paths to the loss.

    ## What it does
    Finds ops that cut the gradient on a path from trainable parameters to the loss
    while the same parameters still reach the loss differentiably through other paths:
    `.detach()`, `.data`, `.item()` / `.tolist()` / `.numpy()`, an op inside a
    `torch.no_grad()` block (warning), or a piecewise-constant op such as `argmax`, topk
    indices, a comparison or an integer cast (info: its true derivative is zero almost
    everywhere, so nothing is thrown away, but the parameters do not learn from that
    decision). The finding names the cutting op and its line, the parameters upstream
    of it, and the share of their value paths to the loss that the cut removes.

    Intended stop-gradients are not reported: a straight-through estimator
    (`x + (q - x).detach()`, `hard - soft.detach() + soft`) reroutes the gradient
    instead of dropping it, and a detached *target* that feeds only a distance or loss
    op (SimSiam's `D(p1, z2.detach())`, distillation) is the whole point of the method.
    Frozen target networks have no trainable parameters upstream and never appear.
    Parameters cut on every path are reported by GC103 (`detached-parameter`) instead.

    ## Why is this bad?
    The parameters still train, so nothing crashes and no tool complains, but they
    learn from part of the objective only: an encoder whose features also feed a head
    through `.detach()` never adapts to that head, a scale computed with `.item()` is a
    constant to autograd, a `no_grad` block meant for a frozen layer silently covers a
    shared trainable one. The gradient is biased, not just smaller.

    ## Example
    ```python
    def forward(self, x):
        h = self.encoder(x)
        logits = self.head(h)
        gate = torch.sigmoid(self.gate(h.detach()))   # encoder gets no gradient from the gate
        return logits * gate
    ```

    ## Use instead
    Remove the cut (`self.gate(h)`) if the encoder should learn from that path, or keep
    it and record the decision by ignoring GC201 for this target. For a stop-gradient
    that passes the gradient through, write it as a straight-through estimator.
    """

    family = FAMILY
    measures = VERDICT_MEASURES
    code = "GC201"
    name = "partial-detach"
    severity = Severity.WARNING
    options = {"min-share": 0.0}

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        mg = graph
        g = mg.graph
        if LOSS not in g or not nx.is_directed_acyclic_graph(g):
            return
        verdicts = analyse(mg)
        trained = {mg.parameters[name].node: name for name, verdict in verdicts.items()
                   if verdict.kind == "ok"}
        if not trained:
            return
        grad_view = mg.grad_view()
        values = value_view(mg)
        carrying = reachable(grad_view, trained)
        to_loss = count_paths_to(values, LOSS)

        # Cut edges grouped by the op that cuts (one finding per op).
        # A cutting op is one whose result autograd connects to none of its inputs (detach,
        # no_grad, argmax...). An op with some grad input that skips another (multi-output
        # ops such as split, in-place writes) is differentiated, only attributed elsewhere.
        differentiated = {v for _, v, grad in g.edges(data="grad") if grad}
        # The ops of one no_grad block are one cut, named by its first op.
        order = {node: index for index, node in enumerate(g)}
        cuts: dict[str, list[str]] = defaultdict(list)
        first_of_block: dict[str, str] = {}
        for u, v, edge in sorted(g.edges(data=True), key=lambda e: order[e[1]]):
            if edge.get("grad") or not edge.get("data") or u not in carrying or v == LOSS \
                    or v in differentiated:
                continue
            if to_loss.get(v, 0) == 0 or not reads_values(g, u, v):
                continue
            block = g.nodes[v].get("region")
            cuts[first_of_block.setdefault(block, v) if block else v].append(u)

        for cut, sources in cuts.items():
            if is_straight_through(mg, cut) or is_detached_target(mg, cut):
                continue
            lost: dict[str, Fraction] = defaultdict(Fraction)
            for u in sources:
                upstream = (nx.ancestors(grad_view, u) | {u}) & set(trained)
                if not upstream:
                    continue
                to_source = count_paths_to(grad_view, u, nx.ancestors(grad_view, u))
                for param_node in upstream:
                    total = to_loss.get(param_node, 0)
                    if total:
                        lost[param_node] += Fraction(to_source.get(param_node, 0) * to_loss[cut], total)
            lost = {p: share for p, share in lost.items() if 0 < share and float(share) >= self.config["min-share"]}
            if lost:
                yield self._finding(mg, cut, sources, lost)

    def _finding(self, mg: ModelGraph, cut: str, sources: list[str], lost: dict[str, Fraction]) -> Finding:
        g = mg.graph
        params = sorted((_trained_name(mg, p) for p in lost), key=lambda n: (-lost[mg.parameters[n].node], n))
        by_share: dict[Fraction, list[str]] = defaultdict(list)
        for name in params:
            by_share[lost[mg.parameters[name].node]].append(name)
        kind = cut_kind(g.nodes[cut])
        shares = "; ".join(f"{_names(names)} lose{'s' if len(names) == 1 else ''} {_share(share)}"
                           for share, names in sorted(by_share.items(), key=lambda kv: -kv[0]))
        op = describe_cut(mg, cut)
        message = (f"{op} cuts the gradient on some of the paths from {len(params)} trainable "
                   f"parameter{'s' if len(params) != 1 else ''} to the loss ({shares} of "
                   f"{'its' if len(params) == 1 else 'their'} value paths); they still train "
                   "through the other paths")
        if kind == "discrete":
            message += ", and this op's derivative is zero almost everywhere anyway"
        # Path: the parameter losing the most, to the cutting op, then on to the loss.
        first = mg.parameters[params[0]].node
        grad_view = mg.grad_view()
        source = next(u for u in sources if u == first or nx.has_path(grad_view, first, u))
        head = nx.shortest_path(grad_view, first, source)
        tail = nx.shortest_path(value_view(mg), cut, LOSS)
        path = head + tail
        location = g.nodes[cut].get("location")
        if location is None:
            location = next((g.nodes[n].get("location") for n in tail if g.nodes[n].get("location")), None)
        nodes = sorted(set(path) | {mg.parameters[p].node for p in params})
        return self.finding(message, parameters=params, path=readable_path(mg, path), location=location,
                            nodes=nodes, cause=Cause("cut", cut, None, cut_label(mg, cut)), severity=Severity.WARNING if kind == "explicit" else Severity.INFO)


def _trained_name(mg: ModelGraph, node: str) -> str:
    return mg.graph.nodes[node]["param"]
