"""The structural rules: GC201 partial-detach, GC401 bottleneck, GC402 deep-plain-stack.

They read the model graph only (no weight values), so every check here runs on the meta
device. Fixtures give the documented cases; the inline models vary one thing at a time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import graphcheck
from graphcheck.finding import Severity
from tests.fixture_files import FIXTURES, load_module

STRUCTURAL = ["GC2", "GC4"]


def _check(model, inputs, frontends=None, **kwargs):
    extra = {"frontends": frontends} if frontends else {}
    result = graphcheck.check(model, inputs, select=STRUCTURAL, **extra, **kwargs)
    assert result.status == "ok", result.error
    return result


def _fixture(family: str, rule: str, kind: str):
    path = FIXTURES / family / rule / f"{kind}.py"
    return path, load_module(path).build_model()


def _by_line(result, code, path: Path | None = None):
    """{line: set(parameters)} of the findings of one rule (in ``path`` when given)."""
    found = {}
    for finding in result.findings:
        if finding.code != code:
            continue
        if path is not None:
            assert finding.location is not None and finding.location.file == str(path)
        found[finding.location.line if finding.location else None] = set(finding.parameters)
    return found


def _line_of(path: Path, text: str) -> int:
    """The line of ``path`` that contains ``text`` (fixture lines without a marker)."""
    (number,) = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return number


def _layer_params(*modules: str) -> set[str]:
    return {f"{m}.{p}" for m in modules for p in ("weight", "bias")}


# --------------------------------------------------------------------------- GC201 partial-detach

@pytest.mark.parametrize("frontend", ["fx", "export"])
def test_partial_detach_bad_fixture(frontend):
    path, (model, inputs) = _fixture("gradients", "partial-detach", "bad")
    result = _check(model, inputs, frontends=(frontend,))
    assert _by_line(result, "GC201", path) == {
        20: _layer_params("encoder"),                    # h.detach() into the gate
        22: _layer_params("encoder", "scale"),           # .item() of the scale
        25: _layer_params("shared"),                     # torch.no_grad() block
    }
    assert all(f.severity is Severity.WARNING for f in result.findings)
    assert all(f.nodes and f.path[-1] == "loss" for f in result.findings)


def test_partial_detach_good_fixture_is_quiet_on_every_frontend():
    for frontend in ("fx", "export", "autograd"):
        _, (model, inputs) = _fixture("gradients", "partial-detach", "good")
        assert not _check(model, inputs, frontends=(frontend,)).findings


def test_partial_detach_min_share_option():
    path, (model, inputs) = _fixture("gradients", "partial-detach", "bad")
    # encoder loses 1 of its 4 value paths at each cut, scale and shared lose half of theirs.
    result = _check(model, inputs, rule_options={"partial-detach": {"min-share": 0.3}})
    assert _by_line(result, "GC201", path) == {22: _layer_params("scale"), 25: _layer_params("shared")}


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)
        self.probe = nn.Linear(8, 2)

    def forward(self, x):
        h = self.encoder(x)
        return self.head(h) + self.probe(h.detach())


def test_share_of_paths_is_counted():
    result = _check(_Encoder(), (torch.randn(4, 8),))
    (finding,) = result.findings
    assert set(finding.parameters) == _layer_params("encoder")
    assert "50%" in finding.message


def test_fully_detached_parameters_are_left_to_gc1xx():
    class OnlyDetached(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            return self.head(x + self.proj(x).detach())

    result = graphcheck.check(OnlyDetached(), (torch.randn(4, 8),))
    assert [f.code for f in result.findings if f.code.startswith("GC2")] == []
    assert {f.code for f in result.findings} == {"GC103"}


def test_piecewise_constant_cut_is_info():
    class Router(nn.Module):
        def __init__(self):
            super().__init__()
            self.router = nn.Linear(8, 4)
            self.experts = nn.Embedding(4, 8)

        def forward(self, x):
            logits = self.router(x)
            return logits.softmax(-1).sum(-1, keepdim=True) * self.experts(logits.argmax(-1))

    (finding,) = _check(Router(), (torch.randn(4, 8),)).findings
    assert finding.code == "GC201" and finding.severity is Severity.INFO
    assert set(finding.parameters) == _layer_params("router")


def test_straight_through_estimators_are_exempt():
    class GumbelHard(nn.Module):
        def __init__(self):
            super().__init__()
            self.logits = nn.Linear(8, 4)
            self.table = nn.Linear(4, 8)

        def forward(self, x):
            soft = self.logits(x).softmax(-1)
            index = soft.max(-1, keepdim=True)[1]
            hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
            return self.table(hard - soft.detach() + soft)

    assert not _check(GumbelHard(), (torch.randn(4, 8),)).findings


def test_stop_gradient_into_features_is_reported_but_not_into_a_distance():
    class Siamese(nn.Module):
        def __init__(self, distance: bool):
            super().__init__()
            self.distance = distance
            self.backbone = nn.Linear(8, 8)
            self.predictor = nn.Linear(8, 8)

        def forward(self, x1, x2):
            z1, z2 = self.backbone(x1), self.backbone(x2)
            if self.distance:
                return F.mse_loss(self.predictor(z1), z2.detach())
            return self.predictor(z1) * z2.detach()

    inputs = (torch.randn(4, 8), torch.randn(4, 8))
    assert not _check(Siamese(distance=True), inputs).findings
    (finding,) = _check(Siamese(distance=False), inputs).findings
    assert set(finding.parameters) == _layer_params("backbone")


# --------------------------------------------------------------------------- GC401 bottleneck

@pytest.mark.parametrize("frontend", ["fx", "export", "autograd"])
def test_bottleneck_bad_fixture(frontend):
    path, (model, inputs) = _fixture("topology", "bottleneck", "bad")
    result = _check(model, inputs, frontends=(frontend,))
    assert _by_line(result, "GC401", path) == {20: _layer_params("squeeze"), 24: _layer_params("narrow")}


def test_bottleneck_good_fixture_and_ratio_option():
    path, (model, inputs) = _fixture("topology", "bottleneck", "good")
    assert not _check(model, inputs).findings
    # to_mobile squeezes 256 channels to 16: exactly 16x, so only a lower ratio reports it.
    result = _check(model, inputs, rule_options={"bottleneck": {"ratio": 8}})
    assert _by_line(result, "GC401", path) == {_line_of(path, "self.to_mobile(h)"): _layer_params("to_mobile")}


def test_bottleneck_options_on_bad_fixture():
    path, (model, inputs) = _fixture("topology", "bottleneck", "bad")
    # With a ratio of 100 only the two-channel layer is left, by the absolute width.
    result = _check(model, inputs, rule_options={"bottleneck": {"ratio": 100}})
    assert _by_line(result, "GC401", path) == {20: _layer_params("squeeze")}
    result = _check(model, inputs, rule_options={"bottleneck": {"ratio": 100, "min-width": 1}})
    assert not result.findings


def _mlp(*widths):
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_bottleneck_final_layer_and_narrow_segments():
    # A narrow output layer is the model's output, not a bottleneck.
    assert not _check(_mlp(64, 64, 1), (torch.randn(2, 64),)).findings
    # A width-1 hidden layer is one.
    (finding,) = _check(_mlp(64, 64, 1, 64, 10), (torch.randn(2, 64),)).findings
    assert set(finding.parameters) == _layer_params("2")
    # Two consecutive narrow layers are one finding covering both.
    (finding,) = _check(_mlp(512, 512, 16, 16, 512, 10), (torch.randn(2, 512),)).findings
    assert set(finding.parameters) == _layer_params("2", "4")


def test_bottleneck_bypassed_by_a_skip_is_not_on_the_main_path():
    class Adapter(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(64, 256)
            self.down = nn.Linear(256, 4)
            self.up = nn.Linear(4, 256)
            self.out = nn.Linear(256, 10)

        def forward(self, x):
            h = self.inp(x)
            return self.out(h + self.up(torch.relu(self.down(h))))

    assert not _check(Adapter(), (torch.randn(2, 64),)).findings


# --------------------------------------------------------------------------- GC402 deep-plain-stack

@pytest.mark.parametrize("frontend", ["fx", "export", "autograd"])
def test_deep_plain_stack_bad_fixture(frontend):
    path, (model, inputs) = _fixture("topology", "deep-plain-stack", "bad")
    result = _check(model, inputs, frontends=(frontend,))
    assert _by_line(result, "GC402", path) == {
        14: _layer_params(*(f"mlp.layers.{i}" for i in range(12))),
        29: _layer_params(*(f"features.{i}" for i in range(0, 22, 2))),
    }
    paths = sorted(len(f.path) for f in result.findings)
    assert paths == [11, 12]


def test_deep_plain_stack_max_depth_option():
    path, (model, inputs) = _fixture("topology", "deep-plain-stack", "bad")
    result = _check(model, inputs, rule_options={"deep-plain-stack": {"max-depth": 11}})
    assert set(_by_line(result, "GC402", path)) == {14}
    path, (model, inputs) = _fixture("topology", "deep-plain-stack", "good")
    assert not _check(model, inputs).findings
    # The good fixture's head has exactly ten layers in a row.
    result = _check(model, inputs, rule_options={"deep-plain-stack": {"max-depth": 9}})
    (finding,) = result.findings
    assert len(finding.path) == 10 and finding.path[0] == "head.0.0"


def test_deep_plain_stack_broken_by_normalisation():
    layers = []
    for index in range(16):
        layers += [nn.Linear(16, 16), nn.Tanh()]
        if index % 8 == 7:
            layers.append(nn.LayerNorm(16))
    assert not _check(nn.Sequential(*layers), (torch.randn(2, 16),)).findings
    # Without the norms, the same 16 layers are one plain chain.
    plain = nn.Sequential(*[m for m in layers if not isinstance(m, nn.LayerNorm)])
    (finding,) = _check(plain, (torch.randn(2, 16),)).findings
    assert len(finding.parameters) == 32


def test_rule_docs_have_the_sections():
    from graphcheck.registry import DOC_SECTIONS, find_rule
    for code in ("GC201", "GC401", "GC402"):
        rule = find_rule(code)
        assert list(rule.doc_sections()) == list(DOC_SECTIONS)
        assert rule.severity is Severity.WARNING


# --------------------------------------------------------------------------- real models

HEALTHY = ["bert_classifier", "gpt2_lm", "llama_lm", "vit_classifier", "resnet_classifier",
           "convnext_classifier", "wav2vec2_classifier", "whisper_seq2seq", "clip_dual_encoder"]


@pytest.mark.real
@pytest.mark.parametrize("factory", HEALTHY)
def test_healthy_real_models_have_no_structural_finding(factory):
    pytest.importorskip("transformers")
    from tests import real_models
    model, inputs = getattr(real_models, factory)()
    result = _check(model, inputs)
    assert not result.findings, [f.message for f in result.findings]


@pytest.mark.real
def test_real_model_with_a_squeezed_head():
    pytest.importorskip("transformers")
    from tests import real_models

    class SqueezedHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert, _ = real_models.bert_classifier()
            self.squeeze = nn.Linear(3, 1)
            self.out = nn.Linear(1, 3)

        def forward(self, ids):
            logits = self.bert(ids).logits
            return self.out(torch.relu(self.squeeze(logits)))  # 32 -> 3 -> 1 -> 3

    model = SqueezedHead()
    _, inputs = real_models.bert_classifier()
    result = _check(model, inputs)
    assert [(f.code, set(f.parameters)) for f in result.findings] == [("GC401", _layer_params("squeeze"))]


class _BYOL(torch.nn.Module):
    """BYOL/MoCo-style: the target branch is a whole encoder run under no_grad."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16))
        self.pred = torch.nn.Linear(16, 16)

    def forward(self, x1, x2):
        p = self.pred(self.enc(x1))
        with torch.no_grad():
            z = self.enc(x2)
        return -torch.nn.functional.cosine_similarity(p, z, dim=-1).mean()


@pytest.mark.parametrize("frontend", ["fx", "export", "autograd"])
def test_no_grad_target_encoder_is_an_intended_stop_gradient(frontend):
    result = graphcheck.check(_BYOL(), (torch.randn(4, 16), torch.randn(4, 16)), select="GC2",
                              frontends=(frontend,))
    assert result.status == "ok", result.error
    assert result.findings == []
