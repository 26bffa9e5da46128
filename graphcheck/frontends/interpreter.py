"""Running an fx graph (from torch.fx or torch.export) node by node into the graph builder."""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

from graphcheck.errors import GraphcheckError
from graphcheck.frontends.builder import FrontendError, GraphBuilder, first_line
from graphcheck.frontends.indexing import bool_flags, describe_index, describe_piece
from graphcheck.frontends.patches import set_grad_enabled_op
from graphcheck.ops import SPLITS
from graphcheck.running import inputs_on, meta_value, op_name, stands_in, tensors_in
from graphcheck.sources import location_from_stack_trace


def module_of_node(node: fx.Node) -> tuple[str, str]:
    stack = node.meta.get("nn_module_stack")
    if stack:
        path, kind = list(stack.values())[-1]
        path = re.sub(r"^L\['self'\]\.?", "", str(path))
        path = re.sub(r"\[(\d+)\]", r".\1", path).replace("._modules['", ".").replace("']", "")
        kind = kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]
        return path.lstrip("."), kind
    if "module_path" in node.meta:
        module_type = node.meta.get("module_type")
        return node.meta["module_path"] or "", getattr(module_type, "__name__", "") or ""
    return "", ""


class GraphInterpreter(fx.Interpreter):
    """Runs an fx graph node by node and records each node in the GraphBuilder."""

    def __init__(self, gm: fx.GraphModule, builder: GraphBuilder, *, prefix: str = "",
                 bindings: dict[str, str] | None = None, placeholder_ids: list[str] | None = None,
                 region: str | None = None, originals: dict[str, torch.Tensor] | None = None):
        super().__init__(gm, garbage_collect_values=False)
        self.builder = builder
        self.prefix = prefix
        self.ids: dict[fx.Node, str] = {}
        self.bindings = bindings or {}            # placeholder name -> param/buffer name
        self.placeholder_ids = placeholder_ids    # for nested graphs: the outer node ids
        self._placeholder_index = 0
        # The grad-disabled block (no_grad in forward) the current op runs in, by its first node.
        self.region = region
        self.originals = originals or {}      # placeholder name -> buffer/constant real value

    def _inputs(self, node: fx.Node) -> list[str]:
        return [self.ids[n] for n in node.all_input_nodes if n in self.ids]

    def _on_execution_device(self, args, kwargs):
        """Graphs bake in the device they were traced on (``arange(8, device=cpu)``)."""
        device = self.builder.execution.device
        if device != "meta":
            return args, kwargs

        def move(leaf):
            if isinstance(leaf, torch.device) and leaf.type != "meta":
                return torch.device("meta")
            return leaf
        return pytree.tree_map(move, (args, kwargs))

    def call_function(self, target, args, kwargs):
        args, kwargs = self._on_execution_device(args, kwargs)
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        args, kwargs = self._on_execution_device(args, kwargs)
        if args and stands_in(target, args[0], self.builder.table.real):
            return meta_value(target, args[0])
        return super().call_method(target, args, kwargs)

    def run_node(self, node: fx.Node) -> Any:
        builder = self.builder
        node_id = self.prefix + node.name
        if node.op == "placeholder":
            value = super().run_node(node)
            if self.placeholder_ids is not None:
                self.ids[node] = self.placeholder_ids[self._placeholder_index]
                self._placeholder_index += 1
                return value
            bound = self.bindings.get(node.name)
            if bound is not None and bound in builder.table.alias:
                self.ids[node] = builder.param_node(bound)
                return value
            kind = "buffer" if bound is not None else "input"
            original = self.originals.get(node.name)
            self.ids[node] = builder.add(node_id, kind=kind, target=bound or node.name,
                                         value=value, inputs=[],
                                         extra=zero_flag(original) if kind == "buffer" else None)
            return value
        if node.op == "get_attr":
            value = super().run_node(node)
            original = builder.table.buffers.get(str(node.target), value)
            if isinstance(value, torch.Tensor) and value.device.type != builder.execution.device \
                    and id(value) not in builder.execution.names_by_id:
                value = inputs_on(value, builder.execution.device)   # a lifted constant
            if isinstance(value, torch.Tensor) and (name := builder.execution.names_by_id.get(id(value))):
                self.ids[node] = builder.param_node(name)
            elif isinstance(value, torch.Tensor):
                self.ids[node] = builder.add(node_id, kind="buffer", target=str(node.target),
                                             value=value, inputs=[], extra=zero_flag(original))
            return value
        if node.op == "output":
            return super().run_node(node)
        if node.op == "call_function" and node.target is torch.ops.higher_order.wrap_with_set_grad_enabled:
            return self._run_grad_region(node, node_id)

        module_path, module_type = module_of_node(node)
        inputs = self._inputs(node)
        extra = {}
        if node.op == "call_module":
            submodule = self.fetch_attr(node.target)
            module_path, module_type = str(node.target), type(submodule).__name__
            for name, _ in submodule.named_parameters(prefix=str(node.target), remove_duplicate=False):
                inputs.append(builder.param_node(name))
            target = module_type
            extra["module_call"] = True
            extra["flags"] = [submodule.training]
            if isinstance(getattr(submodule, "p", None), float):   # Dropout(p)
                extra["scalars_of_module"] = [submodule.p]
        else:
            target = op_name(node.target)
            if node.target is getattr and len(node.args) > 1:   # x.data, x.T
                target = str(node.args[1])
            if node.target is set_grad_enabled_op:
                target = "set_grad_enabled"
        extra["scalars"] = scalar_args(node)
        if node.target is set_grad_enabled_op:
            self.region = None if node.args[0] else (self.region or node_id)
        if self.region is not None:
            extra["region"] = self.region
        try:
            value = super().run_node(node)
        except Exception as exc:
            raise FrontendError(f"running {node.format_node()} failed: {type(exc).__name__}: {first_line(exc)}") from exc
        if node.op != "call_module":
            arg_values, kwarg_values = self.fetch_args_kwargs_from_env(node)
            extra["flags"] = bool_flags(arg_values, kwarg_values)
            if (index := describe_index(target, arg_values, kwarg_values)) is not None:
                extra["index"] = index
            elif target == "getitem" and (split := node.args[0]) and isinstance(split, fx.Node) \
                    and op_name(split.target) in SPLITS and split.args and isinstance(split.args[0], fx.Node):
                base = self.env.get(split.args[0])
                if isinstance(base, torch.Tensor) and (index := describe_piece(base.shape, *arg_values[:2])):
                    extra["index"] = index
        extra["scalars"] = extra.pop("scalars_of_module", None) or extra["scalars"]
        location = node.meta.get("location") or location_from_stack_trace(node.stack_trace or node.meta.get("stack_trace"))
        self.ids[node] = builder.add(node_id, kind="op", target=target, value=value, inputs=inputs,
                                     module=module_path, module_type=module_type,
                                     location=location, module_call=extra.pop("module_call", False),
                                     extra=extra)
        return value

    def _run_grad_region(self, node: fx.Node, node_id: str) -> Any:
        """``wrap_with_set_grad_enabled(mode, submod, *args)``: run the nested graph in that mode."""
        mode, submod_node, *arg_nodes = node.args
        submodule = self.fetch_attr(submod_node.target)
        args = self.map_nodes_to_values(tuple(arg_nodes), node)
        outer_ids = [self.ids.get(a) if isinstance(a, fx.Node) else None for a in arg_nodes]
        nested = GraphInterpreter(submodule, self.builder, prefix=f"{node_id}.",
                                   placeholder_ids=outer_ids, region=None if mode else node_id)
        with torch.set_grad_enabled(bool(mode)):
            value = nested.run(*args)
        output_node = next(n for n in submodule.graph.nodes if n.op == "output")
        inner = [nested.ids[n] for n in output_node.all_input_nodes if n in nested.ids]
        module_path, module_type = module_of_node(node)
        self.ids[node] = self.builder.add(node_id, kind="op", target="set_grad_enabled_region",
                                          value=value, inputs=inner, module=module_path,
                                          module_type=module_type,
                                          extra={"region_grad_enabled": bool(mode)})
        return value


def run_interpreter(interp: "GraphInterpreter", args) -> Any:
    try:
        return interp.run(*args)
    except FrontendError as exc:
        # fx's Interpreter appends its own "While executing ... Original traceback" to the message.
        exc.args = (first_line(exc),) if str(exc).strip() else exc.args
        raise
    except GraphcheckError:
        raise
    except Exception as exc:
        raise FrontendError(f"running the traced graph failed: {type(exc).__name__}: {first_line(exc)}") from exc


def zero_flag(value: Any) -> dict:
    """``{"all_zero": True}`` for a real tensor that holds only zeros (a zero mask or buffer)."""
    if isinstance(value, torch.Tensor) and not value.is_meta and value.numel() and \
            value.numel() <= 50_000_000 and not bool(value.detach().any()):
        return {"all_zero": True}
    return {}


def scalar_args(node: fx.Node) -> list:
    """Literal number arguments of a node (``mul(x, 0)``), for the zero-value analysis."""
    return [a for a in list(node.args) + list(node.kwargs.values())
            if isinstance(a, (int, float)) and not isinstance(a, bool)]


def output_sources(interp: GraphInterpreter, graph: fx.Graph) -> list[str | None]:
    output_node = next(n for n in graph.nodes if n.op == "output")
    sources = []
    for leaf in pytree.tree_leaves(output_node.args[0]):
        if isinstance(leaf, fx.Node):
            sources.append(interp.ids.get(leaf))
    return sources


def match_sources(outputs: Any, sources: list) -> list:
    n_tensors = len(tensors_in(outputs))
    return sources if len(sources) == n_tensors else []
