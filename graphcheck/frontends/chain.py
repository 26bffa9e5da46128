"""The fallback chain: try the frontends in order, on the meta device first, and explain when none works."""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch

from graphcheck.errors import GraphcheckError
from graphcheck.frontends import FRONTENDS
from graphcheck.frontends.builder import FrontendError
from graphcheck.frontends.decisions import DecisionWatch, graph_decisions, unique
from graphcheck.frontends.export import trace_export
from graphcheck.frontends.fx import trace_fx
from graphcheck.frontends.naming import ParamTable
from graphcheck.frontends.patches import reentrant_checkpoint_semantics
from graphcheck.frontends.recorded import trace_autograd
from graphcheck.model_graph import ModelGraph
from graphcheck.running import preserved, tensors_in
from graphcheck.sources import is_library_file, prefer_sources


_FRONTEND_FUNCTIONS = {"fx": trace_fx, "export": trace_export, "autograd": trace_autograd}


# Frontends that can run a whole training step (several forward calls, user code around them).
STEP_FRONTENDS = ("autograd",)


def build_graph(model: torch.nn.Module, inputs: tuple, loss_fn: Callable | None = None, *,
                mode: str | None = None, mode_source: str = "api", frontends: Iterable[str] = FRONTENDS,
                target: str = "", kwargs: dict | None = None, step: Callable | None = None,
                progress: Callable[[str], None] | None = None) -> ModelGraph:
    """Trace ``model`` with the first frontend that works and return its ModelGraph.

    The model runs as ``model(*inputs, **kwargs)``, or, with ``step``, as ``step(model, batch)``
    (a training step; only the recorded frontend runs one). ``progress`` hears which
    frontend is being tried. ``mode`` None analyses the modes the factory left (submodules
    keep their own: a frozen BatchNorm in eval inside a training model); "train" / "eval"
    switch every module for the analysis; the model gets its own modes back afterwards.
    """
    if mode is None:
        mode, mode_source = ("train" if model.training else "eval"), "factory"
    elif mode not in ("train", "eval"):
        raise GraphcheckError(f"mode must be 'train' or 'eval', not {mode!r}")
    try:
        model_file = inspect.getsourcefile(type(model))
    except (TypeError, OSError):
        model_file = None
    if model_file and is_library_file(model_file):
        model_file = None   # a library model: the user's own frames, if any, say more
    with prefer_sources(model_file), preserved(model), DecisionWatch(model) as watch:
        if mode_source != "factory":   # an override; the factory's choice keeps every submodule's mode
            model.train(mode == "train")
        graph = _build_graph(model, tuple(inputs), dict(kwargs or {}), loss_fn, step, mode, frontends,
                             target, progress or _silent)
    graph.mode_source = mode_source
    graph.decisions = unique(watch.decisions + graph_decisions(graph))
    return graph


def _silent(message: str) -> None:
    pass


# (model class, frontend) pairs whose tracer failed in this process: a class that symbolic_trace
# cannot trace fails again, so the next target of that class does not pay for it.
_CANNOT_TRACE: set[tuple[type, str]] = set()


def _holds_transformers(model) -> bool:
    return any(type(m).__module__.startswith("transformers.") for m in model.modules())


def _order(model, frontends: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The frontends to try, cheapest first, and a note for each one skipped.

    With the default order (not ``--frontend``), a tracer known to fail is skipped: torch.fx
    on transformers models (its symbolic tracing fails on every 5.x model) and on classes it
    already failed on in this run. After fx, the recorded pass comes before torch.export: it
    sees the same ops and autograd edges, and where fx cannot trace a model export costs
    several times a forward pass; export stays as the fallback when the recorded pass fails.
    """
    if frontends != FRONTENDS:
        return list(frontends), []
    order, skipped = [], []
    for frontend in ("fx", "autograd", "export"):
        if (type(model), frontend) in _CANNOT_TRACE:
            skipped.append(f"{frontend} frontend skipped: it failed on {type(model).__name__} earlier in this run")
        elif frontend == "fx" and _holds_transformers(model):
            skipped.append("fx frontend skipped: torch.fx cannot trace transformers models")
        else:
            order.append(frontend)
    return order, skipped


def _build_graph(model, inputs, kwargs, loss_fn, step, mode, frontends, target, progress) -> ModelGraph:
    table = ParamTable(model)
    devices = ["meta", "cpu"] if table.real else ["meta"]
    if table.real and _small(model, inputs, kwargs):
        devices = ["cpu", "meta"]
    failures: list[tuple[str, str, FrontendError]] = []
    frontends, skipped = _order(model, tuple(frontends))
    for frontend in frontends:
        if frontend not in _FRONTEND_FUNCTIONS:
            raise GraphcheckError(f"Unknown frontend {frontend!r}; choose from {', '.join(FRONTENDS)}.")
        if step is not None and frontend not in STEP_FRONTENDS:
            skipped.append(f"{frontend} frontend skipped: a training step runs through the recorded "
                           f"frontend ({', '.join(STEP_FRONTENDS)})")
            continue
        cache: dict = {}
        for device in devices:
            progress(f"{frontend} frontend on {device}")
            try:
                with reentrant_checkpoint_semantics(), preserved(model):
                    builder = _FRONTEND_FUNCTIONS[frontend](model, tuple(inputs), table, loss_fn, device, cache,
                                                            kwargs=kwargs, step=step)
            except FrontendError as exc:
                failures.append((frontend, device, exc))
                if exc.kind == "trace":
                    _CANNOT_TRACE.add((type(model), frontend))
                if exc.kind in ("trace", "inputs"):
                    break   # running on another device would not help
                continue
            notes = skipped + [f"{f} ({d}) frontend did not work: {e}" for f, d, e in failures]
            return ModelGraph(graph=builder.graph, parameters=table.canonical, frontend=frontend,
                              mode=mode, device=device, target=target, notes=notes, model=model,
                              inputs=tuple(builder.inputs), loss_fn=loss_fn, kwargs=kwargs, step=step,
                              loss_source=builder.loss_source)
    if not failures:
        raise GraphcheckError(f"A training step needs the {' or '.join(STEP_FRONTENDS)} frontend; "
                              f"--frontend {' '.join(frontends)} cannot run one.")
    raise TracingError(failures)


# Below these sizes a real forward pass costs less than the meta device's first use (its
# Python kernels import torch._dynamo: about 2 s in a process that has not imported it).
SMALL_MODEL_PARAMETERS = 5_000_000
SMALL_MODEL_INPUTS = 1_000_000


def _small(model, inputs, kwargs) -> bool:
    """A model with real weights small enough to trace on the CPU."""
    parameters = sum(p.numel() for p in model.parameters())
    elements = sum(t.numel() for t in tensors_in((tuple(inputs), dict(kwargs or {}))))
    return parameters <= SMALL_MODEL_PARAMETERS and elements <= SMALL_MODEL_INPUTS


class TracingError(GraphcheckError):
    """No frontend worked; the message leads with the most telling failure."""

    def __init__(self, failures: list[tuple[str, str, FrontendError]]):
        detail = "\n".join(f"{f} ({d}): {e}" for f, d, e in failures)
        listed = " ".join(f"[{f} ({d}): {e}]" for f, d, e in failures)
        kinds = {e.kind for _, _, e in failures}
        # The CPU run's error is the one the user sees running the model (meta's words differ).
        forward = [e for f, d, e in sorted(failures, key=lambda failure: failure[1] == "cpu")
                   if f == "autograd" and e.kind == "run"]
        losses = [e for _, _, e in failures if e.kind == "loss"]
        steps = [e for _, _, e in failures if e.kind == "step"]
        if steps:
            message = (f"{str(steps[-1])[0].upper()}{str(steps[-1])[1:]}. graphcheck calls step(model, batch) "
                       "with the factory's example inputs as the batch (a tuple for positional inputs, a "
                       "dict for keyword inputs); check that the step runs on them in Python. Run with "
                       "--debug for the traceback.")
        elif losses and kinds <= {"loss", "trace", "inputs"}:
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
