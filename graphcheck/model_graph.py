"""The model graph: one networkx DiGraph of ops, parameters, outputs and the loss, shared by all rules.

Node attributes (every frontend fills the same ones):

``kind``          "parameter", "input", "buffer", "op", "output" or "loss"
``target``        readable op name (``linear``, ``detach``, ``argmax``, ``no_grad``...)
``module``        qualified path of the ``nn.Module`` that ran the op ("" for the root)
``module_type``   class name of that module
``location``      :class:`~graphcheck.finding.Location` of the user's source line, or None
``shape``/``dtype`` of the (first) tensor the node produced, where known
``requires_grad`` whether that tensor carries gradient (as autograd saw it)
``grad_enabled``  whether grad mode was on when the op ran (False inside ``no_grad``)
``param``         for parameter nodes: the canonical parameter name

Edges carry ``data`` (a value flows from u to v) and ``grad`` (autograd differentiates
v with respect to u; taken from the real autograd graph of the traced pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx

from graphcheck.finding import Location

LOSS = "loss"


@dataclass
class ParamInfo:
    name: str
    shape: tuple
    requires_grad: bool
    module: str
    aliases: list[str] = field(default_factory=list)
    location: Location | None = None   # where the owning module is assigned in __init__

    @property
    def node(self) -> str:
        return f"param:{self.name}"


@dataclass
class Decision:
    """A Python decision in forward that may go another way in another execution."""

    kind: str                        # "random" | "input" | "state"
    what: str                        # the construct, for messages (``torch.rand`` turned into a bool)
    location: Location | None = None
    module: str = ""                 # qualified name of the module whose forward decides


@dataclass
class ExecutionSample:
    """Which trainable parameters got a gradient in the extra executions (other seeds, inputs, calls)."""

    runs: int = 0                    # executions that completed
    failed: int = 0
    with_gradient: set[str] = field(default_factory=set)      # in at least one of them
    without_gradient: set[str] = field(default_factory=set)   # missing in at least one of them


@dataclass
class ModelGraph:
    graph: nx.DiGraph
    parameters: dict[str, ParamInfo]
    frontend: str
    mode: str = "train"
    mode_source: str = "factory"     # "factory" | "--train" | "--eval" | "config" | "api"
    device: str = "meta"
    target: str = ""
    notes: list[str] = field(default_factory=list)
    # The analysed model and inputs, for rules that read weight values or run probes.
    model: Any = None
    inputs: tuple = ()
    loss_fn: Callable | None = None
    # Python decisions that may differ between executions, and what other executions showed.
    decisions: list[Decision] = field(default_factory=list)
    executions: ExecutionSample | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    # -- queries used by rules -------------------------------------------------------
    @property
    def has_weights(self) -> bool:
        """True when the model's parameters hold real values (not the meta device)."""
        if self.model is None:
            return False
        return any(not p.is_meta for p in self.model.parameters()) or not any(
            True for _ in self.model.parameters()
        )

    def trainable(self) -> list[ParamInfo]:
        return [p for p in self.parameters.values() if p.requires_grad]

    def node(self, node_id: str) -> dict:
        return self.graph.nodes[node_id]

    def grad_view(self) -> nx.DiGraph:
        """Subgraph of the edges along which autograd propagates a gradient."""
        return self.cached("grad_view", lambda: nx.subgraph_view(
            self.graph, filter_edge=lambda u, v: self.graph.edges[u, v].get("grad", False)))

    def data_view(self) -> nx.DiGraph:
        """Subgraph of the edges along which a value flows (differentiably or not)."""
        return self.cached("data_view", lambda: nx.subgraph_view(
            self.graph, filter_edge=lambda u, v: self.graph.edges[u, v].get("data", False)
            or self.graph.edges[u, v].get("grad", False)))

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """Memoise an analysis that several rules share (they never mutate it)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def describe(self, node_id: str) -> str:
        """Short human name of a node, for paths in findings."""
        data = self.graph.nodes[node_id]
        kind = data.get("kind")
        if kind == "parameter":
            return data["param"]
        if kind in ("loss", "output", "input"):
            return data.get("target") or kind
        module = data.get("module") or ""
        target = data.get("target") or node_id
        if data.get("module_call"):
            return module or target
        return f"{module}.{target}" if module else target

    def location_of(self, node_id: str) -> Location | None:
        return self.graph.nodes[node_id].get("location")

    def counts(self) -> dict:
        total = len(self.parameters)
        trainable = sum(1 for p in self.parameters.values() if p.requires_grad)
        return {"total": total, "trainable": trainable, "frozen": total - trainable}
