"""The measurements: what the checker learns by running the model again, once, before the rules.

Rules declare what they read (``Rule.measures``, :class:`graphcheck.measured.Measure`). This
module runs each measurement a selected rule needs, through the subject (the one door that runs
the user's code), and returns the graph with the typed results (``ModelGraph.measured``):

* ``WEIGHTS``: the initial weight values (no copy; real weights only);
* ``EXECUTIONS``: other executions (frontends/executions.py), only when forward makes a Python
  decision that may go another way; deterministic models never pay for them;
* ``PROBE`` / ``PROBE_GRADIENTS`` / ``DEAD_UNITS``: the probe pass (probing.py) with the real
  weights: for the probe rules, or for the gradient verdict when the graph has a ReLU-family
  call that could be dead at init. Its backward pass runs only when a rule reads layer gradients.

Nothing under ``graphcheck/analysis`` runs the model: the passes read these results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from graphcheck import phases
from graphcheck.analysis.signal import probe_nodes
from graphcheck.analysis.weights import compared_weights
from graphcheck.frontends.executions import sample_executions
from graphcheck.measured import Measure, Measured
from graphcheck.model_graph import ModelGraph
from graphcheck.ops import RELU_FAMILY
from graphcheck.probing import run_probe
from graphcheck.running import canonical_parameters
from graphcheck.subject import Subject


@dataclass
class Measuring:
    """What measuring said about itself: notes for ``--debug`` and the time each measurement took."""

    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def needed(rules: Iterable) -> frozenset[Measure]:
    """Every measurement the given rules (instances or classes) declare."""
    return frozenset(measure for rule in rules for measure in rule.measures)


def measure(graph: ModelGraph, subject: Subject, needs: frozenset[Measure],
            progress: Callable[[str], None] | None = None, log: Measuring | None = None) -> ModelGraph:
    """``graph`` with the results of the measurements in ``needs`` that apply to this model."""
    log = log if log is not None else Measuring()
    real = subject.has_weights
    weights = executions = probe = None
    if Measure.WEIGHTS in needs and real:
        weights = {name: p.detach() for name, p in canonical_parameters(subject.model)[0].items()}
    if Measure.EXECUTIONS in needs and graph.decisions:
        # Forward decides in Python on random draws, inputs or its own state: other executions may
        # use other parameters (GC105).
        if progress:
            progress(f"{graph.frontend} frontend, other executions")
        started = time.perf_counter()
        phases.enter("executions")
        executions = sample_executions(graph, subject)
        log.timings["executions"] = time.perf_counter() - started
        log.notes.append(f"{len(graph.decisions)} decision point(s) in forward; "
                         f"{executions.runs} other execution(s) ran, {executions.failed} failed")
    nodes = probe_nodes(graph)
    relus = any(kind in RELU_FAMILY for _, kind, _ in nodes)
    if real and (Measure.PROBE in needs or Measure.PROBE_GRADIENTS in needs
                 or (Measure.DEAD_UNITS in needs and relus)):
        if progress:
            progress(f"{graph.frontend} frontend, probe pass")
        started = time.perf_counter()
        phases.enter("probe")
        probe = run_probe(subject, gradients=Measure.PROBE_GRADIENTS in needs,
                          weights=compared_weights(graph), nodes=nodes)
        log.timings["probe"] = time.perf_counter() - started
        if probe.error:
            log.notes.append(f"probe-based rules (GC302-GC305) found nothing to say: {probe.error}")
    return graph.with_measured(Measured(weights=weights, probe=probe, executions=executions))
