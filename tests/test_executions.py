"""Issue 11 items 1, 2, 6: the factory's mode, and GC105 conditionally-used-parameter checked against
the multi-execution oracle (tests/oracle.py: never a gradient = GC1xx, sometimes = GC105)."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import graphcheck
from graphcheck.cli import cli
from graphcheck.frontends import build_graph, sample_executions
from graphcheck.subject import Subject
from tests import conditional_models as cm
from tests.fixture_files import markers
from tests.oracle import executions_oracle

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]

MODELS = Path(cm.__file__).resolve()


def _cli(*args: str) -> tuple[int, dict]:
    outcome = CliRunner().invoke(cli, [*args, "--format", "json", "--no-config"], catch_exceptions=False)
    return outcome.exit_code, json.loads(outcome.stdout)


def _codes(result) -> set[str]:
    return {f.code for f in result.findings}


@functools.lru_cache(maxsize=None)
def _checked(factory: str, loss: str | None = None, mode: str | None = None):
    model, inputs = getattr(cm, factory)()
    loss_fn = getattr(cm, loss) if loss else None
    result = graphcheck.check(model, inputs, loss=loss_fn, mode=mode, select="GC1")
    assert result.status == "ok", f"{result.error}\n{result.detail}"
    never, sometimes = executions_oracle(model, inputs, loss_fn, None if mode is None else mode == "train")
    return model, result, never, sometimes


def _agrees(result, never, sometimes) -> None:
    assert result.parameters_without_gradient() == never
    assert result.conditionally_used_parameters() == sometimes


# --------------------------------------------------------------------------- item 1: the mode

def test_factory_eval_mode_is_analysed():
    model, result, never, sometimes = _checked("aux_model_in_eval", "main_and_aux_loss")
    assert (result.mode, result.mode_source) == ("eval", "factory")
    assert not model.training
    _agrees(result, never, sometimes)
    assert never == {"aux.weight", "aux.bias"}   # forward returns main only in eval


def test_train_override_analyses_the_aux_head():
    model, result, never, sometimes = _checked("aux_model_in_eval", "main_and_aux_loss", "train")
    assert (result.mode, result.mode_source) == ("train", "api")
    assert not model.training, "an override is for the analysis only"
    _agrees(result, never, sometimes)
    assert result.findings == []


def test_cli_reports_mode_and_where_it_came_from(tmp_path):
    target, loss = f"{MODELS}:aux_model_in_eval", f"{MODELS}:main_and_aux_loss"
    code, report = _cli(target, "--loss", loss)
    (entry,) = report["targets"]
    assert (entry["mode"], entry["mode_source"], code) == ("eval", "factory", 1)
    code, report = _cli(target, "--loss", loss, "--train")
    (entry,) = report["targets"]
    assert (entry["mode"], entry["mode_source"], code, entry["findings"]) == ("train", "--train", 0, [])
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.graphcheck]\nmode = "train"\n')
    outcome = CliRunner().invoke(cli, [target, "--loss", loss, "--format", "json", "--config", str(config)])
    (entry,) = json.loads(outcome.stdout)["targets"]
    assert (entry["mode"], entry["mode_source"]) == ("train", "config")
    code, report = _cli(target, "--loss", loss, "--eval")
    assert report["targets"][0]["mode_source"] == "--eval"
    text = CliRunner().invoke(cli, [target, "--loss", loss, "--no-config"]).output
    assert "eval mode (the factory's choice)" in text


def test_submodules_keep_their_own_modes():
    model, result, never, sometimes = _checked("frozen_submodule_in_eval")
    assert (result.mode, result.mode_source) == ("train", "factory")
    _agrees(result, never, sometimes)
    assert result.parameters_without_gradient() == {"frozen.train_scale"}
    overridden = graphcheck.check(model, (torch.randn(4, 8),), mode="train", select="GC1")
    assert overridden.parameters_without_gradient() == set()
    assert model.training and not model.frozen.training and model.live.training


# --------------------------------------------------------------------------- item 2: GC105

def _gc105_lines(result) -> set[tuple[int, str]]:
    return {(f.location.line, f.name) for f in result.findings
            if f.code == "GC105" and f.location and Path(f.location.file).resolve() == MODELS}


def _marked(cls) -> set[tuple[int, str]]:
    import inspect
    lines, start = inspect.getsourcelines(cls)
    return {(line, rule) for line, rule in markers(MODELS) if start <= line < start + len(lines)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stochastic_depth_is_gc105_whatever_the_global_seed(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    model, inputs = cm.stochastic_depth_mlp()
    result = graphcheck.check(model, inputs, select="GC1")
    never, sometimes = executions_oracle(model, inputs)
    _agrees(result, never, sometimes)
    assert sometimes == {f"blocks.{i}.{p}" for i in range(3) for p in ("weight", "bias")}
    assert _codes(result) == {"GC105"}
    assert _gc105_lines(result) == _marked(cm.StochasticDepthMLP)
    (finding,) = result.findings
    assert "find_unused_parameters=True" in finding.message and "static_graph=True" in finding.message


@pytest.mark.parametrize("factory, cls", [("toggle", cm.Toggle), ("equal_branch", cm.EqualBranch)])
def test_toggle_and_input_branch_are_gc105(factory, cls):
    model, result, never, sometimes = _checked(factory)
    _agrees(result, never, sometimes)
    assert sometimes and _codes(result) == {"GC105"}
    assert _gc105_lines(result) == _marked(cls)


def test_toggle_state_and_random_generators_are_left_as_they_were():
    model, inputs = cm.toggle()
    graph, subject = build_graph(Subject(model, inputs))
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    sample = sample_executions(graph, subject)
    assert sample.runs == 6 and sample.failed == 0
    assert model.use_a is True
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    assert all(p.grad is None for p in model.parameters())


def test_deterministic_model_runs_no_other_execution():
    model, result, _, _ = _checked("aux_model_in_eval", "main_and_aux_loss")
    assert result.graph.decisions == () and result.graph.measured.executions is None
    assert "executions" not in result.timings


@pytest.mark.real
def test_bart_layerdrop_in_train_mode_is_gc105_and_exits_0():
    model, result, never, sometimes = _checked("bart_layerdrop", "last_hidden_state_loss")
    _agrees(result, never, sometimes)
    assert _codes(result) == {"GC105"} and never == set()
    layers = {p for p in sometimes if ".layers." in p}
    assert layers == {n for n, _ in model.named_parameters() if ".layers." in n}
    lines = {f.location.line for f in result.findings}
    source = Path(result.findings[0].location.file).read_text().splitlines()
    assert all("layerdrop" in source[line - 1] for line in lines)
    code, report = _cli(f"{MODELS}:bart_layerdrop", "--loss", f"{MODELS}:last_hidden_state_loss", "--select", "GC1")
    assert code == 0
    assert {f["code"] for f in report["targets"][0]["findings"]} == {"GC105"}


@pytest.mark.real
def test_bart_layerdrop_in_eval_mode_is_clean():
    _, result, never, sometimes = _checked("bart_layerdrop", "last_hidden_state_loss", "eval")
    _agrees(result, never, sometimes)
    assert result.findings == [] and result.mode_source == "api"


@pytest.mark.real
def test_switch_transformers_experts_without_tokens_are_gc105():
    model, result, never, sometimes = _checked("switch_transformers", "last_hidden_state_loss")
    _agrees(result, never, sometimes)
    experts = {n for n, _ in model.named_parameters() if ".experts." in n}
    assert experts and sometimes <= experts and not (never & experts)
    assert _codes(result) == {"GC105"}


class _KeywordStochasticDepth(torch.nn.Module):
    """Called with a keyword batch, as `model(**batch)`; a block skipped at random."""

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(4, 4)
        self.maybe = torch.nn.Linear(4, 4)

    def forward(self, features, scale=None):
        h = self.first(features)
        if random.random() < 0.5:
            h = h + self.maybe(h)
        return h * (scale if scale is not None else 1.0)


@pytest.mark.parametrize("how", ["kwargs", "step"])
def test_other_executions_follow_keyword_batches_and_steps(how):
    model, batch = _KeywordStochasticDepth(), {"features": torch.randn(3, 4), "scale": torch.ones(1)}
    if how == "kwargs":
        result = graphcheck.check(model, batch)
    else:
        result = graphcheck.check(model, batch, step=lambda m, b: m(**b).pow(2).mean())
    assert result.status == "ok", result.error
    assert result.conditionally_used_parameters() == {"maybe.weight", "maybe.bias"}
    assert result.parameters_without_gradient() == set()


class _BranchOnValue(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.a(x)
        return self.b(x)


def test_a_branch_on_a_value_meta_does_not_have_is_not_an_error():
    """On meta (no weights) a condition has no value: graphcheck takes one side and says so,
    then runs the other; neither branch's parameters are a GC1xx error."""
    with torch.device("meta"):
        model = _BranchOnValue()
    result = graphcheck.check(model, (torch.randn(2, 4),))
    assert result.status == "ok", result.error
    assert result.parameters_without_gradient() == set()
    assert result.conditionally_used_parameters() == {"a.weight", "a.bias", "b.weight", "b.bias"}
    assert [f.code for f in result.findings] == ["GC105"]


class _BranchOnWeights(_BranchOnValue):
    def forward(self, x):
        if self.a.weight.sum() > 0:   # no input involved: on meta the value is simply unknown
            return self.a(x)
        return self.b(x)


def test_a_branch_on_weights_meta_does_not_have_is_named_as_such():
    with torch.device("meta"):
        model = _BranchOnWeights()
    result = graphcheck.check(model, (torch.randn(2, 4),))
    assert result.status == "ok", result.error
    assert result.parameters_without_gradient() == set()
    assert result.conditionally_used_parameters() == {"a.weight", "a.bias", "b.weight", "b.bias"}
    (finding,) = [f for f in result.findings if f.code == "GC105"]
    assert "meta device does not have" in finding.message
