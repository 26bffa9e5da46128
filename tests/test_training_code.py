"""Training code beyond loss(model(*inputs)): keyword inputs on every frontend, output.loss, steps, Lightning."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphcheck
from graphcheck.progress import StatusLine


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.tags = nn.Linear(8, 3)
        self.unused_head = nn.Linear(8, 2)

    def forward(self, input_ids, mask=None, labels=None):
        logits = self.tags(self.embed(input_ids))
        if mask is not None:
            logits = logits * mask.unsqueeze(-1)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        return out


BATCH = {"input_ids": torch.randint(0, 10, (2, 5)), "labels": torch.randint(0, 3, (2, 5))}


@pytest.mark.parametrize("frontend", ["fx", "export", "autograd"])
def test_keyword_inputs_on_every_frontend(frontend):
    result = graphcheck.check(Tagger(), BATCH, frontends=(frontend,))
    assert result.status == "ok", result.error
    assert result.frontend == frontend and result.loss == "output.loss"
    assert result.parameters_without_gradient() == {"unused_head.weight", "unused_head.bias"}


def test_a_factory_may_return_args_and_kwargs(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import torch\nfrom tests.test_training_code import Tagger\n"
                    "def build_model():\n    ids = torch.randint(0, 10, (2, 5))\n"
                    "    return Tagger(), (ids,), {'mask': torch.ones(2, 5)}\n")
    result = graphcheck.check(f"{path}:build_model")
    assert result.status == "ok", result.error
    assert result.loss == "default: every floating-point output"


@pytest.mark.real
def test_gpt2_double_heads_with_lm_labels_leaves_the_multiple_choice_head_without_gradient(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2DoubleHeadsModel(config)
    ids = torch.randint(0, 64, (2, 3, 8))
    batch = {"input_ids": ids, "mc_token_ids": torch.full((2, 3), 7), "labels": ids, "use_cache": False}
    result = graphcheck.check(model, batch)
    assert result.status == "ok", result.error
    assert result.loss == "output.loss"
    assert {f.code for f in result.findings if f.code.startswith("GC1")} == {"GC102"}
    flagged = result.parameters_without_gradient()
    assert flagged and all(p.startswith("multiple_choice_head.") for p in flagged)
    # The oracle, as tests/oracle.py does it: .grad is None after output.loss.backward().
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    assert flagged == {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}


class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.student = nn.Linear(4, 4)
        self.teacher = nn.Linear(4, 4)

    def forward(self, x):
        return self.student(x)


def distill(model, batch):
    (x,) = batch
    with torch.no_grad():
        target = model.teacher(x)
    return F.mse_loss(model(x), target)


def test_teacher_student_step_matches_autograd():
    model, inputs = Student(), (torch.randn(3, 4),)
    result = graphcheck.check(model, inputs, step=distill)
    assert result.status == "ok", result.error
    assert result.frontend == "autograd" and result.loss == "step: distill"
    assert any("fx frontend skipped" in note for note in result.notes)
    model.zero_grad(set_to_none=True)
    distill(model, inputs).backward()
    truth = {n for n, p in model.named_parameters() if p.grad is None}
    assert truth == {"teacher.weight", "teacher.bias"}
    assert result.parameters_without_gradient() == truth


def _lightning_model(base):
    class Classifier(base):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 3)
            self.probe = nn.Linear(4, 1)

        def forward(self, x):
            return self.body(x), self.probe(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits, _ = self(x)
            return {"loss": F.cross_entropy(logits, y)}

    return Classifier(), (torch.randn(5, 4), torch.randint(0, 3, (5,)))


def test_a_lightning_module_runs_its_training_step():
    lightning = pytest.importorskip("lightning")
    model, batch = _lightning_model(lightning.LightningModule)
    result = graphcheck.check(model, batch)
    assert result.status == "ok", result.error
    assert result.loss == "step: Classifier.training_step"
    assert result.parameters_without_gradient() == {"probe.weight", "probe.bias"}


def test_a_lightning_shaped_module_without_lightning():
    class LightningModule(nn.Module):
        pass
    model, batch = _lightning_model(LightningModule)
    result = graphcheck.check(model, batch)
    assert result.loss == "step: Classifier.training_step"
    assert result.parameters_without_gradient() == {"probe.weight", "probe.bias"}


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_status_line_only_on_a_terminal_and_cleared():
    terminal = FakeTerminal()
    status = StatusLine(terminal, delay=0)
    status("model.py: fx frontend on meta")
    status.clear()
    assert terminal.getvalue().startswith("\r\x1b[Kmodel.py: fx frontend on meta")
    assert terminal.getvalue().endswith("\r\x1b[K")
    quiet, pipe = FakeTerminal(), io.StringIO()
    for stream, enabled in ((quiet, False), (pipe, True)):
        line = StatusLine(stream, enabled=enabled, delay=0)
        line("anything")
        line.clear()
    assert quiet.getvalue() == pipe.getvalue() == ""


def test_check_reports_its_phases():
    heard = []
    graphcheck.check(Tagger(), BATCH, progress=heard.append)
    assert heard[0] == "Tagger: loading"
    assert any("frontend on " in h for h in heard) and any("rules GC1xx" in h for h in heard)
