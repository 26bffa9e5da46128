"""The numeric rules (GC3xx, GC5xx) against fixtures, independent measurements and real models.

The probe-based rules claim numbers (mean activation derivative, fraction of dead units,
gradient-norm ratio, zero gradients at step 0, units that stay identical). Each claim is
re-measured here with plain autograd and hooks on a probe batch, without graphcheck.probing.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import graphcheck
from graphcheck.registry import find_rule

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
FAMILIES = ("activations", "init")
MARKER = re.compile(r"#\s*\[([a-z0-9-]+)\]\s*$")


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"fixture_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_model()


def run(path: Path, select: str):
    result = graphcheck.check(str(path), select=select)
    assert result.status == "ok", result.error
    return result


def fixture_dirs():
    return sorted(d for family in FAMILIES for d in (FIXTURES / family).iterdir() if d.is_dir())


# --------------------------------------------------------------------------- markers

@pytest.mark.parametrize("folder", fixture_dirs(), ids=lambda d: d.name)
def test_fixture_markers(folder):
    rule = find_rule(folder.name)
    bad, good = folder / "bad.py", folder / "good.py"
    expected = {(number, name) for number, line in enumerate(bad.read_text().splitlines(), 1)
                for name in MARKER.findall(line)}
    assert expected, f"{bad} has no marker"
    found = {(f.location.line, f.name) for f in run(bad, rule.code).findings if f.code == rule.code}
    assert found == expected
    assert not [f for f in run(good, rule.code).findings if f.code == rule.code]


@pytest.mark.parametrize("folder", fixture_dirs(), ids=lambda d: d.name)
def test_fixtures_have_no_gradient_errors(folder):
    # The GC1xx oracle is empty for these fixtures: every parameter gets a gradient eventually.
    import sys
    sys.path.insert(0, str(Path(__file__).parent))
    from oracle import params_without_gradient
    for path in (folder / "bad.py", folder / "good.py"):
        model, inputs = load(path)
        assert params_without_gradient(model, inputs) == set()
        assert not [f for f in run(path, "GC1").findings]


# --------------------------------------------------------------------------- independent measurement

def capture(modules: dict[str, nn.Module]):
    """Forward hooks that keep the output of each named module (a pre-activation)."""
    seen, handles = {}, []
    for name, module in modules.items():
        handles.append(module.register_forward_hook(
            lambda mod, args, out, name=name: seen.__setitem__(name, out.detach())))
    return seen, handles


def relative_derivative(activation, x: torch.Tensor, max_derivative: float) -> float:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(activation(x).sum(), x)
    return float(grad.mean()) / max_derivative


SATURATED = {  # fixture layer feeding the activation -> (activation, its largest derivative)
    "wide": (torch.tanh, 1.0),
    "gate": (torch.sigmoid, 0.25),
}


@pytest.mark.parametrize("kind", ["bad", "good"])
def test_saturated_at_init_measured(kind):
    model, inputs = load(FIXTURES / "activations/saturated-at-init" / f"{kind}.py")
    seen, handles = capture({name: getattr(model, name) for name in SATURATED})
    model(*inputs)
    for handle in handles:
        handle.remove()
    limit = find_rule("GC302").options["min-mean-derivative"]
    for name, (activation, largest) in SATURATED.items():
        measured = relative_derivative(activation, seen[name], largest)
        assert (measured < limit) == (kind == "bad"), (name, measured)


@pytest.mark.parametrize("kind", ["bad", "good"])
def test_dead_relu_at_init_measured(kind):
    model, inputs = load(FIXTURES / "activations/dead-relu-at-init" / f"{kind}.py")
    feeding = {"fc": model.fc, "conv": getattr(model, "bn", model.conv)}
    seen, handles = capture(feeding)
    generator = torch.Generator().manual_seed(1)
    unit_max = {}
    for _ in range(8):   # 32 fresh samples
        batch = tuple(torch.randn(t.shape, generator=generator) for t in inputs)
        model(*batch)
        for name, out in seen.items():
            per_unit = out.transpose(0, 1).reshape(out.shape[1], -1).amax(dim=1)
            unit_max[name] = torch.maximum(unit_max[name], per_unit) if name in unit_max else per_unit
    for handle in handles:
        handle.remove()
    limit = find_rule("GC303").options["max-dead-fraction"]
    for name, maxima in unit_max.items():
        dead = float((maxima < 0).float().mean())
        assert (dead > limit) == (kind == "bad"), (name, dead)


@pytest.mark.parametrize("rule,kind", [(r, k) for r in ("vanishing-gradient-at-init", "exploding-gradient-at-init")
                                       for k in ("bad", "good")])
def test_gradient_ratio_measured(rule, kind):
    model, inputs = load(FIXTURES / "activations" / rule / f"{kind}.py")
    model(*inputs).sum().backward()
    ratio = float(model.layers[0].weight.grad.norm() / model.head.weight.grad.norm())
    options = find_rule(rule).options
    if rule.startswith("vanishing"):
        assert (ratio < options["min-ratio"]) == (kind == "bad"), ratio
    else:
        assert (ratio > options["max-ratio"]) == (kind == "bad"), ratio


def test_zero_initialised_weight_starves_upstream_at_step_zero():
    path = FIXTURES / "init/zero-initialised-weight/bad.py"
    (finding,) = run(path, "GC501").findings
    zero, *starved = finding.parameters
    model, inputs = load(path)
    params = dict(model.named_parameters())
    assert not params[zero].any()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(*inputs).sum().backward()
    assert all(not params[name].grad.any() for name in starved)
    assert params[zero].grad.any()
    optimizer.step()
    optimizer.zero_grad()
    model(*inputs).sum().backward()
    assert all(params[name].grad.any() for name in starved)   # step 0 only: they wake up


def _rows_identical(weight: torch.Tensor) -> bool:
    return bool(torch.allclose(weight, weight[:1].expand_as(weight)))


def _train(model, inputs, steps=5):
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(2)
    for _ in range(steps):
        batch = tuple(torch.randn(t.shape, generator=generator) for t in inputs)
        optimizer.zero_grad()
        model(*batch).pow(2).mean().backward()
        optimizer.step()
    return model


def test_symmetric_initialisation_stays_symmetric():
    path = FIXTURES / "init/symmetric-initialisation/bad.py"
    flagged = {p for f in run(path, "GC502").findings for p in f.parameters}
    model, inputs = load(path)
    trained = dict(_train(model, inputs).named_parameters())
    assert flagged == {"fc1.weight", "fc2.weight"}
    for name in flagged:
        assert _rows_identical(trained[name]), name


def test_constant_layer_followed_by_random_layer_breaks_symmetry():
    model, inputs = load(FIXTURES / "init/symmetric-initialisation/good.py")
    assert _rows_identical(model.fc2.weight)
    trained = _train(model, inputs)
    assert not _rows_identical(trained.fc2.weight)


def test_badly_scaled_measured():
    model, _ = load(FIXTURES / "init/badly-scaled-initialisation/bad.py")
    # Kaiming before ReLU: sqrt(2 / fan_in); Xavier before tanh: sqrt(2 / (fan_in + fan_out)).
    assert float(model.big.weight.detach().std()) > 10 * (2 / 512) ** 0.5
    assert float(model.small.weight.detach().std()) < (2 / 128) ** 0.5 / 10
    good, _ = load(FIXTURES / "init/badly-scaled-initialisation/good.py")
    # The default init of Linear(1, 1000) is 13x Xavier's fan-average: still not reported.
    assert float(good.fan_out.weight.detach().std()) > 10 * (2 / 1001) ** 0.5


def test_rules_skip_meta_models():
    model, inputs = load(FIXTURES / "init/symmetric-initialisation/bad.py")
    result = graphcheck.check(model.to("meta"), (inputs[0].to("meta"),), select="GC3,GC5")
    assert result.status == "ok"
    assert not [f for f in result.findings if f.code != "GC301"]
    assert "GC502" in result.skipped_rules


# --------------------------------------------------------------------------- seed article

def test_seed_sigmoid_mlp_20():
    result = run(FIXTURES / "seed/sigmoid_mlp_20.py", "GC3,GC5")
    codes = {f.code for f in result.findings}
    assert {"GC301", "GC302", "GC503"} <= codes
    model, inputs = load(FIXTURES / "seed/sigmoid_mlp_20.py")
    seen, handles = capture({"first": model.layers[0]})
    model(*inputs)
    handles[0].remove()
    assert relative_derivative(torch.sigmoid, seen["first"], 0.25) < 0.25


def test_seed_linear_sigmoid_linear_at_most_info():
    result = run(FIXTURES / "seed/linear_sigmoid_linear.py", "GC3,GC5")
    assert all(f.severity.value == "info" for f in result.findings)


@pytest.mark.parametrize("name", ["linear_relu_linear.py", "linear_relu_linear_xavier.py"])
def test_seed_relu_models_clean(name):
    assert run(FIXTURES / "seed" / name, "GC3,GC5").findings == []


# --------------------------------------------------------------------------- real models

class _Wrap(nn.Module):
    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)))
        return tuple(v for v in out.values() if isinstance(v, torch.Tensor))


def _hf(name):
    os.environ["HF_HUB_OFFLINE"] = "1"
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ids = torch.randint(0, 99, (2, 8))
    image = torch.randn(2, 3, 32, 32)
    if name == "bert":
        config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=37)
        return _Wrap(transformers.BertModel(config), ["input_ids"]), (ids,)
    if name == "gpt2":
        config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, use_cache=False)
        return _Wrap(transformers.GPT2LMHeadModel(config), ["input_ids"]), (ids,)
    if name == "vit":
        config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, intermediate_size=37)
        return _Wrap(transformers.ViTModel(config), ["pixel_values"]), (image,)
    if name == "convnext":
        config = transformers.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)
        return _Wrap(transformers.ConvNextModel(config), ["pixel_values"]), (image,)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["bert", "gpt2", "vit", "convnext"])
def test_real_models_quiet(name):
    model, inputs = _hf(name)
    result = graphcheck.check(model, inputs, select="GC3,GC5")
    assert result.status == "ok", result.error
    assert not any("GC3" in n or "GC5" in n for n in result.notes)   # the probe rules did run
    assert [f for f in result.findings if f.severity.value != "info"] == []
