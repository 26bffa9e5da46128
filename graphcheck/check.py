"""Running graphcheck on one model: load, trace, run the selected rules, filter, time.

This is the Python API behind the command line::

    import graphcheck
    result = graphcheck.check(model, inputs=(torch.randn(2, 8),))
    assert not result.findings, result.findings
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
import traceback
from typing import Callable, Iterable

import torch

from graphcheck.errors import GraphcheckError
from graphcheck.loader import load_loss, load_target
from graphcheck.registry import parse_codes, selected_rules
from graphcheck.report import TargetResult
from graphcheck.frontends import FRONTENDS, build_graph, sample_executions
from graphcheck.sources import prefer_sources


def check(model: torch.nn.Module | str, inputs: Iterable | None = None, *, loss: Callable | str | None = None,
          select: Iterable[str] | str | None = None, ignore: Iterable[str] | str | None = None,
          mode: str | None = None, ignore_parameters: Iterable[str] = (), rule_options: dict | None = None,
          frontends: Iterable[str] = FRONTENDS, name: str | None = None, meta: bool = False,
          mode_source: str = "api") -> TargetResult:
    """Analyse one model (an ``nn.Module`` or a TARGET string) and return its result.

    ``mode`` None analyses the model in the mode the factory left it in (a fresh module is in
    train mode; submodules keep their own modes); "train" / "eval" override it for the analysis
    (the model is given back in its own modes). ``mode_source`` says who chose the override
    ("api", "--train", "--eval", "config") for the report.

    With ``meta`` a TARGET's factory builds the model on the meta device (no weights are
    allocated; rules that read weight values are skipped). Errors in the input (a target
    that cannot be loaded, a model no frontend can trace, a bad loss) do not raise: the result has ``status == "error"`` and ``error`` says why.
    """
    label = name or (model if isinstance(model, str) else type(model).__name__)
    result = TargetResult(target=label, mode=mode or "train", mode_source=mode_source if mode else "factory")
    started = time.perf_counter()
    try:
        target_file = None
        if isinstance(model, str):
            loaded = load_target(model, meta=meta)
            model, target_inputs, target_file = loaded.model, loaded.inputs, loaded.file
            inputs = tuple(inputs) if inputs else target_inputs
        inputs = tuple(inputs or ())
        if isinstance(loss, str):
            loss = load_loss(loss)
        result.timings["build"] = time.perf_counter() - started
        with prefer_sources(target_file), _modes_restored(model):
            _analyse(result, model, inputs, loss, mode=mode, mode_source=mode_source, frontends=frontends,
                     select=select, ignore=ignore, rule_options=rule_options,
                     ignore_parameters=ignore_parameters)
    except GraphcheckError as exc:
        result.status, result.error, result.detail = "error", exc.message, exc.detail or traceback.format_exc()
    except Exception as exc:  # graphcheck's own bug: still a clear message, never a bare traceback
        result.status = "error"
        result.error = (f"graphcheck failed with an internal error ({type(exc).__name__}: {exc}). "
                        "Please report it with the output of --debug.")
        result.detail = traceback.format_exc()
    return result


def _modes_restored(model):
    """Give the model back with every module's own training flag (an override is for the analysis only)."""
    if not isinstance(model, torch.nn.Module):
        return contextlib.nullcontext()
    return _training_flags_kept(model)


@contextlib.contextmanager
def _training_flags_kept(model: torch.nn.Module):
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _analyse(result: TargetResult, model, inputs, loss, *, mode, mode_source, frontends, select, ignore,
             rule_options, ignore_parameters) -> None:
    """Trace, run the selected rules, filter; fills ``result`` (timings included)."""
    traced_at = time.perf_counter()
    graph = build_graph(model, inputs, loss, mode=mode, mode_source=mode_source, frontends=frontends,
                        target=result.target)
    result.timings["trace"] = time.perf_counter() - traced_at
    result.graph, result.frontend, result.device = graph, graph.frontend, graph.device
    result.mode, result.mode_source = graph.mode, graph.mode_source
    result.parameters = graph.counts()
    result.notes.extend(graph.notes)
    rules = list(selected_rules(parse_codes(select), parse_codes(ignore), rule_options))
    if graph.decisions and any(rule.code.startswith("GC10") for rule in rules):
        # Forward decides in Python on random draws, inputs or its own state: other executions may
        # use other parameters (GC105). Deterministic models never pay for this.
        sampled_at = time.perf_counter()
        graph.executions = sample_executions(graph, None if mode is None else mode == "train")
        result.timings["executions"] = time.perf_counter() - sampled_at
        result.notes.append(f"{len(graph.decisions)} decision point(s) in forward; "
                            f"{graph.executions.runs} other execution(s) ran, {graph.executions.failed} failed")
    rules_at = time.perf_counter()
    findings = []
    for rule in rules:
        if rule.needs_weights and not graph.has_weights:
            result.skipped_rules.append(rule.code)
            continue
        findings.extend(rule.check(graph))
    probe = graph._cache.get("probe")
    if probe is not None and probe.error:
        result.notes.append(f"probe-based rules (GC302-GC305) found nothing to say: {probe.error}")
    result.findings = _without_ignored_parameters(findings, ignore_parameters)
    result.findings.sort(key=lambda f: (f.location.file if f.location else "",
                                        f.location.line if f.location else 0, f.code))
    result.timings["rules"] = time.perf_counter() - rules_at


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
            finding.parameters = remaining
        kept.append(finding)
    return kept
