"""Cuts: data edges that carry no gradient, value paths to the loss, and the stop-gradients that are meant (STE, detached targets)."""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Iterable

import networkx as nx

from graphcheck.model_graph import ModelGraph
from graphcheck.ops import ADD_SUB, DETACHING_OPS, METADATA_OPS, SUBTRACT, TARGET_OPS, TEMPLATE_OPS

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
    return mg.analysis(_value_view)


def _value_view(mg: ModelGraph) -> nx.DiGraph:
    graph = mg.graph

    def keep(u, v):
        edge = graph.edges[u, v]
        return (edge.get("data", False) or edge.get("grad", False)) and reads_values(graph, u, v)
    return nx.subgraph_view(graph, filter_edge=keep)


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


def cut_kind(data: dict) -> str:
    """"explicit" for an op that throws a real derivative away, "discrete" for a piecewise-constant one."""
    if not data.get("grad_enabled", True) or data.get("region_grad_enabled") is False:
        return "explicit"
    if data.get("target") in DETACHING_OPS or not data.get("tensor", True):
        return "explicit"
    return "discrete"


def cut_label(mg: ModelGraph, node: str) -> str:
    """The short name of a cutting op in the drawing: ``no_grad`` for a grad-disabled block, else the op."""
    data = mg.graph.nodes[node]
    target = str(data.get("target") or node)
    if data.get("grad_enabled") is False or data.get("region_grad_enabled") is False \
            or target in ("set_grad_enabled", "set_grad_enabled_region"):
        return "no_grad"
    return target


def describe_cut(mg: ModelGraph, node: str) -> str:
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
            if graph.nodes[item].get("target") in ADD_SUB:
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
        if graph.nodes[node].get("target") not in ADD_SUB:
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
            if inner.get("target") in SUBTRACT and len(inner.get("args") or []) > 1 \
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
    return mg.analysis(_regions).get(region, {cut})


def _regions(mg: ModelGraph) -> dict[str, set[str]]:
    """The ops of every grad-disabled block, by the block's first node."""
    regions: dict[str, set[str]] = defaultdict(set)
    for node, data in mg.graph.nodes(data=True):
        if data.get("region") is not None:
            regions[data["region"]].add(node)
    return regions


def is_detached_target(mg: ModelGraph, cut: str) -> bool:
    """The cut value goes, through no parametrised layer, into a distance or loss op (SimSiam,
    or a BYOL/MoCo target computed by a whole encoder under ``no_grad``)."""
    members = _region_members(mg, cut)
    graph = mg.graph
    exits = [n for n in members if any(s not in members for s in graph.successors(n))] or [cut]
    for start in exits:
        near = _downstream(value_view(mg), start, _TARGET_HOPS,
                           stop=lambda n: n not in members and _is_parametrised(mg, n))
        if any(graph.nodes[n].get("target") in TARGET_OPS for n in near):
            return True
    return False
