"""Running the probe pass: the model with its real initial weights, forward and backward, for the numeric rules.

The GC3xx rules that talk about numbers at initialisation (saturated activations, dead
ReLUs, vanishing or exploding gradients) share this one measurement, memoised on the
graph (``probe(graph)``). It never changes the model: gradients are taken with
``torch.autograd.grad`` (no ``.grad`` is written), buffers are cloned and swapped in for
every pass (BatchNorm running statistics stay untouched), and ``running.preserved``
undoes whatever forward does to the modules.

What it records:

* for every call of a saturating or ReLU-family activation (in execution order): the
  module that ran it, the source line, the statistics of its *input* (the
  pre-activation): mean derivative relative to the activation's largest derivative,
  fraction of saturated entries, fraction of units negative for every sample;
* for every trainable weight the gradient rules compare (layer weights, not embedding
  tables), in the order forward first uses it: the norm of its gradient.

The passes, sized by what the selected rules need (``gradients``: GC304/GC305 read layer
gradients; else every pass is forward only):

1. the first pass: forward (+ backward) on the first sample of the example batch (the
   backward pass is the probe's dearest part). A model that fails on one sample (BatchNorm
   on a single row) or gets no gradient at all from it (a contrastive loss over the batch)
   runs it on the whole batch instead;
2. the rest of the batch, forward only, when the statistics lack samples: dead units need
   ``min_samples`` entries per unit (an MLP's features have one per sample; a convolution's
   channels or a sequence's features one per position, so one image or sentence is plenty),
   a saturating call's mean derivative ``MIN_ENTRIES`` entries;
3. while still short, forward passes on floating-point inputs redrawn from a normal
   distribution with the example's mean and standard deviation (at most ``max_draws - 1``).

Activation statistics are sums over every pass; layer gradients come from the first pass.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Collection, Mapping

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from graphcheck.ops import CHANNEL_FIRST, SATURATING, activation_kind, is_in_place
from graphcheck.probe_data import ActivationStats, LayerGradient, Probe
from graphcheck.running import (buffers_on, canonical_parameters, inputs_on, leaves_of, module_stack, op_name, preserved,
                                swapped_parameters, tensors_in)
from graphcheck.sources import calling_the_model, location_here
from graphcheck.subject import Subject, loss_of

# Beyond these sizes the probe's real arithmetic on the CPU would not fit or finish.
MAX_PROBE_INPUT_ELEMENTS = 10_000_000
MAX_PROBE_PARAMETERS = 200_000_000


# A saturating call's mean derivative is a mean over its entries: this many give it to +-0.03.
MIN_ENTRIES = 256

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


class _Sums:
    """Running sums of one activation call's input over the probe's passes (folded per call)."""

    __slots__ = ("elements", "total", "squares", "derivative", "saturated", "unit_max", "observations")

    def __init__(self):
        self.elements = 0            # entries seen
        self.total = self.squares = 0.0
        self.derivative = self.saturated = 0.0
        self.unit_max: torch.Tensor | None = None
        self.observations = 0        # entries seen per unit (samples x positions)

    def fold(self, other: "_Sums") -> None:
        self.elements += other.elements
        self.total += other.total
        self.squares += other.squares
        self.derivative += other.derivative
        self.saturated += other.saturated
        self.observations += other.observations
        if self.unit_max is not None and other.unit_max is not None \
                and self.unit_max.shape == other.unit_max.shape:
            self.unit_max = torch.maximum(self.unit_max, other.unit_max)


class _ActivationRecorder(TorchFunctionMode):
    """Records pre-activation statistics at every saturating / ReLU-family call."""

    def __init__(self, modules: list[tuple[str, str]], param_ids: set[int],
                 written: dict[int, tuple[torch.Tensor, torch.Tensor]],
                 nodes: Mapping[tuple[str, str, int], str]):
        super().__init__()
        self.module_stack = modules
        self.nodes = nodes        # the graph node of each activation call, by (module, kind, occurrence)
        self.param_ids = param_ids
        self.records: list[ActivationStats] = []
        self.sums: list[_Sums] = []          # parallel to records
        self.counts: Counter = Counter()
        self.producer: dict[int, str] = {}
        self.param_order: list[int] = []
        self._seen_params: set[int] = set()
        self.written = written    # weights forward wrote to: (weight, value before), shared by the passes
        self.aliases: dict[int, torch.Tensor] = {}   # id of ``weight.data`` -> the weight
        self.alive: list[torch.Tensor] = []          # keeps those ids from being reused

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        module_path, module_type = self.module_stack[-1] if self.module_stack else ("", "")
        leaves = leaves_of(args) + leaves_of(kwargs)
        scalars = []
        for leaf in leaves:
            if isinstance(leaf, torch.Tensor):
                if id(leaf) in self.param_ids and id(leaf) not in self._seen_params:
                    self._seen_params.add(id(leaf))
                    self.param_order.append(id(leaf))
            elif isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
                scalars.append(leaf)
        kind = activation_kind(name, module_type, scalars)
        first = args[0] if args else None
        if (is_in_place(name) or name == "__set__") and isinstance(first, torch.Tensor):
            # forward writes to a weight (a momentum encoder, directly or through ``.data``):
            # keep its value to put back afterwards
            weight = first if id(first) in self.param_ids else self.aliases.get(id(first))
            if weight is not None and id(weight) not in self.written:
                self.written[id(weight)] = (weight, weight.detach().clone())
        if kind is not None and isinstance(first, torch.Tensor) and first.is_floating_point() \
                and first.numel():
            self._record(kind, first, module_path, module_type, scalars)
        value = func(*args, **kwargs)
        for tensor in tensors_in(value):
            self.producer[id(tensor)] = name
        if name == "data" and isinstance(first, torch.Tensor) and id(first) in self.param_ids \
                and isinstance(value, torch.Tensor):
            self.aliases[id(value)] = first     # ``weight.data``: the same storage
            self.alive.append(value)
        return value

    def _record(self, kind, x, module_path, module_type, scalars) -> None:
        unit_dim = _unit_dim(self.producer.get(id(x)), x.ndim)
        with torch.no_grad():
            x = x.detach().float()
            occurrence = self.counts[(module_path, kind)]
            self.counts[(module_path, kind)] += 1
            units = x.shape[unit_dim] if x.ndim else 1
            stats = ActivationStats(kind=kind, module=module_path, module_type=module_type,
                                    occurrence=occurrence, location=location_here(), std=0.0, mean=0.0,
                                    units=units, unit_dim=unit_dim,
                                    node=self.nodes.get((module_path, kind, occurrence)))
            sums = _Sums()
            sums.elements, sums.observations = x.numel(), x.numel() // max(units, 1)
            sums.total, sums.squares = float(x.sum()), float((x * x).sum())
            if kind in SATURATING:
                low, high = (list(scalars[:2]) + [-1.0, 1.0])[:2] if kind == "hardtanh" else (-1.0, 1.0)
                derivative = relative_derivative(kind, x, float(low), float(high))
                sums.derivative = float(derivative.sum())
                sums.saturated = float((derivative < SATURATED_BELOW).sum())
            else:
                sums.unit_max = _per_unit_max(x, unit_dim)
            self.records.append(stats)
            self.sums.append(sums)

    def fold(self, later: "_ActivationRecorder") -> None:
        """Fold a later pass's sums into this one's calls (matched by module, kind and occurrence)."""
        by_key = {(s.module, s.kind, s.occurrence): sums for s, sums in zip(self.records, self.sums)}
        for stats, sums in zip(later.records, later.sums):
            target = by_key.get((stats.module, stats.kind, stats.occurrence))
            if target is not None:
                target.fold(sums)

    def short(self, min_samples: int) -> bool:
        """Whether a statistic still lacks samples: a ReLU call with fewer than ``min_samples``
        entries per unit (dead units), or a saturating call with fewer than ``MIN_ENTRIES`` entries."""
        return any(sums.elements < MIN_ENTRIES if stats.kind in SATURATING else sums.observations < min_samples
                   for stats, sums in zip(self.records, self.sums))

    def finished(self) -> list[ActivationStats]:
        """The records with their statistics over every folded pass."""
        for stats, sums in zip(self.records, self.sums):
            n = max(sums.elements, 1)
            stats.mean = sums.total / n
            variance = (sums.squares - sums.total * sums.total / n) / (n - 1) if n > 1 else 0.0
            stats.std = math.sqrt(max(variance, 0.0))
            if stats.kind in SATURATING:
                stats.mean_derivative = sums.derivative / n
                stats.saturated_fraction = sums.saturated / n
            elif sums.unit_max is not None:
                stats.unit_max = sums.unit_max
                stats.dead_fraction = float((sums.unit_max < 0).float().mean())
        return self.records


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


def _samples(inputs: tuple, start: int, stop: int, batch: int) -> tuple:
    """Samples ``start:stop`` of the batch: every tensor whose first dimension is the batch's, sliced."""
    return pytree.tree_map(lambda leaf: leaf[start:stop] if isinstance(leaf, torch.Tensor) and leaf.ndim
                           and leaf.shape[0] == batch else leaf, inputs)


def run_probe(subject: Subject, *, gradients: bool = True, weights: Collection[str] | None = None,
              nodes: Mapping[tuple[str, str, int], str] | None = None,
              min_samples: int = 16, max_draws: int = 4) -> Probe:
    """The probe's passes over the subject's example inputs (see the module docstring for the plan).

    ``weights`` limits the backward pass to the layer weights the rules compare (None: every
    weight with two or more dimensions); autograd then skips what only others need (an
    embedding table's backward). With ``gradients`` false, or no such weight, no backward runs.
    ``nodes`` maps each activation call, by (module, kind, occurrence in that module), to its
    graph node: the probe writes it on the call's statistics as it runs.
    """
    result = Probe()
    model = subject.model
    if model is None or any(p.is_meta for p in model.parameters()):
        result.error = "the model has no real weights"
        return result
    input_elements = sum(t.numel() for t in tensors_in(subject.inputs))
    parameter_elements = sum(p.numel() for p in model.parameters())
    if input_elements > MAX_PROBE_INPUT_ELEMENTS or parameter_elements > MAX_PROBE_PARAMETERS:
        result.error = (f"the model ({parameter_elements:,} weights) or its inputs ({input_elements:,} "
                        "elements) are too large for a CPU probe pass")
        return result
    inputs, kwargs = inputs_on(subject.inputs, "cpu")
    # The model's own parameters: gradients are taken with autograd.grad, so neither their
    # values nor their .grad change, and no copy of the weights is made.
    params, _ = canonical_parameters(model)
    names_by_id = {id(tensor): name for name, tensor in params.items()}
    wanted = {name: p for name, p in params.items() if p.requires_grad and p.ndim >= 2
              and (weights is None or name in weights)}
    gradients = gradients and bool(wanted)
    buffers = buffers_on(model, "cpu")
    plan = _Plan(subject, wanted, names_by_id, buffers, gradients, result, nodes or {})
    try:
        with preserved(model), module_stack(model) as stack:
            if subject.train_override is not None:
                model.train(subject.train_override)
            plan.stack = stack
            first = plan.run((inputs, kwargs), min_samples, max_draws)
    except Exception as exc:   # user code (model or loss) failing on the CPU: no probe findings
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        plan.put_back()
    result.activations = first.finished()
    return result


class _Plan:
    """The probe's passes: the first (with the backward), then forward-only passes until the statistics have samples."""

    def __init__(self, subject: Subject, params, names_by_id, buffers, gradients, result: Probe, nodes):
        self.subject = subject
        self.params, self.names_by_id, self.buffers = params, names_by_id, buffers
        self.gradients, self.result, self.nodes = gradients, result, nodes
        self.stack: list = []
        self.written: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # weights forward wrote to

    def put_back(self) -> None:
        """The values of the weights forward wrote to in place, as they were before the probe."""
        with torch.no_grad():
            for tensor, value in self.written.values():
                if tensor.shape == value.shape:
                    tensor.copy_(value)
                else:   # ``weight.data = something of another shape``
                    tensor.data = value
        self.written.clear()

    def run(self, batch: tuple, min_samples: int, max_draws: int) -> _ActivationRecorder:
        size = max(_batch_size(batch), 1)
        first = None
        if size > 1:
            # The first pass (with the backward, the probe's dearest part) runs on the first
            # sample. A model that needs the whole batch (it fails on one sample, or its loss gives
            # no gradient at all, as a contrastive loss does) gets the whole batch instead.
            try:
                first = self._pass(_samples(batch, 0, 1, size), 1, gradients=self.gradients)
            except Exception:
                first = None
            if first is not None and self.gradients \
                    and not any(layer.grad_norm > 0 for layer in self.result.gradients):
                first = None
            if first is not None and first.short(min_samples):
                self._fold(first, _samples(batch, 1, size, size), size - 1, required=False)
        if first is None:
            self.result.samples = self.result.draws = 0
            first = self._pass(batch, size, gradients=self.gradients)
        floating = self.subject.step is None and any(t.is_floating_point() for t in tensors_in(batch))
        generator = torch.Generator().manual_seed(0)
        for _ in range(max_draws - 1):
            if not floating or not first.short(min_samples):
                break
            # Dead units need many samples: more forward passes on inputs redrawn like the example.
            self._fold(first, _redraw(batch, generator), size, required=True)
        return first

    def _fold(self, first: _ActivationRecorder, batch: tuple, samples: int, *, required: bool) -> None:
        try:
            later = self._pass(batch, samples, gradients=False)
        except Exception:
            if required:
                raise
            return   # the rest of the batch alone (one sample under BatchNorm): fewer samples, no error
        first.fold(later)

    def _pass(self, batch: tuple, samples: int, *, gradients: bool) -> _ActivationRecorder:
        recorder = _ActivationRecorder(self.stack, set(self.names_by_id), self.written, self.nodes)
        self.stack.clear()
        state = {n: b.clone() for n, b in self.buffers.items()}
        args, kwargs = batch
        model = self.subject.model
        with torch.enable_grad() if gradients else torch.no_grad():
            with recorder, calling_the_model(), preserved(model), swapped_parameters(model, state):
                output = self.subject.call(args, kwargs)
            if gradients:
                grads = _gradients(loss_of(self.subject, output), self.params)
                self.result.gradients = _layer_gradients(recorder.param_order, self.names_by_id,
                                                         self.params, grads)
        self.result.samples += samples
        self.result.draws += 1
        return recorder


def _gradients(loss, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """d loss / d parameter, without touching any ``.grad`` (the user's model is read, never changed)."""
    if not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return {}
    trainable = list(params.items())
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
    """The measured weights' gradient norms, in the order forward first used them."""
    layers = []
    for tensor_id in order:
        name = names_by_id[tensor_id]
        grad = grads.get(name)
        if name in params and grad is not None:
            layers.append(LayerGradient(param=name, module=name.rpartition(".")[0],
                                        grad_norm=float(grad.float().norm())))
    return layers
