"""The torch.export frontend: ``export(strict=False)``, walking ``wrap_with_set_grad_enabled`` sub-graphs."""

from __future__ import annotations

import contextlib

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from graphcheck.frontends.builder import FrontendError, GraphBuilder, first_line
from graphcheck.frontends.interpreter import GraphInterpreter, match_sources, run_interpreter
from graphcheck.frontends.naming import ParamTable
from graphcheck.frontends.patches import custom_autograd_functions, inference_mode_as_no_grad, refuse_custom_functions
from graphcheck.subject import Subject
from graphcheck.running import inputs_on


def _export(model: torch.nn.Module, inputs: tuple, kwargs: dict, table: ParamTable):
    import logging
    import warnings
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as restore:
            # export logs guard details and fake-tensor tracebacks the user cannot act on
            for name in ("torch", "torch._subclasses.fake_tensor", "torch.fx.experimental.symbolic_shapes"):
                logger = logging.getLogger(name)
                restore.callback(logger.setLevel, logger.level)
                logger.setLevel(logging.CRITICAL)
            warnings.simplefilter("ignore")
            restore.enter_context(inference_mode_as_no_grad())
            restore.enter_context(custom_autograd_functions(refuse_custom_functions))
            device = "meta" if not table.real else "cpu"
            return torch.export.export(model, inputs_on(tuple(inputs), device),
                                       kwargs=inputs_on(kwargs, device) or None, strict=False)
    except Exception as exc:
        raise FrontendError(f"torch.export.export failed: {type(exc).__name__}: {first_line(exc)}",
                            kind="trace") from exc


def trace_export(subject: Subject, table: ParamTable, device: str, cache: dict) -> GraphBuilder:
    """Export ``subject.model`` with the example inputs, then run the program once into the builder."""
    model, inputs, kwargs = subject.model, subject.args, subject.kwargs
    if not inputs and not kwargs:
        raise FrontendError("torch.export needs example inputs", kind="inputs")
    if "export" not in cache:   # exported once; only the execution is retried on another device
        cache["export"] = _export(model, inputs, kwargs, table)
    program = cache["export"]
    from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

    execution, tensors = table.execution(device)
    builder = GraphBuilder(table, execution)
    signature = program.graph_signature
    user_inputs = iter(pytree.tree_leaves((tuple(inputs), _in_export_order(program, kwargs))))
    bindings, args, originals = {}, [], {}
    for spec in signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            value = next(user_inputs)
            # Constants (None, numbers) keep their placeholder too.
            args.append(inputs_on(value, device) if isinstance(spec.arg, TensorArgument) else value)
            continue
        bindings[spec.arg.name] = spec.target
        if spec.kind == InputKind.BUFFER:
            originals[spec.arg.name] = table.buffers.get(spec.target)
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            originals[spec.arg.name] = program.constants.get(spec.target)
        if spec.kind == InputKind.PARAMETER:
            args.append(tensors[spec.target])
        elif spec.kind == InputKind.BUFFER:
            args.append(tensors.get(spec.target, inputs_on(program.state_dict.get(spec.target), device)))
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            args.append(inputs_on(program.constants[spec.target], device))
        else:
            args.append(inputs_on(program.constants.get(spec.target), device))
    gm = program.graph_module
    interp = GraphInterpreter(gm, builder, bindings=bindings, originals=originals)
    with torch.enable_grad(), torch.device(device):
        flat = run_interpreter(interp, args)
        user_positions = [i for i, spec in enumerate(signature.output_specs)
                          if spec.kind == OutputKind.USER_OUTPUT]
        flat = [flat[i] for i in user_positions]
        outputs = pytree.tree_unflatten(flat, program.call_spec.out_spec)
        output_node = next(n for n in gm.graph.nodes if n.op == "output")
        out_nodes = [output_node.args[0][i] for i in user_positions]
        sources = [interp.ids.get(n) if isinstance(n, fx.Node) else None
                   for n, v in zip(out_nodes, flat) if isinstance(v, torch.Tensor)]
        builder.finish(outputs, match_sources(outputs, sources), subject)
    builder.inputs = inputs
    return builder


def _in_export_order(program, kwargs: dict) -> dict:
    """Keyword inputs in the order the exported program's input spec flattened them."""
    if not kwargs:
        return {}
    in_spec = program.call_spec.in_spec
    try:
        keywords = in_spec.child(1) if hasattr(in_spec, "child") else in_spec.children_specs[1]
        keys = list(keywords.context)
    except (AttributeError, IndexError, TypeError):
        return kwargs
    return {key: kwargs[key] for key in keys if key in kwargs}
