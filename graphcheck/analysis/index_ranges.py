"""Index ranges: which operands of a ``cat``/``stack`` survive the slicing that follows it.

``torch.stack([a, b, c], dim=1)[:, 1:]`` drops ``a``: its gradient is exactly zero (a
tensor of zeros, not None). Positions along the joined dimension are labelled with the
operand they come from and followed forward, along the gradient edges, through the ops
that keep that dimension apart (positionwise ops, rearrangements and reshapes that keep
it whole, batched matrix products over it, a ``Linear`` on the last dimension) up to the
indexing ops (``x[:, 1:]``, ``narrow``, ``select``) that drop positions. Wherever tracking
stops (an op that mixes the dimension, anything unknown) every label still present counts
as used: the analysis only ever proves a gradient zero, never guesses.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import networkx as nx

from graphcheck.model_graph import LOSS, ModelGraph
from graphcheck.ops import (AFFINE_MODULES, BATCHED_MATMUL, CONCATENATE, INDEXING, POSITIONWISE, REARRANGE, RESHAPE,
                            SPLITS, VIEWS, is_in_place)


@dataclass
class Dropped:
    """An operand edge of a concatenation whose gradient is zero, and the op that dropped it."""
    operand: str
    join: str
    by: str | None                   # the indexing op that dropped the last of its positions


@dataclass
class _Tracked:
    dim: int
    labels: tuple                    # one frozenset of operand numbers per position


@dataclass
class _Walk:
    live: set = field(default_factory=set)
    dropped_by: dict = field(default_factory=dict)   # operand number -> first op that dropped it
    aborted: bool = False


def written_in_place(graph: nx.DiGraph, node: str) -> bool:
    """Whether forward writes into ``node``'s tensor, directly or through a view of it.

    ``h = torch.zeros(n, 4); h[:, :2] = self.fc(x)``: ``h`` starts as zeros but is not zero.
    """
    stack, seen = [node], {node}
    while stack:
        current = stack.pop()
        for user in graph.successors(current):
            target = graph.nodes[user].get("target", "")
            if is_in_place(target):
                return True
            if target in VIEWS and user not in seen:
                seen.add(user)
                stack.append(user)
    return False


def dropped_operands(mg: ModelGraph) -> dict[tuple[str, str], Dropped]:
    """(operand, concatenation) edges along which autograd sends an all-zero gradient."""
    return mg.analysis(_dropped_operands)


def _dropped_operands(mg: ModelGraph) -> dict[tuple[str, str], Dropped]:
    graph = mg.graph
    joins = [n for n, d in graph.nodes(data=True) if d.get("kind") == "op" and d.get("target") in CONCATENATE]
    if not joins or LOSS not in graph or not nx.is_directed_acyclic_graph(graph):
        return {}
    grad_view = mg.grad_view()
    reaches = nx.ancestors(grad_view, LOSS) | {LOSS}
    order = {node: i for i, node in enumerate(nx.topological_sort(graph))}
    result = {}
    for join in joins:
        start = _labels(graph, join)
        if start is None or join not in reaches:
            continue
        walk = _walk(graph, grad_view, reaches, order, join, start)
        if walk.aborted:
            continue
        operands = graph.nodes[join]["args"]
        for number, operand in enumerate(operands):
            if number not in walk.live and graph.has_edge(operand, join) and graph.edges[operand, join].get("grad"):
                result[(operand, join)] = Dropped(operand, join, walk.dropped_by.get(number))
    return result


def _labels(graph: nx.DiGraph, join: str) -> _Tracked | None:
    """Operand labels along the joined dimension, when the recorded operands account for it."""
    data = graph.nodes[join]
    shape, args, scalars = data.get("shape"), data.get("args") or [], data.get("scalars") or []
    if not shape or not args or len(scalars) > 1 or data.get("target") not in ("cat", "concat", "concatenate", "stack"):
        return None
    dim = int(scalars[0]) if scalars else 0
    dim = dim + len(shape) if dim < 0 else dim
    if not 0 <= dim < len(shape):
        return None
    if data["target"] == "stack":
        if len(args) != shape[dim]:
            return None
        return _Tracked(dim, tuple(frozenset({k}) for k in range(len(args))))
    sizes = []
    for operand in args:
        operand_shape = graph.nodes[operand].get("shape")
        if not operand_shape or len(operand_shape) != len(shape):
            return None
        sizes.append(operand_shape[dim])
    # Repeated or unrecorded operands leave the sizes short of the result: no labels then.
    if sum(sizes) != shape[dim]:
        return None
    return _Tracked(dim, tuple(frozenset({k}) for k, size in enumerate(sizes) for _ in range(size)))


def _walk(graph, grad_view, reaches, order, join, start: _Tracked) -> _Walk:
    walk = _Walk()
    states = {join: start}
    queue = [(order[join], join)]
    while queue:
        _, node = heapq.heappop(queue)
        state = states[node]
        if written_in_place(graph, node):
            walk.aborted = True     # values written in place later: positions no longer mean operands
            return walk
        present = set().union(*state.labels)
        for user in grad_view.successors(node):
            if user not in reaches:
                continue
            after = _transfer(graph, node, user, state)
            kept = set().union(*after.labels) if isinstance(after, _Tracked) else present if after is None else after
            for number in present - kept:
                walk.dropped_by.setdefault(number, user)
            if not isinstance(after, _Tracked):
                walk.live |= kept
                continue
            merged = _merge(states.get(user), after)
            if merged is None:
                walk.live |= set().union(*after.labels)
                continue
            if user not in states:
                heapq.heappush(queue, (order[user], user))
            states[user] = merged
    return walk


def _merge(before: _Tracked | None, after: _Tracked) -> _Tracked | None:
    if before is None:
        return after
    if before.dim != after.dim or len(before.labels) != len(after.labels):
        return None
    return _Tracked(after.dim, tuple(a | b for a, b in zip(before.labels, after.labels)))


def _transfer(graph, node: str, user: str, state: _Tracked):
    """The labels of ``user``'s result along the tracked dimension (a _Tracked), the set of
    labels it holds when the dimension is gone, or None when tracking stops."""
    data = graph.nodes[user]
    target, args = data.get("target", ""), data.get("args") or []
    shape, before = data.get("shape"), graph.nodes[node].get("shape")
    n = len(state.labels)
    if not shape or not before or node not in args or data.get("kind") != "op":
        return None
    if target in INDEXING and "index" in data and args[0] == node and args.count(node) == 1:
        entries = data["index"]
        if len(entries) != len(before):
            return None
        out_dim, lo, hi, step = entries[state.dim]
        kept = state.labels[lo:hi:step]
        if out_dim is None:
            return set().union(*kept)
        return _Tracked(out_dim, kept) if out_dim < len(shape) and shape[out_dim] == len(kept) else None
    if target in SPLITS and args[0] == node:
        # The pieces are told apart by the indexing after it (``index`` relative to the input).
        return _Tracked(state.dim, state.labels)
    if target in POSITIONWISE or (data.get("module_call") and target in POSITIONWISE):
        dim = state.dim + len(shape) - len(before)
        return _Tracked(dim, state.labels) if 0 <= dim < len(shape) and shape[dim] == n else None
    if target in RESHAPE:
        prefix = _product(before[:state.dim])
        for dim in range(len(shape)):
            if _product(shape[:dim]) == prefix and shape[dim] == n:
                return _Tracked(dim, state.labels)
        return None
    if target in REARRANGE:
        # The tracked size appears once before and once after: that is where the dimension went.
        if list(before).count(n) == 1 and list(shape).count(n) == 1 and n > 1:
            return _Tracked(list(shape).index(n), state.labels)
        return None
    if target in BATCHED_MATMUL and len(args) == 2 and len(before) >= 2 and len(shape) >= 2:
        contracted = len(before) - 1 if args[0] == node else len(before) - 2
        dim = state.dim + len(shape) - len(before)
        if state.dim != contracted and 0 <= dim < len(shape) and shape[dim] == n:
            return _Tracked(dim, state.labels)
        return None
    if (target == "linear" or (data.get("module_call") and target in AFFINE_MODULES and target.endswith("Linear"))) \
            and args[0] == node and state.dim < len(before) - 1 and len(shape) == len(before) \
            and shape[state.dim] == n:
        return _Tracked(state.dim, state.labels)
    return None


def _product(sizes) -> int:
    result = 1
    for size in sizes:
        result *= size
    return result
