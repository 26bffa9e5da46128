"""Styling the planned drawing as a graphviz digraph: labels, tooltips, colours, the legend and the title."""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import graphviz

from graphcheck.drawing.palette import (CUT_EDGE, FAMILIES, HEALTHY_BORDER, HEALTHY_FILL, OTHER_FAMILY, family_of,
                                        worst_family)
from graphcheck.drawing.modules import module_name, relative_name
from graphcheck.drawing.plan import Element, Plan, plan
from graphcheck.finding import Finding

if TYPE_CHECKING:
    from graphcheck.report import TargetResult

MAX_TOOLTIP = 1500


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _shape_text(shape) -> str:
    if shape is None:
        return ""
    try:
        return "×".join(str(s) for s in shape) if len(shape) else "scalar"
    except TypeError:
        return str(shape)


def _where(location) -> str:
    if location is None:
        return ""
    return f"{Path(location.file).name}:{location.line}"


def _badges(findings: list[Finding]) -> str:
    codes: dict[str, Finding] = {}
    for finding in findings:
        codes.setdefault(finding.code, finding)
    parts = [f'<font color="{family_of(f).colour}"><b>{_esc(c)}</b> {_esc(f.name)}</font>'
             for c, f in sorted(codes.items())]
    if len(parts) > 3:
        parts = parts[:3] + [f"+{len(parts) - 3} more"]
    return "<br/>".join(parts)


def _tooltip(findings: list[Finding], fallback: str) -> str:
    if not findings:
        return fallback
    lines = []
    for finding in findings:
        where = f" ({finding.location.display_file()}:{finding.location.line})" if finding.location else ""
        lines.append(f"{finding.code} {finding.name}: {finding.message}{where}")
    text = "\n".join(dict.fromkeys(lines))
    if len(text) > MAX_TOOLTIP:
        text = text[:MAX_TOOLTIP - 20] + f"\n... {len(lines)} findings"
    # DOT's escString: "\n" is a line break in the tooltip, and keeps one statement per line.
    return text.replace("\\", "/").replace("\n", "\\n")


def _label(rows: list[str]) -> str:
    return "<" + "<br/>".join(r for r in rows if r) + ">"


def _small(text: str) -> str:
    return f'<font point-size="10">{text}</font>' if text else ""


class _Styler:
    def __init__(self, result: "TargetResult", plan_: Plan):
        self.result = result
        self.plan = plan_
        self.graph = result.graph.graph

    def node_attrs(self, element: Element) -> dict:
        family = worst_family(element.findings)
        tooltip_fallback = element.id
        if element.kind == "params":
            return self._params(element, family)
        if element.kind == "box":
            return self._box(element, family)
        data = self.graph.nodes[element.id]
        rows: list[str] = []
        attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": "white", "color": "#616161",
                 "fontname": "Helvetica", "fontsize": "12"}
        if element.kind == "loss":
            attrs.update(shape="doubleoctagon", fillcolor="#fff3b0", color="#333333", penwidth="2")
            rows.append("<b>loss</b>")
        elif element.kind == "output":
            attrs.update(shape="invhouse", fillcolor="#fffbe0", color="#333333")
            name = element.id.split(":", 1)[1] if ":" in element.id else ""
            rows.append(f"<b>output</b> {_esc(name)}")
            rows.append(_small(_esc(_shape_text(data.get("shape")))))
            if element.dead_end:
                rows.append(_small("not used by the loss"))
        elif element.kind == "input":
            attrs.update(shape="house", fillcolor="#eef5ff", color="#333333")
            rows.append(f"<b>input</b> {_esc(data.get('target', ''))}")
            rows.append(_small(_esc(_shape_text(data.get("shape")))))
        else:
            target = data.get("target") or element.id
            module = data.get("module") or ""
            module_type = data.get("module_type") or ""
            if element.cut:
                rows.append(f'<font color="{(family or FAMILIES[0]).colour}"><b>CUT: {_esc(element.cut)}</b></font>')
                attrs.update(shape="octagon", style="filled,bold", fillcolor="#fff0f0", penwidth="3")
            if data.get("module_call"):
                rows.append(f"<b>{_esc(module or target)}</b> ({_esc(module_type or target)})")
            else:
                if element.cut != target:
                    rows.append(f"<b>{_esc(target)}</b>")
                if module:
                    rows.append(_small(_esc(module) + (f" ({_esc(module_type)})" if module_type else "")))
            joined = [self.graph.nodes[n].get("param", n) for n in element.members[1:]]
            if joined:
                what = ", ".join(relative_name(n, module) for n in joined) if len(joined) <= 3 \
                    else f"{len(joined)} parameters"
                params_family = worst_family(f for n in element.members[1:] for f in self.plan.flagged.get(n, []))
                rows.append(f"<b>{_esc(what)}</b>: {_esc((params_family or OTHER_FAMILY).title)}")
                attrs["fillcolor"] = (params_family or OTHER_FAMILY).fill
            if element.dead_end:
                rows.append(_small("result never reaches the loss"))
                attrs.update(style="filled,dashed", penwidth="2")
            details = " · ".join(t for t in (_shape_text(data.get("shape")), _where(data.get("location"))) if t)
            rows.append(_small(_esc(details)))
            if data.get("grad_enabled") is False and not element.cut:
                rows.append(_small("(no_grad)"))
        if family is not None:
            attrs["color"] = family.colour
            attrs["penwidth"] = attrs.get("penwidth", "2")
            if element.own:
                rows.append(_badges(element.own))
        attrs["label"] = _label(rows)
        attrs["tooltip"] = _tooltip(element.findings, tooltip_fallback)
        return attrs

    def _params(self, element: Element, family) -> dict:
        names = [self._param_name(n) for n in element.members]
        module = module_name(element.key)
        short = [n[len(module) + 1:] if module and n.startswith(module + ".") else n for n in names]
        shown = ", ".join(short[:4]) + (f", +{len(short) - 4}" if len(short) > 4 else "")
        module_type = self.plan.module_types.get(module, "")
        rows = [f"<b>{_esc(module)}</b>" + (f" ({_esc(module_type)})" if module_type else "") if module
                else f"<b>{_esc(shown)}</b>" + (f" ({_esc(module_type)})" if module_type else ""),
                _esc(shown) if module else "",
                _badges(element.own)]
        parameters = self.result.graph.parameters
        location = next((parameters[name].location for name in names
                         if name in parameters and parameters[name].location), None)
        rows.append(_small(_esc(_where(location))))
        if all(n not in self.graph or self.graph.out_degree(n) == 0 for n in element.members):
            rows.append(_small("never used in forward"))
        colour = (family or OTHER_FAMILY)
        return {"shape": "note", "style": "filled", "fillcolor": colour.fill, "color": colour.colour,
                "penwidth": "2", "fontname": "Helvetica", "fontsize": "12", "label": _label(rows),
                "tooltip": _tooltip(element.findings, "\n".join(names))}

    def _param_name(self, node: str) -> str:
        if node in self.graph:
            return self.graph.nodes[node].get("param", node)
        return node.removeprefix("param:")

    def _box(self, element: Element, family) -> dict:
        module = module_name(element.key)
        graph = self.graph
        ops = [n for n in element.members if graph.nodes[n].get("kind") != "parameter"]
        flagged = [n for n in element.members if graph.nodes[n].get("kind") == "parameter"]
        own_cluster = bool(element.key) and element.cluster == element.key
        relative = element.key[len(element.cluster):] if element.key[:len(element.cluster)] == element.cluster \
            else element.key
        if own_cluster:
            title = "other ops"
        elif not element.key:
            title = "top-level ops"
        else:
            title = module_name(relative)
        type_name = self.plan.module_types.get(self._first_module(element), "")
        rows = [f"<b>{_esc(title)}</b>" + (f" (x{element.repeat})" if element.repeat > 1 else "")]
        rows.append(_small(_esc(" · ".join(t for t in (
            type_name if not own_cluster else "", f"{len(ops)} op{'s' if len(ops) != 1 else ''}") if t))))
        if flagged:
            names = [relative_name(graph.nodes[n].get("param", n), module) for n in flagged]
            what = ", ".join(names) if len(names) <= 3 else f"{len(names)} parameters"
            params_family = worst_family(f for n in flagged for f in self.plan.flagged.get(n, []))
            family_text = params_family.title if params_family else "flagged"
            rows.append(f"<b>{_esc(what)}</b>: {_esc(family_text)}")
        if element.cut:
            rows.append(f"cut inside: {_esc(element.cut)}")
        attrs = {"shape": "box3d" if element.repeat > 1 else "box", "style": "filled",
                 "fillcolor": HEALTHY_FILL, "color": HEALTHY_BORDER, "fontname": "Helvetica",
                 "fontsize": "12"}
        if family is not None:
            attrs["color"] = family.colour
            attrs["penwidth"] = "2"
            if flagged:
                attrs["fillcolor"] = params_family.fill
            if element.own:
                rows.append(_badges(element.own))
        attrs["label"] = _label(rows)
        attrs["tooltip"] = _tooltip(element.findings, module or "top-level ops")
        return attrs

    def _first_module(self, element: Element) -> str:
        """The real module a (possibly merged) box stands for, to name its class."""
        key = list(element.key)
        match = re.match(r"^(.*?)(\d+)-\d+$", key[-1]) if key else None
        if match:
            key[-1] = match.group(1) + match.group(2)
        return module_name(tuple(key))

    def edge_attrs(self, edge: dict) -> dict:
        family = worst_family(edge["findings"])
        if not edge["grad"] and edge["carries"]:
            attrs = {"style": "dashed", "color": CUT_EDGE, "penwidth": "2" if family else "1.2",
                     "tooltip": "gradient cut: the value flows on, no gradient flows back"}
            return attrs
        if not edge["grad"]:
            return {"color": "#bdbdbd", "tooltip": "carries no gradient (input, integer or constant)"}
        if family is not None:
            return {"color": family.colour, "penwidth": "2"}
        return {"color": "#757575"}


def _title(result: "TargetResult") -> str:
    findings = result.findings
    severities = Counter(f.severity.value for f in findings)
    counts = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in sorted(severities.items()))
    without = len(result.parameters_without_gradient())
    parts = [f"<b>{_esc(result.target)}</b>",
             _esc(f"frontend {result.frontend or '?'}, {result.mode} mode, "
                  f"{result.parameters.get('trainable', 0)} trainable parameters"),
             _esc(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}"
                  + (f" ({counts})" if counts else "")
                  + (f"; {without} parameter{'s' if without != 1 else ''} get no gradient" if without else ""))]
    return "<" + "<br/>".join(parts) + ">"


def _legend(findings: list[Finding]) -> str:
    present = []
    for finding in findings:
        family = family_of(finding)
        if family not in present:
            present.append(family)
    rows = ['<tr><td colspan="2"><b>Legend</b></td></tr>']
    for family in sorted(present, key=lambda f: f.prefix) or []:
        rows.append(f'<tr><td bgcolor="{family.fill}" border="1" color="{family.colour}">'
                    f'<font color="{family.colour}"><b>{family.prefix}xx</b></font></td>'
                    f'<td align="left">{_esc(family.title)}</td></tr>')
    rows += [
        '<tr><td border="1" color="#d62728"><b>CUT</b></td><td align="left">op that stops the gradient</td></tr>',
        f'<tr><td><font color="{CUT_EDGE}"><b>- - -&gt;</b></font></td>'
        '<td align="left">gradient cut: value flows on, no gradient back</td></tr>',
        f'<tr><td><font color="{FAMILIES[0].colour}"><b>——&gt;</b></font></td>'
        '<td align="left">flagged path (colour of the finding)</td></tr>',
        '<tr><td><font color="#bdbdbd"><b>——&gt;</b></font></td>'
        '<td align="left">carries no gradient (input, integer, constant)</td></tr>',
        f'<tr><td bgcolor="{HEALTHY_FILL}" border="1">box</td>'
        '<td align="left">module collapsed (no finding inside)</td></tr>',
        '<tr><td bgcolor="#fcd5d5" border="1">note</td><td align="left">flagged parameters</td></tr>',
    ]
    return '<<table border="0" cellborder="0" cellspacing="2" cellpadding="3">' + "".join(rows) + "</table>>"


def to_digraph(result: "TargetResult", *, depth: int = 2, full: bool = False) -> graphviz.Digraph:
    """The styled graphviz drawing of one analysed target."""
    plan_ = plan(result, depth=depth, full=full)
    styler = _Styler(result, plan_)
    dot = graphviz.Digraph("graphcheck", graph_attr={
        "rankdir": "TB", "label": _title(result), "labelloc": "t", "fontname": "Helvetica",
        "fontsize": "14", "newrank": "true", "nodesep": "0.3", "ranksep": "0.4", "compound": "true",
        "tooltip": f"graphcheck: {result.target}"})
    dot.attr("node", fontname="Helvetica")
    dot.attr("edge", arrowsize="0.7")

    tree: dict[tuple, list[str]] = defaultdict(list)
    for element in plan_.elements.values():
        tree[element.cluster].append(element.id)
    children: dict[tuple, list[tuple]] = defaultdict(list)
    for cluster in sorted(plan_.clusters, key=len):
        children[cluster[:-1]].append(cluster)

    def draw(container, cluster: tuple) -> None:
        for element_id in tree.get(cluster, ()):
            container.node(node_name(element_id), **styler.node_attrs(plan_.elements[element_id]))
        for child in children.get(cluster, ()):
            name = module_name(child)
            flagged = [f for e in plan_.elements.values() if e.cluster[:len(child)] == child for f in e.findings]
            family = worst_family(flagged)
            type_name = plan_.module_types.get(name, "")
            with container.subgraph(name=f"cluster_{node_name(name)}") as sub:
                sub.attr(label=f"<<b>{_esc(child[-1])}</b>" + (f" ({_esc(type_name)})" if type_name else "") + ">",
                         style="rounded", color=family.colour if family else HEALTHY_BORDER,
                         fontname="Helvetica", fontsize="12", tooltip=name)
                draw(sub, child)

    draw(dot, ())
    for (u, v), edge in plan_.edges.items():
        dot.edge(node_name(u), node_name(v), **styler.edge_attrs(edge))
    dot.node("legend", label=_legend(result.findings), shape="box", style="rounded", color="#bdbdbd",
             fontname="Helvetica", fontsize="11")
    return dot


def node_name(element_id: str) -> str:
    # graphviz treats ':' in a node name as a port separator.
    return element_id.replace(":", "\u2236") or "root"


def dot_source(result: "TargetResult", *, depth: int = 2, full: bool = False) -> str:
    """The DOT source of the drawing of one analysed target (what tests and ``.dot`` files hold)."""
    return to_digraph(result, depth=depth, full=full).source
