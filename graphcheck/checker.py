"""Running graphcheck on one model: load, trace, run the selected rules, filter, time.

This is the Python API behind the command line::

    import graphcheck
    result = graphcheck.check(model, inputs=(torch.randn(2, 8),))
    assert not result.findings, result.findings
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import time
import traceback
from typing import Callable, Iterable

import torch

from graphcheck.errors import GraphcheckError
from graphcheck.frontends import build_graph
from graphcheck.loader import DEFAULT_STEP, display_spec, load_callable, load_loss, load_target, split_inputs
from graphcheck.measuring import Measuring, measure, needed
from graphcheck.registry import parse_codes, selected_rules
from graphcheck.report import TargetResult
from graphcheck.running import is_lightning_module, lightning_step
from graphcheck.sources import is_library_file, prefer_sources
from graphcheck.subject import Subject
from graphcheck.suppressions import apply_suppressions


def check(model: torch.nn.Module | str, inputs: Iterable | dict | None = None, *,
          loss: Callable | str | None = None, step: Callable | str | None = None, kwargs: dict | None = None,
          select: Iterable[str] | str | None = None, ignore: Iterable[str] | str | None = None,
          mode: str | None = None, ignore_parameters: Iterable[str] = (), rule_options: dict | None = None,
          frontends: Iterable[str] | None = None, name: str | None = None, meta: bool = False,
          progress: Callable[[str], None] | None = None, mode_source: str = "api",
          verify: bool = False) -> TargetResult:
    """Analyse one model (an ``nn.Module`` or a TARGET string) and return its result.

    The model runs as ``model(*inputs, **kwargs)`` (``inputs`` may also be a dict of keyword
    inputs, as ``model(**batch)``), or, with ``step``, as ``step(model, batch)``: a training
    step that returns the loss. A LightningModule runs its own ``training_step``. Without
    ``loss`` or ``step`` the loss is the output's own ``loss`` when it carries one, else every
    floating-point output. ``progress`` hears what is being done (for a status line).

    ``mode`` None analyses the model in the mode the factory left it in (a fresh module is in
    train mode; submodules keep their own modes); "train" / "eval" override it for the analysis
    (the model is given back in its own modes). ``mode_source`` says who chose the override
    ("api", "--train", "--eval", "config") for the report.

    With ``meta`` a TARGET's factory builds the model on the meta device (no weights are
    allocated; rules that read weight values are skipped). ``frontends`` None tries the default
    order; a sequence is tried in the order given. ``verify`` re-checks the GC1xx verdict with
    autograd afterwards (``--verify``). Errors in the input (a target
    that cannot be loaded, a model no frontend can trace, a bad loss) do not raise: the result has ``status == "error"`` and ``error`` says why.
    """
    label = name or (model if isinstance(model, str) else type(model).__name__)
    result = TargetResult(target=label, mode=mode or "train", mode_source=mode_source if mode else "factory")
    report = (lambda message: progress(f"{label}: {message}")) if progress else None
    started = time.perf_counter()
    try:
        target_file = None
        if report:
            report("loading")
        args, kwargs = _split(inputs, dict(kwargs or {}), label)
        if isinstance(model, str):
            loaded = load_target(model, meta=meta)
            model, target_file = loaded.model, loaded.file
            if not args and not kwargs:
                args, kwargs = loaded.inputs, loaded.kwargs
        files = [target_file]
        loss, step, result.loss = _loss_and_step(model, loss, step, files)
        result.timings["build"] = time.perf_counter() - started
        subject = Subject(model, args, kwargs, loss_fn=loss, step=step, mode=mode,
                          mode_source=mode_source if mode else "factory")
        with prefer_sources(*files):
            _analyse(result, subject, frontends=frontends, select=select, ignore=ignore,
                     rule_options=rule_options, ignore_parameters=ignore_parameters, progress=report)
            if verify and result.status == "ok":
                if report:
                    report("verifying with autograd")
                from graphcheck.verify import verify_result
                verify_result(result)
    except GraphcheckError as exc:
        result.status, result.error, result.detail = "error", exc.message, exc.detail or traceback.format_exc()
    except Exception as exc:  # graphcheck's own bug: still a clear message, never a bare traceback
        result.status = "error"
        result.error = (f"graphcheck failed with an internal error ({type(exc).__name__}: {exc}). "
                        "Please report it with the output of --debug.")
        result.detail = traceback.format_exc()
    return result


def _split(inputs, kwargs: dict, label: str) -> tuple[tuple, dict]:
    if inputs is None:
        return (), kwargs
    args, given = split_inputs(inputs, label)
    return args, {**given, **kwargs}


def _loss_and_step(model, loss, step, files: list) -> tuple[Callable | None, Callable | None, str | None]:
    """The loss or step callables, and how the report names them (None: decided by the output)."""
    if loss is not None and step is not None:
        raise GraphcheckError("Give a loss or a training step, not both: a step returns the loss itself.")
    if isinstance(step, str):
        spec, (step, step_file) = step, load_callable(step, DEFAULT_STEP, "training step")
        files.append(step_file)
        return None, step, f"step: {display_spec(spec)}"
    if step is not None:
        return None, step, f"step: {_callable_name(step)}"
    if isinstance(loss, str):
        return load_loss(loss), None, f"loss: {display_spec(loss)}"
    if loss is not None:
        return loss, None, f"loss: {_callable_name(loss)}"
    if is_lightning_module(model):
        return None, lightning_step, f"step: {type(model).__name__}.training_step"
    return None, None, None


def _callable_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _analyse(result: TargetResult, subject: Subject, *, frontends, select, ignore, rule_options,
             ignore_parameters, progress) -> None:
    """Trace, measure what the selected rules read, run them, filter; fills ``result`` (timings included)."""
    traced_at = time.perf_counter()
    graph, subject = build_graph(subject, frontends=frontends, target=result.target, progress=progress)
    result.timings["trace"] = time.perf_counter() - traced_at
    result.subject = subject
    result.frontend, result.device = graph.frontend, graph.device
    result.mode, result.mode_source = graph.mode, graph.mode_source
    result.loss = result.loss or graph.loss_source
    result.parameters = graph.counts()
    result.notes.extend(graph.notes)
    result.warnings.extend(graph.warnings)
    rules = []
    for rule in selected_rules(parse_codes(select), parse_codes(ignore), rule_options):
        if rule.needs_weights and not subject.has_weights:
            result.skipped_rules.append(rule.code)   # the model is on meta: no values to read
        else:
            rules.append(rule)
    log = Measuring()
    graph = measure(graph, subject, needed(rules), progress, log)
    result.graph = graph
    result.notes.extend(log.notes)
    result.timings.update(log.timings)
    rules_at = time.perf_counter()
    findings, ran, families = [], [], set()
    for rule in rules:
        if progress and rule.family not in families:
            progress(f"{graph.frontend} frontend, rules {rule.family.prefix}xx")
            families.add(rule.family)
        findings.extend(rule.check(graph))
        ran.append(rule.code)
    findings = _without_ignored_parameters(findings, ignore_parameters)
    outcome = apply_suppressions(findings, user_files(graph, findings), ran)
    for rule in selected_rules(parse_codes(select), parse_codes(ignore), rule_options, stage="findings"):
        outcome.kept.extend(rule.check(outcome))
    result.findings, result.suppressed = _in_order(outcome.kept), _in_order(outcome.suppressed)
    result.timings["rules"] = time.perf_counter() - rules_at


def _in_order(findings: list) -> list:
    return sorted(findings, key=lambda f: (f.location.file if f.location else "",
                                          f.location.line if f.location else 0, f.code))


def user_files(graph, findings=()) -> set[str]:
    """The user's source files the model ran through or a finding points to (where suppression comments can be)."""
    locations = [data.get("location") for _, data in graph.graph.nodes(data=True)]
    locations += [finding.location for finding in findings]
    return {os.path.abspath(loc.file) for loc in locations
            if loc is not None and os.path.isfile(loc.file) and not is_library_file(loc.file)}


def _without_ignored_parameters(findings, patterns):
    patterns = list(patterns or ())
    if not patterns:
        return findings
    kept = []
    for finding in findings:
        if finding.parameters:
            remaining = [p for p in finding.parameters if not any(fnmatch.fnmatchcase(p, pat) for pat in patterns)]
            if not remaining:
                continue
            finding = dataclasses.replace(finding, parameters=tuple(remaining))
        kept.append(finding)
    return kept
