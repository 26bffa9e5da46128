"""The oracle: which parameters does autograd itself leave without a gradient?

Independent of graphcheck's tracing: it runs the original model, forward + loss + backward.

* On real weights (CPU): a parameter counts as "no gradient" when its ``.grad`` is ``None``
  or all zeros for every one of several random inputs *and* stays so across a few SGD
  steps (a zero-initialised layer whose own gradient is non-zero wakes up after one step
  and is not counted; two consecutive zero-initialised layers never wake up).
* On the meta device (no values): ``.grad is None`` after one backward pass.
* Over many executions (``executions_oracle``): 16 or more forward + backward passes, each under
  its own seed with fresh inputs of the example's shapes (integers in the example's range), run
  successively on one copy of the model (so counters and toggles move on). A parameter that never
  receives a gradient is a GC1xx verdict; one that receives a gradient in some executions only is
  GC105.

``train`` None keeps the modes the model is in (the factory's choice, submodules included).
"""

from __future__ import annotations

import copy
import random
from typing import Callable

import numpy as np

import torch
from torch.utils import _pytree as pytree


def default_loss(output) -> torch.Tensor:
    """What DDP assumes: every floating-point output tensor feeds the loss."""
    parts = [t.sum() for t in pytree.tree_leaves(output)
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
    if not parts:
        return None
    return torch.stack([p.float() for p in parts]).sum()


def _redraw(inputs: tuple, generator: torch.Generator) -> tuple:
    def fresh(leaf):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return torch.randn(leaf.shape, generator=generator, dtype=leaf.dtype).to(leaf.device)
        return leaf
    return pytree.tree_map(fresh, inputs)


def meta_no_grad(model: torch.nn.Module, inputs: tuple, loss_fn: Callable | None = None,
                 train: bool | None = None) -> set[str]:
    """Trainable parameters whose .grad is None after a meta-device forward + backward."""
    from torch.nn.utils.stateless import _reparametrize_module
    if train is not None:
        model.train(train)
    named = dict(model.named_parameters())
    metas = {n: torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
             for n, p in named.items()}
    tensors = {}
    ids = {id(p): n for n, p in named.items()}
    for alias, p in model.named_parameters(remove_duplicate=False):
        tensors[alias] = metas[ids[id(p)]]
    tensors.update({n: b.to("meta") for n, b in model.named_buffers(remove_duplicate=False)})
    meta_inputs = pytree.tree_map(lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t, inputs)
    with _reparametrize_module(model, tensors, tie_weights=True), torch.enable_grad():
        out = model(*meta_inputs)
        loss = (loss_fn or default_loss)(out)
        if loss is not None and loss.requires_grad:
            loss.backward()
    return {n for n, p in metas.items() if p.requires_grad and p.grad is None}


def real_no_grad(model: torch.nn.Module, inputs: tuple, loss_fn: Callable | None = None,
                 train: bool | None = None, draws: int = 3, steps: int = 4, lr: float = 0.1) -> set[str]:
    """Trainable parameters whose gradient is None or zero for every draw and step (CPU).

    The model itself is trained (not a copy: a copy would not follow a closure or a hook that
    calls the original's submodules) and put back afterwards: values, buffers, ``.grad``, modes.
    """
    generator = torch.Generator().manual_seed(0)
    ever_nonzero: set[str] = set()
    params = dict(model.named_parameters())
    names = [n for n, p in params.items() if p.requires_grad]
    values = {n: p.detach().clone() for n, p in params.items()}
    grads = {n: p.grad for n, p in params.items()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    modes = {m: m.training for m in model.modules()}

    def restore() -> None:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(values[n])
            for n, b in model.named_buffers():
                if n in buffers and b.shape == buffers[n].shape:
                    b.copy_(buffers[n])
        for m, training in modes.items():
            m.training = training

    try:
        for draw in range(draws):
            restore()
            if train is not None:
                model.train(train)
            optimizer = torch.optim.SGD([params[n] for n in names], lr=lr)
            for step in range(steps):
                batch = inputs if draw == 0 and step == 0 else _redraw(inputs, generator)
                optimizer.zero_grad(set_to_none=True)
                out = model(*batch)
                loss = (loss_fn or default_loss)(out)
                if loss is None or not loss.requires_grad:
                    break
                loss.backward()
                for name in names:
                    grad = params[name].grad
                    if grad is not None and bool(grad.ne(0).any()):
                        ever_nonzero.add(name)
                optimizer.step()
    finally:
        restore()
        for n, p in params.items():
            p.grad = grads[n]
    return set(names) - ever_nonzero


def params_without_gradient(model: torch.nn.Module, inputs: tuple, loss_fn: Callable | None = None,
                            train: bool | None = None) -> set[str]:
    """The oracle: real values when the model has them, else the meta device."""
    if any(p.is_meta for p in model.parameters()):
        return meta_no_grad(model, inputs, loss_fn, train)
    return real_no_grad(model, inputs, loss_fn, train)


def _fresh_inputs(inputs: tuple, generator: torch.Generator) -> tuple:
    """Fresh values of the example's shapes and dtypes; integers in the example's range."""
    def fresh(leaf):
        if not isinstance(leaf, torch.Tensor) or leaf.is_meta:
            return leaf
        if leaf.is_floating_point():
            return torch.randn(leaf.shape, generator=generator, dtype=leaf.dtype)
        if leaf.dtype == torch.bool:
            return torch.rand(leaf.shape, generator=generator) < 0.5
        if leaf.numel() == 0:
            return leaf
        return torch.randint(int(leaf.min()), int(leaf.max()) + 1, leaf.shape, generator=generator, dtype=leaf.dtype)
    return pytree.tree_map(fresh, inputs)


def executions_oracle(model: torch.nn.Module, inputs: tuple, loss_fn: Callable | None = None,
                      train: bool | None = None, executions: int = 16,
                      without_gradient: set[str] | None = None) -> tuple[set[str], set[str]]:
    """(never: no gradient in any execution, sometimes: a gradient in some executions only).

    ``never`` also holds the parameters whose gradient is identically zero (``params_without_gradient``,
    or ``without_gradient`` when the caller computed it already), unless they are among ``sometimes``.
    """
    meta = any(p.is_meta for p in model.parameters())
    replica = model if meta else copy.deepcopy(model)
    if train is not None:
        replica.train(train)
    names = [n for n, p in replica.named_parameters() if p.requires_grad]
    params = dict(replica.named_parameters())
    got = [0] * len(names)
    generator = torch.Generator().manual_seed(12345)
    states = (torch.random.get_rng_state(), random.getstate(), np.random.get_state())
    try:
        for index in range(executions):
            torch.manual_seed(index)
            random.seed(index)
            np.random.seed(index)
            batch = inputs if index == 0 or meta else _fresh_inputs(inputs, generator)
            grads = _grads(replica, params, names, batch, loss_fn, meta)
            for position, grad in enumerate(grads):
                got[position] += grad is not None
    finally:
        torch.random.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])
    never = {n for n, count in zip(names, got) if count == 0}
    sometimes = {n for n, count in zip(names, got) if 0 < count < executions}
    if not meta:
        if without_gradient is None:
            without_gradient = params_without_gradient(model, inputs, loss_fn, train)
        never |= without_gradient - sometimes
    return never, sometimes


def _grads(model, params, names, batch, loss_fn, meta: bool):
    if meta:
        # One meta pass per execution (no values, so the inputs cannot differ).
        unused = meta_no_grad(model, batch, loss_fn)
        return [None if n in unused else True for n in names]
    for name in names:
        params[name].grad = None
    out = model(*batch)
    loss = (loss_fn or default_loss)(out)
    if loss is None or not loss.requires_grad:
        return [None] * len(names)
    loss.backward()   # not autograd.grad: reentrant checkpoints reject it
    return [params[n].grad for n in names]
