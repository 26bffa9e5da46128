"""Running the user's model: tensors in a value, inputs on a device, the default loss, swapped parameters, module stacks.

Every harness that executes the model (the graph builder, the probe, the extra executions,
``--verify``) uses these, so each swaps parameters and tracks the running module the same way;
the loss of a run is :func:`graphcheck.subject.loss_of`'s alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils import _pytree as pytree


def tensors_in(value: Any) -> list[torch.Tensor]:
    """The tensors inside ``value``, in pytree order (tuples, lists, dicts, registered containers)."""
    return [leaf for leaf in leaves_of(value) if isinstance(leaf, torch.Tensor)]


def leaves_of(value: Any) -> list:
    """``pytree.tree_leaves(value)``, with plain tuples, lists and dicts walked here: every recorded
    op calls this a few times, and pytree's generality costs more than the op on meta."""
    found: list = []
    _collect(value, found)
    return found


def _collect(value: Any, found: list) -> None:
    kind = type(value)
    if kind is tuple or kind is list:
        for item in value:
            _collect(item, found)
    elif kind is dict:
        for item in value.values():
            _collect(item, found)
    elif isinstance(value, torch.Tensor) or kind in _LEAVES:
        found.append(value)
    else:   # named tuples, model outputs, registered dataclasses: pytree knows them
        found.extend(pytree.tree_leaves(value))


_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)


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


DEFAULT_LOSS_DESCRIPTION = "default: every floating-point output"
MODEL_LOSS_DESCRIPTION = "output.loss"


def loss_in(value: Any) -> torch.Tensor | None:
    """The tensor ``loss`` a value carries: itself, ``value["loss"]`` or ``value.loss`` (a ModelOutput)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Mapping):
        found = value.get("loss")
    else:
        found = getattr(value, "loss", None) if not isinstance(value, (tuple, list)) else None
    return found if isinstance(found, torch.Tensor) else None


# Turning a tensor into a Python value: on the meta device there is no value to give.
# ``item`` / ``tolist`` results only feed arithmetic (the cut is what matters); a condition
# (``bool``) decides the path, so it is stood in only when no real values exist (``--meta``):
# with real weights the CPU run takes the path the model really takes.
VALUE_READS = frozenset({"item", "tolist"})
CONDITION_READS = frozenset({"__bool__", "__int__", "__float__", "__index__"})


def stands_in(name: str, tensor: Any, real_weights: bool) -> bool:
    """Whether a value read of ``tensor`` on the meta device gets a stand-in value."""
    return isinstance(tensor, torch.Tensor) and tensor.is_meta and (
        name in VALUE_READS or (name in CONDITION_READS and not real_weights))


def meta_value(name: str, tensor: torch.Tensor) -> Any:
    """What a value read of a meta tensor stands in for (no value exists; the gradient is cut
    either way): True for a condition, 1 for a number, a list of ones for ``tolist``."""
    if name == "__bool__":
        return True
    one = 1.0 if tensor.is_floating_point() and name in ("item", "tolist", "__float__") else 1
    if name == "tolist":
        return torch.full(tensor.shape, one).tolist() if tensor.dim() else one
    return float(one) if name == "__float__" else one


def default_loss(output: Any) -> torch.Tensor | None:
    """The model's own loss when its output carries one (``output.loss``, computed from ``labels``);
    otherwise what DistributedDataParallel assumes: every floating-point output tensor feeds the loss."""
    own = loss_in(output) if not isinstance(output, torch.Tensor) else None
    if own is not None:
        return own if own.numel() == 1 else own.sum()
    parts = [t.float().sum() for t in tensors_in(output) if t.is_floating_point() and t.requires_grad]
    return torch.stack(parts).sum() if parts else None


def default_loss_description(output: Any) -> str:
    """Which loss :func:`default_loss` used, as the report says it."""
    if not isinstance(output, torch.Tensor) and loss_in(output) is not None:
        return MODEL_LOSS_DESCRIPTION
    return DEFAULT_LOSS_DESCRIPTION


def batch_of(args: tuple, kwargs: dict) -> Any:
    """The batch a training step receives: the positional inputs (a tuple), the keyword inputs
    (a dict), or ``(args, kwargs)`` when the factory gave both."""
    if kwargs and not args:
        return dict(kwargs)
    return (tuple(args), dict(kwargs)) if kwargs else tuple(args)


def is_lightning_module(model: Any) -> bool:
    """A LightningModule, by duck typing (lightning need not be installed to lint one)."""
    return (isinstance(model, torch.nn.Module) and callable(getattr(model, "training_step", None))
            and any(cls.__name__ == "LightningModule" for cls in type(model).__mro__))


def lightning_step(model: Any, batch: Any) -> Any:
    """What the Lightning trainer calls for one batch."""
    return model.training_step(batch, 0)


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


def own_leaves(params: dict[str, torch.Tensor], device: str) -> dict[str, torch.nn.Parameter]:
    """graphcheck's own leaf for every parameter: empty on meta, a copy of the values elsewhere, so a
    backward pass fills their ``.grad`` and never the user's."""
    return {name: torch.nn.Parameter(torch.empty_like(p, device="meta") if device == "meta" else p.detach().clone(),
                                     requires_grad=p.requires_grad)
            for name, p in params.items()}


def buffers_on(model: torch.nn.Module, device: str) -> dict[str, torch.Tensor]:
    """Every buffer by qualified name, for a run on ``device``: meta stand-ins there, else copies (a
    run's BatchNorm statistics update never reaches the model's own)."""
    return {name: (buf.to("meta") if device == "meta" else buf.detach().clone())
            for name, buf in model.named_buffers(remove_duplicate=False)}


@contextlib.contextmanager
def module_stack(model: torch.nn.Module):
    """A list that holds ``(qualified name, class name)`` of every module running right now.

    Global forward hooks keep it, so ops recorded by a ``TorchFunctionMode`` know their module.
    """
    from torch.nn.modules import module as module_mod

    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    stack: list[tuple[str, str]] = []

    def pre_hook(module, args):
        stack.append((names.get(id(module), ""), type(module).__name__))

    def post_hook(module, args, output):
        if stack:
            stack.pop()

    handles = [module_mod.register_module_forward_pre_hook(pre_hook),
               module_mod.register_module_forward_hook(post_hook, always_call=True)]
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def swapped_parameters(model: torch.nn.Module, tensors: dict[str, torch.Tensor]):
    """Run ``model`` with ``tensors`` in place of its parameters and buffers (by qualified name).

    The module registries are set directly and put back in ``finally``, whatever forward
    raised: a submodule registered under two names (shared layers, tied weights) is one
    object and gets one tensor. Names missing from ``tensors`` keep the module's own.
    """
    saved: list[tuple[dict, str, Any]] = []
    try:
        for name, tensor in tensors.items():
            owner_name, _, attribute = name.rpartition(".")
            try:
                owner = model.get_submodule(owner_name) if owner_name else model
            except AttributeError:
                continue
            for registry in (owner._parameters, owner._buffers):
                if attribute in registry:
                    saved.append((registry, attribute, registry[attribute]))
                    registry[attribute] = tensor
                    break
        yield model
    finally:
        for registry, attribute, original in reversed(saved):
            registry[attribute] = original


class _ModuleState:
    """A copy of everything forward may change on one module: attributes, registries, the mode."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.attributes = dict(module.__dict__)
        # The registries are dicts mutated in place (a hook added, a buffer reassigned).
        self.registries = {key: (value.copy() if isinstance(value, dict) else value)
                           for key, value in module.__dict__.items() if key.startswith("_") and isinstance(value, dict)}

    def restore(self) -> None:
        current = self.module.__dict__
        for key in [k for k in current if k not in self.attributes]:
            del current[key]
        current.update(self.attributes)
        for key, saved in self.registries.items():
            registry = self.attributes[key]
            if registry != saved or list(registry) != list(saved):
                registry.clear()
                registry.update(saved)


@contextlib.contextmanager
def preserved(model: torch.nn.Module):
    """Leave ``model`` exactly as it was, whatever runs inside: attributes forward assigns (tensors
    cached on modules, counters, toggles), parameters, buffers and their values, hooks, training flags.

    Buffer values are copied (forward updates BatchNorm statistics in place); parameters are
    only checked: their values change in place only under an optimizer, which graphcheck never runs.
    """
    modules = list(dict.fromkeys(m for _, m in model.named_modules(remove_duplicate=False)))
    states = [_ModuleState(m) for m in modules]
    buffers = [(b, b.detach().clone()) for m in modules for b in m._buffers.values()
               if isinstance(b, torch.Tensor) and not b.is_meta]
    try:
        yield model
    finally:
        for state in states:
            state.restore()
        with torch.no_grad():
            for buffer, saved in buffers:   # kernels such as batch_norm update in place without a version bump
                buffer.copy_(saved)
