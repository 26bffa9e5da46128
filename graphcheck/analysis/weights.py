"""Weight uses: which parameters are the weight of an affine op (Linear, Conv, ``x @ W``), embedding tables, weight values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping


from graphcheck.model_graph import ModelGraph
from graphcheck.ops import AFFINE_FUNCTIONS, AFFINE_MODULES, RIGHT_OPERAND

if TYPE_CHECKING:
    import torch

def embedding_tables(graph: ModelGraph) -> set[str]:
    """Parameters read by an ``embedding`` lookup."""
    return graph.analysis(_embedding_tables)


def _embedding_tables(graph: ModelGraph) -> set[str]:
    names = set()
    for node, data in graph.graph.nodes(data=True):
        if data.get("kind") == "op" and data.get("target", "").lower() == "embedding":
            names.update(p for p in map(lambda n: param_of(graph, n), data.get("args") or []) if p)
    return names


def compared_weights(graph: ModelGraph) -> set[str]:
    """The layer weights whose gradients GC304/GC305 compare: not embedding tables, whose gradient
    is sparse (the rows of the tokens seen) and, when tied to an output head, the head's."""
    return layer_weights(graph) - embedding_tables(graph)


def layer_weights(graph: ModelGraph) -> set[str]:
    """Parameters that are the weight of a layer: Linear / Conv / ``x @ W`` weights and embedding tables."""
    return graph.analysis(_layer_weights)


def _layer_weights(graph: ModelGraph) -> set[str]:
    return {use.param for use in weight_uses(graph)} | embedding_tables(graph)


@dataclass
class WeightUse:
    """A parameter used as the weight of an affine op (Linear, Conv, x @ W)."""
    param: str
    op: str                    # graph node of the op
    x: str | None              # graph node of the activation operand
    bias: str | None           # parameter name of the bias, if any
    fan_in: int
    fan_out: int
    in_dim: int                # the weight's input-feature dimension
    out_dim: int


def weight_uses(graph: ModelGraph) -> list[WeightUse]:
    return graph.analysis(_weight_uses)


def param_of(graph: ModelGraph, node: str | None) -> str | None:
    if node is None or node not in graph.graph:
        return None
    data = graph.graph.nodes[node]
    return data.get("param") if data.get("kind") == "parameter" else None


def _weight_uses(graph: ModelGraph) -> list[WeightUse]:
    uses = []
    for node, data in graph.graph.nodes(data=True):
        if data.get("kind") != "op":
            continue
        target, args = data.get("target", ""), list(data.get("args") or [])
        affine = (data.get("module_call") and target in AFFINE_MODULES) or target in AFFINE_FUNCTIONS
        if affine and len(args) >= 2 and param_of(graph, args[1]):
            weight = param_of(graph, args[1])
            shape = graph.parameters[weight].shape
            if len(shape) < 2:
                continue
            receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
            uses.append(WeightUse(weight, node, args[0], param_of(graph, args[2]) if len(args) > 2 else None,
                                  fan_in=shape[1] * receptive, fan_out=shape[0] * receptive,
                                  in_dim=1, out_dim=0))
        elif target == "addmm" and len(args) == 3 and param_of(graph, args[2]):
            weight = param_of(graph, args[2])
            shape = graph.parameters[weight].shape
            if len(shape) == 2:
                uses.append(WeightUse(weight, node, args[1], param_of(graph, args[0]),
                                      fan_in=shape[0], fan_out=shape[1], in_dim=0, out_dim=1))
        elif target in RIGHT_OPERAND and len(args) == 2 and param_of(graph, args[1]) \
                and not param_of(graph, args[0]):
            weight = param_of(graph, args[1])
            shape = graph.parameters[weight].shape
            if len(shape) == 2:
                uses.append(WeightUse(weight, node, args[0], None, fan_in=shape[0], fan_out=shape[1],
                                      in_dim=0, out_dim=1))
    return uses


def parameter_values(graph: ModelGraph) -> Mapping[str, torch.Tensor]:
    """The weights' values, detached, as the checker measured them (empty when not measured)."""
    return graph.measured.weights or {}


@dataclass(frozen=True)
class ValueFacts:
    """What the rules ask of a weight's initial values."""

    zero: bool        # every entry is 0 (and there is one)
    constant: bool    # every entry equals the first (NaN equals nothing)


def value_facts(graph: ModelGraph) -> dict[str, ValueFacts]:
    """Zero and constant weights (real weights only), from one min/max pass over each tensor.

    The zero-gradient verdict (GC104) and the initialisation rules (GC501-GC503) share it: on
    BERT-base, three separate scans of the 110 M weights cost more than the rest of those rules.
    """
    return graph.analysis(_value_facts)


def _value_facts(graph: ModelGraph) -> dict[str, ValueFacts]:
    facts = {}
    for name, tensor in parameter_values(graph).items():
        if tensor.is_meta or not tensor.numel():
            facts[name] = ValueFacts(zero=False, constant=False)
        else:
            facts[name] = _facts(tensor)
    return facts


def _facts(tensor: torch.Tensor) -> ValueFacts:
    import torch
    if tensor.dtype != torch.bool and not tensor.is_complex():
        try:
            low, high = torch.aminmax(tensor.reshape(-1))
        except (RuntimeError, NotImplementedError):   # a dtype without aminmax on this device
            pass
        else:
            constant = bool(low == high)
            return ValueFacts(zero=constant and bool(low == 0), constant=constant)
    return ValueFacts(zero=not bool(tensor.any()), constant=bool((tensor == tensor.reshape(-1)[0]).all()))
