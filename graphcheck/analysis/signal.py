"""Signal structure: which activations follow which, normalisation, skip connections, dominators from the inputs."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import networkx as nx

from graphcheck.model_graph import LOSS, ModelGraph
from graphcheck import ops
from graphcheck.ops import SATURATING, activation_kind

_ROOT = "__graphcheck_root__"


def node_activation(graph: ModelGraph, node: str) -> str | None:
    """Canonical activation kind of a graph node (``sigmoid``, ``relu``...), or None."""
    data = graph.graph.nodes[node]
    if data.get("kind") != "op":
        return None
    return activation_kind(data.get("target", ""), data.get("module_type", ""), data.get("scalars") or ())


def is_normalisation(graph: ModelGraph, node: str) -> bool:
    """LayerNorm, BatchNorm, GroupNorm, RMSNorm... as a module call, an op, or an op inside one."""
    data = graph.graph.nodes[node]
    if data.get("kind") != "op":
        return False
    return ops.is_normalisation(data.get("target", ""), data.get("module_type", ""))


@dataclass
class ActivationFlow:
    """The part of the graph the input signal flows through (parameters and constants left out).

    ``dominators`` are taken from a virtual root joined to every model input: ``a``
    dominates ``b`` when every path from the inputs to ``b`` passes through ``a``.
    """
    flow: nx.DiGraph
    dominators: dict[str, str]


def activation_flow(graph: ModelGraph) -> ActivationFlow:
    return graph.analysis(_activation_flow)


def _activation_flow(graph: ModelGraph) -> ActivationFlow:
    data = graph.data_view()
    inputs = [n for n, d in data.nodes(data=True) if d.get("kind") == "input"]
    reached = set(inputs)
    for node in inputs:
        reached |= nx.descendants(data, node)
    flow = nx.DiGraph(data.subgraph(reached).edges)
    flow.add_nodes_from(reached)
    flow.add_edges_from((_ROOT, node) for node in inputs)
    dominators = nx.immediate_dominators(flow, _ROOT) if inputs else {}
    flow.remove_node(_ROOT) if inputs else None
    return ActivationFlow(flow=flow, dominators=dominators)


def bypassed(graph: ModelGraph, op: str) -> bool:
    """Whether some node upstream of ``op`` reaches the loss without passing through it (a skip)."""
    return graph.analysis(Bypasses).bypassed(op)


class Bypasses:
    """Which ops a skip connection goes around, for every op at once, in linear time.

    ``op`` is bypassed when a node upstream of it reaches the loss on a path that avoids it.
    For an op that reaches the loss: the nodes whose every path to the loss passes ``op`` are
    its subtree S in the post-dominator tree (rooted at the loss); S holds every ancestor of
    ``op`` exactly when no edge enters S from outside. An edge (a, b) enters the subtrees of
    the tree nodes from ``b`` up to, not including, the lowest common ancestor of ``a`` and
    ``b``: +1 at ``b``, -1 at that ancestor, and a subtree sum above zero marks the op. An op
    that does not reach the loss is bypassed when some node upstream of it does.
    """

    def __init__(self, graph: ModelGraph):
        flow = activation_flow(graph).flow
        self._bypassed: set[str] = set()
        if LOSS not in flow:
            return
        post = nx.immediate_dominators(flow.reverse(copy=False), LOSS)
        tree = nx.DiGraph((parent, node) for node, parent in post.items() if node != LOSS)
        tree.add_node(LOSS)
        entering = [(a, b) for a, b in flow.edges if b in post]
        marks: dict[str, int] = defaultdict(int)
        for (_, b), common in nx.tree_all_pairs_lowest_common_ancestor(tree, LOSS, entering):
            marks[b] += 1
            marks[common] -= 1
        for node in nx.dfs_postorder_nodes(tree, LOSS):
            total = marks[node] + sum(marks[child] for child in tree.successors(node))
            marks[node] = total
            if total > 0:
                self._bypassed.add(node)
        # Ops that do not reach the loss, upstream ones first: is some node above them on a way to it?
        above: set[str] = set()
        for node in nx.topological_sort(flow):
            if node not in post and any(p in post or p in above for p in flow.predecessors(node)):
                above.add(node)
        self._bypassed |= above

    def bypassed(self, op: str) -> bool:
        return op in self._bypassed


def on_main_path(graph: ModelGraph, param: str) -> bool:
    """Whether some op that reads ``param`` carries the whole signal (no skip connection around it)."""
    node = f"param:{param}"
    if node not in graph.graph:
        return False
    ops = [n for n in graph.graph.successors(node) if graph.graph.nodes[n].get("kind") == "op"]
    return any(not bypassed(graph, op) for op in ops)


def saturating_chains(graph: ModelGraph) -> list[list[str]]:
    """Maximal sequences of saturating activations, each dominating the next, with nothing between
    them that normalises or joins a parallel branch (a skip connection)."""
    structure = activation_flow(graph)
    flow, idom = structure.flow, structure.dominators
    saturating = [n for n in flow if node_activation(graph, n) in SATURATING]
    parent: dict[str, str] = {}
    for node in saturating:
        between = []
        current = idom.get(node)
        while current is not None and current != _ROOT and current != idom.get(current, current):
            if node_activation(graph, current) in SATURATING:
                if not any(_joins_branches(flow, step, current) for step in between):
                    parent[node] = current
                break
            if is_normalisation(graph, current):
                break
            between.append(current)
            current = idom.get(current)
    children = defaultdict(list)
    for child, up in parent.items():
        children[up].append(child)
    chains = []
    for leaf in (n for n in saturating if not children.get(n) and n in parent):
        chain = [leaf]
        while chain[-1] in parent:
            chain.append(parent[chain[-1]])
        chains.append(chain[::-1])
    return chains


def _joins_branches(flow: nx.DiGraph, node: str, start: str) -> bool:
    """A merge of two branches that both leave ``start`` (a residual add, a concat of skips)."""
    preds = list(flow.predecessors(node))
    if len(preds) < 2:
        return False
    from_start = [p for p in preds if p == start or nx.has_path(flow, start, p)]
    return len(from_start) >= 2


def chain_path(graph: ModelGraph, chain: list[str]) -> list[str]:
    flow = activation_flow(graph).flow
    path = [chain[0]]
    for a, b in zip(chain, chain[1:]):
        path.extend(nx.shortest_path(flow, a, b)[1:])
    return path


def probe_nodes(graph: ModelGraph) -> dict[tuple[str, str, int], str]:
    """Graph node of each probed activation call, matched by (module, kind, occurrence)."""
    return graph.analysis(_probe_nodes)


def _probe_nodes(graph: ModelGraph) -> dict[tuple[str, str, int], str]:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    found = {}
    for node in graph.graph.nodes:
        kind = node_activation(graph, node)
        if kind is None:
            continue
        module = graph.graph.nodes[node].get("module") or ""
        found[(module, kind, counts[(module, kind)])] = node
        counts[(module, kind)] += 1
    return found
