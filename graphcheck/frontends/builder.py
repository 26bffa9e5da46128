"""The graph builder: every frontend adds its ops here, with data edges and the real autograd edges.

The loss is user code and is never traced: it runs on the model's outputs, and the
autograd graph of its result says which outputs reach it differentiably.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import networkx as nx
import torch
from torch.utils import _pytree as pytree

from graphcheck.finding import Location
from graphcheck.frontends.naming import Execution, ParamTable
from graphcheck.model_graph import LOSS
from graphcheck.errors import GraphcheckError
from graphcheck.running import tensors_in
from graphcheck.subject import LossError as SubjectLossError
from graphcheck.subject import Subject, loss_description, loss_of


class FrontendError(Exception):
    """A frontend could not trace or run the model (the next frontend is tried).

    ``kind`` says what failed: "trace" (the tracer itself: another device will not help),
    "inputs" (it needs example inputs), "run" (executing the traced model on this device),
    "loss" (the user's loss on this frontend's outputs), "step" (the user's training step raised).
    """

    def __init__(self, message: str, kind: str = "run"):
        super().__init__(message)
        self.kind = kind



class GradTracker:
    """Maps autograd nodes back to graph nodes, so each op's real gradient inputs are known.

    After an op runs, walking back from the ``grad_fn`` of its outputs until reaching an
    output of a ``grad_fn`` (or an ``AccumulateGrad`` leaf) that belongs to an earlier graph
    node gives exactly the earlier nodes autograd will send a gradient to through this op.
    Outputs are keyed by ``(grad_fn, output_nr)``: the pieces of one ``split`` share a
    ``grad_fn`` but are different values.
    """

    def __init__(self) -> None:
        self._owner: dict[tuple[int, int], str] = {}
        self._alive: list[Any] = []   # keeps ids stable while the trace is alive

    @staticmethod
    def _key(tensor: torch.Tensor):
        if tensor.grad_fn is not None:
            return tensor.grad_fn, tensor.output_nr
        if tensor.requires_grad:
            return tensor, 0
        return None

    def register(self, node_id: str, value: Any) -> None:
        for tensor in tensors_in(value):
            key = self._key(tensor)
            if key is not None:
                self._owner[(id(key[0]), key[1])] = node_id
                self._alive.append(key[0])

    def only_packs(self, value: Any) -> bool:
        """A container of tensors that earlier nodes produced (``Outputs(logits, aux)``, a dict built in
        forward): it packs them, and each field keeps its own producer, so a loss that reads one
        field does not reach the others."""
        if isinstance(value, torch.Tensor):
            return False
        keys = [self._key(t) for t in tensors_in(value)]
        return bool(keys) and all(k is not None and (id(k[0]), k[1]) in self._owner for k in keys)

    def upstream(self, value: Any) -> set[str]:
        found: set[str] = set()
        stack = [self._key(t) for t in tensors_in(value)]
        seen: set[tuple[int, int]] = set()
        expanded: set[int] = set()
        while stack:
            entry = stack.pop()
            if entry is None:
                continue
            fn, output_nr = entry
            key = (id(fn), output_nr)
            if key in seen:
                continue
            seen.add(key)
            owner = self._owner.get(key)
            if owner is not None:
                found.add(owner)
                continue
            if isinstance(fn, torch.Tensor) or id(fn) in expanded:
                continue
            expanded.add(id(fn))
            variable = getattr(fn, "variable", None)  # AccumulateGrad of a leaf
            if variable is not None:
                owner = self._owner.get((id(variable), 0))
                if owner is not None:
                    found.add(owner)
                continue
            stack.extend((next_fn, nr) for next_fn, nr in fn.next_functions if next_fn is not None)
        return found


def tensor_meta(value: Any) -> dict:
    tensors = tensors_in(value)
    if not tensors:
        return {"shape": None, "dtype": None, "requires_grad": False, "tensor": False}
    first = tensors[0]
    return {
        "shape": tuple(first.shape),
        "dtype": str(first.dtype).replace("torch.", ""),
        "requires_grad": any(t.requires_grad for t in tensors),
        "tensor": True,
        "floating": first.is_floating_point() or first.is_complex(),
        "empty": all(t.numel() == 0 for t in tensors),
    }


class GraphBuilder:
    """Accumulates nodes and edges while a frontend walks and executes the model."""

    def __init__(self, table: ParamTable, execution: Execution):
        self.graph = nx.DiGraph()
        self.table = table
        self.execution = execution
        self.tracker = GradTracker()
        self.loss_source: str | None = None   # which loss the default used (output.loss or every output)
        self.inputs: tuple = ()                # the positional inputs the trace ran on
        self.warnings: list[str] = []          # what the user should hear about the run (a NaN loss)

    # -- nodes
    def param_node(self, name: str) -> str:
        canonical = self.table.alias.get(name, name)
        node_id = f"param:{canonical}"
        if node_id not in self.graph:
            info = self.table.canonical[canonical]
            tensor = self.execution.params[canonical]
            self.graph.add_node(node_id, kind="parameter", param=canonical, target=canonical,
                                module=info.module, module_type="", location=None,
                                **tensor_meta(tensor), grad_enabled=True)
            self.tracker.register(node_id, tensor)
        return node_id

    def param_node_for_tensor(self, tensor: torch.Tensor) -> str | None:
        name = self.execution.names_by_id.get(id(tensor))
        return self.param_node(name) if name is not None else None

    def add(self, node_id: str, *, kind: str, target: str, value: Any, inputs: Iterable[str],
            module: str = "", module_type: str = "", location: Location | None = None,
            module_call: bool = False, extra: dict | None = None) -> str:
        grad_from = self.tracker.upstream(value)
        inputs = list(dict.fromkeys(inputs))
        self.graph.add_node(node_id, kind=kind, target=target, module=module,
                            module_type=module_type, location=location, module_call=module_call,
                            grad_enabled=torch.is_grad_enabled(), args=inputs,
                            **tensor_meta(value), **(extra or {}))
        for source in inputs:
            if source != node_id:
                self.graph.add_edge(source, node_id, data=True)
        for source in grad_from:
            if source != node_id:
                if self.graph.has_edge(source, node_id):
                    self.graph.edges[source, node_id]["grad"] = True
                else:
                    self.graph.add_edge(source, node_id, data=False, grad=True)
        if not self.tracker.only_packs(value):
            self.tracker.register(node_id, value)
        return node_id

    def finish(self, outputs: Any, output_sources: list[str | None], subject: Subject) -> None:
        """Add one node per output tensor and the loss node with its real gradient inputs.

        The loss is the subject's (:func:`graphcheck.subject.loss_of`); with a training step,
        ``outputs`` is the loss the step returned.
        """
        leaves, _ = pytree.tree_flatten_with_path(outputs)
        tensor_leaves = [(path, leaf) for path, leaf in leaves if isinstance(leaf, torch.Tensor)]
        if len(output_sources) != len(tensor_leaves):
            output_sources = [None] * len(tensor_leaves)
        for (path, leaf), source in zip(tensor_leaves, output_sources):
            label = "output" + pytree.keystr(path)
            node_id = f"output:{pytree.keystr(path)}"
            inputs = [source] if source else []
            self.add(node_id, kind="output", target=label, value=leaf, inputs=inputs)
        if not tensor_leaves and subject.step is None and subject.loss_fn is None:
            raise GraphcheckError(
                f"The model's output holds no tensor (forward returned "
                f"{'a dict' if isinstance(outputs, dict) else type(outputs).__name__}), so nothing "
                "can reach a loss. Return the tensors the training code's loss uses, or give --loss "
                "(loss(output) -> scalar tensor) or --step for a loss computed another way.")
        try:
            loss = loss_of(subject, outputs)
        except SubjectLossError as exc:
            error = LossError(str(exc), kind="loss")
            error.cause = exc.cause
            raise error from exc
        self.loss_source = loss_description(subject, outputs)
        if loss is not None and not loss.is_meta and loss.numel() == 1 and not bool(torch.isfinite(loss.detach()).all()):
            self.warnings.append(f"the loss is {float(loss.detach().reshape(())):g} on the example inputs with the "
                                 "initial weights: training would diverge or stall from the first step (check the "
                                 "loss, the inputs and the initialisation)")
        if loss is None:
            loss = torch.zeros((), device="meta")
        self.add(LOSS, kind="loss", target="loss", value=loss, inputs=[])
        for source in list(self.graph.predecessors(LOSS)):
            self.graph.edges[source, LOSS]["data"] = True


class LossError(FrontendError):
    """The loss failed on this frontend's outputs (it may work on the CPU); ``cause`` says how."""

    cause: str = ""


def first_line(exc: BaseException) -> str:
    """The exception's message in one line; a bare ``MemoryError`` says what it means."""
    text = str(exc).strip()
    if not text and isinstance(exc, MemoryError):
        return "out of memory (the process could not allocate what the model asked for)"
    return text.splitlines()[0] if text else ""
