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

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import networkx as nx

from graphcheck.finding import Location
from graphcheck.measured import ExecutionSample, Measured  # noqa: F401  ExecutionSample: re-exported

LOSS = "loss"
T = TypeVar("T")


@dataclass
class ParamInfo:
    name: str
    shape: tuple
    requires_grad: bool
    module: str
    aliases: list[str] = field(default_factory=list)
    # Finds where the owning module is assigned in __init__; asked only for a parameter a
    # finding names (reading class sources costs real time on a large model).
    locate: Callable[[], Location | None] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def location(self) -> Location | None:
        return self.locate() if self.locate is not None else None

    @property
    def node(self) -> str:
        return f"param:{self.name}"


@dataclass
class Decision:
    """A Python decision in forward that may go another way in another execution."""

    kind: str                        # "random" | "input" | "state" | "meta"
    what: str                        # the construct, for messages (``torch.rand`` turned into a bool)
    location: Location | None = None
    module: str = ""                 # qualified name of the module whose forward decides


@dataclass(frozen=True)
class ModelGraph:
    """The traced structure, frozen once built; ``measured`` holds what the checker measured before the rules.

    The run context (the model, its inputs, the loss or step) is not here: it is the checker's
    :class:`graphcheck.subject.Subject`. Analysis passes read this object only.
    """

    graph: nx.DiGraph
    parameters: dict[str, ParamInfo]
    frontend: str
    mode: str = "train"
    mode_source: str = "factory"     # "factory" | "--train" | "--eval" | "config" | "api"
    device: str = "meta"
    target: str = ""
    notes: tuple[str, ...] = ()
    loss_source: str | None = None   # which default loss ran ("output.loss", ...)
    warnings: tuple[str, ...] = ()   # what the user should hear about the traced run (a NaN loss)
    module_types: dict[str, str] = field(default_factory=dict)   # qualified module name -> class name
    # Python decisions that may differ between executions (random draws, input values, state).
    decisions: tuple[Decision, ...] = ()
    measured: Measured = field(default_factory=Measured)
    # Results of the read-only analysis passes, keyed by the pass (see ``analysis``).
    _results: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def with_measured(self, measured: Measured) -> "ModelGraph":
        """This structure with the measurements' results (a new graph: passes run afresh on it)."""
        return dataclasses.replace(self, measured=measured)

    # -- queries used by rules -------------------------------------------------------
    def trainable(self) -> list[ParamInfo]:
        return [p for p in self.parameters.values() if p.requires_grad]

    def node(self, node_id: str) -> dict:
        return self.graph.nodes[node_id]

    def grad_view(self) -> nx.DiGraph:
        """Subgraph of the edges along which autograd propagates a gradient."""
        return self.analysis(_grad_view)

    def data_view(self) -> nx.DiGraph:
        """Subgraph of the edges along which a value flows (differentiably or not)."""
        return self.analysis(_data_view)

    def analysis(self, pass_: Callable[["ModelGraph"], T]) -> T:
        """The result of a read-only analysis pass over this graph: run once, shared by every rule.

        ``pass_`` is the pass itself (a function or class taking the graph); its return type is
        the result's type, so results are typed objects, not entries under string keys.
        """
        if pass_ not in self._results:
            self._results[pass_] = pass_(self)
        return self._results[pass_]

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
        """The source line of a node; for a parameter, where its module is assigned in ``__init__``."""
        data = self.graph.nodes[node_id]
        location = data.get("location")
        if location is None and data.get("kind") == "parameter":
            info = self.parameters.get(data.get("param"))
            location = info.location if info is not None else None
        return location

    def counts(self) -> dict:
        total = len(self.parameters)
        trainable = sum(1 for p in self.parameters.values() if p.requires_grad)
        return {"total": total, "trainable": trainable, "frozen": total - trainable}


def _grad_view(mg: ModelGraph) -> nx.DiGraph:
    graph = mg.graph
    return nx.subgraph_view(graph, filter_edge=lambda u, v: graph.edges[u, v].get("grad", False))


def _data_view(mg: ModelGraph) -> nx.DiGraph:
    graph = mg.graph
    return nx.subgraph_view(graph, filter_edge=lambda u, v: graph.edges[u, v].get("data", False)
                            or graph.edges[u, v].get("grad", False))
