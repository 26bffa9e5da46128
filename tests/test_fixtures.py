"""Every fixture: findings match its `# [rule-name]` markers, and GC1xx matches autograd exactly."""

from __future__ import annotations

import contextlib
import copy
import functools
import random

import numpy as np
import pytest
import torch

import graphcheck
from graphcheck.registry import all_rules
from tests.fixture_files import FIXTURES, fixture_files, load_module, markers, rule_of
from tests.oracle import executions_oracle, params_without_gradient

FILES = fixture_files()
RULE_NAMES = {rule.name for rule in all_rules()}


def _id(path):
    return str(path.relative_to(path.parents[2])) if len(path.parents) > 2 else path.name


# Each fixture is analysed once per session for each set of arguments (on the CPU or on meta,
# plus any `graphcheck.check` options), and its 16-execution oracle computed once: the tests
# below share these. Both run under seed 0 with the caller's random state put back, so what is
# cached does not depend on which test asks first, and asking does not move anyone's state.

@contextlib.contextmanager
def _seeded(seed: int = 0):
    """torch, `random` and numpy seeded; their previous states restored on the way out."""
    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])


@functools.cache
def _checked(path, on_meta: bool = False, **options):
    """graphcheck's result for the fixture's factory (the shared copy: read it via `_run`).

    ``on_meta`` takes the meta trace that larger models get instead of the CPU trace that small
    real-weight models get; ``options`` (hashable: tuples, not lists) go to `graphcheck.check`."""
    module = load_module(path)
    loss = getattr(module, "loss", None)
    with _seeded(), pytest.MonkeyPatch.context() as patch:   # the same weights and inputs for both traces
        if on_meta:
            from graphcheck.frontends import chain
            patch.setattr(chain, "SMALL_MODEL_PARAMETERS", -1)
        return graphcheck.check(f"{path}:build_model", loss=f"{path}:loss" if loss else None, **options)


def _own_copy(result):
    """A copy of a cached result with its own lists, dicts and sets (findings themselves are
    frozen): a test that changed its copy could not change what the next test reads."""
    clone = copy.copy(result)
    for name, value in vars(result).items():
        if isinstance(value, (list, dict, set)):
            setattr(clone, name, copy.copy(value))
    return clone


def _run(path, *, on_meta: bool = False, **options):
    result = _own_copy(_checked(path, on_meta, **options))
    assert result.status == "ok", result.error
    return result


def _build(path):
    """The fixture's module, model and inputs, built under seed 0 (the oracle's weights)."""
    module = load_module(path)
    with _seeded():
        model, inputs = module.build_model()
    return module, model, inputs


@functools.cache
def _cached_oracle(path):
    module, model, inputs = _build(path)
    with _seeded():
        never, sometimes = executions_oracle(model, tuple(inputs), getattr(module, "loss", None))
    return frozenset(never), frozenset(sometimes)


def _oracle(path) -> tuple[set[str], set[str]]:
    """`executions_oracle` on the fixture's model built under seed 0: (never, sometimes), fresh sets."""
    never, sometimes = _cached_oracle(path)
    return set(never), set(sometimes)


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_findings_point_at_the_marked_lines(path):
    result = _run(path)
    expected = markers(path)
    rule = rule_of(path)
    found = {(f.location.line, f.name) for f in result.findings
             if f.location and f.location.file == str(path) and (f.severity.rank >= 1 or f.name == rule_of(path))}
    if rule is not None:
        assert rule in RULE_NAMES, f"folder {path.parent} names no rule"
        if path.name == "bad.py":
            assert expected, f"{path} has no `# [{rule}]` marker"
        found_rule = {item for item in found if item[1] == rule}
        assert found_rule == {item for item in expected if item[1] == rule}
        if path.name == "good.py":
            assert not [f for f in result.findings if f.name == rule]
    else:
        # Other fixtures (seed models, regressions) mark every finding they expect.
        assert found == expected


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_gc1xx_equals_autograd(path):
    """Both ways, over 16 executions (seeds, fresh inputs, successive calls): GC1xx is exactly the
    parameters that never get a gradient, GC105 exactly those that get one in some executions only."""
    result = _run(path)
    never, sometimes = _oracle(path)
    assert result.parameters_without_gradient() == never
    assert result.conditionally_used_parameters() == sometimes


# Fixtures torch.export cannot trace, each for a documented reason (docs/limitations.md): the
# export frontend is skipped for these only, and only with this error; any other export
# failure fails the test.
EXPORT_LIMITATIONS = {
    "params/detached-parameter/bad.py": ("fake tensor in the exported program constant's list",
                                         "`.data` in forward"),
    "params/conditionally-used-parameter/bad.py": ("torch.export.export failed",
                                                   "Python control flow on random draws and input values"),
}


@pytest.mark.parametrize("frontend", ["fx", "export", "autograd"])
@pytest.mark.parametrize("path", [p for p in FILES if rule_of(p) and p.parts[-3] == "params"], ids=_id)
def test_every_frontend_gives_the_same_gc1xx_verdict(path, frontend):
    truth, _ = _oracle(path)
    module, model, inputs = _build(path)   # the weights the oracle ran on
    with _seeded():
        result = graphcheck.check(model, inputs, loss=getattr(module, "loss", None), frontends=(frontend,))
    limitation = EXPORT_LIMITATIONS.get(str(path.relative_to(FIXTURES)))
    if frontend == "export" and limitation and result.status == "error":
        assert limitation[0] in result.error, result.error
        pytest.skip(f"torch.export cannot trace this fixture: {limitation[1]}")
    assert result.status == "ok", result.error
    assert result.frontend == frontend
    assert result.parameters_without_gradient() == truth


def test_seed_models_have_no_gc1xx_finding():
    seeds = [p for p in FILES if p.parent.name == "seed" and p.stem.startswith("linear_")]
    assert len(seeds) == 3
    for path in seeds:
        result = _run(path)
        assert not [f for f in result.findings if f.code.startswith("GC1")], path


def test_oracle_sees_zero_init_wake_up():
    """The oracle itself: a zero-initialised last layer wakes up, two consecutive ones do not."""
    torch.manual_seed(0)
    wakes = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    torch.nn.init.zeros_(wakes[2].weight)
    assert params_without_gradient(wakes, (torch.randn(8, 4),)) == set()
    stuck = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    for p in (stuck[0].weight, stuck[0].bias, stuck[2].weight):
        torch.nn.init.zeros_(p)
    assert params_without_gradient(stuck, (torch.randn(8, 4),)) == {"0.weight", "0.bias", "2.weight"}


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_meta_and_cpu_traces_give_the_same_findings(path):
    """Small real-weight models are traced on the CPU (no meta first-use cost); the meta trace,
    what larger models get, must find exactly the same on every fixture."""
    on_cpu = _run(path)                  # both under seed 0: the same weights and inputs (graphcheck
    on_meta = _run(path, on_meta=True)   # calls the factory); see `_checked`
    assert on_cpu.device == "cpu"
    assert on_meta.device == "meta" or any("meta" in note for note in on_meta.notes)

    def summary(result):
        return sorted((f.code, f.location.line if f.location else None, tuple(f.parameters)) for f in result.findings)
    assert summary(on_meta) == summary(on_cpu)
