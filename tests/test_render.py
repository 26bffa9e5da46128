"""The drawing of flagged paths (--render): what a person must see, collapse of big models, files and fallbacks."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from graphcheck.checker import check
from graphcheck.cli import cli
from graphcheck.finding import Finding, Severity
from graphcheck.drawing import FAMILIES, OTHER_FAMILY, dot_source, family_of, plan, render, render_results

ROOT = Path(__file__).resolve().parent.parent
DETACHED = ROOT / "fixtures/params/detached-parameter/bad.py"
DEAD = ROOT / "fixtures/params/dead-branch-parameter/bad.py"
UNUSED = ROOT / "fixtures/params/unused-parameter/bad.py"
CLEAN = ROOT / "fixtures/seed/linear_relu_linear.py"
HAS_DOT = shutil.which("dot") is not None
NODE = re.compile(r'^\t+("(?:[^"\\]|\\.)*"|[\w\u2236.:-]+) \[(.*)\]$', re.S)


def drawn_nodes(source: str) -> dict[str, str]:
    """Node name -> its attribute text, for every node statement of a DOT source."""
    nodes = {}
    for statement in source.splitlines():   # graphviz writes one statement per line
        if " -> " in statement.split("[", 1)[0]:
            continue
        match = NODE.match(statement)
        if match and match.group(1) not in ("graph", "node", "edge"):
            nodes[match.group(1).strip('"')] = match.group(2)
    return nodes


def edges(source: str) -> list[str]:
    return [line for line in source.splitlines() if " -> " in line]


def colour(attrs: str) -> str | None:
    match = re.search(r'(?<!fill)color="?(#[0-9a-fA-F]{6})', attrs)
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def detached():
    result = check(str(DETACHED), select="GC1")
    assert result.status == "ok", result.error
    return result


@pytest.fixture(scope="module")
def deep_mlp():
    """A 24-block MLP whose first half is cut off by a detach."""

    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(16, 16), nn.ReLU()) for _ in range(24))
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            for index, block in enumerate(self.blocks):
                x = block(x)
                if index == 11:
                    x = x.detach()
            return self.head(x)

    result = check(Deep(), (torch.randn(4, 16),), select="GC1")
    assert result.status == "ok", result.error
    return result


def test_every_flagged_module_cut_op_loss_and_legend_are_drawn(detached):
    source = dot_source(detached)
    nodes = drawn_nodes(source)
    labels = "\n".join(nodes.values())
    for finding in detached.findings:
        for parameter in finding.parameters:
            module = parameter.rsplit(".", 1)[0] if "." in parameter else parameter
            assert f"<b>{module}</b>" in labels, module
    for cut in ("detach", "argmax", "item", "data", "gt", "no_grad"):
        assert f"CUT: {cut}</b>" in labels, cut
    assert any(attrs.startswith("label=<<b>loss</b>") for attrs in nodes.values())
    assert "Legend" in nodes["legend"]
    assert "GC103" in labels


def test_codes_sit_beside_the_cut_ops_and_flagged_parameters(detached):
    drawing = plan(detached)
    cuts = [e for e in drawing.elements.values() if e.cut]
    assert len(cuts) == 7
    assert all({f.code for f in e.own} == {"GC103"} for e in cuts)
    flagged = {n for e in drawing.elements.values() if e.own for n in e.members
               if n.startswith("param:")}
    assert flagged == {f"param:{p}" for f in detached.findings for p in f.parameters}


def test_cut_edges_are_dashed_grey_and_flagged_paths_red(detached):
    lines = edges(dot_source(detached))
    dashed = [line for line in lines if "dashed" in line]
    assert dashed and all("#9e9e9e" in line for line in dashed)
    assert any(FAMILIES[0].colour in line and "dashed" not in line for line in lines)


def _with_finding(result, code, nodes, parameters=()):
    finding = Finding(code=code, name=f"rule-{code.lower()}", severity=Severity.WARNING,
                      message=f"synthetic {code} message", parameters=list(parameters), nodes=list(nodes),
                      family=family_of(code))
    result.findings.append(finding)
    return finding


def test_colours_follow_the_rule_family_even_for_families_not_written_yet():
    result = check(str(CLEAN))
    assert result.status == "ok" and not result.findings
    ops = [n for n, d in result.graph.graph.nodes(data=True) if d.get("kind") == "op"]
    assert len(ops) >= 3
    codes = {"GC201": ops[0], "GC301": ops[1], "GC401": ops[2]}
    for code, node in codes.items():
        _with_finding(result, code, [node])
    nodes = drawn_nodes(dot_source(result))
    expected = {"GC201": FAMILIES[1].colour, "GC301": FAMILIES[2].colour, "GC401": FAMILIES[3].colour}
    unknown = check(str(CLEAN))
    _with_finding(unknown, "GC999", [ops[0]])
    attrs = next(a for name, a in drawn_nodes(dot_source(unknown)).items() if name == ops[0])
    assert colour(attrs) == OTHER_FAMILY.colour and "GC999" in attrs
    for code, node in codes.items():
        attrs = next(a for name, a in nodes.items() if name.replace("\u2236", ":") == node)
        assert colour(attrs) == expected[code], code
        assert code in attrs
    legend = nodes["legend"]
    for family in FAMILIES[1:4]:
        assert f"{family.prefix}xx" in legend
    assert family_of("GC503") is FAMILIES[4]


def test_init_finding_on_parameters_fills_them_green():
    result = check(str(CLEAN))
    _with_finding(result, "GC501", ["param:0.weight"], parameters=["0.weight"])
    drawing = plan(result)
    owner = next(e for e in drawing.elements.values() if "param:0.weight" in e.members)
    assert [f.code for f in owner.own] == ["GC501"]
    assert FAMILIES[4].fill in dot_source(result)


def test_big_model_is_collapsed_around_the_cut(deep_mlp):
    graph_nodes = len(deep_mlp.graph.graph)
    source = dot_source(deep_mlp)
    nodes = drawn_nodes(source)
    assert graph_nodes > 90
    assert len(nodes) <= 25, len(nodes)
    labels = "\n".join(nodes.values())
    # Blocks before and after the cut collapse into runs of repeated blocks.
    assert re.search(r"blocks\.\d+-\d+</b> \(x\d+\)", labels)
    assert "CUT: detach</b>" in labels
    flagged = {p for f in deep_mlp.findings for p in f.parameters}
    assert flagged == {f"blocks.{i}.0.{w}" for i in range(12) for w in ("weight", "bias")}


def test_render_all_draws_the_healthy_model_and_depth_controls_expansion(deep_mlp):
    shallow = plan(deep_mlp, depth=1, full=True)
    deep = plan(deep_mlp, depth=2, full=True)
    assert len(shallow.elements) <= len(deep.elements)
    assert len(drawn_nodes(dot_source(deep_mlp, depth=2, full=True))) < 60


def test_dead_branch_and_unused_parameters_are_shown():
    dead = check(str(DEAD), loss=f"{DEAD}:loss", select="GC1")
    flagged = {n for e in plan(dead).elements.values() if any(f.code == "GC102" for f in e.own)
               for n in e.members if n.startswith("param:")}
    assert flagged == {f"param:{m}.{w}" for m in ("aux_head", "probe") for w in ("weight", "bias")}
    labels = "\n".join(drawn_nodes(dot_source(dead)).values())
    assert "GC102" in labels
    assert "not used by the loss" in labels or "never reaches the loss" in labels
    unused = check(str(UNUSED), select="GC1")
    labels = "\n".join(drawn_nodes(dot_source(unused)).values())
    assert "<b>norm</b>" in labels and "temperature" in labels and "never used in forward" in labels


@pytest.mark.skipif(not HAS_DOT, reason="graphviz `dot` is not installed")
def test_svg_is_written_parses_as_xml_and_carries_tooltips(detached, tmp_path):
    out = render(detached, tmp_path / "cuts.svg")
    assert out == tmp_path / "cuts.svg"
    tree = ElementTree.parse(out)
    assert tree.getroot().tag.endswith("svg")
    text = out.read_text()
    assert "this cuts every path from backbone.weight" in text   # the tooltip holds the message
    assert not (tmp_path / "cuts.dot").exists()


@pytest.mark.skipif(not HAS_DOT, reason="graphviz `dot` is not installed")
def test_png_and_dot_suffixes(detached, tmp_path):
    png = render(detached, tmp_path / "cuts.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dot = render(detached, tmp_path / "cuts.dot")
    assert dot.read_text().startswith("digraph")


@pytest.mark.skipif(not HAS_DOT, reason="graphviz `dot` is not installed")
def test_timeout_keeps_the_dot_source(detached, tmp_path, monkeypatch):
    from graphcheck.drawing import output as module

    monkeypatch.setattr(module, "DOT_TIMEOUT", 1e-6)
    messages = render_results([detached], tmp_path / "slow.svg")
    assert (tmp_path / "slow.dot").exists() and not (tmp_path / "slow.svg").exists()
    assert "longer than" in messages[0]


def test_missing_dot_writes_source_and_says_how_to_install(detached, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    messages = render_results([detached], tmp_path / "cuts.svg")
    assert (tmp_path / "cuts.dot").exists() and not (tmp_path / "cuts.svg").exists()
    assert "apt-get install graphviz" in messages[0] and "brew install graphviz" in messages[0]
    with pytest.warns(RuntimeWarning):
        assert render(detached, tmp_path / "api.png") == tmp_path / "api.dot"


def test_cli_missing_dot_keeps_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "cuts.svg"
    result = CliRunner().invoke(cli, [str(DETACHED), "--render", str(out), "--no-config"],
                                catch_exceptions=False)
    assert result.exit_code == 1
    assert "conda install graphviz" in result.output
    assert (tmp_path / "cuts.dot").exists()
    zero = CliRunner().invoke(cli, [str(DETACHED), "--render", str(out), "--exit-zero", "--no-config"])
    assert zero.exit_code == 0


@pytest.mark.skipif(not HAS_DOT, reason="graphviz `dot` is not installed")
def test_cli_render_one_image_per_target(tmp_path):
    out = tmp_path / "drawing.svg"
    result = CliRunner().invoke(cli, [str(DETACHED), str(DEAD), "--render", str(out), "--select", "GC1",
                                      "--render-depth", "1", "--no-config"], catch_exceptions=False)
    assert result.exit_code == 1
    for index in (1, 2):
        path = tmp_path / f"drawing-{index}.svg"
        assert path.exists(), result.output
        ElementTree.parse(path)
    assert "wrote" in result.output


def test_cli_error_target_and_bad_suffix_do_not_crash(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def build_model():\n    raise RuntimeError('boom')\n")
    result = CliRunner().invoke(cli, [str(broken), "--render", str(tmp_path / "x.svg"), "--no-config"])
    assert result.exit_code == 2
    assert "not drawn" in result.output
    bad = CliRunner().invoke(cli, [str(CLEAN), "--render", str(tmp_path / "x.jpg"), "--no-config"])
    assert bad.exit_code == 2   # a usage error, found before any analysis
    assert ".svg" in bad.output
