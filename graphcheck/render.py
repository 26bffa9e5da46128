"""Drawing the flagged paths: a graphviz picture of each finding's neighbourhood, the rest of the model collapsed.

The drawing is planned in three steps, then handed to graphviz's ``dot``:

1. *Pick* the nodes drawn one by one: the loss, the outputs, the ops that cut a
   gradient (and the ``no_grad`` regions), the ends of dead branches, each finding's
   own nodes for the families that name few nodes (GC2xx-GC5xx), and their immediate
   neighbours on the flagged path. Small graphs are drawn whole.
2. *Collapse* every other node into the box of its module (the ``nn.Module``
   hierarchy from the node attribute ``module``), expanded ``depth`` levels below the
   modules that hold the flagged parameters; healthy siblings stay single boxes, and
   runs of repeated blocks (``layer.0-11``) that hold nothing picked become one box.
3. *Contract* the graph onto those elements (networkx's quotient): an edge that carries
   no gradient is drawn dashed grey, which is exactly where a gradient is cut.

A ``dot`` run is bounded by a timeout and PNGs by a size, since real models otherwise
take minutes; when ``dot`` is missing, the ``.dot`` source is written with a hint on
how to install graphviz.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import graphviz
import networkx as nx

from graphcheck.finding import Finding

if TYPE_CHECKING:
    from graphcheck.model_graph import ModelGraph
    from graphcheck.report import TargetResult

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot"}
DOT_TIMEOUT = 60.0
# Unbounded PNGs of real models reach 24577x16187 px and take 50 s (docs/rendering.md).
PNG_ARGS = ("-Gsize=20,200", "-Gdpi=72")
INSTALL_HINT = ("install graphviz to get images: `apt-get install graphviz` (Debian/Ubuntu), "
                "`brew install graphviz` (Homebrew), or `conda install graphviz`")

SMALL_GRAPH = 80        # graphs up to this many nodes are drawn whole
MAX_PICKED = 45         # individually drawn nodes in a big model's drawing
MAX_OUTPUTS = 8
ENDS_PER_FINDING = 2  # first and last nodes drawn of a long non-GC1 finding
NEIGHBOURS = 1        # neighbours drawn on each side of a picked node
MAX_PARAM_GROUPS = 8    # more flagged modules than this are shown inside their module boxes
MAX_TOOLTIP = 1500


@dataclass(frozen=True)
class Family:
    prefix: str
    title: str
    colour: str     # border, edges, badges
    fill: str       # light fill of flagged parameters and boxes


FAMILIES = (
    Family("GC1", "no gradient", "#d62728", "#fcd5d5"),
    Family("GC2", "partial gradient cut", "#9c27b0", "#efd9f3"),
    Family("GC3", "saturating chain", "#f57c00", "#ffe3c2"),
    Family("GC4", "bottleneck / topology", "#1f77b4", "#d6e6f5"),
    Family("GC5", "initialisation", "#2e7d32", "#d7ecd8"),
)
OTHER_FAMILY = Family("GC", "other finding", "#555555", "#e6e6e6")
CUT_EDGE = "#9e9e9e"
HEALTHY_FILL = "#f2f2f2"
HEALTHY_BORDER = "#9e9e9e"
_REGION_TARGETS = ("set_grad_enabled", "no_grad", "inference_mode", "wrap_with_set_grad_enabled")
_INDEXED = re.compile(r"^(?:(.*)\.)?(\d+)$")


def _unique(findings: Iterable[Finding]) -> list[Finding]:
    """Findings without repeats, in order (a Finding is a mutable dataclass, so not hashable)."""
    seen: dict[int, Finding] = {}
    for finding in findings:
        seen.setdefault(id(finding), finding)
    return list(seen.values())


def family_of(code: str) -> Family:
    """The rule family of a finding code (GC103 -> GC1xx); unknown families get a neutral style."""
    for family in FAMILIES:
        if code.startswith(family.prefix):
            return family
    return OTHER_FAMILY


def _worst(findings: Iterable[Finding]) -> Family | None:
    """The family to colour with when several findings meet: the most severe, then the lowest code."""
    findings = list(findings)
    if not findings:
        return None
    best = max(findings, key=lambda f: (f.severity.rank, -int(re.sub(r"\D", "", f.code) or 0)))
    return family_of(best.code)


# -- module hierarchy -------------------------------------------------------------------

def levels(module: str) -> tuple[str, ...]:
    """A module path as levels, an index staying with its container.

    ``layer.3.attention`` -> (layer.3, attention); ``blocks.0.1`` -> (blocks.0, 1).
    """
    result: list[str] = []
    for part in module.split(".") if module else ():
        if part.isdigit() and result and not _INDEXED.match(result[-1]):
            result[-1] += "." + part
        else:
            result.append(part)
    return tuple(result)


def _module_name(key: tuple[str, ...]) -> str:
    return ".".join(key)


def _common_prefix(keys: list[tuple[str, ...]]) -> tuple[str, ...]:
    if not keys:
        return ()
    prefix = keys[0]
    for key in keys[1:]:
        size = 0
        while size < min(len(prefix), len(key)) and prefix[size] == key[size]:
            size += 1
        prefix = prefix[:size]
    return prefix


# -- the plan -----------------------------------------------------------------------------

@dataclass
class Element:
    """One thing drawn: a graph node, a group of flagged parameters, or a collapsed module."""

    id: str
    kind: str                               # op | input | output | loss | params | box
    cluster: tuple[str, ...]                # module levels of the enclosing cluster
    members: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)   # every finding whose nodes it holds
    own: list[Finding] = field(default_factory=list)        # findings it is the subject of (badged)
    cut: str | None = None                  # why this op cuts the gradient
    dead_end: bool = False                  # a dead branch ends here
    key: tuple[str, ...] = ()               # boxes and parameter groups: their module key
    repeat: int = 1                         # boxes standing for a run of repeated blocks


@dataclass
class Plan:
    elements: dict[str, Element]
    edges: dict[tuple[str, str], dict]      # (u, v) -> {"grad": bool, "findings": [...]}
    clusters: set[tuple[str, ...]]
    module_types: dict[str, str]
    flagged: dict[str, list[Finding]]       # parameter node -> the findings that flag it


class _Planner:
    def __init__(self, result: "TargetResult", depth: int, full: bool):
        self.result = result
        self.mg: ModelGraph = result.graph
        self.graph: nx.DiGraph = self.mg.graph
        self.depth = depth
        self.full = full
        self.findings = list(result.findings)
        self.node_findings: dict[str, list[Finding]] = defaultdict(list)
        for finding in self.findings:
            for node in dict.fromkeys(finding.nodes):
                if node in self.graph:
                    self.node_findings[node].append(finding)
        self.flagged_params: dict[str, list[Finding]] = defaultdict(list)
        for finding in self.findings:
            for name in finding.parameters:
                node = f"param:{name}"
                if node in self.graph and finding not in self.flagged_params[node]:
                    self.flagged_params[node].append(finding)
        self.module_types = self._module_types()
        try:
            order = nx.topological_sort(self.graph)
            self.order = {n: i for i, n in enumerate(order)}
        except nx.NetworkXUnfeasible:
            self.order = {n: i for i, n in enumerate(self.graph)}
        # fx records grad-mode switches as isolated markers; export as a region node values flow through.
        self.has_regions = any(self._is_region(n) and self.graph.degree(n) for n in self.graph)
        flagged_keys = [levels(self._module_of(n)) for n in self.flagged_params]
        flagged_keys += [levels(self._module_of(n)) for f in self.findings if not f.parameters
                         for n in f.nodes if n in self.graph]
        self.anchor = () if full or not flagged_keys else _common_prefix(flagged_keys)

    # -- facts about nodes ---------------------------------------------------------------
    def _module_types(self) -> dict[str, str]:
        types: dict[str, str] = {}
        model = self.mg.model
        if model is not None:
            try:
                types = {name: type(module).__name__ for name, module in model.named_modules()}
            except Exception:   # a model whose named_modules() fails still gets drawn
                types = {}
        for _, data in self.graph.nodes(data=True):
            if data.get("module") and data.get("module_type"):
                types.setdefault(data["module"], data["module_type"])
        return types

    def _module_of(self, node: str) -> str:
        data = self.graph.nodes[node]
        if data.get("kind") == "parameter":
            info = self.mg.parameters.get(data.get("param", ""))
            if info is not None:
                return info.module
        return data.get("module") or ""

    def _raw_key(self, node: str) -> tuple[str, ...]:
        """The module box a node collapses into before repeated blocks are merged."""
        return self._key_of_module(self._module_of(node))

    def _key_of_module(self, module: str) -> tuple[str, ...]:
        own = levels(module)
        anchor = self.anchor
        shared = 0
        while shared < min(len(own), len(anchor)) and own[shared] == anchor[shared]:
            shared += 1
        if shared == len(anchor):
            return own[:len(anchor) + self.depth]
        return own[:shared + 1]

    def _param_module(self, name: str) -> str:
        info = self.mg.parameters.get(name)
        return info.module if info is not None else name.rpartition(".")[0]

    def _is_region(self, node: str) -> bool:
        target = str(self.graph.nodes[node].get("target", ""))
        return any(marker in target for marker in _REGION_TARGETS)

    def _cut_reason(self, node: str) -> str:
        data = self.graph.nodes[node]
        if self._is_region(node) or data.get("grad_enabled") is False:
            return "no_grad"
        return str(data.get("target") or node)

    # -- step 1: pick --------------------------------------------------------------------
    def cuts_and_ends(self, finding: Finding) -> tuple[list[str], list[str]]:
        """The ops where this finding's gradient is cut, and where its dead branch ends."""
        nodes = [n for n in dict.fromkeys(finding.nodes) if n in self.graph]
        sub = self.graph.subgraph(nodes)
        regions = [n for n in nodes if self._is_region(n)]
        cuts = list(regions)
        # An op inside a no_grad block is not itself the cause when the block's marker is drawn.
        regions_known = bool(regions) or self.has_regions
        for u, v, data in sub.edges(data=True):
            if data.get("grad"):
                continue
            source = self.graph.nodes[u]
            carries = source.get("kind") == "parameter" or source.get("requires_grad")
            inside_region = self.graph.nodes[v].get("grad_enabled") is False
            if carries and not (regions_known and inside_region) and v not in cuts:
                cuts.append(v)
        ends = [n for n in nodes if sub.out_degree(n) == 0 and self.graph.nodes[n].get("kind") not in
                ("loss", "parameter") and finding.code.startswith("GC1")]
        return cuts, ends

    def pick(self) -> tuple[dict[str, str], set[str], dict[str, list[Finding]], set[str]]:
        graph = self.graph
        cut_of: dict[str, str] = {}
        dead_ends: set[str] = set()
        cut_findings: dict[str, list[Finding]] = defaultdict(list)
        priority: list[str] = []
        for finding in self.findings:
            cuts, ends = self.cuts_and_ends(finding)
            for node in cuts:
                cut_of.setdefault(node, self._cut_reason(node))
            for node in cuts + ends:
                cut_findings[node].append(finding)
            dead_ends.update(ends)
            priority += cuts + ends
            if not finding.code.startswith("GC1"):
                # A finding about a long chain is shown by its ends; the middle collapses.
                own = sorted((n for n in dict.fromkeys(finding.nodes) if n in graph
                              and graph.nodes[n].get("kind") != "parameter"), key=self.order.get)
                priority += own if len(own) <= ENDS_PER_FINDING * 2 else \
                    own[:ENDS_PER_FINDING] + own[-ENDS_PER_FINDING:]
                for node in own:
                    cut_findings[node].append(finding)
        non_params = [n for n, d in graph.nodes(data=True) if d.get("kind") != "parameter"]
        if self.full and len(non_params) <= SMALL_GRAPH or len(graph) <= SMALL_GRAPH:
            return cut_of, set(non_params), cut_findings, dead_ends
        fixed = [n for n, d in graph.nodes(data=True) if d.get("kind") == "loss"]
        fixed += [n for n, d in graph.nodes(data=True) if d.get("kind") == "output"][:MAX_OUTPUTS]
        fixed += [n for n, d in graph.nodes(data=True) if d.get("kind") == "input"][:MAX_OUTPUTS]
        picked = list(dict.fromkeys(fixed))
        for node in self._first_and_last_of_repeats(list(dict.fromkeys(priority))):
            if len(picked) >= MAX_PICKED:
                break
            if node not in picked:
                picked.append(node)
        # One hop along the flagged paths around what is picked: where the cut value comes
        # from and goes to. A few per node: a no_grad block is entered from every layer.
        before: dict[str, Counter] = defaultdict(Counter)
        after: dict[str, Counter] = defaultdict(Counter)
        for finding in self.findings:
            sub = graph.subgraph(n for n in finding.nodes if n in graph)
            for seed in picked:
                if seed in sub and graph.nodes[seed].get("kind") != "loss":
                    before[seed].update(sub.predecessors(seed))
                    after[seed].update(sub.successors(seed))
        budget = MAX_PICKED + len(fixed)
        for seed in list(picked):
            for counter in (before.get(seed), after.get(seed)):
                for neighbour, _ in (counter or Counter()).most_common(NEIGHBOURS):
                    if len(picked) < budget and neighbour not in picked \
                            and graph.nodes[neighbour].get("kind") != "parameter":
                        picked.append(neighbour)
        return cut_of, set(picked), cut_findings, dead_ends

    def _first_and_last_of_repeats(self, nodes: list[str]) -> list[str]:
        """The same cut in every repeated block (same op, same source line) is drawn twice, not N times."""
        repeats: dict[tuple, list[str]] = defaultdict(list)
        for node in nodes:
            data = self.graph.nodes[node]
            location = data.get("location")
            pattern = re.sub(r"(^|\.)\d+(?=\.|$)", r"\1#", data.get("module") or "")
            repeats[(data.get("target"), pattern, location.file if location else None,
                     location.line if location else None)].append(node)
        keep = set()
        for group in repeats.values():
            group.sort(key=self.order.get)
            keep.update(group[:1] + group[-1:])
        return [n for n in nodes if n in keep]

    # -- step 2: collapse ----------------------------------------------------------------
    def plan(self) -> Plan:
        graph = self.graph
        cut_of, picked, cut_findings, dead_ends = self.pick()
        param_groups: dict[tuple, list[str]] = defaultdict(list)
        for node in self.flagged_params:
            key = self._raw_key(node)
            param_groups[key].append(node)
        exact_groups = {key for key, nodes in param_groups.items()
                        if all(levels(self._module_of(n)) == key for n in nodes)}
        # Flagged parameters of a module that is drawn as a box are shown in that box.
        exact_groups -= {self._raw_key(n) for n in graph if n not in picked
                         and graph.nodes[n].get("kind") != "parameter"}
        if len(exact_groups) > MAX_PARAM_GROUPS:
            exact_groups = set()

        # Prefixes holding something drawn on its own are never merged into a run.
        held: set[tuple] = set()
        for node in picked:
            key = self._raw_key(node)
            held.update(key[:i] for i in range(len(key) + 1))
        for key in exact_groups:
            held.update(key[:i] for i in range(len(key) + 1))

        raw_keys = {n: self._raw_key(n) for n in graph if n not in picked}
        runs = self._runs(raw_keys, held)

        def canonical(key: tuple) -> tuple:
            for size in range(1, len(key) + 1):
                merged = runs.get(key[:size])
                if merged is not None:
                    return key[:size - 1] + (merged,)
            return key

        elements: dict[str, Element] = {}
        owner: dict[str, str] = {}
        clusters: set[tuple] = set()
        for node in picked:
            data = graph.nodes[node]
            kind = data.get("kind") if data.get("kind") in ("input", "output", "loss") else "op"
            cluster = () if kind in ("input", "output", "loss") else canonical(self._raw_key(node))
            element = Element(node, kind, cluster, [node], list(self.node_findings.get(node, [])),
                              cut=cut_of.get(node), dead_end=False)
            element.own = _unique(cut_findings.get(node, []))
            element.findings = _unique(element.findings + element.own)
            elements[node] = element
            owner[node] = node
            clusters.update(cluster[:i] for i in range(1, len(cluster) + 1))
        for key, nodes in param_groups.items():
            if key not in exact_groups:
                continue
            by_family: dict[str, list[str]] = defaultdict(list)
            for node in nodes:
                by_family[_worst(self.flagged_params[node]).prefix].append(node)
            for prefix, members in by_family.items():
                element_id = f"params:{_module_name(key)}:{prefix}"
                findings = _unique(f for n in members for f in self.flagged_params[n])
                elements[element_id] = Element(element_id, "params", key, members,
                                               findings, own=findings, key=key)
                clusters.update(key[:i] for i in range(1, len(key)))
                for node in members:
                    owner[node] = element_id
        # Parameters of a submodule forward never calls may be absent from the graph (fx).
        absent: dict[str, list[str]] = defaultdict(list)
        for finding in self.findings:
            for name in finding.parameters:
                node = f"param:{name}"
                if node not in graph and node not in absent[self._param_module(name)]:
                    absent[self._param_module(name)].append(node)
        for module, members in absent.items():
            findings = _unique(f for f in self.findings for p in f.parameters if f"param:{p}" in members)
            key = self._key_of_module(module)
            element_id = f"params:{module}:absent"
            elements[element_id] = Element(element_id, "params", key, members, findings, own=findings,
                                           key=levels(module) if key == levels(module) else key)
        box_keys = {key for n, key in raw_keys.items() if graph.nodes[n].get("kind") != "parameter"}
        for node in self.flagged_params:
            if node in owner:
                continue
            module = self._module_of(node)
            users = [u for u in graph.successors(node) if u in picked and (graph.nodes[u].get("module") or "") == module]
            if users and raw_keys.get(node) not in box_keys:
                owner[node] = users[0]
                elements[users[0]].members.append(node)
                elements[users[0]].findings = _unique(elements[users[0]].findings + self.flagged_params[node])
                elements[users[0]].own = _unique(elements[users[0]].own + self.flagged_params[node])
        for node, key in raw_keys.items():
            if node in owner:
                continue
            data = graph.nodes[node]
            if data.get("kind") == "parameter" and node not in self.flagged_params:
                continue   # healthy parameters are part of their module's box
            key = canonical(key)
            element_id = f"box:{_module_name(key)}"
            element = elements.get(element_id)
            if element is None:
                element = elements[element_id] = Element(element_id, "box", (), key=key)
            element.members.append(node)
            owner[node] = element_id
        for element in elements.values():
            if element.kind != "box":
                continue
            element.repeat = _run_size(element.key[-1]) if element.key else 1
            found = [f for n in element.members for f in self.node_findings.get(n, [])]
            found += [f for n in element.members for f in self.flagged_params.get(n, [])]
            element.findings = _unique(found)
            element.own = _unique([f for n in element.members for f in self.flagged_params.get(n, [])]
                                  + [f for n in element.members for f in cut_findings.get(n, [])])
        for node in picked:
            if node in dead_ends:
                elements[node].dead_end = True
        # A box containing the first cut op of a finding still says it cuts.
        for node, reason in cut_of.items():
            if node not in picked and node in owner and elements[owner[node]].kind == "box":
                elements[owner[node]].cut = elements[owner[node]].cut or reason

        edges: dict[tuple[str, str], dict] = {}
        finding_edges = defaultdict(list)
        for finding in self.findings:
            sub = graph.subgraph(n for n in finding.nodes if n in graph)
            for u, v in sub.edges():
                finding_edges[(u, v)].append(finding)
        for u, v, data in graph.edges(data=True):
            a, b = owner.get(u), owner.get(v)
            if a is None or b is None or a == b:
                continue
            edge = edges.setdefault((a, b), {"grad": False, "carries": False, "findings": []})
            edge["grad"] = edge["grad"] or bool(data.get("grad"))
            source = graph.nodes[u]
            edge["carries"] = edge["carries"] or source.get("kind") == "parameter" or bool(source.get("requires_grad"))
            for finding in finding_edges.get((u, v), ()):
                if finding not in edge["findings"]:
                    edge["findings"].append(finding)
        # Nodes with no edge and no finding (grad-mode markers, unused constants) are noise.
        connected = {u for u, _ in edges} | {v for _, v in edges}
        for element_id in [e for e in elements if e not in connected]:
            if not elements[element_id].findings and elements[element_id].kind != "loss":
                del elements[element_id]
        clusters = _settle_clusters(elements)
        return Plan(elements, edges, clusters, self.module_types, dict(self.flagged_params))

    def _runs(self, raw_keys: dict[str, tuple], held: set[tuple]) -> dict[tuple, str]:
        """Runs of repeated, indexed sibling blocks with nothing drawn inside: prefix -> merged level."""
        signature: dict[tuple, set] = defaultdict(set)
        for node, key in raw_keys.items():
            # Blocks differ by what their parameters are flagged with; a block without
            # flagged parameters (a ReLU between Linears) fits into any run.
            codes = {f.code for f in self.flagged_params.get(node, [])}
            for size in range(1, len(key) + 1):
                signature[key[:size]].update(codes)
        siblings: dict[tuple, dict[int, tuple]] = defaultdict(dict)
        for prefix in signature:
            match = _INDEXED.match(prefix[-1])
            if match:
                siblings[(prefix[:-1], match.group(1))][int(match.group(2))] = prefix
        runs: dict[tuple, str] = {}
        for (_, name), by_index in siblings.items():
            current: list[int] = []
            run_signature: list[frozenset] = [frozenset()]

            def close():
                if current:
                    label = f"{current[0]}-{current[-1]}" if len(current) > 1 else str(current[0])
                    label = f"{name}.{label}" if name else label
                    for index in current:
                        runs[by_index[index]] = label
                current.clear()
                run_signature[0] = frozenset()

            for index in sorted(by_index):
                prefix = by_index[index]
                if prefix in held:
                    close()
                    continue
                own = frozenset(signature[prefix])
                if current and (index != current[-1] + 1 or own and run_signature[0] and own != run_signature[0]):
                    close()
                current.append(index)
                run_signature[0] = run_signature[0] or own
            close()
        return runs


def _settle_clusters(elements: dict[str, Element]) -> set[tuple]:
    """Place every element in its module cluster, dropping clusters that would frame a single thing."""
    clusters = {e.cluster[:i] for e in elements.values() if e.kind in ("op", "params")
                for i in range(1, len(e.cluster) + 1)}

    def home(element: Element) -> tuple:
        spot = element.key if element.kind == "box" and element.key in clusters else (
            element.key[:-1] if element.kind == "box" else element.cluster)
        while spot and spot not in clusters:
            spot = spot[:-1]
        return spot

    while True:
        contents = Counter(home(e) for e in elements.values())
        contents.update(c[:-1] for c in clusters)
        lonely = {c for c in clusters if contents[c] <= 1}
        if not lonely:
            break
        clusters -= lonely
    for element in elements.values():
        element.cluster = home(element)
    return clusters


def _relative(name: str, module: str) -> str:
    return name[len(module) + 1:] if module and name.startswith(module + ".") else name


def _run_size(level: str) -> int:
    match = re.search(r"(\d+)-(\d+)$", level)
    return int(match.group(2)) - int(match.group(1)) + 1 if match else 1


def plan(result: "TargetResult", *, depth: int = 2, full: bool = False) -> Plan:
    """What the drawing of ``result`` holds (elements, contracted edges, clusters), before styling."""
    return _Planner(result, depth, full).plan()


# -- step 3: styling ------------------------------------------------------------------------

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
    parts = [f'<font color="{family_of(c).colour}"><b>{_esc(c)}</b> {_esc(f.name)}</font>'
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
        family = _worst(element.findings)
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
                what = ", ".join(_relative(n, module) for n in joined) if len(joined) <= 3 \
                    else f"{len(joined)} parameters"
                params_family = _worst(f for n in element.members[1:] for f in self.plan.flagged.get(n, []))
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
        module = _module_name(element.key)
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
        module = _module_name(element.key)
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
            title = _module_name(relative)
        type_name = self.plan.module_types.get(self._first_module(element), "")
        rows = [f"<b>{_esc(title)}</b>" + (f" (x{element.repeat})" if element.repeat > 1 else "")]
        rows.append(_small(_esc(" · ".join(t for t in (
            type_name if not own_cluster else "", f"{len(ops)} op{'s' if len(ops) != 1 else ''}") if t))))
        if flagged:
            names = [_relative(graph.nodes[n].get("param", n), module) for n in flagged]
            what = ", ".join(names) if len(names) <= 3 else f"{len(names)} parameters"
            params_family = _worst(f for n in flagged for f in self.plan.flagged.get(n, []))
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
        return _module_name(tuple(key))

    def edge_attrs(self, edge: dict) -> dict:
        family = _worst(edge["findings"])
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
        family = family_of(finding.code)
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
            container.node(_node_name(element_id), **styler.node_attrs(plan_.elements[element_id]))
        for child in children.get(cluster, ()):
            name = _module_name(child)
            flagged = [f for e in plan_.elements.values() if e.cluster[:len(child)] == child for f in e.findings]
            family = _worst(flagged)
            type_name = plan_.module_types.get(name, "")
            with container.subgraph(name=f"cluster_{_node_name(name)}") as sub:
                sub.attr(label=f"<<b>{_esc(child[-1])}</b>" + (f" ({_esc(type_name)})" if type_name else "") + ">",
                         style="rounded", color=family.colour if family else HEALTHY_BORDER,
                         fontname="Helvetica", fontsize="12", tooltip=name)
                draw(sub, child)

    draw(dot, ())
    for (u, v), edge in plan_.edges.items():
        dot.edge(_node_name(u), _node_name(v), **styler.edge_attrs(edge))
    dot.node("legend", label=_legend(result.findings), shape="box", style="rounded", color="#bdbdbd",
             fontname="Helvetica", fontsize="11")
    return dot


def _node_name(element_id: str) -> str:
    # graphviz treats ':' in a node name as a port separator.
    return element_id.replace(":", "\u2236") or "root"


def dot_source(result: "TargetResult", *, depth: int = 2, full: bool = False) -> str:
    """The DOT source of the drawing of one analysed target (what tests and ``.dot`` files hold)."""
    return to_digraph(result, depth=depth, full=full).source


# -- writing files ---------------------------------------------------------------------------

@dataclass
class Rendered:
    path: Path                 # the file written (the .dot source when no image could be made)
    message: str               # one line for the user
    image: bool                # an image of the requested format was written


def _run_dot(source_path: Path, out: Path, fmt: str, timeout: float) -> str | None:
    """Run dot; None on success, else why it failed."""
    executable = shutil.which("dot")
    if executable is None:
        return "missing"
    command = [executable, f"-T{fmt}", "-o", str(out), str(source_path)]
    if fmt == "png":
        command[1:1] = list(PNG_ARGS)
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        out.unlink(missing_ok=True)
        return "timeout"
    except OSError as exc:
        return f"could not run dot ({exc})"
    if completed.returncode != 0:
        return f"dot failed: {completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else completed.returncode}"
    return None


def render_one(result: "TargetResult", path: str | Path, *, depth: int = 2, full: bool = False,
               timeout: float | None = None) -> Rendered:
    """Draw one analysed target to ``path``; never raises for a missing or slow ``dot``."""
    path = Path(path)
    timeout = DOT_TIMEOUT if timeout is None else timeout
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot draw to {path.name!r}: use a .svg, .png, .pdf or .dot file name")
    if result.graph is None:
        raise ValueError(f"{result.target}: nothing to draw, the model could not be analysed")
    source = dot_source(result, depth=depth, full=full)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".dot":
        path.write_text(source, encoding="utf-8")
        return Rendered(path, f"wrote {path}", True)
    source_path = path.with_suffix(".dot")
    source_path.write_text(source, encoding="utf-8")
    failure = _run_dot(source_path, path, FORMATS[suffix], timeout)
    if failure is None:
        source_path.unlink(missing_ok=True)
        return Rendered(path, f"wrote {path}", True)
    if failure == "missing":
        return Rendered(source_path, f"wrote {source_path} instead of {path.name}: the graphviz program "
                        f"`dot` is not installed; {INSTALL_HINT}; then run "
                        f"`dot -T{FORMATS[suffix]} {source_path} -o {path}`", False)
    if failure == "timeout":
        return Rendered(source_path, f"wrote {source_path} instead of {path.name}: dot took longer than "
                        f"{timeout:g} s; try a smaller --render-depth, drop --render-all, or use .svg", False)
    return Rendered(source_path, f"wrote {source_path} instead of {path.name}: {failure}", False)


def render(result: "TargetResult", path: str | Path, *, depth: int = 2, full: bool = False) -> Path:
    """Draw the flagged paths of one result (from :func:`graphcheck.check`) and return the file written.

    The format follows the suffix (.svg, .png, .pdf, .dot). When the graphviz program is
    missing or too slow, the ``.dot`` source is written instead, a warning says why, and
    its path is returned.
    """
    rendered = render_one(result, path, depth=depth, full=full)
    if not rendered.image:
        warnings.warn(rendered.message, RuntimeWarning, stacklevel=2)
    return rendered.path


def output_paths(path: str | Path, count: int) -> list[Path]:
    """One file name per target: PATH itself for one, PATH-1, PATH-2... (same suffix) for several."""
    path = Path(path)
    if count == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{index}{path.suffix}") for index in range(1, count + 1)]


def render_results(results: list["TargetResult"], path: str | Path, *, depth: int = 2,
                   full: bool = False) -> list[str]:
    """Draw every target of a report (the CLI's --render); returns the lines to tell the user."""
    messages: list[str] = []
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        return [f"cannot draw to {Path(path).name!r}: use a .svg, .png, .pdf or .dot file name"]
    missing_hint_given = False
    for result, out in zip(results, output_paths(path, len(results))):
        if result.graph is None:
            messages.append(f"{result.target}: not drawn, the model could not be analysed")
            continue
        try:
            rendered = render_one(result, out, depth=depth, full=full)
        except Exception as exc:   # a drawing must never cost the user the report or exit code
            messages.append(f"{result.target}: could not draw ({type(exc).__name__}: {exc})")
            continue
        message = rendered.message
        if len(results) > 1:
            message = f"{result.target}: {message}"
        if not rendered.image and "not installed" in message:
            if missing_hint_given:
                message = message.split(": the graphviz program")[0] + ": `dot` is not installed"
            missing_hint_given = True
        messages.append(message)
    return messages
