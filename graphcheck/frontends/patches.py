"""Temporary patches to torch while a frontend runs: grad modes the tracers can see, reentrant checkpoints."""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.fx as fx

set_grad_enabled_op = torch._C._set_grad_enabled


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
def inference_mode_as_no_grad():
    saved = torch.inference_mode
    torch.inference_mode = torch.autograd.grad_mode.inference_mode = _InferenceModeAsNoGrad
    try:
        yield
    finally:
        torch.inference_mode = torch.autograd.grad_mode.inference_mode = saved


class ReentrantCheckpointInTrace(Exception):
    """fx cannot decide what a reentrant checkpoint differentiates (it needs real tensors)."""


@contextlib.contextmanager
def reentrant_checkpoint_semantics():
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
            raise ReentrantCheckpointInTrace("a reentrant torch.utils.checkpoint needs concrete tensors")
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return function(*args)
        with torch.no_grad():
            return function(*args)

    checkpoint_module.CheckpointFunction.apply = apply
    try:
        yield
    finally:
        checkpoint_module.CheckpointFunction.apply = original


class CustomFunctionInTrace(Exception):
    """A user-defined ``torch.autograd.Function``: its backward is its own, which a traced graph cannot show."""


def _is_user_function(cls: type) -> bool:
    return not (cls.__module__ or "").startswith("torch")


@contextlib.contextmanager
def custom_autograd_functions(handle):
    """Route every ``apply`` of a user-defined ``torch.autograd.Function`` to ``handle(cls, apply, args, kwargs)``.

    ``apply(cls, *args, **kwargs)`` runs the function for real. torch's own functions (and the
    reentrant checkpoint, handled above) are left alone.
    """
    function_class = torch.autograd.function.Function
    original = function_class.__dict__["apply"]
    apply = original.__func__

    def patched(cls, *args, **kwargs):
        if _is_user_function(cls):
            return handle(cls, apply, args, kwargs)
        return apply(cls, *args, **kwargs)

    function_class.apply = classmethod(patched)
    try:
        yield
    finally:
        function_class.apply = original


def refuse_custom_functions(cls, apply, args, kwargs):
    """For the tracers: a user-defined autograd.Function hands the model to the recorded pass."""
    raise CustomFunctionInTrace(
        f"`{cls.__name__}` is a custom torch.autograd.Function; its gradient is defined by its own "
        "backward, which a traced graph does not show")
