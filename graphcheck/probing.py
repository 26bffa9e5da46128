"""Running the probe pass: one forward + backward with the model's real initial weights, for the numeric rules.

The GC3xx rules that talk about numbers at initialisation (saturated activations, dead
ReLUs, vanishing or exploding gradients) share this one measurement, memoised on the
graph (``probe(graph)``). It never changes the model: parameters and buffers are
cloned and swapped in with ``torch.func.functional_call``, so the user's ``.grad`` and
BatchNorm running statistics stay untouched.

What it records:

* for every call of a saturating or ReLU-family activation (in execution order): the
  module that ran it, the source line, the statistics of its *input* (the
  pre-activation): mean derivative relative to the activation's largest derivative,
  fraction of saturated entries, fraction of units negative for every sample;
* for every trainable weight (a parameter with two or more dimensions), in the order
  forward first uses it: the norm of its gradient after ``loss.backward()``.

The batch is the example inputs. Dead units need many samples, so when the batch is
small a few more forward passes are made with floating-point inputs redrawn from a
normal distribution with the example's mean and standard deviation.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from graphcheck.ops import CHANNEL_FIRST, SATURATING, activation_kind
from graphcheck.probe_data import ActivationStats, LayerGradient, Probe
from graphcheck.running import call_with, canonical_parameters, default_loss, loss_in, inputs_on, module_stack, op_name, preserved, tensors_in
from graphcheck.sources import calling_the_model, location_here

# Largest derivative of each saturating activation (sigmoid' <= 1/4, the others <= 1).
MAX_PROBE_INPUT_ELEMENTS = 10_000_000


MAX_PROBE_PARAMETERS = 200_000_000


# An entry counts as saturated where the derivative is below this share of the maximum.
SATURATED_BELOW = 0.1


def relative_derivative(kind: str, x: torch.Tensor, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    """The activation's derivative at ``x`` divided by its largest derivative (1 = unsaturated)."""
    if kind == "sigmoid":
        s = torch.sigmoid(x)
        return 4.0 * s * (1.0 - s)
    if kind == "tanh":
        return 1.0 - torch.tanh(x) ** 2
    if kind == "hardtanh":
        return ((x > low) & (x < high)).to(x.dtype)
    if kind == "hardsigmoid":
        return ((x > -3.0) & (x < 3.0)).to(x.dtype)
    if kind == "softsign":
        return 1.0 / (1.0 + x.abs()) ** 2
    if kind == "log_sigmoid":
        return torch.sigmoid(-x)
    raise ValueError(kind)


def _unit_dim(producer: str | None, ndim: int) -> int:
    if ndim >= 3 and producer in CHANNEL_FIRST:
        return 1
    return ndim - 1 if ndim else 0


def _per_unit_max(x: torch.Tensor, dim: int) -> torch.Tensor:
    if x.ndim == 0:
        return x.reshape(1)
    return x.transpose(0, dim).reshape(x.shape[dim], -1).amax(dim=1)


class _ActivationRecorder(TorchFunctionMode):
    """Records pre-activation statistics at every saturating / ReLU-family call."""

    def __init__(self, modules: list[tuple[str, str]], param_ids: set[int]):
        super().__init__()
        self.module_stack = modules
        self.param_ids = param_ids
        self.records: list[ActivationStats] = []
        self.counts: Counter = Counter()
        self.producer: dict[int, str] = {}
        self.param_order: list[int] = []
        self._seen_params: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        module_path, module_type = self.module_stack[-1] if self.module_stack else ("", "")
        for tensor in tensors_in((args, kwargs)):
            if id(tensor) in self.param_ids and id(tensor) not in self._seen_params:
                self._seen_params.add(id(tensor))
                self.param_order.append(id(tensor))
        scalars = [a for a in pytree.tree_leaves((args, kwargs))
                   if isinstance(a, (int, float)) and not isinstance(a, bool)]
        kind = activation_kind(name, module_type, scalars)
        first = args[0] if args else None
        if kind is not None and isinstance(first, torch.Tensor) and first.is_floating_point() \
                and first.numel():
            self._record(kind, name, first, module_path, module_type, scalars)
        value = func(*args, **kwargs)
        for tensor in tensors_in(value):
            self.producer[id(tensor)] = name
        return value

    def _record(self, kind, name, x, module_path, module_type, scalars) -> None:
        unit_dim = _unit_dim(self.producer.get(id(x)), x.ndim)
        with torch.no_grad():
            x = x.detach().float()
            occurrence = self.counts[(module_path, kind)]
            self.counts[(module_path, kind)] += 1
            stats = ActivationStats(kind=kind, module=module_path, module_type=module_type,
                                    occurrence=occurrence, location=location_here(),
                                    std=float(x.std()) if x.numel() > 1 else 0.0, mean=float(x.mean()),
                                    units=x.shape[unit_dim] if x.ndim else 1, unit_dim=unit_dim)
            if kind in SATURATING:
                low, high = (list(scalars[:2]) + [-1.0, 1.0])[:2] if kind == "hardtanh" else (-1.0, 1.0)
                derivative = relative_derivative(kind, x, float(low), float(high))
                stats.mean_derivative = float(derivative.mean())
                stats.saturated_fraction = float((derivative < SATURATED_BELOW).float().mean())
            else:
                stats.unit_max = _per_unit_max(x, unit_dim)
            self.records.append(stats)


def _redraw(inputs: tuple, generator: torch.Generator) -> tuple:
    """Floating-point inputs redrawn with the same shape, mean and std (integers kept)."""
    def fresh(leaf):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point() and leaf.numel() > 1:
            noise = torch.randn(leaf.shape, generator=generator, dtype=leaf.dtype)
            return leaf.mean() + leaf.std() * noise
        return leaf
    return pytree.tree_map(fresh, inputs)


def _batch_size(inputs: tuple) -> int:
    for tensor in tensors_in(inputs):
        if tensor.ndim:
            return int(tensor.shape[0])
    return 1


def run_probe(model: torch.nn.Module, inputs: tuple, loss_fn: Callable | None = None, *,
              train: bool = True, kwargs: dict | None = None, step: Callable | None = None,
              gradients: bool = True,
              min_samples: int = 16, max_draws: int = 4) -> Probe:
    """One forward + backward on the example inputs (plus forward-only redraws for dead units)."""
    result = Probe()
    if model is None or any(p.is_meta for p in model.parameters()):
        result.error = "the model has no real weights"
        return result
    kwargs = dict(kwargs or {})
    input_elements = sum(t.numel() for t in tensors_in((tuple(inputs), kwargs)))
    parameter_elements = sum(p.numel() for p in model.parameters())
    if input_elements > MAX_PROBE_INPUT_ELEMENTS or parameter_elements > MAX_PROBE_PARAMETERS:
        # The probe runs real arithmetic on the CPU; beyond these sizes it would not fit or finish.
        result.error = (f"the model ({parameter_elements:,} weights) or its inputs ({input_elements:,} "
                        "elements) are too large for a CPU probe pass")
        return result
    inputs, kwargs = inputs_on((tuple(inputs), kwargs), "cpu")
    batch = max(_batch_size((inputs, kwargs)), 1)
    draws = max(1, min(max_draws, math.ceil(min_samples / batch)))
    if step is not None or not any(t.is_floating_point() for t in tensors_in((inputs, kwargs))):
        draws = 1   # nothing to redraw (token ids), or a training step: one pass
    # The model's own parameters: gradients are taken with autograd.grad, so neither their
    # values nor their .grad change, and no copy of the weights is made.
    params, _ = canonical_parameters(model)
    names_by_id = {id(tensor): name for name, tensor in params.items()}
    buffers = {name: buf.detach().clone() for name, buf in model.named_buffers(remove_duplicate=False)}
    try:
        with preserved(model), module_stack(model) as stack:
            if model.training != train:
                model.train(train)
            first = _draws(model, (inputs, kwargs), loss_fn, step, params, names_by_id, buffers, draws, batch, stack,
                           result, gradients)
    except Exception as exc:   # user code (model or loss) failing on the CPU: no probe findings
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    for stats in first.records if first else []:
        if stats.unit_max is not None:
            stats.dead_fraction = float((stats.unit_max < 0).float().mean())
    result.activations = first.records if first else []
    return result


def _draws(model, inputs, loss_fn, step, params, names_by_id, buffers, draws, batch, stack,
           result: Probe, gradients: bool) -> "_ActivationRecorder | None":
    """The probe's passes: forward (+ backward when ``gradients``) on the example, forward-only on redrawn inputs."""
    generator = torch.Generator().manual_seed(0)
    first: _ActivationRecorder | None = None
    for draw in range(draws):
        batch_inputs = inputs if draw == 0 else _redraw(inputs, generator)
        recorder = _ActivationRecorder(stack, set(names_by_id))
        stack.clear()
        state = {n: (b.clone() if draw else b) for n, b in buffers.items()}
        args, kwargs = batch_inputs
        with torch.enable_grad() if draw == 0 and gradients else torch.no_grad():
            with recorder, calling_the_model():
                output = call_with(model, state, args, kwargs, step)
            if draw == 0:
                first = recorder
                if gradients:
                    loss = loss_in(output) if step is not None else \
                        (loss_fn(output) if loss_fn is not None else default_loss(output))
                    grads = _gradients(loss, params)
                    result.gradients = _layer_gradients(recorder.param_order, names_by_id, params, grads)
            else:
                _accumulate(first.records, recorder.records)
        result.samples += batch
        result.draws += 1
    return first


def _accumulate(first: list[ActivationStats], later: list[ActivationStats]) -> None:
    """Fold a redraw's per-unit maxima into the first draw's records (same call order)."""
    by_key = {(s.module, s.kind, s.occurrence): s for s in first}
    for stats in later:
        target = by_key.get((stats.module, stats.kind, stats.occurrence))
        if target is not None and target.unit_max is not None and stats.unit_max is not None \
                and target.unit_max.shape == stats.unit_max.shape:
            target.unit_max = torch.maximum(target.unit_max, stats.unit_max)


def _gradients(loss, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """d loss / d parameter, without touching any ``.grad`` (the user's model is read, never changed)."""
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return {}
    trainable = [(name, p) for name, p in params.items() if p.requires_grad]
    try:
        grads = torch.autograd.grad(loss, [p for _, p in trainable], allow_unused=True)
    except RuntimeError:   # a reentrant checkpoint only supports backward(): keep and restore .grad
        saved = [(p, p.grad) for _, p in trainable]
        for p, _ in saved:
            p.grad = None
        try:
            loss.backward()
            grads = [p.grad for _, p in trainable]
        finally:
            for p, grad in saved:
                p.grad = grad
    return {name: grad for (name, _), grad in zip(trainable, grads) if grad is not None}


def _layer_gradients(order: list[int], names_by_id: dict[int, str], params: dict[str, torch.Tensor],
                     grads: dict[str, torch.Tensor]) -> list[LayerGradient]:
    layers = []
    for tensor_id in order:
        name = names_by_id[tensor_id]
        tensor, grad = params[name], grads.get(name)
        if tensor.ndim < 2 or grad is None:
            continue
        layers.append(LayerGradient(param=name, module=name.rpartition(".")[0],
                                    grad_norm=float(grad.float().norm()),
                                    weight_norm=float(tensor.detach().float().norm())))
    return layers
