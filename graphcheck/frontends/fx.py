"""The torch.fx frontend: symbolic tracing that also records grad-mode switches (``no_grad`` in forward)."""

from __future__ import annotations

import inspect

import torch
import torch.fx as fx

from graphcheck.frontends.builder import FrontendError, GraphBuilder, first_line
from graphcheck.frontends.interpreter import GraphInterpreter, match_sources, output_sources, run_interpreter
from graphcheck.frontends.naming import ParamTable
from graphcheck.frontends.patches import (custom_autograd_functions, inference_mode_as_no_grad, refuse_custom_functions,
                                         set_grad_enabled_op)
from graphcheck.subject import Subject
from graphcheck.running import inputs_on, preserved, swapped_parameters
from graphcheck.sources import calling_the_model, location_here


class GradModeTracer(fx.Tracer):
    """symbolic_trace that also records grad-mode switches (``no_grad`` in forward).

    torch.fx does not record ``torch.no_grad()`` blocks; while tracing, every call of
    ``torch._C._set_grad_enabled`` (what ``no_grad``, ``enable_grad``, ``set_grad_enabled``
    and ``inference_mode`` come down to) is also emitted as a graph node, so running the
    graph switches grad mode exactly where ``forward`` did.
    """

    # fx's own stack traces (``record_stack_traces``) symbolise through torch's profiler, whose
    # first use imports torch._dynamo and torch._inductor: 2 s on a plain torch model. The
    # source line comes from graphcheck's frame walk instead (as in the recorded pass).
    record_stack_traces = False

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["module_path"] = self.scope.module_path
        node.meta["module_type"] = self.scope.module_type
        node.meta["location"] = location_here()
        return node

    def trace(self, root, concrete_args=None):
        tracer = self

        def recording_set_grad_enabled(mode):
            set_grad_enabled_op(mode)
            if getattr(tracer, "graph", None) is not None:
                tracer.create_proxy("call_function", set_grad_enabled_op, (bool(mode),), {})

        saved_mode = torch.is_grad_enabled()
        set_grad_enabled_op(True)   # forward's own switches are recorded relative to "enabled"
        torch._C._set_grad_enabled = recording_set_grad_enabled
        try:
            with inference_mode_as_no_grad():
                return super().trace(root, concrete_args)
        finally:
            torch._C._set_grad_enabled = set_grad_enabled_op
            set_grad_enabled_op(saved_mode)


def _symbolic_trace(model: torch.nn.Module, concrete_args: dict | None,
                    meta_tensors: dict[str, torch.Tensor]) -> tuple[fx.GraphModule, fx.Graph]:
    try:
        # Tracing runs forward with Proxies: an attribute forward assigns (``self.mask = ...``)
        # would keep one, and the GraphModule would copy it as a constant. Restore first.
        # Code that reaches weights without a Proxy (``for k in self.key.parameters():
        # k.mul_(m)``, MoCo's momentum update) runs for real while tracing: on meta stand-ins,
        # so it writes to nothing of the user's.
        with preserved(model):
            with swapped_parameters(model, meta_tensors), custom_autograd_functions(refuse_custom_functions), \
                    calling_the_model():
                graph = GradModeTracer().trace(model, concrete_args=concrete_args)
            # The tracer stores tensors made in forward (``torch.zeros(8)``) as constants on the root.
            constants = {node.target: getattr(model, node.target) for node in graph.nodes
                         if node.op == "get_attr" and str(node.target).startswith("_tensor_constant")}
        with preserved(model):   # the GraphModule copies them; the model does not keep them
            for name, value in constants.items():
                setattr(model, name, value)
            return fx.GraphModule(model, graph), graph
    except Exception as exc:
        raise FrontendError(f"torch.fx.symbolic_trace failed: {type(exc).__name__}: {first_line(exc)}",
                            kind="trace") from exc


def trace_fx(subject: Subject, table: ParamTable, device: str, cache: dict) -> GraphBuilder:
    """Trace ``subject.model`` symbolically, then run the traced graph once into the builder."""
    model, inputs = subject.model, subject.args
    concrete_args, run_args = _signature_call(model, inputs, subject.kwargs)
    if "fx" not in cache:   # traced once; only the execution is retried on another device
        cache["fx"] = _symbolic_trace(model, concrete_args, table.execution("meta")[1])
    gm, graph = cache["fx"]
    if not run_args:
        inputs = run_args = infer_inputs(gm)
    execution, tensors = table.execution(device)
    builder = GraphBuilder(table, execution)
    interp = GraphInterpreter(gm, builder)
    # The GraphModule keeps only the submodules forward uses; swap in tensors for those.
    present = {n for n, _ in gm.named_parameters(remove_duplicate=False)} | \
        {n for n, _ in gm.named_buffers(remove_duplicate=False)}
    tensors = {name: t for name, t in tensors.items() if name in present}
    with swapped_parameters(gm, tensors), \
            torch.enable_grad(), torch.device(device):
        outputs = run_interpreter(interp, inputs_on(run_args, device))
        builder.finish(outputs, match_sources(outputs, output_sources(interp, graph)), subject)
    builder.inputs = inputs
    return builder


def _signature_call(model: torch.nn.Module, inputs: tuple, kwargs: dict) -> tuple[dict | None, tuple]:
    """(concrete_args for tracing, the values of the traced graph's placeholders, in order).

    Keyword inputs are bound by forward's signature: each given argument is a placeholder,
    each one left out is fixed at its default (``labels=None`` traces the branch without labels).
    """
    if not kwargs:
        return _none_arguments(model, inputs), tuple(inputs)
    try:
        signature = inspect.signature(model.forward)
        bound = signature.bind(*inputs, **kwargs)
    except (TypeError, ValueError) as exc:
        raise FrontendError(f"the keyword inputs do not match forward's signature: {exc}", kind="trace") from exc
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if any(p.kind in variadic for p in signature.parameters.values()):
        raise FrontendError("torch.fx cannot trace keyword inputs passed through *args or **kwargs",
                            kind="trace")
    concrete, values = {}, []
    for name, parameter in signature.parameters.items():
        value = bound.arguments.get(name, parameter.default)
        if name not in bound.arguments or value is None:
            concrete[name] = value
        values.append(value)
    return concrete or None, tuple(values)


def _none_arguments(model: torch.nn.Module, inputs: tuple) -> dict | None:
    """Positional inputs given as None are fixed for tracing (``attention_mask=None``)."""
    if not any(value is None for value in inputs):
        return None
    try:
        names = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return None
    return {names[i]: None for i, value in enumerate(inputs) if value is None and i < len(names)}



def infer_inputs(gm: fx.GraphModule) -> tuple:
    """Example inputs from the first layer each placeholder feeds (Linear, Conv, Embedding)."""
    inputs = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        tensor = None
        for user in node.users:
            if user.op != "call_module":
                continue
            layer = gm.get_submodule(user.target)
            if isinstance(layer, torch.nn.Linear):
                tensor = torch.randn(2, layer.in_features)
            elif isinstance(layer, torch.nn.Conv2d):
                tensor = torch.randn(2, layer.in_channels, 32, 32)
            elif isinstance(layer, torch.nn.Conv1d):
                tensor = torch.randn(2, layer.in_channels, 64)
            elif isinstance(layer, torch.nn.Embedding):
                tensor = torch.randint(0, layer.num_embeddings, (2, 8))
            if tensor is not None:
                break
        if tensor is None:
            raise FrontendError(
                f"cannot guess a shape for input {node.name!r}: return (model, example_inputs) "
                "from the factory or pass --input-shape", kind="inputs")
        inputs.append(tensor)
    return tuple(inputs)
