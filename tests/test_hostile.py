"""Hostile and broken input: never a traceback; exit 2 with a clear message, or a correct analysis."""

from __future__ import annotations

import json
import textwrap

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphcheck.cli import cli

HEADER = "import torch\nfrom torch import nn\n\n"


def core_bug(number: int, what: str):
    """A case that fails because of a reported, not yet fixed graphcheck bug (see docs/testing.md)."""
    return pytest.mark.xfail(reason=f"graphcheck bug #{number} (prover notes): {what}", strict=False)


def run(*args: str):
    """The CLI in-process; a crash (an exception other than SystemExit) fails the test."""
    outcome = CliRunner().invoke(cli, [*args, "--no-config"])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), \
        f"graphcheck crashed: {outcome.exception!r}\n{outcome.output}"
    assert "Traceback" not in outcome.output
    return outcome


def write(tmp_path, body: str, name: str = "model.py") -> str:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return str(path)


def report(outcome) -> dict:
    return json.loads(outcome.stdout)["targets"][0]


def gc1(target: dict) -> set[str]:
    return {p for f in target["findings"] if f["code"].startswith("GC1") for p in f["parameters"]}


def assert_error(outcome, *words: str):
    assert outcome.exit_code == 2, outcome.output
    text = outcome.output.lower()
    for word in words:
        assert word.lower() in text, (word, outcome.output)


# --------------------------------------------------------------------------- targets

@pytest.mark.parametrize("target", ["", ":", ":build_model", "model.py:1abc", "model.py:a-b",
                                    "no_such_file.py", "no_such_dir/model.py:build_model",
                                    "no_such_package_xyz.module:build_model", "json", "os.path:sep",
                                    "model.py:build_model:extra"])
def test_malformed_targets(tmp_path, monkeypatch, target):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "def build_model():\n    return nn.Linear(2, 2), (torch.randn(1, 2),)\n")
    outcome = run(target)
    assert_error(outcome)
    assert "error" in outcome.output


def test_directory_as_target(tmp_path):
    assert_error(run(str(tmp_path) + ":build_model"))


@pytest.mark.parametrize("body,words", [
    ("raise RuntimeError('boom at import')\n", ["RuntimeError", "boom at import"]),
    ("import no_such_module_for_graphcheck\n", ["no_such_module_for_graphcheck"]),
    ("def build_model(:\n    pass\n", ["syntax error"]),
    ("x = 1 +\n", ["syntax error"]),
    ("def f():\n\treturn 1\n        return 2\n", []),             # inconsistent indentation
    ("import sys\nsys.exit(3)\n", ["exit"]),                      # SystemExit at import
], ids=["raises", "missing-import", "syntax", "syntax-expr", "indentation", "sys-exit"])
def test_files_that_fail_at_import(tmp_path, body, words):
    assert_error(run(write(tmp_path, body)), *words)


def test_null_bytes_in_file(tmp_path):
    path = tmp_path / "model.py"
    path.write_bytes(b"import torch\x00\n")
    assert_error(run(str(path)))


def test_not_utf8(tmp_path):
    path = tmp_path / "model.py"
    path.write_bytes(b"x = '\xff\xfe'\n")
    assert_error(run(str(path)))


@pytest.mark.parametrize("body,words", [
    ("def other():\n    pass\n", ["build_model", "other"]),        # missing factory, suggests others
    ("build_model = 3\n", ["int"]),
    ("def build_model():\n    raise ValueError('bad factory')\n", ["ValueError", "bad factory"]),
    ("def build_model(size):\n    return nn.Linear(size, size)\n", ["TypeError"]),
    ("def build_model():\n    return None\n", ["NoneType"]),
    ("def build_model():\n    return torch.randn(3)\n", ["Tensor"]),
    ("def build_model():\n    return [nn.Linear(2, 2), nn.Linear(2, 2)]\n", ["list"]),
    ("def build_model():\n    return nn.Linear(2, 2), {'x': torch.randn(1, 2)}\n", ["dict"]),
    ("def build_model():\n    return nn.Linear(2, 2), 5\n", ["int"]),
    ("def build_model():\n    return (nn.Linear(2, 2), (torch.randn(1, 2),), 'extra')\n", ["tuple"]),
    ("def build_model():\n    return nn.Linear\n", []),            # a class, not an instance
    ("def build_model():\n    import sys\n    sys.exit(0)\n", ["exit"]),   # must not pass silently
    ("def build_model():\n    return build_model()\n", ["RecursionError"]),
], ids=["missing", "not-callable", "raises", "needs-args", "none", "tensor", "list-of-modules",
        "dict-inputs", "int-inputs", "three-tuple", "class", "sys-exit", "recursion"])
def test_odd_factories(tmp_path, body, words):
    assert_error(run(write(tmp_path, body)), *words)


# --------------------------------------------------------------------------- forward and outputs

def test_forward_raises(tmp_path):
    path = write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(2, 2)
            def forward(self, x):
                raise ValueError("forward is broken")

        def build_model():
            return M(), (torch.randn(1, 2),)
        """)
    assert_error(run(path), "forward is broken")


def test_forward_with_wrong_input_shape(tmp_path):
    path = write(tmp_path, "def build_model():\n    return nn.Linear(4, 2), (torch.randn(1, 3),)\n")
    assert_error(run(path))


@pytest.mark.parametrize("returned", ["None", "3", "'text'", "[None, 1.5]"])
def test_forward_returns_no_tensor(tmp_path, returned):
    path = write(tmp_path, f"""
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(2, 2)
            def forward(self, x):
                self.a(x)
                return {returned}

        def build_model():
            return M(), (torch.randn(1, 2),)
        """)
    outcome = run(path, "--format", "json")
    # Nothing reaches a loss: either a clear error, or every parameter flagged.
    if outcome.exit_code == 1:
        assert gc1(report(outcome)) == {"a.weight", "a.bias"}
    else:
        assert_error(outcome)


def test_nested_dict_and_dataclass_outputs(tmp_path):
    path = write(tmp_path, """
        from dataclasses import dataclass

        @dataclass
        class Out:
            main: torch.Tensor
            extra: dict

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(2, 2)
                self.b = nn.Linear(2, 2)
                self.c = nn.Linear(2, 2)
            def forward(self, x):
                return {"first": self.a(x), "nested": {"deep": [self.b(x), (self.c(x), "tag", 3)]}}

        def build_model():
            return M(), (torch.randn(1, 2),)

        def loss(out):
            return out["first"].sum() + out["nested"]["deep"][1][0].sum()
        """)
    outcome = run(path, "--format", "json")
    assert outcome.exit_code == 0, outcome.output
    outcome = run(path, "--loss", path + ":loss", "--format", "json")
    assert outcome.exit_code == 1, outcome.output
    assert gc1(report(outcome)) == {"b.weight", "b.bias"}


def test_dataclass_output_with_loss(tmp_path):
    path = write(tmp_path, """
        from dataclasses import dataclass

        @dataclass
        class Out:
            logits: torch.Tensor
            aux: torch.Tensor

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(2, 2)
                self.aux = nn.Linear(2, 2)
            def forward(self, x):
                return Out(self.a(x), self.aux(x))

        def build_model():
            return M(), (torch.randn(1, 2),)

        def loss(out):
            return out.logits.pow(2).mean()
        """)
    outcome = run(path, "--loss", path + ":loss", "--format", "json")
    if outcome.exit_code == 2:
        assert_error(outcome)
    else:
        assert outcome.exit_code == 1, outcome.output
        assert gc1(report(outcome)) == {"aux.weight", "aux.bias"}


def test_model_output_from_transformers(tmp_path):
    pytest.importorskip("transformers")
    path = write(tmp_path, """
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(2, 2)
                self.pool = nn.Linear(2, 2)
            def forward(self, x):
                return BaseModelOutputWithPooling(last_hidden_state=self.a(x), pooler_output=self.pool(x))

        def build_model():
            return M(), (torch.randn(1, 2),)

        def loss(out):
            return out.last_hidden_state.pow(2).mean()
        """)
    outcome = run(path, "--loss", path + ":loss", "--format", "json")
    assert outcome.exit_code == 1, outcome.output
    assert gc1(report(outcome)) == {"pool.weight", "pool.bias"}


# --------------------------------------------------------------------------- losses

LOSS_MODEL = """
def build_model():
    return nn.Linear(2, 3), (torch.randn(4, 2),)

"""


@pytest.mark.parametrize("loss_body,words", [
    ("def loss(out):\n    return 3\n", ["int"]),
    ("def loss(out):\n    return 3.5\n", ["float"]),
    ("def loss(out):\n    return None\n", ["NoneType"]),
    ("def loss(out):\n    return out\n", ["scalar"]),                   # non-scalar tensor
    ("def loss(out):\n    return out.sum().item()\n", ["float"]),
    ("def loss(out):\n    raise KeyError('labels')\n", ["labels"]),
    ("def loss(out, target):\n    return out.sum()\n", []),              # wrong signature
    ("loss = 'not callable'\n", ["str"]),
], ids=["int", "float", "none", "non-scalar", "item", "raises", "signature", "not-callable"])
def test_bad_losses(tmp_path, loss_body, words):
    path = write(tmp_path, LOSS_MODEL + loss_body)
    assert_error(run(path, "--loss", path + ":loss"), *words)


def test_missing_loss(tmp_path):
    path = write(tmp_path, LOSS_MODEL)
    assert_error(run(path, "--loss", path + ":loss"), "loss")
    assert_error(run(path, "--loss", str(tmp_path / "nowhere.py") + ":loss"))


def test_loss_without_gradient_flags_everything(tmp_path):
    path = write(tmp_path, LOSS_MODEL + "def loss(out):\n    return out.sum().detach()\n")
    outcome = run(path, "--loss", path + ":loss", "--format", "json")
    assert outcome.exit_code == 1, outcome.output
    assert gc1(report(outcome)) == {"weight", "bias"}


def test_integer_dtype_loss(tmp_path):
    path = write(tmp_path, LOSS_MODEL + "def loss(out):\n    return out.argmax()\n")
    outcome = run(path, "--loss", path + ":loss", "--format", "json")
    assert outcome.exit_code in (1, 2), outcome.output
    if outcome.exit_code == 1:
        assert gc1(report(outcome)) == {"weight", "bias"}


# --------------------------------------------------------------------------- odd models

def test_model_without_parameters(tmp_path):
    path = write(tmp_path, "def build_model():\n    return nn.ReLU(), (torch.randn(2, 3),)\n")
    outcome = run(path, "--format", "json", "--verify")
    assert outcome.exit_code == 0, outcome.output
    assert report(outcome)["parameters"]["total"] == 0


def test_all_parameters_frozen(tmp_path):
    path = write(tmp_path, "def build_model():\n    m = nn.Linear(2, 2).requires_grad_(False)\n"
                           "    return m, (torch.randn(2, 2),)\n")
    outcome = run(path, "--format", "json", "--verify")
    assert outcome.exit_code == 0, outcome.output
    assert report(outcome)["parameters"] == {"total": 2, "trainable": 0, "frozen": 2}


def test_mixed_meta_and_cpu_parameters(tmp_path):
    path = write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(2, 2)
                self.b = nn.Linear(2, 2, device="meta")
            def forward(self, x):
                return self.b(self.a(x))

        def build_model():
            return M(), (torch.randn(1, 2),)
        """)
    outcome = run(path, "--format", "json")
    assert outcome.exit_code in (0, 2), outcome.output
    if outcome.exit_code == 2:
        assert_error(outcome)


def test_inputs_on_another_device_than_weights(tmp_path):
    path = write(tmp_path, "def build_model():\n    return nn.Linear(2, 2), (torch.randn(1, 2, device='meta'),)\n")
    outcome = run(path, "--format", "json", "--verify")
    assert outcome.exit_code == 0, outcome.output


def test_shared_module_and_shared_parameter(tmp_path):
    path = write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.shared = nn.Linear(4, 4)
                self.encoder = nn.Sequential(self.shared, nn.ReLU())
                self.decoder = nn.Linear(4, 4)
                self.decoder.weight = self.shared.weight      # one tensor, two names
                self.spare = nn.Linear(4, 4)
                self.spare.bias = self.decoder.bias           # shared with a used module
            def forward(self, x):
                return self.decoder(self.encoder(x))

        def build_model():
            return M(), (torch.randn(2, 4),)
        """)
    outcome = run(path, "--format", "json", "--verify")
    assert outcome.exit_code == 1, outcome.output
    assert gc1(report(outcome)) == {"spare.weight"}


def test_parameter_that_is_a_view(tmp_path):
    path = write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                base = torch.randn(8, 4)
                self.top = nn.Parameter(base[:4])
                self.bottom = nn.Parameter(base[4:])
                self.unused = nn.Parameter(base[2:6].t())
            def forward(self, x):
                return x @ self.top + (x @ self.bottom).detach()

        def build_model():
            return M(), (torch.randn(2, 4),)
        """)
    outcome = run(path, "--format", "json", "--verify")
    assert outcome.exit_code == 1, outcome.output
    assert gc1(report(outcome)) == {"bottom", "unused"}


def test_huge_input_shape_does_not_allocate(tmp_path):
    path = write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(100000, 2)
                self.b = nn.Linear(2, 2)
            def forward(self, x):
                return self.a(x).detach() + 1

        def build_model():
            return M()
        """)
    # 100000 x 100000 float32 is 40 GB: only the meta device can run this.
    outcome = run(path, "--input-shape", "100000,100000", "--format", "json")
    assert outcome.exit_code == 1, outcome.output
    assert gc1(report(outcome)) == {"a.weight", "a.bias", "b.weight", "b.bias"}


@pytest.mark.parametrize("shape", ["a,b", "0,3", "-1,2", "", ",", "1.5,2", "99999999999999999999999,2",
                                   "10000000000,10000000000,10000000000"])
def test_bad_input_shapes(tmp_path, shape):
    path = write(tmp_path, "def build_model():\n    return nn.Linear(2, 2)\n")
    outcome = run(path, "--input-shape", shape)
    assert outcome.exit_code == 2, outcome.output


def test_model_that_needs_inputs_but_gets_none(tmp_path):
    path = write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = nn.Parameter(torch.randn(3))
            def forward(self, x):
                return x * self.w

        def build_model():
            return M()
        """)
    assert_error(run(path), "input")


def test_data_dependent_model_is_analysed(tmp_path):
    path = write(tmp_path, """
        class M(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(2, 2)
                self.b = nn.Linear(2, 2)
            def forward(self, x):
                if self.a(x).sum() > 1e9:
                    return self.b(x)
                return self.a(x)

        def build_model():
            return M(), (torch.randn(1, 2),)
        """)
    outcome = run(path, "--format", "json", "--verify")
    assert outcome.exit_code == 1, outcome.output
    assert gc1(report(outcome)) == {"b.weight", "b.bias"}


def test_several_targets_one_broken(tmp_path):
    good = write(tmp_path, "def build_model():\n    return nn.Linear(2, 2), (torch.randn(1, 2),)\n", "good.py")
    bad = write(tmp_path, "raise RuntimeError('nope')\n", "bad.py")
    outcome = run(good, bad, "--format", "json")
    assert outcome.exit_code == 2
    statuses = [t["status"] for t in json.loads(outcome.stdout)["targets"]]
    assert statuses == ["ok", "error"]


# --------------------------------------------------------------------------- fuzzed targets

@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.text(alphabet=st.sampled_from("ab_:./\\-1 \t\n\x00é*"), max_size=20))
def test_random_targets_never_crash(tmp_path, target):
    outcome = CliRunner().invoke(cli, [str(tmp_path / "x") + target, "--no-config"])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.output
    assert "Traceback" not in outcome.output
    assert outcome.exit_code == 2


@settings(max_examples=40, deadline=None, derandomize=True)
@given(shape=st.lists(st.integers(-3, 10**12), min_size=0, max_size=6).map(lambda dims: ",".join(map(str, dims))))
def test_random_input_shapes_never_crash(shape):
    outcome = CliRunner().invoke(cli, ["torch.nn:Identity", "--input-shape", shape, "--no-config",
                                       "--format", "json"])
    assert outcome.exception is None or isinstance(outcome.exception, SystemExit), outcome.output
    assert "Traceback" not in outcome.output
    assert outcome.exit_code in (0, 2), outcome.output
