"""Other executions: run the model a few more times and note which parameters get a gradient each time.

Training is many executions, not one. When forward makes decisions that can go another way
(frontends/decisions.py), graphcheck runs it again, successively on the same model state (so a
toggle or a counter moves on), under ``running.preserved`` (the user's model is left exactly as it
was) and with the random generators restored afterwards:

* with the example inputs and with fresh inputs of their shapes and dtypes (integers drawn in the
  example's range), each under its own fixed seed, so the verdict does not depend on luck or on the
  global seed;
* with every random draw forced to its lowest and then its highest value (``torch.rand`` and its
  kin, Python's and NumPy's random), so a threshold such as LayerDrop goes both ways.

4 seeded executions (8 when forward decides on input values: routing needs more inputs) and the
2 forced ones: sampled, not exhaustive (docs/limitations.md).

Each execution is one forward + loss + backward on the meta device when the model runs there (no
weights, no arithmetic), else on the CPU, into graphcheck's own leaves: ``.grad`` of the user's
parameters is never touched.
"""

from __future__ import annotations

import contextlib
import random

try:   # NumPy is optional: a model without it draws no NumPy randomness
    import numpy as np
except ImportError:
    np = None
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from graphcheck.frontends.decisions import patched_attribute
from graphcheck.measured import ExecutionSample
from graphcheck.model_graph import ModelGraph
from graphcheck.running import (buffers_on, canonical_parameters, inputs_on, meta_value, op_name, own_leaves,
                                preserved, stands_in, swapped_parameters, tensors_in)
from graphcheck.subject import Subject, backward, loss_of

SEEDS = 4                     # executions under their own seed; seed 0 runs the example inputs
INPUT_SEEDS = 8               # as many when forward decides on input values (routing, branches)
EXTREMES = ("low", "high")    # then every random draw at its lowest and its highest value (fresh inputs)


def sample_executions(graph: ModelGraph, subject: Subject) -> ExecutionSample:
    """Run the extra executions of ``subject`` and note which of ``graph``'s parameters get a gradient each time."""
    model = subject.model
    canonical, alias = canonical_parameters(model)
    trainable = {n for n, p in canonical.items() if p.requires_grad and n in graph.parameters}
    devices = [graph.device] + (["cpu"] if graph.device == "meta" and subject.has_weights else [])
    seeds = INPUT_SEEDS if any(d.kind == "input" for d in graph.decisions) else SEEDS
    plans = [(seed, None) for seed in range(seeds)] + [(seeds + i, level) for i, level in enumerate(EXTREMES)]
    sample = ExecutionSample()
    with preserved(model), _random_state_restored():
        if subject.train_override is not None:
            model.train(subject.train_override)
        for seed, level in plans:
            got = None
            for device in devices:
                try:
                    got = _run_once(subject, canonical, alias, trainable, device, seed, level)
                    break
                except Exception:   # an execution that cannot run says nothing; the next one may
                    continue
            if got is None:
                sample.failed += 1
                continue
            sample.runs += 1
            sample.with_gradient |= got
            sample.without_gradient |= trainable - got
    return sample


def _run_once(subject: Subject, canonical, alias, trainable, device, seed, level) -> set[str]:
    """One execution of forward + loss (or the training step) + backward."""
    model = subject.model
    if device != "meta" and any(p.is_meta for p in canonical.values()):
        raise RuntimeError("meta parameters cannot run on the CPU")
    # Own leaves: the user's .grad is never touched, and loss.backward() works where
    # autograd.grad does not (reentrant checkpoints).
    leaves = own_leaves(canonical, device)
    tensors = {name: leaves[canon] for name, canon in alias.items()}
    tensors.update(buffers_on(model, device))
    generator = torch.Generator().manual_seed(seed)
    run_inputs = inputs_on(subject.inputs, device) if seed == 0 else _fresh(subject.inputs, device, generator)
    torch.manual_seed(1000 + seed)
    random.seed(seed)
    if np is not None:
        np.random.seed(seed)
    forced = _forced_draws(level) if level else contextlib.nullcontext()
    # On meta a condition has no value: the recorded pass stood in True; the low execution takes the other side.
    without_values = device == "meta" and any(p.is_meta for p in canonical.values())
    meta_values = _MetaValues(level != "low") if without_values else contextlib.nullcontext()
    with swapped_parameters(model, tensors), torch.enable_grad(), torch.device(device), forced, meta_values:
        backward(loss_of(subject, subject.call(*run_inputs)))
    return {n for n in trainable if leaves[n].grad is not None}


def _fresh(inputs, device: str, generator: torch.Generator):
    """Inputs of the example's shapes and dtypes with new values (integers in the example's range)."""
    def redraw(leaf):
        if not isinstance(leaf, torch.Tensor):
            return leaf
        if leaf.is_meta or device == "meta":
            return inputs_on(leaf, device, generator)
        if leaf.is_floating_point() or leaf.is_complex():
            return torch.randn(leaf.shape, dtype=leaf.dtype, generator=generator).to(device)
        if leaf.dtype == torch.bool:
            return (torch.rand(leaf.shape, generator=generator) < 0.5).to(device)
        if leaf.numel() == 0:
            return leaf.detach().clone().to(device)
        low, high = int(leaf.min()), int(leaf.max())
        return torch.randint(low, high + 1, leaf.shape, generator=generator, dtype=leaf.dtype).to(device)
    return pytree.tree_map(redraw, inputs)


@contextlib.contextmanager
def _random_state_restored():
    python_state = random.getstate()
    numpy_state = np.random.get_state() if np is not None else None
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(python_state)
            if np is not None:
                np.random.set_state(numpy_state)


_EPS = 1e-6


class _MetaValues(TorchFunctionMode):
    """Value reads of meta tensors get stand-ins: a condition is ``condition``, a number 1."""

    def __init__(self, condition: bool):
        super().__init__()
        self.condition = condition

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = op_name(func)
        if args and stands_in(name, args[0], real_weights=False):
            return self.condition if name == "__bool__" else meta_value(name, args[0])
        return func(*args, **(kwargs or {}))


class _ForcedTorchDraws(TorchFunctionMode):
    """Every torch random draw returns its lowest (``high=False``) or highest value."""

    def __init__(self, high: bool):
        super().__init__()
        self.high = high

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        value = func(*args, **kwargs)
        name = op_name(func)
        fill = self._value(name, args, kwargs)
        if fill is None or not tensors_in(value):
            return value
        with torch.no_grad():
            if name.endswith("_"):
                args[0].fill_(fill)
                return value
            return torch.full_like(value, fill)

    def _value(self, name, args, kwargs):
        high = self.high
        if name in ("rand", "rand_like"):
            return 1 - _EPS if high else 0.0
        if name in ("bernoulli", "bernoulli_"):
            return 1.0 if high else 0.0
        if name in ("randn", "randn_like", "normal", "normal_"):
            return 3.0 if high else -3.0
        if name == "uniform_":
            low_bound = args[1] if len(args) > 1 else kwargs.get("from", 0.0)
            high_bound = args[2] if len(args) > 2 else kwargs.get("to", 1.0)
            return high_bound - _EPS * (high_bound - low_bound) if high else low_bound
        if name in ("randint", "randint_like"):
            numbers = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
            if name == "randint_like":
                numbers = [a for a in args[1:] if isinstance(a, int)]
            low_bound = kwargs.get("low", numbers[0] if len(numbers) > 1 else 0)
            high_bound = kwargs.get("high", numbers[1] if len(numbers) > 1 else (numbers[0] if numbers else 1))
            return high_bound - 1 if high else low_bound
        return None


def _python_draws(high: bool) -> dict:
    """Replacements for Python's random functions that return their lowest or highest value."""
    top = 1 - _EPS

    def randrange(start, stop=None, step=1):
        return (stop - 1 if stop is not None else start - 1) if high else (start if stop is not None else 0)
    return {
        "random": lambda: top if high else 0.0,
        "uniform": lambda a, b: b if high else a,
        "randint": lambda a, b: b if high else a,
        "randrange": randrange,
        "choice": lambda seq: seq[-1] if high else seq[0],
        "gauss": lambda mu=0.0, sigma=1.0: mu + (3 if high else -3) * sigma,
        "normalvariate": lambda mu=0.0, sigma=1.0: mu + (3 if high else -3) * sigma,
    }


def _numpy_draws(upper: bool) -> dict:
    top = 1 - _EPS

    def filled(value, size):
        return value if size is None else np.full(size, value)

    def rand(*shape):
        return filled(top if upper else 0.0, shape or None)

    def randint(low, high=None, size=None, dtype=int):
        low, high = (0, low) if high is None else (low, high)
        return filled(high - 1 if upper else low, size)

    def uniform(low=0.0, high=1.0, size=None):
        return filled(high if upper else low, size)
    return {
        "rand": rand,
        "random": lambda size=None: filled(top if upper else 0.0, size),
        "random_sample": lambda size=None: filled(top if upper else 0.0, size),
        "uniform": uniform,
        "randint": randint,
    }


@contextlib.contextmanager
def _forced_draws(level: str):
    high = level == "high"
    with contextlib.ExitStack() as stack:
        for name, replacement in _python_draws(high).items():
            stack.enter_context(patched_attribute(random, name, replacement))
        for name, replacement in (_numpy_draws(high).items() if np is not None else ()):
            stack.enter_context(patched_attribute(np.random, name, replacement))
        stack.enter_context(_ForcedTorchDraws(high))
        yield
