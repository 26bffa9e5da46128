"""What is analysed, and the one door through which it runs: the model, its example batch, the loss or step, the mode.

Everything that executes the user's code (the frontends' traces, the probe, the extra executions
GC105 compares, ``--verify``) takes a :class:`Subject` and asks :func:`loss_of` for the loss of
one run, so the loss is decided and validated in one place:

* with a training ``step``: the tensor ``loss`` the step returns (itself, ``value["loss"]`` or
  ``value.loss``); anything else is an error;
* with a ``loss`` callable: ``loss(output)``; it must return a scalar tensor;
* otherwise the model's own ``output.loss`` when the output carries one (summed when it is not a
  scalar, as the model computed it), else every floating-point output (what
  DistributedDataParallel assumes); None when no output carries a gradient.

The subject stands apart from the model graph: the graph is structure, built once and frozen;
the subject is what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from graphcheck import phases
from graphcheck.errors import GraphcheckError
from graphcheck.running import batch_of, default_loss, default_loss_description, loss_in


class LossError(GraphcheckError):
    """The user's loss raised on the model's output (the run may work on another device).

    ``cause`` is the exception in one line (``ValueError: ...``).
    """

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class Subject:
    """The model and how it runs: ``model(*args, **kwargs)`` then ``loss_fn``, or ``step(model, batch)``.

    ``mode`` is the user's override ("train" / "eval") or None for the modes the factory left
    (submodules keep their own); ``mode_source`` says who chose it.
    """

    model: torch.nn.Module
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    loss_fn: Callable | None = None
    step: Callable | None = None
    mode: str | None = None
    mode_source: str = "factory"

    def __post_init__(self):
        if self.mode is not None and self.mode not in ("train", "eval"):
            raise GraphcheckError(f"mode must be 'train' or 'eval', not {self.mode!r}")
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs or {}))

    @property
    def analysed_mode(self) -> str:
        """The mode analysed: the override, else the root module's own flag."""
        if self.mode is not None:
            return self.mode
        return "train" if self.model.training else "eval"

    @property
    def train_override(self) -> bool | None:
        """``model.train(...)``'s argument for the override, None to keep the factory's modes."""
        return None if self.mode is None else self.mode == "train"

    @property
    def inputs(self) -> tuple[tuple, dict]:
        """The example batch as ``(args, kwargs)``."""
        return self.args, self.kwargs

    @property
    def has_weights(self) -> bool:
        """True when the parameters hold real values (not the meta device); a model without
        parameters has nothing to lack."""
        params = list(self.model.parameters())
        return not params or any(not p.is_meta for p in params)

    def call(self, args: tuple | None = None, kwargs: dict | None = None) -> Any:
        """One run of forward (or of the training step) on ``args`` / ``kwargs`` (default: the example).

        Returns what the model (or the step) returned; :func:`loss_of` makes the loss of it.
        """
        args = self.args if args is None else tuple(args)
        kwargs = self.kwargs if kwargs is None else dict(kwargs)
        if self.step is not None:
            phases.enter("step")
            return self.step(self.model, batch_of(args, kwargs))
        phases.enter("forward")
        return self.model(*args, **kwargs)


def loss_of(subject: Subject, value: Any) -> torch.Tensor | None:
    """The loss of one run: ``value`` is what :meth:`Subject.call` returned.

    Raises :class:`LossError` when the user's loss raises, and ``GraphcheckError`` when the loss
    or the step gives something that is not a scalar tensor. None: the default loss found no
    floating-point output that carries a gradient.
    """
    if subject.step is not None:
        return _step_loss(subject.step, value)
    if subject.loss_fn is None:
        return default_loss(value)
    phases.enter("loss")
    try:
        loss = subject.loss_fn(value)
    except GraphcheckError:
        raise
    except Exception as exc:
        cause = f"{type(exc).__name__}: {exc}"
        raise LossError(f"the loss raised {cause}", cause) from exc
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


def _step_loss(step: Callable, value: Any) -> torch.Tensor:
    name = getattr(step, "__qualname__", type(step).__name__)
    loss = loss_in(value)
    if loss is None:
        raise GraphcheckError(
            f"The training step {name} returned {type(value).__name__}, not a loss. A step is a "
            "callable step(model, batch) that runs the model as the training code does and returns "
            "the loss tensor (or a dict or object with a tensor `loss`), before backward().")
    if loss.numel() != 1:
        raise GraphcheckError(
            f"The training step {name} returned a loss of shape {tuple(loss.shape)}, not a scalar. "
            "Reduce it (for example with `.mean()`) so that `loss.backward()` works.")
    return loss


def loss_description(subject: Subject, value: Any) -> str | None:
    """How the report names the default loss of ``value`` (None when a loss or step was given)."""
    if subject.step is not None or subject.loss_fn is not None:
        return None
    return default_loss_description(value)


def backward(loss: torch.Tensor | None) -> bool:
    """``loss.backward()`` when the loss carries a gradient; False when there is nothing to do."""
    if loss is None or not loss.requires_grad:
        return False
    loss.backward()
    return True
