"""Planning the drawing: which nodes are drawn one by one, which collapse into module boxes, and the edges between them.

The three steps (pick, collapse, contract) are described in :mod:`graphcheck.drawing`.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import networkx as nx

from graphcheck.drawing.modules import INDEXED, common_prefix, levels, module_name, run_size
from graphcheck.drawing.palette import family_of, unique_findings, worst_family
from graphcheck.finding import Finding

if TYPE_CHECKING:
    from graphcheck.model_graph import ModelGraph
    from graphcheck.report import TargetResult

SMALL_GRAPH = 80        # graphs up to this many nodes are drawn whole


MAX_PICKED = 45         # individually drawn nodes in a big model's drawing


MAX_OUTPUTS = 8


ENDS_PER_FINDING = 2  # first and last nodes drawn of a long non-GC1 finding


NEIGHBOURS = 1        # neighbours drawn on each side of a picked node


MAX_PARAM_GROUPS = 8    # more flagged modules than this are shown inside their module boxes




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
        flagged_keys = [levels(self._module_of(n)) for n in self.flagged_params]
        flagged_keys += [levels(self._module_of(n)) for f in self.findings if not f.parameters
                         for n in f.nodes if n in self.graph]
        self.anchor = () if full or not flagged_keys else common_prefix(flagged_keys)

    # -- facts about nodes ---------------------------------------------------------------
    def _module_types(self) -> dict[str, str]:
        types = dict(self.mg.module_types)
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

    # -- step 1: pick --------------------------------------------------------------------
    def cuts_and_ends(self, finding: Finding) -> tuple[list[str], list[str]]:
        """The op where the rule found this finding's gradient cut, or where its dead branch ends."""
        cause = finding.cause
        if cause is None or cause.node not in self.graph:
            return [], []
        if cause.kind == "cut":
            return [cause.node], []
        if cause.kind == "dead-end" and self.graph.nodes[cause.node].get("kind") not in ("loss", "parameter"):
            return [], [cause.node]
        return [], []

    def pick(self) -> tuple[dict[str, str], set[str], dict[str, list[Finding]], set[str]]:
        graph = self.graph
        cut_of: dict[str, str] = {}
        dead_ends: set[str] = set()
        cut_findings: dict[str, list[Finding]] = defaultdict(list)
        priority: list[str] = []
        for finding in self.findings:
            cuts, ends = self.cuts_and_ends(finding)
            for node in cuts:
                cut_of.setdefault(node, finding.cause.label or node)
            for node in cuts + ends:
                cut_findings[node].append(finding)
            dead_ends.update(ends)
            priority += cuts + ends
            if not family_of(finding).traced:
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
            element.own = unique_findings(cut_findings.get(node, []))
            element.findings = unique_findings(element.findings + element.own)
            elements[node] = element
            owner[node] = node
            clusters.update(cluster[:i] for i in range(1, len(cluster) + 1))
        for key, nodes in param_groups.items():
            if key not in exact_groups:
                continue
            by_family: dict[str, list[str]] = defaultdict(list)
            for node in nodes:
                by_family[worst_family(self.flagged_params[node]).prefix].append(node)
            for prefix, members in by_family.items():
                element_id = f"params:{module_name(key)}:{prefix}"
                findings = unique_findings(f for n in members for f in self.flagged_params[n])
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
            findings = unique_findings(f for f in self.findings for p in f.parameters if f"param:{p}" in members)
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
                elements[users[0]].findings = unique_findings(elements[users[0]].findings + self.flagged_params[node])
                elements[users[0]].own = unique_findings(elements[users[0]].own + self.flagged_params[node])
        for node, key in raw_keys.items():
            if node in owner:
                continue
            data = graph.nodes[node]
            if data.get("kind") == "parameter" and node not in self.flagged_params:
                continue   # healthy parameters are part of their module's box
            key = canonical(key)
            element_id = f"box:{module_name(key)}"
            element = elements.get(element_id)
            if element is None:
                element = elements[element_id] = Element(element_id, "box", (), key=key)
            element.members.append(node)
            owner[node] = element_id
        for element in elements.values():
            if element.kind != "box":
                continue
            element.repeat = run_size(element.key[-1]) if element.key else 1
            found = [f for n in element.members for f in self.node_findings.get(n, [])]
            found += [f for n in element.members for f in self.flagged_params.get(n, [])]
            element.findings = unique_findings(found)
            element.own = unique_findings([f for n in element.members for f in self.flagged_params.get(n, [])]
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
        clusters = settle_clusters(elements)
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
            match = INDEXED.match(prefix[-1])
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


def settle_clusters(elements: dict[str, Element]) -> set[tuple]:
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


def plan(result: "TargetResult", *, depth: int = 2, full: bool = False) -> Plan:
    """What the drawing of ``result`` holds (elements, contracted edges, clusters), before styling."""
    return _Planner(result, depth, full).plan()
