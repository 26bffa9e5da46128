"""The recorded-pass frontend ("autograd"): one forward pass, every torch call recorded by a TorchFunctionMode."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from graphcheck.errors import GraphcheckError
from graphcheck.frontends.builder import FrontendError, GraphBuilder, first_line
from graphcheck.frontends.indexing import bool_flags, describe_index
from graphcheck.frontends.naming import ParamTable
from graphcheck.frontends.patches import custom_autograd_functions
from graphcheck.subject import Subject, loss_of
from graphcheck.running import (CONDITION_READS, inputs_on, leaves_of, meta_value, module_stack, op_name, stands_in,
                                swapped_parameters, tensors_in)
from graphcheck.sources import calling_the_model, location_here, short_location


# Torch function handling off (modes and subclasses), for the recorder's own reads.
_unwatched = getattr(torch._C, "DisableTorchFunction", contextlib.nullcontext)


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
        self.inside_function = 0      # > 0 while a custom autograd.Function runs (one op)

    def source_of(self, value: Any) -> str | None:
        if isinstance(value, torch.Tensor):
            param = self.builder.param_node_for_tensor(value)
            if param is not None:
                return param
        return self.producer.get(id(value))

    def register_value(self, node_id: str, value: Any) -> None:
        for leaf in leaves_of(value):
            if isinstance(leaf, (torch.Tensor, float)) and not isinstance(leaf, bool):
                self.producer[id(leaf)] = node_id
                self.alive.append(leaf)

    def record_function(self, cls, apply, args, kwargs):
        """A custom ``torch.autograd.Function``: one op, whose gradient edges autograd itself gives.

        Its forward runs under no_grad by design (a hand-written checkpoint recomputes in
        backward), so the ops inside are not the model's gradient structure.
        """
        self.inside_function += 1
        try:
            value = apply(cls, *args, **kwargs)
        finally:
            self.inside_function -= 1
        leaves = leaves_of((args, kwargs))
        inputs = [s for s in (self.source_of(leaf) for leaf in leaves) if s is not None]
        self.counter += 1
        node_id = f"{cls.__name__}_{self.counter}"
        module_path, module_type = self.module_stack[-1] if self.module_stack else ("", "")
        self.builder.add(node_id, kind="op", target=cls.__name__, value=value, inputs=inputs,
                         module=module_path, module_type=module_type, location=location_here(),
                         extra={"scalars": [], "custom_function": True})
        self.register_value(node_id, value)
        return value

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.inside_function:
            return func(*args, **kwargs)
        name = op_name(func)
        is_attribute = getattr(func, "__name__", "") == "__get__"
        if is_attribute and name not in self._ATTRIBUTES:
            return func(*args, **kwargs)
        # The recorder's own reads (grad_fn, shapes, dtypes) skip the modes below it (the device
        # context, the random-taint watch): a dozen reads per op would each pass through them.
        with _unwatched():
            leaves = leaves_of((args, kwargs))
            tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
            before = [t.grad_fn for t in tensors]
            stood_in = bool(args) and stands_in(name, args[0], self.builder.table.real)
        if stood_in:
            value = meta_value(name, args[0])
        else:
            value = func(*args, **kwargs)
        with _unwatched():
            self._note(name, args, kwargs, leaves, tensors, before, value, stood_in)
        return value

    def _note(self, name, args, kwargs, leaves, tensors, before, value, stood_in) -> None:
        """Add the op that just ran to the graph."""
        inputs = [s for s in (self.source_of(leaf) for leaf in leaves) if s is not None]
        self.counter += 1
        node_id = f"{name}_{self.counter}"
        module_path, module_type = self.module_stack[-1] if self.module_stack else ("", "")
        # In-place ops (x.add_(y), x[i] = y) give their input a new grad_fn: this op now owns it.
        mutated = [t for t, grad_fn in zip(tensors, before) if grad_fn is not t.grad_fn]
        recorded_value = value if tensors_in(value) or not mutated else mutated
        extra = {"scalars": [a for a in leaves if isinstance(a, (int, float)) and not isinstance(a, bool)],
                 "flags": bool_flags(args, kwargs)}
        if (index := describe_index(name, args, kwargs)) is not None:
            extra["index"] = index
        if stood_in and name in CONDITION_READS:
            extra["stand_in"] = True   # a branch taken on a value meta does not have: a decision
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


def trace_autograd(subject: Subject, table: ParamTable, device: str, cache: dict) -> GraphBuilder:
    """Record one forward pass, ``model(*args, **kwargs)``, or a whole training step, ``step(model, batch)``."""
    if not subject.args and not subject.kwargs:
        raise FrontendError("a recorded forward pass needs example inputs", kind="inputs")
    execution, tensors = table.execution(device)
    builder = GraphBuilder(table, execution)
    with module_stack(subject.model) as stack:
        return _record(subject, tensors, builder, stack, device)


def _record(subject: Subject, tensors, builder: GraphBuilder, stack, device: str) -> GraphBuilder:
    recorder = _Recorder(builder, stack)
    model = subject.model
    args, kwargs = inputs_on(subject.inputs, device)
    for index, tensor in enumerate(tensors_in((args, kwargs))):
        node_id = builder.add(f"input_{index}", kind="input", target=f"input_{index}", value=tensor, inputs=[])
        recorder.register_value(node_id, tensor)
    try:
        with swapped_parameters(model, tensors), torch.enable_grad(), torch.device(device):
            with recorder, calling_the_model(), custom_autograd_functions(recorder.record_function):
                if subject.step is None:
                    outputs = model(*args, **kwargs)
                else:   # the step's loss is the output (validated by the subject's loss)
                    outputs = loss_of(subject, _run_step(subject, args, kwargs))
            sources = [recorder.producer.get(id(t)) for t in tensors_in(outputs)]
            builder.finish(outputs, sources, subject)
    except (GraphcheckError, FrontendError):
        raise
    except Exception as exc:
        raise FrontendError(f"the forward pass on {device} failed: {type(exc).__name__}: {first_line(exc)}") from exc
    builder.inputs = subject.args
    return builder


def _run_step(subject: Subject, args: tuple, kwargs: dict) -> Any:
    """What ``step(model, batch)`` returned; its exceptions are the step's failure."""
    step = subject.step
    name = getattr(step, "__qualname__", type(step).__name__)
    try:
        return subject.call(args, kwargs)
    except (GraphcheckError, FrontendError):
        raise
    except Exception as exc:
        raise FrontendError(f"the training step {name} raised {type(exc).__name__}: {first_line(exc)}"
                            f"{short_location(exc)}", kind="step") from exc
