"""The fallback chain: try the frontends in order, on the meta device first, and explain when none works."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, Iterable

import torch

from graphcheck import phases
from graphcheck.errors import GraphcheckError
from graphcheck.frontends import BY_NAME, FRONTENDS, STEP_FRONTENDS
from graphcheck.frontends.builder import FrontendError
from graphcheck.frontends.decisions import DecisionWatch, graph_decisions, unique
from graphcheck.frontends.naming import ParamTable
from graphcheck.frontends.patches import reentrant_checkpoint_semantics
from graphcheck.model_graph import ModelGraph
from graphcheck.running import preserved, tensors_in
from graphcheck.sources import is_library_file, prefer_sources
from graphcheck.subject import Subject


def build_graph(subject: Subject, *, frontends: Iterable[str] | None = None, target: str = "",
                progress: Callable[[str], None] | None = None) -> tuple[ModelGraph, Subject]:
    """Trace ``subject`` with the first frontend that works: its ModelGraph, built once and frozen,
    and the subject with the inputs the trace ran on (fx infers them when none were given).

    ``frontends`` None tries the default order (skipping a tracer known to fail on the model);
    a sequence is tried exactly in the order given. Only the recorded frontend runs a training
    step. ``progress`` hears which frontend is being tried. The subject's ``mode`` None analyses
    the modes the factory left (submodules keep their own: a frozen BatchNorm in eval inside a
    training model); "train" / "eval" switch every module for the analysis; the model gets its
    own modes back afterwards.
    """
    model = subject.model
    try:
        model_file = inspect.getsourcefile(type(model))
    except (TypeError, OSError):
        model_file = None
    if model_file and is_library_file(model_file):
        model_file = None   # a library model: the user's own frames, if any, say more
    mode, mode_source = subject.analysed_mode, subject.mode_source if subject.mode is not None else "factory"
    with prefer_sources(model_file), preserved(model), DecisionWatch(model) as watch:
        if subject.mode is not None:   # an override; the factory's choice keeps every submodule's mode
            model.train(subject.mode == "train")
        fields, inputs = _trace(subject, frontends, progress or _silent)
    graph = ModelGraph(**fields, mode=mode, mode_source=mode_source, target=target)
    decisions = tuple(unique(list(watch.decisions) + graph_decisions(graph)))
    if decisions:
        graph = dataclasses.replace(graph, decisions=decisions)
    return graph, dataclasses.replace(subject, args=tuple(inputs))


def _silent(message: str) -> None:
    pass


# (model class, frontend) pairs whose tracer failed in this process: a class that symbolic_trace
# cannot trace fails again, so the next target of that class does not pay for it.
_CANNOT_TRACE: set[tuple[type, str]] = set()


def _holds_transformers(model) -> bool:
    return any(type(m).__module__.startswith("transformers.") for m in model.modules())


def _order(model, frontends: tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """The frontends to try, and a note for each one skipped.

    Given frontends are tried exactly in the order given. The default order (cheapest first,
    ``FRONTENDS``) skips a tracer known to fail: torch.fx on transformers models (its symbolic
    tracing fails on every 5.x model) and on classes it already failed on in this run. After fx,
    the recorded pass comes before torch.export: it sees the same ops and autograd edges, and
    where fx cannot trace a model export costs several times a forward pass; export stays as the
    fallback when the recorded pass fails.
    """
    if frontends is not None:
        unknown = [name for name in frontends if name not in BY_NAME]
        if unknown:
            raise GraphcheckError(f"Unknown frontend {unknown[0]!r}; choose from {', '.join(FRONTENDS)}.")
        return list(frontends), []
    order, skipped = [], []
    for frontend in FRONTENDS:
        if (type(model), frontend) in _CANNOT_TRACE:
            skipped.append(f"{frontend} frontend skipped: it failed on {type(model).__name__} earlier in this run")
        elif frontend == "fx" and _holds_transformers(model):
            skipped.append("fx frontend skipped: torch.fx cannot trace transformers models")
        else:
            order.append(frontend)
    return order, skipped


def _trace(subject: Subject, frontends, progress) -> tuple[dict, tuple]:
    """The ModelGraph's fields from the first frontend that works, and the inputs it ran on."""
    model = subject.model
    table = ParamTable(model)
    devices = ["meta", "cpu"] if table.real else ["meta"]
    if table.real and _small(model, subject.args, subject.kwargs):
        devices = ["cpu", "meta"]
    failures: list[tuple[str, str, FrontendError]] = []
    order, skipped = _order(model, None if frontends is None else tuple(frontends))
    for frontend in order:
        if subject.step is not None and not BY_NAME[frontend].runs_steps:
            skipped.append(f"{frontend} frontend skipped: a training step runs through the recorded "
                           f"frontend ({', '.join(STEP_FRONTENDS)})")
            continue
        trace = BY_NAME[frontend].trace()
        cache: dict = {}
        for device in devices:
            progress(f"{frontend} frontend on {device}")
            phases.enter("forward")
            try:
                with reentrant_checkpoint_semantics(), preserved(model):
                    builder = trace(subject, table, device, cache)
            except FrontendError as exc:
                failures.append((frontend, device, exc))
                if exc.kind == "trace":
                    _CANNOT_TRACE.add((type(model), frontend))
                if exc.kind in ("trace", "inputs"):
                    break   # running on another device would not help
                continue
            notes = skipped + [f"{f} ({d}) frontend did not work: {e}" for f, d, e in failures]
            fields = dict(graph=builder.graph, parameters=table.canonical, frontend=frontend, device=device,
                          notes=tuple(notes), loss_source=builder.loss_source, warnings=tuple(builder.warnings),
                          module_types=_module_types(model))
            return fields, tuple(builder.inputs)
    if not failures:
        raise GraphcheckError(f"A training step needs the {' or '.join(STEP_FRONTENDS)} frontend; "
                              f"--frontend {' '.join(order)} cannot run one.")
    raise TracingError(failures)


def _module_types(model) -> dict[str, str]:
    """Class name of every submodule by qualified name (the drawing labels modules with them)."""
    try:
        return {name: type(module).__name__ for name, module in model.named_modules()}
    except Exception:   # a model whose named_modules() fails still gets analysed
        return {}


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
