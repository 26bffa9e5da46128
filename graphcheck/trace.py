"""Tracing frontends: torch.fx, torch.export and a recorded forward pass, all building one ModelGraph.

Every frontend does the same two things:

1. It produces the *structure*: ops with their module, source line and data edges.
2. It executes that structure once (on the ``meta`` device when it can, so no weights
   are allocated and no arithmetic is done; on the CPU with the real weights when meta
   cannot run the model) with autograd on, and reads the autograd graph of every op to
   learn which of its inputs it really differentiates. Those are the ``grad`` edges.

The loss is user code and is never traced: it runs on the model's outputs, and the
autograd graph of its result says which outputs reach it differentiably.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import re
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import networkx as nx
import torch
import torch.fx as fx
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from graphcheck.errors import GraphcheckError
from graphcheck.finding import Location
from graphcheck.model_graph import LOSS, ModelGraph, ParamInfo

FRONTENDS = ("fx", "export", "autograd")

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_GRAPHCHECK_DIR = os.path.dirname(__file__) + os.sep
_SKIP_DIRS = (_TORCH_DIR, _GRAPHCHECK_DIR, os.path.dirname(contextlib.__file__) + os.sep + "contextlib.py")

# Ops whose derivative is zero almost everywhere: a gradient through them is all zeros.
ZERO_DERIVATIVE_OPS = frozenset({
    "round", "floor", "ceil", "trunc", "fix", "sign", "sgn", "signbit",
    "round_", "floor_", "ceil_", "trunc_", "sign_",
})


class FrontendError(Exception):
    """A frontend could not trace or run the model (the next frontend is tried).

    ``kind`` says what failed: "trace" (the tracer itself: another device will not help),
    "inputs" (it needs example inputs), "run" (executing the traced model on this device),
    "loss" (the user's loss on this frontend's outputs).
    """

    def __init__(self, message: str, kind: str = "run"):
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------- helpers

def tensors_in(value: Any) -> list[torch.Tensor]:
    return [leaf for leaf in pytree.tree_leaves(value) if isinstance(leaf, torch.Tensor)]


_PREFERRED_FILES: contextvars.ContextVar[frozenset] = contextvars.ContextVar("preferred", default=frozenset())


@contextlib.contextmanager
def prefer_sources(*files: str | None):
    """Point findings at lines of these files (the target's) when the stack passes through them."""
    extra = {os.path.abspath(f) for f in files if f}
    token = _PREFERRED_FILES.set(_PREFERRED_FILES.get() | extra)
    try:
        yield
    finally:
        _PREFERRED_FILES.reset(token)


def location_from_frames(frames: Iterable[tuple[str, int]]) -> Location | None:
    """The innermost frame in the target's own files, else the innermost that is not torch or graphcheck.

    A wrapper around a library model should hear about *its* line (``h = self.bert(x)`` under
    ``no_grad``), not about a line deep inside the library.
    """
    preferred = _PREFERRED_FILES.get()
    best = best_own = best_preferred = None
    for filename, lineno in frames:
        if not filename or filename.startswith("<") or filename.startswith(_SKIP_DIRS):
            continue
        best = Location(filename, int(lineno))
        if not is_library_file(filename):
            best_own = best
        if preferred and os.path.abspath(filename) in preferred:
            best_preferred = best
    return best_preferred or best_own or best


def _library_dirs() -> tuple[str, ...]:
    import site
    import sysconfig
    dirs = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:   # virtualenvs without site.getsitepackages
        pass
    return tuple(os.path.join(os.path.abspath(d), "") for d in dirs)


_LIBRARY_DIRS = _library_dirs()


def is_library_file(filename: str) -> bool:
    """Installed packages (transformers, timm): code the user did not write."""
    path = os.path.abspath(filename)
    return path.startswith(_LIBRARY_DIRS) or f"{os.sep}site-packages{os.sep}" in path \
        or f"{os.sep}dist-packages{os.sep}" in path


_FRAME_RE = re.compile(r'File "([^"]+)", line (\d+)')


def location_from_stack_trace(stack_trace: str | None) -> Location | None:
    if not stack_trace:
        return None
    return location_from_frames((m.group(1), int(m.group(2))) for m in _FRAME_RE.finditer(stack_trace))


_STACK_BASE: contextvars.ContextVar[int] = contextvars.ContextVar("stack_base", default=0)


@contextlib.contextmanager
def calling_the_model():
    """Mark the frame that calls the model: frames above it (the CLI, pytest) are never a location."""
    token = _STACK_BASE.set(len(traceback.extract_stack()) - 2)   # the caller's frame, inside `with`
    try:
        yield
    finally:
        _STACK_BASE.reset(token)


def location_here() -> Location | None:
    """Source line of the op running now (under ``calling_the_model``)."""
    frames = traceback.extract_stack()[_STACK_BASE.get():]
    return location_from_frames((f.filename, f.lineno) for f in frames)


def op_name(target: Any) -> str:
    """Readable name of an fx target or a torch function (``linear``, ``argmax``, ``detach``)."""
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return target._schema.name.split("::")[-1]
    if isinstance(target, torch._ops.HigherOrderOperator):
        return target.name()
    name = getattr(target, "__name__", None) or repr(target)
    if name == "__get__":  # a property read through __torch_function__ (Tensor.data)
        owner = getattr(target, "__self__", None)
        name = getattr(owner, "__name__", name)
    return name


def inputs_on(value: Any, device: str, generator: torch.Generator | None = None) -> Any:
    """Inputs moved to ``device`` (copies). Inputs known only by their shape (meta), or every
    floating input when a ``generator`` is given, get fresh random values there."""
    def convert(leaf):
        if not isinstance(leaf, torch.Tensor):
            return leaf
        if device != "meta" and (leaf.is_meta or (generator is not None and leaf.is_floating_point())):
            if leaf.is_floating_point():
                return torch.randn(leaf.shape, dtype=leaf.dtype, generator=generator).to(device)
            return torch.zeros(leaf.shape, dtype=leaf.dtype, device=device)
        return leaf.detach().to(device) if leaf.device.type != device else leaf.detach().clone()
    return pytree.tree_map(convert, value)


def default_loss(output: Any) -> torch.Tensor | None:
    """What DistributedDataParallel assumes: every floating-point output tensor feeds the loss."""
    parts = [t.float().sum() for t in tensors_in(output) if t.is_floating_point() and t.requires_grad]
    return torch.stack(parts).sum() if parts else None


@dataclass
class Execution:
    """Where the structure is executed: the meta device or the CPU with the real weights."""
    device: str                         # "meta" or "cpu"
    params: dict[str, torch.Tensor]     # canonical name -> tensor used in the run
    names_by_id: dict[int, str]         # id(tensor used in the run) -> canonical name


def canonical_parameters(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``named_parameters()`` (the first name of each tensor) and every alias -> its canonical name."""
    canonical: dict[str, torch.Tensor] = {}
    alias: dict[str, str] = {}
    first_by_id: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        first = first_by_id.setdefault(id(param), name)
        alias[name] = first
        canonical.setdefault(first, param)
    return canonical, alias


class ParamTable:
    """Canonical parameter names (as ``named_parameters()`` gives them) and their aliases."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        tensors, self.alias = canonical_parameters(model)
        self.canonical: dict[str, ParamInfo] = {
            name: ParamInfo(name=name, shape=tuple(param.shape), requires_grad=param.requires_grad,
                            module=name.rpartition(".")[0], location=_assignment_location(model, name))
            for name, param in tensors.items()}
        for name, first in self.alias.items():
            if name != first:
                self.canonical[first].aliases.append(name)
        self.buffers = {name: buf for name, buf in model.named_buffers(remove_duplicate=False)}
        self.real = any(not p.is_meta for p in model.parameters())

    def execution(self, device: str) -> tuple[Execution, dict[str, torch.Tensor]]:
        """Tensors to run with: fresh meta leaves, or the real parameters on the CPU."""
        named = dict(self.model.named_parameters(remove_duplicate=False))
        params: dict[str, torch.Tensor] = {}
        for name in self.canonical:
            real = named[name]
            if device == "meta":
                params[name] = torch.nn.Parameter(torch.empty_like(real, device="meta"),
                                                  requires_grad=real.requires_grad)
            else:
                params[name] = real
        everything = {alias: params[canon] for alias, canon in self.alias.items()}
        for name, buf in self.buffers.items():
            everything[name] = buf.to("meta") if device == "meta" else buf
        names_by_id = {id(t): name for name, t in params.items()}
        return Execution(device, params, names_by_id), everything


def _assignment_location(model: torch.nn.Module, param_name: str) -> Location | None:
    """Source line where the parameter's module (or the parameter) is assigned in ``__init__``."""
    parts = param_name.split(".")
    owner = model
    for depth in range(len(parts) - 1):
        child = getattr(owner, parts[depth], None) if not parts[depth].isdigit() else None
        if child is None and hasattr(owner, "__getitem__"):
            try:
                child = owner[int(parts[depth])]
            except Exception:
                child = None
        if not isinstance(child, torch.nn.Module) or _is_library(type(child)):
            return _attribute_line(type(owner), parts[depth])
        owner = child
    return _attribute_line(type(owner), parts[-1])


@functools.lru_cache(maxsize=None)
def _is_library(cls: type) -> bool:
    try:
        return inspect.getsourcefile(cls).startswith(_TORCH_DIR)
    except (TypeError, OSError):
        return True


@functools.lru_cache(maxsize=None)
def _attribute_line(cls: type, attribute: str) -> Location | None:
    if attribute.isdigit():
        return None
    pattern = re.compile(r"\b\w+\." + re.escape(attribute) + r"\s*(:[^=]*)?=(?!=)")
    for klass in cls.__mro__:
        if klass is torch.nn.Module or _is_library(klass):
            continue
        try:
            lines, start = inspect.getsourcelines(klass)
            filename = inspect.getsourcefile(klass)
        except (TypeError, OSError):
            continue
        for offset, line in enumerate(lines):
            if pattern.search(line):
                return Location(filename, start + offset)
    return None


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


def _tensor_meta(value: Any) -> dict:
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
    }


class GraphBuilder:
    """Accumulates nodes and edges while a frontend walks and executes the model."""

    def __init__(self, table: ParamTable, execution: Execution):
        self.graph = nx.DiGraph()
        self.table = table
        self.execution = execution
        self.tracker = GradTracker()

    # -- nodes
    def param_node(self, name: str) -> str:
        canonical = self.table.alias.get(name, name)
        node_id = f"param:{canonical}"
        if node_id not in self.graph:
            info = self.table.canonical[canonical]
            tensor = self.execution.params[canonical]
            self.graph.add_node(node_id, kind="parameter", param=canonical, target=canonical,
                                module=info.module, module_type="", location=info.location,
                                **_tensor_meta(tensor), grad_enabled=True)
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
                            **_tensor_meta(value), **(extra or {}))
        for source in inputs:
            if source != node_id:
                self.graph.add_edge(source, node_id, data=True)
        for source in grad_from:
            if source != node_id:
                if self.graph.has_edge(source, node_id):
                    self.graph.edges[source, node_id]["grad"] = True
                else:
                    self.graph.add_edge(source, node_id, data=False, grad=True)
        self.tracker.register(node_id, value)
        return node_id

    def finish(self, outputs: Any, output_sources: list[str | None],
               loss_fn: Callable | None) -> None:
        """Add one node per output tensor and the loss node with its real gradient inputs."""
        leaves, _ = pytree.tree_flatten_with_path(outputs)
        tensor_leaves = [(path, leaf) for path, leaf in leaves if isinstance(leaf, torch.Tensor)]
        if len(output_sources) != len(tensor_leaves):
            output_sources = [None] * len(tensor_leaves)
        for (path, leaf), source in zip(tensor_leaves, output_sources):
            label = "output" + pytree.keystr(path)
            node_id = f"output:{pytree.keystr(path)}"
            inputs = [source] if source else []
            self.add(node_id, kind="output", target=label, value=leaf, inputs=inputs)
        loss = compute_loss(loss_fn, outputs)
        self.add(LOSS, kind="loss", target="loss", value=loss, inputs=[])
        for source in list(self.graph.predecessors(LOSS)):
            self.graph.edges[source, LOSS]["data"] = True


def compute_loss(loss_fn: Callable | None, outputs: Any) -> torch.Tensor:
    if loss_fn is None:
        loss = default_loss(outputs)
        return loss if loss is not None else torch.zeros((), device="meta")
    try:
        loss = loss_fn(outputs)
    except Exception as exc:
        error = LossError(f"the loss raised {type(exc).__name__}: {exc}", kind="loss")
        error.cause = f"{type(exc).__name__}: {exc}"
        raise error from exc
    if not isinstance(loss, torch.Tensor):
        raise GraphcheckError(
            f"The loss returned {type(loss).__name__}, not a tensor. The loss must be a "
            "callable loss(output) that returns a scalar tensor computed from the model's "
            "output (for example `return out.logits.pow(2).mean()`).")
    if loss.numel() != 1:
        raise GraphcheckError(
            f"The loss returned a tensor of shape {tuple(loss.shape)}, not a scalar. Reduce "
            "it (for example with `.mean()` or `.sum()`) so that `loss.backward()` works.")
    return loss


class LossError(FrontendError):
    """The loss failed on this frontend's outputs (it may work on the CPU)."""


# --------------------------------------------------------------------------- torch.fx

_set_grad_enabled = torch._C._set_grad_enabled


class _InferenceModeAsNoGrad:
    """``torch.inference_mode`` as the tracers can see it: a ``set_grad_enabled(False)`` block.

    For gradients the two are the same; fx and torch.export record grad-mode switches but
    not inference mode.
    """

    def __init__(self, mode: bool = True):
        self.mode = mode

    def __enter__(self):
        self.prev = torch.is_grad_enabled()
        torch.set_grad_enabled(self.prev and not self.mode)

    def __exit__(self, *exc):
        torch.set_grad_enabled(self.prev)

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _InferenceModeAsNoGrad(self.mode):
                return fn(*args, **kwargs)
        return wrapper

    def clone(self):
        return _InferenceModeAsNoGrad(self.mode)


@contextlib.contextmanager
def _inference_mode_as_no_grad():
    saved = torch.inference_mode
    torch.inference_mode = torch.autograd.grad_mode.inference_mode = _InferenceModeAsNoGrad
    try:
        yield
    finally:
        torch.inference_mode = torch.autograd.grad_mode.inference_mode = saved


class _GradModeTracer(fx.Tracer):
    """symbolic_trace that also records grad-mode switches (``no_grad`` in forward).

    torch.fx does not record ``torch.no_grad()`` blocks; while tracing, every call of
    ``torch._C._set_grad_enabled`` (what ``no_grad``, ``enable_grad``, ``set_grad_enabled``
    and ``inference_mode`` come down to) is also emitted as a graph node, so running the
    graph switches grad mode exactly where ``forward`` did.
    """

    record_stack_traces = True

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["module_path"] = self.scope.module_path
        node.meta["module_type"] = self.scope.module_type
        return node

    def trace(self, root, concrete_args=None):
        tracer = self

        def recording_set_grad_enabled(mode):
            _set_grad_enabled(mode)
            if getattr(tracer, "graph", None) is not None:
                tracer.create_proxy("call_function", _set_grad_enabled, (bool(mode),), {})

        saved_mode = torch.is_grad_enabled()
        _set_grad_enabled(True)   # forward's own switches are recorded relative to "enabled"
        torch._C._set_grad_enabled = recording_set_grad_enabled
        try:
            with _inference_mode_as_no_grad():
                return super().trace(root, concrete_args)
        finally:
            torch._C._set_grad_enabled = _set_grad_enabled
            _set_grad_enabled(saved_mode)


def _module_of_node(node: fx.Node) -> tuple[str, str]:
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


class _GraphInterpreter(fx.Interpreter):
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
        if target in ("item", "tolist") and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            # A meta tensor has no value; the op cuts the gradient either way.
            return 1.0 if args[0].is_floating_point() else 1
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
                                         extra=_zero_flag(original) if kind == "buffer" else None)
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
                                             value=value, inputs=[], extra=_zero_flag(original))
            return value
        if node.op == "output":
            return super().run_node(node)
        if node.op == "call_function" and node.target is torch.ops.higher_order.wrap_with_set_grad_enabled:
            return self._run_grad_region(node, node_id)

        module_path, module_type = _module_of_node(node)
        inputs = self._inputs(node)
        extra = {}
        if node.op == "call_module":
            submodule = self.fetch_attr(node.target)
            module_path, module_type = str(node.target), type(submodule).__name__
            for name, _ in submodule.named_parameters(prefix=str(node.target), remove_duplicate=False):
                inputs.append(builder.param_node(name))
            target = module_type
            extra["module_call"] = True
        else:
            target = op_name(node.target)
            if node.target is getattr and len(node.args) > 1:   # x.data, x.T
                target = str(node.args[1])
            if node.target is _set_grad_enabled:
                target = "set_grad_enabled"
        extra["scalars"] = _scalar_args(node)
        if node.target is _set_grad_enabled:
            self.region = None if node.args[0] else (self.region or node_id)
        if self.region is not None:
            extra["region"] = self.region
        try:
            value = super().run_node(node)
        except Exception as exc:
            raise FrontendError(f"running {node.format_node()} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
        location = location_from_stack_trace(node.stack_trace or node.meta.get("stack_trace"))
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
        nested = _GraphInterpreter(submodule, self.builder, prefix=f"{node_id}.",
                                   placeholder_ids=outer_ids, region=None if mode else node_id)
        with torch.set_grad_enabled(bool(mode)):
            value = nested.run(*args)
        output_node = next(n for n in submodule.graph.nodes if n.op == "output")
        inner = [nested.ids[n] for n in output_node.all_input_nodes if n in nested.ids]
        module_path, module_type = _module_of_node(node)
        self.ids[node] = self.builder.add(node_id, kind="op", target="set_grad_enabled_region",
                                          value=value, inputs=inner, module=module_path,
                                          module_type=module_type,
                                          extra={"region_grad_enabled": bool(mode)})
        return value


def _run_interpreter(interp: "_GraphInterpreter", args) -> Any:
    try:
        return interp.run(*args)
    except FrontendError as exc:
        # fx's Interpreter appends its own "While executing ... Original traceback" to the message.
        exc.args = (_first_line(exc),) if str(exc).strip() else exc.args
        raise
    except GraphcheckError:
        raise
    except Exception as exc:
        raise FrontendError(f"running the traced graph failed: {type(exc).__name__}: {_first_line(exc)}") from exc


def _zero_flag(value: Any) -> dict:
    """``{"all_zero": True}`` for a real tensor that holds only zeros (a zero mask or buffer)."""
    if isinstance(value, torch.Tensor) and not value.is_meta and value.numel() and \
            value.numel() <= 50_000_000 and not bool(value.detach().any()):
        return {"all_zero": True}
    return {}


def _scalar_args(node: fx.Node) -> list:
    """Literal number arguments of a node (``mul(x, 0)``), for the zero-value analysis."""
    return [a for a in list(node.args) + list(node.kwargs.values())
            if isinstance(a, (int, float)) and not isinstance(a, bool)]


def _output_sources(interp: _GraphInterpreter, graph: fx.Graph) -> list[str | None]:
    output_node = next(n for n in graph.nodes if n.op == "output")
    sources = []
    for leaf in pytree.tree_leaves(output_node.args[0]):
        if isinstance(leaf, fx.Node):
            sources.append(interp.ids.get(leaf))
    return sources


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _symbolic_trace(model: torch.nn.Module, inputs: tuple) -> tuple[fx.GraphModule, fx.Graph]:
    try:
        graph = _GradModeTracer().trace(model, concrete_args=_none_arguments(model, inputs))
        return fx.GraphModule(model, graph), graph
    except Exception as exc:
        raise FrontendError(f"torch.fx.symbolic_trace failed: {type(exc).__name__}: {_first_line(exc)}",
                            kind="trace") from exc


def trace_fx(model: torch.nn.Module, inputs: tuple, table: ParamTable, loss_fn, device: str,
             cache: dict) -> GraphBuilder:
    if "fx" not in cache:   # traced once; only the execution is retried on another device
        cache["fx"] = _symbolic_trace(model, inputs)
    gm, graph = cache["fx"]
    if not inputs:
        inputs = infer_inputs(gm)
    execution, tensors = table.execution(device)
    builder = GraphBuilder(table, execution)
    interp = _GraphInterpreter(gm, builder)
    # The GraphModule keeps only the submodules forward uses; swap in tensors for those.
    present = {n for n, _ in gm.named_parameters(remove_duplicate=False)} | \
        {n for n, _ in gm.named_buffers(remove_duplicate=False)}
    tensors = {name: t for name, t in tensors.items() if name in present}
    with torch.nn.utils.stateless._reparametrize_module(gm, tensors, tie_weights=True), \
            torch.enable_grad(), torch.device(device):
        outputs = _run_interpreter(interp, inputs_on(inputs, device))
        builder.finish(outputs, _match_sources(outputs, _output_sources(interp, graph)), loss_fn)
    builder.inputs = inputs
    return builder


def _none_arguments(model: torch.nn.Module, inputs: tuple) -> dict | None:
    """Positional inputs given as None are fixed for tracing (``attention_mask=None``)."""
    if not any(value is None for value in inputs):
        return None
    try:
        names = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return None
    return {names[i]: None for i, value in enumerate(inputs) if value is None and i < len(names)}


def _match_sources(outputs: Any, sources: list) -> list:
    n_tensors = len(tensors_in(outputs))
    return sources if len(sources) == n_tensors else []


# --------------------------------------------------------------------------- torch.export

def _export(model: torch.nn.Module, inputs: tuple, table: ParamTable):
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
            restore.enter_context(_inference_mode_as_no_grad())
            return torch.export.export(model, inputs_on(tuple(inputs), "meta" if not table.real else "cpu"),
                                       strict=False)
    except Exception as exc:
        raise FrontendError(f"torch.export.export failed: {type(exc).__name__}: {_first_line(exc)}",
                            kind="trace") from exc


def trace_export(model: torch.nn.Module, inputs: tuple, table: ParamTable, loss_fn, device: str,
                 cache: dict) -> GraphBuilder:
    if not inputs:
        raise FrontendError("torch.export needs example inputs", kind="inputs")
    if "export" not in cache:   # exported once; only the execution is retried on another device
        cache["export"] = _export(model, inputs, table)
    program = cache["export"]
    from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

    execution, tensors = table.execution(device)
    builder = GraphBuilder(table, execution)
    signature = program.graph_signature
    user_inputs = iter(pytree.tree_leaves((tuple(inputs), {})))
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
    interp = _GraphInterpreter(gm, builder, bindings=bindings, originals=originals)
    with torch.enable_grad(), torch.device(device):
        flat = _run_interpreter(interp, args)
        user_positions = [i for i, spec in enumerate(signature.output_specs)
                          if spec.kind == OutputKind.USER_OUTPUT]
        flat = [flat[i] for i in user_positions]
        outputs = pytree.tree_unflatten(flat, program.call_spec.out_spec)
        output_node = next(n for n in gm.graph.nodes if n.op == "output")
        out_nodes = [output_node.args[0][i] for i in user_positions]
        sources = [interp.ids.get(n) if isinstance(n, fx.Node) else None
                   for n, v in zip(out_nodes, flat) if isinstance(v, torch.Tensor)]
        builder.finish(outputs, _match_sources(outputs, sources), loss_fn)
    builder.inputs = inputs
    return builder


# --------------------------------------------------------------------------- recorded forward

class _Recorder(TorchFunctionMode):
    """Records every torch function a forward pass calls, with module, source line and grad mode."""

    _ATTRIBUTES = {"data", "T", "mT", "H", "mH", "real", "imag", "grad"}

    def __init__(self, builder: GraphBuilder, module_stack: list[tuple[str, str]]):
        super().__init__()
        self.builder = builder
        self.module_stack = module_stack
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
        extra = {"scalars": [a for a in leaves if isinstance(a, (int, float)) and not isinstance(a, bool)]}
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
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    stack: list[tuple[str, str]] = []

    def pre_hook(module, args):
        stack.append((names.get(id(module), ""), type(module).__name__))

    def post_hook(module, args, output):
        if stack:
            stack.pop()

    from torch.nn.modules import module as module_mod
    handles = [module_mod.register_module_forward_pre_hook(pre_hook),
               module_mod.register_module_forward_hook(post_hook, always_call=True)]
    recorder = _Recorder(builder, stack)
    run_inputs = inputs_on(inputs, device)
    input_ids = []
    for index, tensor in enumerate(tensors_in(run_inputs)):
        node_id = builder.add(f"input_{index}", kind="input", target=f"input_{index}", value=tensor, inputs=[])
        recorder.register_value(node_id, tensor)
        input_ids.append(node_id)
    try:
        with torch.nn.utils.stateless._reparametrize_module(model, tensors, tie_weights=True), \
                torch.enable_grad(), torch.device(device):
            with recorder, calling_the_model():
                outputs = model(*run_inputs)
            sources = [recorder.producer.get(id(t)) for t in tensors_in(outputs)]
            builder.finish(outputs, sources, loss_fn)
    except (GraphcheckError, FrontendError):
        raise
    except Exception as exc:
        raise FrontendError(f"the forward pass on {device} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    finally:
        for handle in handles:
            handle.remove()
    builder.inputs = inputs
    return builder


# --------------------------------------------------------------------------- inputs

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


# --------------------------------------------------------------------------- checkpointing

class _ReentrantCheckpointInTrace(Exception):
    """fx cannot decide what a reentrant checkpoint differentiates (it needs real tensors)."""


@contextlib.contextmanager
def _reentrant_checkpoint_semantics():
    """Run ``checkpoint(fn, *args, use_reentrant=True)`` as what it means for gradients.

    A reentrant checkpoint runs ``fn`` under no_grad and recomputes it in backward, so its
    autograd node hides the parameters used inside. For the analysis it is run directly:
    with grad when a tensor argument requires grad, else under no_grad (then nothing inside
    gets a gradient: the classic "None of the inputs have requires_grad=True" bug).
    """
    from torch.utils import checkpoint as checkpoint_module

    original = checkpoint_module.CheckpointFunction.apply

    def apply(function, preserve_rng_state, *args):
        if any(isinstance(a, fx.Proxy) for a in args):
            raise _ReentrantCheckpointInTrace("a reentrant torch.utils.checkpoint needs concrete tensors")
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return function(*args)
        with torch.no_grad():
            return function(*args)

    checkpoint_module.CheckpointFunction.apply = apply
    try:
        yield
    finally:
        checkpoint_module.CheckpointFunction.apply = original


# --------------------------------------------------------------------------- entry point

_FRONTEND_FUNCTIONS = {"fx": trace_fx, "export": trace_export, "autograd": trace_autograd}


def build_graph(model: torch.nn.Module, inputs: tuple, loss_fn: Callable | None = None, *,
                mode: str = "train", frontends: Iterable[str] = FRONTENDS,
                target: str = "") -> ModelGraph:
    """Trace ``model`` with the first frontend that works and return its ModelGraph."""
    if mode not in ("train", "eval"):
        raise GraphcheckError(f"mode must be 'train' or 'eval', not {mode!r}")
    model.train(mode == "train")
    try:
        model_file = inspect.getsourcefile(type(model))
    except (TypeError, OSError):
        model_file = None
    if model_file and is_library_file(model_file):
        model_file = None   # a library model: the user's own frames, if any, say more
    with prefer_sources(model_file):
        return _build_graph(model, tuple(inputs), loss_fn, mode, frontends, target)


def _build_graph(model, inputs, loss_fn, mode, frontends, target) -> ModelGraph:
    table = ParamTable(model)
    devices = ["meta", "cpu"] if table.real else ["meta"]
    failures: list[tuple[str, str, FrontendError]] = []
    for frontend in frontends:
        if frontend not in _FRONTEND_FUNCTIONS:
            raise GraphcheckError(f"Unknown frontend {frontend!r}; choose from {', '.join(FRONTENDS)}.")
        cache: dict = {}
        for device in devices:
            try:
                with _reentrant_checkpoint_semantics():
                    builder = _FRONTEND_FUNCTIONS[frontend](model, tuple(inputs), table, loss_fn, device, cache)
            except FrontendError as exc:
                failures.append((frontend, device, exc))
                if exc.kind in ("trace", "inputs"):
                    break   # running on another device would not help
                continue
            notes = [f"{f} ({d}) frontend did not work: {e}" for f, d, e in failures]
            return ModelGraph(graph=builder.graph, parameters=table.canonical, frontend=frontend,
                              mode=mode, device=device, target=target, notes=notes, model=model,
                              inputs=tuple(builder.inputs), loss_fn=loss_fn)
    raise TracingError(failures)


class TracingError(GraphcheckError):
    """No frontend worked; the message leads with the most telling failure."""

    def __init__(self, failures: list[tuple[str, str, FrontendError]]):
        detail = "\n".join(f"{f} ({d}): {e}" for f, d, e in failures)
        listed = " ".join(f"[{f} ({d}): {e}]" for f, d, e in failures)
        kinds = {e.kind for _, _, e in failures}
        forward = [e for f, _, e in failures if f == "autograd" and e.kind == "run"]
        losses = [e for _, _, e in failures if e.kind == "loss"]
        if losses and kinds <= {"loss", "trace", "inputs"}:
            # Wherever the model ran, the loss failed on its output: that is the loss's problem.
            message = (f"The loss raised an error on the model's output: {losses[-1].cause}. "
                       "graphcheck calls loss(output) with exactly what the model returns (a "
                       "tensor, tuple, dict or ModelOutput); check that the loss accepts it.")
        elif forward:
            # The plain forward pass fails too: the model does not run on these inputs at all.
            message = (f"The model fails on the example inputs: {str(forward[-1]).split('failed: ', 1)[-1]}. "
                       "Check that `model(*example_inputs)` runs in Python (input shapes and dtypes, "
                       "the device); run with --debug to see what each tracer reported.")
        elif kinds <= {"inputs", "trace"} and "inputs" in kinds:
            message = ("No frontend could trace the model without example inputs: return "
                       "(model, example_inputs) from the factory or pass --input-shape (one per "
                       "positional input). " + listed)
        else:
            message = "No frontend could trace the model. " + listed + " Run with --debug for the tracebacks."
        super().__init__(message, detail=detail)
