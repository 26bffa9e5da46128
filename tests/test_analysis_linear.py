"""Linear-time analysis passes against their brute-force definitions on random graphs.

``Bypasses`` answers "does a skip connection go around this op?" for every op at once with
post-dominators; the definition is a path query per op (quadratic over a model).
"""

from __future__ import annotations

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from graphcheck.analysis.signal import Bypasses, activation_flow
from graphcheck.model_graph import LOSS, ModelGraph


def brute_force(flow: nx.DiGraph, op: str) -> bool:
    """Some node upstream of ``op`` reaches the loss on a path that avoids ``op``."""
    if op not in flow or LOSS not in flow or op == LOSS:
        return False
    upstream = nx.ancestors(flow, op)
    avoiding = nx.ancestors(nx.restricted_view(flow, [op], []), LOSS)
    return bool(upstream & avoiding)


@st.composite
def model_graphs(draw):
    """A random DAG: inputs, ops wired to earlier nodes, a loss reading some of them."""
    inputs = draw(st.integers(1, 3))
    ops = draw(st.integers(1, 25))
    graph = nx.DiGraph()
    names = []
    for i in range(inputs):
        graph.add_node(f"in{i}", kind="input")
        names.append(f"in{i}")
    for i in range(ops):
        node = f"op{i}"
        graph.add_node(node, kind="op", target="add")
        sources = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        for source in sources:
            graph.add_edge(source, node, data=True, grad=draw(st.booleans()))
        names.append(node)
    graph.add_node(LOSS, kind="loss")
    for source in draw(st.lists(st.sampled_from(names), min_size=0, max_size=4, unique=True)):
        graph.add_edge(source, LOSS, data=True, grad=True)
    return ModelGraph(graph=graph, parameters={}, frontend="test")


@settings(max_examples=300, deadline=None)
@given(model_graphs())
def test_bypasses_match_the_definition(graph):
    flow = activation_flow(graph).flow
    bypasses = Bypasses(graph)
    for node in graph.graph:
        if node != LOSS:
            assert bypasses.bypassed(node) == brute_force(flow, node), node


def test_bypasses_of_a_residual_block():
    graph = nx.DiGraph()
    graph.add_node("x", kind="input")
    for node in ("fc", "act", "add", LOSS):
        graph.add_node(node, kind="op")
    graph.add_edges_from([("x", "fc"), ("fc", "act"), ("act", "add"), ("x", "add"), ("add", LOSS)],
                         data=True, grad=True)
    bypasses = Bypasses(ModelGraph(graph=graph, parameters={}, frontend="test"))
    assert bypasses.bypassed("fc") and bypasses.bypassed("act")
    assert not bypasses.bypassed("add") and not bypasses.bypassed("x")


# --------------------------------------------------------------------------- leaves of a value

def test_leaves_of_matches_pytree():
    import collections

    import torch
    from torch.utils import _pytree as pytree

    from graphcheck.running import leaves_of, tensors_in
    a, b, c = torch.ones(1), torch.ones(2), torch.ones(3)
    pair = collections.namedtuple("Pair", "x y")
    values = [a, (a, [b, {"k": c}]), pair(a, (b,)), collections.OrderedDict(x=a, y=b), {"z": c, "a": a},
              [1, 2.0, None, "s"], torch.Size([2, 3]), (None, a, torch.float32, torch.device("cpu"), 3j, b"x",
                                                        slice(1, 2), Ellipsis), torch.nn.Parameter(torch.ones(1))]
    for value in values:
        expected = pytree.tree_leaves(value)
        got = leaves_of(value)
        assert len(got) == len(expected) and all(x is y or x == y for x, y in zip(got, expected)), value
        assert [id(t) for t in tensors_in(value)] == [id(t) for t in expected if isinstance(t, torch.Tensor)]


@settings(max_examples=200, deadline=None)
@given(model_graphs(), st.data())
def test_downstream_of_many_sources_is_the_union_of_their_descendants(graph, data):
    # GC105's decision points ask what the inputs, the weights or a random draw reach: one search
    # from all sources at once (a search per weight was quadratic on Llama: 4 s of a 1.3 s trace).
    from graphcheck.frontends.decisions import _downstream
    view = graph.data_view()
    sources = data.draw(st.lists(st.sampled_from(sorted(graph.graph)), max_size=6))
    expected = set(sources).union(*(nx.descendants(view, s) for s in sources)) if sources else set()
    assert _downstream(view, sources) == expected
