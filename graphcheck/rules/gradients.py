"""GC2xx: partial gradient cuts, where a stop-gradient removes some but not all of a parameter's paths to the loss.

The cut points are the graph's ``data`` edges that carry no ``grad`` edge (the same
evidence GC103 uses), restricted to values that carry a gradient from a trainable
parameter and still flow on to the loss. Parameters cut on *every* path are GC1xx's
business; GC201 reports the ones that keep a gradient through other paths, and how many
of their paths (as a share of all value paths to the loss) the cut removes.
"""

from __future__ import annotations

from collections import defaultdict, deque
from fractions import Fraction
from typing import Iterable

import networkx as nx

from graphcheck.finding import Finding, Severity, name_list
from graphcheck.model_graph import LOSS, ModelGraph
from graphcheck.registry import Rule, register
from graphcheck.rules.gradient_flow import DETACHING_OPS, analyse, readable_path

# Ops that read only a tensor's metadata (shape, dtype, device), never its values: a data
# edge into them is not a value path, so it is neither a cut nor a bypass.
METADATA_OPS = frozenset({
    "size", "sym_size", "sym_numel", "sym_stride", "dim", "numel", "shape", "dtype", "device",
    "ndim", "ndimension", "is_floating_point", "is_complex", "element_size", "nelement",
    "__len__", "len", "stride", "get_device", "is_contiguous", "layout",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "randint_like", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor",
    "_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size",
})
# Ops whose operands after the first serve as a template (dtype, device or shape only).
TEMPLATE_OPS = frozenset({"to", "type_as", "expand_as", "view_as", "reshape_as", "_to_copy"})

_SUM_OPS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__",
                      "__rsub__", "__isub__", "rsub"})
_SUBTRACT = frozenset({"sub", "sub_", "__sub__", "__isub__"})
# Distance and loss ops: a stop-gradient that only feeds one of these is a detached target
# (SimSiam, BYOL, distillation), the canonical intended stop-gradient.
_TARGET_OPS = frozenset({
    "cosine_similarity", "pairwise_distance", "cdist", "mse_loss", "l1_loss", "smooth_l1_loss",
    "huber_loss", "kl_div", "cross_entropy", "nll_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cosine_embedding_loss", "soft_margin_loss",
    "CosineSimilarity", "PairwiseDistance", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss",
    "KLDivLoss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss",
})
_STE_HOPS = 6      # how far downstream of a cut the straight-through sum may be
_TARGET_HOPS = 8   # how far downstream of a cut the distance op may be


def reads_values(graph: nx.DiGraph, source: str, node: str) -> bool:
    """Whether ``node`` reads the values of ``source`` (not only its shape, dtype or device)."""
    data = graph.nodes[node]
    target = data.get("target", "")
    if target in METADATA_OPS:
        return False
    args = data.get("args") or []
    if target in TEMPLATE_OPS and args and args[0] != source:
        return False
    return True


def value_view(mg: ModelGraph) -> nx.DiGraph:
    """Data and grad edges along which values flow (metadata reads removed)."""
    graph = mg.graph

    def keep(u, v):
        edge = graph.edges[u, v]
        return (edge.get("data", False) or edge.get("grad", False)) and reads_values(graph, u, v)
    return mg.cached("value_view", lambda: nx.subgraph_view(graph, filter_edge=keep))


def count_paths_to(view: nx.DiGraph, sink: str, nodes: Iterable[str] | None = None) -> dict[str, int]:
    """Number of paths from every node of ``view`` that reaches ``sink`` to it (DAG only)."""
    relevant = (nx.ancestors(view, sink) | {sink}) if nodes is None else set(nodes) | {sink}
    sub = view.subgraph(relevant)
    counts: dict[str, int] = {}
    for node in reversed(list(nx.topological_sort(sub))):
        counts[node] = 1 if node == sink else sum(counts.get(s, 0) for s in sub.successors(node))
    return counts


def reachable(view: nx.DiGraph, sources: Iterable[str]) -> set[str]:
    """The sources and every node reachable from any of them (one traversal for all)."""
    found = {s for s in sources if s in view}
    stack = list(found)
    while stack:
        for nxt in view.successors(stack.pop()):
            if nxt not in found:
                found.add(nxt)
                stack.append(nxt)
    return found


def _cut_kind(data: dict) -> str:
    """"explicit" for an op that throws a real derivative away, "discrete" for a piecewise-constant one."""
    if not data.get("grad_enabled", True) or data.get("region_grad_enabled") is False:
        return "explicit"
    if data.get("target") in DETACHING_OPS or not data.get("tensor", True):
        return "explicit"
    return "discrete"


def _describe_cut(mg: ModelGraph, node: str) -> str:
    data = mg.graph.nodes[node]
    target = data.get("target", "")
    if not data.get("grad_enabled", True) or data.get("region_grad_enabled") is False:
        return f"`{mg.describe(node)}` under `torch.no_grad()`"
    if target in DETACHING_OPS:
        return DETACHING_OPS[target]
    if not data.get("tensor", True):
        return f"`{mg.describe(node)}` (turns the tensor into a Python value)"
    if data.get("tensor") and not data.get("floating", True):
        return f"`{mg.describe(node)}` (returns {data.get('dtype')})"
    return f"`{mg.describe(node)}`"


def _downstream(view: nx.DiGraph, start: str, hops: int, stop=lambda n: False) -> dict[str, int]:
    """Nodes reachable from ``start`` within ``hops`` edges, with their distance."""
    seen = {start: 0}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if seen[node] >= hops or (node != start and stop(node)):
            continue
        for nxt in view.successors(node):
            if nxt not in seen:
                seen[nxt] = seen[node] + 1
                queue.append(nxt)
    return seen


def _sum_sources(graph: nx.DiGraph, node: str, depth: int = 3) -> set[str]:
    """``node`` and the operands it is a (nested) sum or difference of."""
    found, frontier = {node}, [node]
    for _ in range(depth):
        nxt = []
        for item in frontier:
            if graph.nodes[item].get("target") in _SUM_OPS:
                for arg in graph.nodes[item].get("args") or []:
                    if arg not in found:
                        found.add(arg)
                        nxt.append(arg)
        frontier = nxt
    return found


def _is_stop_gradient(data: dict) -> bool:
    # Only the identity-valued cuts: a straight-through sum adds back the very value it detached.
    return data.get("target") in ("detach", "detach_", "data")


def is_straight_through(mg: ModelGraph, cut: str) -> bool:
    """The cut value flows into a straight-through sum: ``hard + soft - soft.detach()`` or
    ``x + (q - x).detach()``, whose gradient is that of ``soft`` (or ``x``) on purpose."""
    graph = mg.graph
    for node in _downstream(value_view(mg), cut, _STE_HOPS):
        if graph.nodes[node].get("target") not in _SUM_OPS:
            continue
        terms = _sum_sources(graph, node)
        for term in terms:
            data = graph.nodes[term]
            if not _is_stop_gradient(data) or not data.get("args"):
                continue
            detached = data["args"][0]
            if detached in terms:                       # soft - soft.detach()
                return True
            inner = graph.nodes[detached]
            if inner.get("target") in _SUBTRACT and len(inner.get("args") or []) > 1 \
                    and inner["args"][1] in terms:      # x + (q - x).detach()
                return True
    return False


def _is_parametrised(mg: ModelGraph, node: str) -> bool:
    return any(mg.graph.nodes[p].get("kind") == "parameter" for p in mg.graph.predecessors(node))


def _region_members(mg: ModelGraph, cut: str) -> set[str]:
    """The ops of the no_grad block ``cut`` runs in (just ``cut`` outside any block)."""
    region = mg.graph.nodes[cut].get("region")
    if region is None:
        return {cut}
    return mg.cached(f"region:{region}", lambda: {
        n for n, data in mg.graph.nodes(data=True) if data.get("region") == region})


def is_detached_target(mg: ModelGraph, cut: str) -> bool:
    """The cut value goes, through no parametrised layer, into a distance or loss op (SimSiam,
    or a BYOL/MoCo target computed by a whole encoder under ``no_grad``)."""
    members = _region_members(mg, cut)
    graph = mg.graph
    exits = [n for n in members if any(s not in members for s in graph.successors(n))] or [cut]
    for start in exits:
        near = _downstream(value_view(mg), start, _TARGET_HOPS,
                           stop=lambda n: n not in members and _is_parametrised(mg, n))
        if any(graph.nodes[n].get("target") in _TARGET_OPS for n in near):
            return True
    return False


def _share(value: Fraction) -> str:
    percent = float(value) * 100
    return f"{percent:.0f}%" if percent >= 1 else f"{percent:.2g}%"


def _names(params: list[str]) -> str:
    return name_list(params, 4)


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
        params = sorted((trained_name(mg, p) for p in lost), key=lambda n: (-lost[mg.parameters[n].node], n))
        by_share: dict[Fraction, list[str]] = defaultdict(list)
        for name in params:
            by_share[lost[mg.parameters[name].node]].append(name)
        kind = _cut_kind(g.nodes[cut])
        shares = "; ".join(f"{_names(names)} lose{'s' if len(names) == 1 else ''} {_share(share)}"
                           for share, names in sorted(by_share.items(), key=lambda kv: -kv[0]))
        op = _describe_cut(mg, cut)
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
                            nodes=nodes, severity=Severity.WARNING if kind == "explicit" else Severity.INFO)


def trained_name(mg: ModelGraph, node: str) -> str:
    return mg.graph.nodes[node]["param"]
