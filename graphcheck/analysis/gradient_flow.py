"""Gradient-flow analysis shared by the GC1xx rules: which parameters reach the loss, and how.

The analysis is settled once for the whole graph (like pyflakes' "unused" facts, after the
walk), then each GC1xx rule reports its own category of verdicts.

Verdicts per trainable parameter:

``unused``    forward never reads it
``dead``      it is read, but nothing it feeds reaches the loss
``detached``  a value path to the loss exists, but every one is cut for autograd
``zero``      autograd reaches it, but only through ops whose derivative is identically
              zero (round, sign, multiplication by a zero constant or by a zero weight that
              itself never gets a gradient)
``ok``        it gets a gradient
``conditional`` it gets a gradient in some executions and not in others (the analysed one and
              the extra executions ``ModelGraph.measured.executions`` sampled: other seeds, inputs, calls);
              never one of the "no gradient" verdicts, which must hold for every execution
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from graphcheck.analysis.index_ranges import dropped_operands, written_in_place
from graphcheck.analysis.paths import location_on_path
from graphcheck.analysis.weights import value_facts
from graphcheck.finding import Location
from graphcheck.measured import Measure
from graphcheck.model_graph import LOSS, ModelGraph
from graphcheck.ops import (AFFINE_MODULES, AFFINE_NORM_FUNCTIONS, AFFINE_NORM_MODULES, BATCH_NORM_FUNCTIONS,
                            BATCH_NORM_MODULES, BIAS_FIRST, BIAS_LAST, DETACHING_OPS, DROPOUT, MULTIPLY, RELU_FAMILY,
                            SUM_LIKE, ZERO_CREATORS, ZERO_DERIVATIVE_OPS, ZERO_PRESERVING)


# The measurements the verdicts read: zero weights (GC104's fixpoint) and ReLU layers dead at init.
# Rules that call :func:`analyse` declare them; the GC10x rules add the other executions (GC105).
VERDICT_MEASURES = frozenset({Measure.WEIGHTS, Measure.DEAD_UNITS})


def _factors(data: dict) -> tuple[list[str], list[str]] | None:
    """(multiplied operands, added operands) of a product-like op, else None."""
    target = data.get("target", "")
    args = list(data.get("args") or [])
    if target in MULTIPLY:
        return args, []
    if target in BIAS_FIRST:
        return (args[1:], args[:1]) if len(args) >= 3 else (args, [])
    if target in BIAS_LAST or (data.get("module_call") and target in AFFINE_MODULES):
        return args[:2], args[2:3]
    return None


@dataclass
class Verdict:
    param: str
    kind: str                               # unused | dead | detached | zero | ok | conditional
    cause: str | None = None                # graph node that explains the verdict
    path: list[str] = field(default_factory=list)
    reason: str = ""
    location: Location | None = None
    group: str | None = None                # findings with one root cause share it (a no_grad block)
    edge: tuple[str, str] | None = None     # the edge a value crosses but a gradient does not (detached)


def _is_zero_literal(data: dict) -> bool:
    return any(s == 0 for s in data.get("scalars") or [])


def _drops_everything(data: dict) -> bool:
    """Dropout with p == 1 in training mode: its output and its input's gradient are all zeros."""
    scalars, flags = data.get("scalars") or [], data.get("flags") or []
    return data.get("target") in DROPOUT and scalars[:1] == [1] and (flags[:1] or [True])[0] is True


def _normalisation(graph: nx.DiGraph, data: dict) -> tuple[str, str | None, list[str]] | None:
    """(input, weight, bias and the other operands) of a normalisation whose zero input normalises
    to zero (``normalise(x) * weight + bias``), else None.

    Batch normalisation subtracts the running mean in eval mode: only with batch statistics
    (its first boolean argument, or the module's training flag) does zero stay zero.
    """
    target, args, flags = data.get("target", ""), list(data.get("args") or []), data.get("flags") or []
    module_call = bool(data.get("module_call"))
    affine = target in AFFINE_NORM_MODULES if module_call else target in AFFINE_NORM_FUNCTIONS
    batch = target in BATCH_NORM_MODULES if module_call else target in BATCH_NORM_FUNCTIONS
    if not args or not (affine or (batch and flags[:1] == [True])):
        return None
    if module_call or not batch:
        return args[0], (args[1] if len(args) > 1 else None), args[2:]
    # Functional batch norm: the running statistics (buffers) sit before or after the weight and
    # bias depending on the frontend; weight and bias keep their order.
    affine_operands = [a for a in args[1:] if graph.nodes[a].get("kind") != "buffer"]
    if len(affine_operands) == 2:
        return args[0], affine_operands[0], affine_operands[1:]
    return args[0], None, affine_operands


class _ZeroValues:
    """Which nodes are identically zero, given the set of zero parameters assumed to stay zero."""

    def __init__(self, mg: ModelGraph, zero_params: set[str], dead_units: frozenset[str] = frozenset()):
        self.mg = mg
        graph = mg.graph
        self.dead_units = dead_units
        self.dropped = dropped_operands(mg)
        self.zero: set[str] = {mg.parameters[p].node for p in zero_params} | set(dead_units)
        # Zero buffers and constants (a zero mask); not those forward writes to in place.
        for node, data in graph.nodes(data=True):
            if data.get("all_zero") and not written_in_place(graph, node):
                self.zero.add(node)
        for node in nx.topological_sort(graph) if nx.is_directed_acyclic_graph(graph) else graph:
            data = graph.nodes[node]
            if data.get("kind") != "op" or not data.get("tensor"):
                continue
            if self._is_zero(node, data) and not written_in_place(graph, node):
                self.zero.add(node)

    def _is_zero(self, node: str, data: dict) -> bool:
        target = data.get("target", "")
        args = data.get("args") or []
        zero_args = [a in self.zero for a in args]
        if target in ZERO_CREATORS:
            return True
        if target in ("full", "full_like", "new_full", "fill_") and data.get("scalars") in ([0], [0.0]):
            return True
        if data.get("empty") or _drops_everything(data):
            return True
        norm = _normalisation(self.mg.graph, data)
        if norm is not None:
            source, weight, others = norm
            # normalise(0) * weight + bias is the bias; a zero weight zeroes the product too.
            return (source in self.zero or (weight is not None and weight in self.zero)) \
                and all(a in self.zero for a in others)
        factors = _factors(data)
        if factors is not None:
            products, addends = factors
            scaled_by_zero = target.startswith(("mul", "__mul", "__rmul")) and _is_zero_literal(data)
            product_zero = scaled_by_zero or any(a in self.zero for a in products)
            return product_zero and all(a in self.zero for a in addends)
        if target in SUM_LIKE:
            return bool(args) and all(zero_args) and not any(s != 0 for s in data.get("scalars") or [] if target.startswith(("add", "__add", "__radd", "sub")))
        if target in ZERO_PRESERVING:
            return bool(args) and args[0] in self.zero
        return False

    def gradient_is_zero(self, source: str, node: str) -> bool:
        """Whether the gradient flowing from ``node`` back to its input ``source`` is zero."""
        data = self.mg.graph.nodes[node]
        target = data.get("target", "")
        if target in ZERO_DERIVATIVE_OPS or node in self.dead_units or data.get("empty") \
                or _drops_everything(data) or (source, node) in self.dropped:
            return True
        norm = _normalisation(self.mg.graph, data)
        if norm is not None:
            return norm[1] == source and norm[0] in self.zero and norm[0] != source
        factors = _factors(data)
        if factors is None:
            return False
        products, _ = factors
        if source not in products:
            return False   # an added operand (a bias) gets the gradient unchanged
        if target.startswith(("mul", "__mul", "__rmul")) and _is_zero_literal(data):
            return True
        others = [a for a in products if a != source]
        return any(a in self.zero for a in others)


def _zero_valued_params(mg: ModelGraph) -> set[str]:
    """Parameters whose values are all zero (measured weights only); frozen ones stay zero for good."""
    if mg.measured.weights is None:
        return set()
    facts = value_facts(mg)
    return {name for name in mg.parameters if name in facts and facts[name].zero}


def _dead_relus(mg: ModelGraph) -> frozenset[str]:
    """ReLU calls whose every unit is inactive for every probe sample with the initial weights.

    Nothing passes them, forward or backward, and the layers feeding them get no gradient to
    move them out of it: dead at init, for good (read from the probe, when it ran).
    """
    result = mg.measured.probe
    if result is None or result.error:
        return frozenset()
    return frozenset(stats.node for stats in result.activations
                     if stats.kind in RELU_FAMILY and stats.dead_fraction == 1.0 and stats.node is not None)


def _nonzero_grad_view(mg: ModelGraph, values: _ZeroValues) -> nx.DiGraph:
    graph = mg.graph
    return nx.subgraph_view(graph, filter_edge=lambda u, v: graph.edges[u, v].get("grad", False)
                            and not values.gradient_is_zero(u, v))


def analyse(mg: ModelGraph) -> dict[str, Verdict]:
    return mg.analysis(_analyse)


def _analyse(mg: ModelGraph) -> dict[str, Verdict]:
    graph = mg.graph
    grad_view = mg.grad_view()
    data_view = mg.data_view()

    # Greatest fixpoint: zero weights stay zero unless their own gradient is non-zero.
    staying_zero = _zero_valued_params(mg)
    dead_units = _dead_relus(mg)
    while True:
        values = _ZeroValues(mg, staying_zero, dead_units)
        nonzero = _nonzero_grad_view(mg, values)
        reaches = nx.ancestors(nonzero, LOSS) if LOSS in graph else set()
        woken = {p for p in staying_zero if mg.parameters[p].requires_grad and mg.parameters[p].node in reaches}
        if not woken:
            break
        staying_zero -= woken

    grad_reaches = nx.ancestors(grad_view, LOSS) if LOSS in graph else set()
    data_reaches = nx.ancestors(data_view, LOSS) if LOSS in graph else set()

    verdicts: dict[str, Verdict] = {}
    for info in mg.trainable():
        node = info.node
        if node not in graph or graph.out_degree(node) == 0:
            verdicts[info.name] = Verdict(info.name, "unused", cause=None, location=info.location,
                                          reason="never read in forward")
        elif node in reaches:
            verdicts[info.name] = Verdict(info.name, "ok")
        elif node in grad_reaches:
            verdicts[info.name] = _zero_verdict(mg, info.name, node, grad_view, values, staying_zero)
        elif node in data_reaches:
            verdicts[info.name] = _detached_verdict(mg, info.name, node, data_view, grad_view)
        else:
            verdicts[info.name] = _dead_verdict(mg, info.name, node, data_view)
    return _conditional(mg, verdicts)


def _conditional(mg: ModelGraph, verdicts: dict[str, Verdict]) -> dict[str, Verdict]:
    """A parameter with a gradient in some executions and none in others is conditionally used."""
    sample = mg.measured.executions
    if sample is None or not sample.runs:
        return verdicts
    for name, verdict in verdicts.items():
        missing_here = verdict.kind in ("unused", "dead", "detached")
        if (missing_here and name in sample.with_gradient) or (verdict.kind == "ok" and name in sample.without_gradient):
            verdicts[name] = Verdict(name, "conditional", location=mg.parameters[name].location,
                                     reason=f"{verdict.kind} in the analysed execution")
    return verdicts


def _zero_verdict(mg, name, node, grad_view, values: _ZeroValues, staying_zero) -> Verdict:
    path = nx.shortest_path(grad_view, node, LOSS)
    for u, v in zip(path, path[1:]):
        if values.gradient_is_zero(u, v):
            data = mg.graph.nodes[v]
            target = data.get("target", "")
            dropped = values.dropped.get((u, v))
            if dropped is not None and dropped.by is not None:
                by = dropped.by
                reason = (f"`{mg.describe(by)}` keeps none of the positions it fills in "
                          f"`{mg.describe(v)}`, so the gradient sent back to them is all zeros")
                return Verdict(name, "zero", cause=by, path=path, reason=reason,
                               location=mg.location_of(by) or location_on_path(mg, path, path.index(v)))
            if target in ZERO_DERIVATIVE_OPS:
                reason = f"`{target}` has a zero derivative almost everywhere"
            elif data.get("empty"):
                reason = f"`{mg.describe(v)}` is empty, so the gradient through it is empty (all zeros)"
            elif _drops_everything(data):
                reason = f"`{mg.describe(v)}` drops every element (p=1 in training mode)"
            elif _normalisation(mg.graph, data) is not None:
                reason = (f"`{mg.describe(v)}` normalises an identically zero tensor to zero, so its "
                          "weight's gradient (a sum of gradient times normalised input) is zero")
            elif v in values.dead_units:
                reason = (f"`{mg.describe(v)}` is inactive for every unit and every input with the "
                          "initial weights (a dead ReLU layer), so no gradient passes it")
            else:
                zero_operands = [a for a in data.get("args") or [] if a != u and a in values.zero]
                zero_params = [mg.graph.nodes[a].get("param") for a in zero_operands
                               if mg.graph.nodes[a].get("kind") == "parameter"]
                if zero_params:
                    reason = (f"`{mg.describe(v)}` multiplies by {', '.join(zero_params)}, which is all "
                              "zeros and never receives a gradient itself, so it stays zero")
                elif zero_operands:
                    reason = f"`{mg.describe(v)}` multiplies by a tensor that is identically zero"
                else:
                    reason = f"`{mg.describe(v)}` multiplies by the constant 0"
            return Verdict(name, "zero", cause=v, path=path, reason=reason,
                           location=location_on_path(mg, path, path.index(v)))
    return Verdict(name, "zero", cause=path[-1], path=path,
                   reason="the gradient reaching it is identically zero")


def _detached_verdict(mg, name, node, data_view, grad_view) -> Verdict:
    path = nx.shortest_path(data_view, node, LOSS)
    graph = mg.graph
    for u, v in zip(path, path[1:]):
        if not graph.edges[u, v].get("grad", False):
            data = graph.nodes[v]
            target = data.get("target", "")
            op = f"`{mg.describe(v)}`"
            if not data.get("grad_enabled", True) or data.get("region_grad_enabled") is False:
                location = location_on_path(mg, path, path.index(v))
                # One finding per block; a block run in a loop (a checkpoint per layer) is one line.
                group = f"no-grad:{location.file}:{location.line}" if location else \
                    f"no-grad:{data.get('region') or v}"
                return Verdict(name, "detached", cause=v, path=path, group=group, edge=(u, v),
                               reason=(f"{op} runs with gradients disabled (`torch.no_grad()`, "
                                       "`set_grad_enabled(False)`, `inference_mode()`, or a reentrant "
                                       "checkpoint with no input that requires grad)"),
                               location=location)
            elif target in DETACHING_OPS:
                reason = f"{DETACHING_OPS[target]} cuts the autograd graph"
            elif data.get("tensor") and not data.get("floating", True):
                reason = f"{op} returns {data.get('dtype')}, which carries no gradient"
            elif not data.get("tensor"):
                reason = f"{op} turns the tensor into a Python value, which carries no gradient"
            else:
                reason = f"{op} does not differentiate with respect to this input"
            return Verdict(name, "detached", cause=v, path=path, reason=reason, edge=(u, v),
                           location=location_on_path(mg, path, path.index(v)))
    return Verdict(name, "detached", cause=path[-1], path=path, reason="the gradient path is cut")


def _dead_verdict(mg, name, node, data_view) -> Verdict:
    graph = mg.graph
    downstream = nx.descendants(data_view, node)
    sinks = [n for n in downstream if data_view.out_degree(n) == 0] or [node]
    # The furthest point the value reaches, preferring a model output the loss ignores.
    outputs = [s for s in sinks if graph.nodes[s].get("kind") == "output"]
    sink = sorted(outputs or sinks)[0]
    path = nx.shortest_path(data_view, node, sink) if sink != node else [node]
    if graph.nodes[sink].get("kind") == "output":
        reason = f"it only feeds `{graph.nodes[sink]['target']}`, an output the loss does not use"
        anchor = path[-2] if len(path) > 1 else path[-1]
    else:
        reason = f"its result (`{mg.describe(sink)}`) is computed and never used"
        anchor = sink
    return Verdict(name, "dead", cause=anchor, path=path, reason=reason,
                   location=location_on_path(mg, path, path.index(anchor)))
