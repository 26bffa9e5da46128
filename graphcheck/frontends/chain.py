"""The fallback chain: try the frontends in order, on the meta device first, and explain when none works."""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch

from graphcheck.errors import GraphcheckError
from graphcheck.frontends.builder import FrontendError
from graphcheck.frontends.decisions import DecisionWatch, graph_decisions, unique
from graphcheck.frontends.export import trace_export
from graphcheck.frontends.fx import trace_fx
from graphcheck.frontends.naming import ParamTable
from graphcheck.frontends.patches import reentrant_checkpoint_semantics
from graphcheck.frontends.recorded import trace_autograd
from graphcheck.model_graph import ModelGraph
from graphcheck.running import preserved
from graphcheck.sources import is_library_file, prefer_sources

FRONTENDS = ("fx", "export", "autograd")

_FRONTEND_FUNCTIONS = {"fx": trace_fx, "export": trace_export, "autograd": trace_autograd}


def build_graph(model: torch.nn.Module, inputs: tuple, loss_fn: Callable | None = None, *,
                mode: str | None = None, mode_source: str = "api", frontends: Iterable[str] = FRONTENDS,
                target: str = "") -> ModelGraph:
    """Trace ``model`` with the first frontend that works and return its ModelGraph.

    ``mode`` None analyses the modes the factory left (submodules keep their own: a frozen
    BatchNorm in eval inside a training model); "train" / "eval" switch every module, for the
    caller to restore (``running.preserved``).
    """
    if mode is None:
        mode, mode_source = ("train" if model.training else "eval"), "factory"
    elif mode not in ("train", "eval"):
        raise GraphcheckError(f"mode must be 'train' or 'eval', not {mode!r}")
    else:
        model.train(mode == "train")
    try:
        model_file = inspect.getsourcefile(type(model))
    except (TypeError, OSError):
        model_file = None
    if model_file and is_library_file(model_file):
        model_file = None   # a library model: the user's own frames, if any, say more
    with prefer_sources(model_file):
        with preserved(model), DecisionWatch(model) as watch:
            graph = _build_graph(model, tuple(inputs), loss_fn, mode, frontends, target)
        graph.mode_source = mode_source
        graph.decisions = unique(watch.decisions + graph_decisions(graph))
        return graph


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
                with reentrant_checkpoint_semantics():
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
