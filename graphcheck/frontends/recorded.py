"""The recorded-pass frontend ("autograd"): one forward pass, every torch call recorded by a TorchFunctionMode."""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from graphcheck.errors import GraphcheckError
from graphcheck.frontends.builder import FrontendError, GraphBuilder, first_line
from graphcheck.frontends.indexing import bool_flags, describe_index
from graphcheck.frontends.naming import ParamTable
from graphcheck.running import inputs_on, module_stack, op_name, swapped_parameters, tensors_in
from graphcheck.sources import calling_the_model, location_here


class _Recorder(TorchFunctionMode):
    """Records every torch function a forward pass calls, with module, source line and grad mode."""

    _ATTRIBUTES = {"data", "T", "mT", "H", "mH", "real", "imag", "grad"}

    def __init__(self, builder: GraphBuilder, modules: list[tuple[str, str]]):
        super().__init__()
        self.builder = builder
        self.module_stack = modules
        self.producer: dict[int, str] = {}
        self.alive: list[Any] = []
        self.counter = 0
        self.region: str | None = None

    def source_of(self, value: Any) -> str | None:
        if isinstance(value, torch.Tensor):
            param = self.builder.param_node_for_tensor(value)
            if param is not None:
                return param
        return self.producer.get(id(value))

    def register_value(self, node_id: str, value: Any) -> None:
        for leaf in pytree.tree_leaves(value):
            if isinstance(leaf, (torch.Tensor, float)) and not isinstance(leaf, bool):
                self.producer[id(leaf)] = node_id
                self.alive.append(leaf)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        is_attribute = getattr(func, "__name__", "") == "__get__"
        if is_attribute and name not in self._ATTRIBUTES:
            return func(*args, **kwargs)
        before = {id(t): t.grad_fn for t in tensors_in((args, kwargs))}
        if name in ("item", "tolist") and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            value = 1.0 if args[0].is_floating_point() else 1   # no value on meta; the cut is what matters
        else:
            value = func(*args, **kwargs)
        leaves = pytree.tree_leaves((args, kwargs))
        inputs = [s for s in (self.source_of(leaf) for leaf in leaves) if s is not None]
        self.counter += 1
        node_id = f"{name}_{self.counter}"
        module_path, module_type = self.module_stack[-1] if self.module_stack else ("", "")
        # In-place ops (x.add_(y), x[i] = y) give their input a new grad_fn: this op now owns it.
        mutated = [t for t in tensors_in((args, kwargs)) if before.get(id(t), t.grad_fn) is not t.grad_fn]
        recorded_value = value if tensors_in(value) or not mutated else mutated
        extra = {"scalars": [a for a in leaves if isinstance(a, (int, float)) and not isinstance(a, bool)],
                 "flags": bool_flags(args, kwargs)}
        if (index := describe_index(name, args, kwargs)) is not None:
            extra["index"] = index
        if torch.is_grad_enabled():
            self.region = None
        else:
            self.region = extra["region"] = self.region or node_id
        self.builder.add(node_id, kind="op", target=name, value=recorded_value, inputs=inputs,
                         module=module_path, module_type=module_type, location=location_here(),
                         extra=extra)
        self.register_value(node_id, value)
        for tensor in mutated:
            self.register_value(node_id, tensor)
            self.builder.tracker.register(node_id, tensor)
        return value


def trace_autograd(model: torch.nn.Module, inputs: tuple, table: ParamTable, loss_fn, device: str,
                   cache: dict) -> GraphBuilder:
    if not inputs:
        raise FrontendError("a recorded forward pass needs example inputs", kind="inputs")
    execution, tensors = table.execution(device)
    builder = GraphBuilder(table, execution)
    with module_stack(model) as stack:
        return _record(model, inputs, tensors, builder, stack, loss_fn, device)


def _record(model, inputs, tensors, builder: GraphBuilder, stack, loss_fn, device: str) -> GraphBuilder:
    recorder = _Recorder(builder, stack)
    run_inputs = inputs_on(inputs, device)
    for index, tensor in enumerate(tensors_in(run_inputs)):
        node_id = builder.add(f"input_{index}", kind="input", target=f"input_{index}", value=tensor, inputs=[])
        recorder.register_value(node_id, tensor)
    try:
        with swapped_parameters(model, tensors), torch.enable_grad(), torch.device(device):
            with recorder, calling_the_model():
                outputs = model(*run_inputs)
            sources = [recorder.producer.get(id(t)) for t in tensors_in(outputs)]
            builder.finish(outputs, sources, loss_fn)
    except (GraphcheckError, FrontendError):
        raise
    except Exception as exc:
        raise FrontendError(f"the forward pass on {device} failed: {type(exc).__name__}: {first_line(exc)}") from exc
    builder.inputs = inputs
    return builder
