"""GC1xx: parameters that get no gradient (unused, dead branch, detached, zero derivative), or only in some executions (GC105)."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Iterable

from graphcheck.finding import Cause, Finding, Severity
from graphcheck.finding import name_list as _names
from graphcheck.model_graph import Decision, ModelGraph
from graphcheck.measured import Measure
from graphcheck.rules.base import Rule, register
from graphcheck.analysis.gradient_flow import VERDICT_MEASURES, Verdict, analyse
from graphcheck.finding import Family

FAMILY = Family("GC1", "no gradient", "#d62728", "#fcd5d5", traced=True)
# Other executions (GC105) settle which verdicts hold for every execution.
MEASURES = VERDICT_MEASURES | {Measure.EXECUTIONS}
from graphcheck.analysis.cuts import cut_label
from graphcheck.analysis.paths import readable_path


class _GradientRule(Rule):
    """Reports the parameters of one verdict kind, one finding per cause."""

    verdict: str
    severity = Severity.ERROR
    family = FAMILY
    no_gradient = True
    measures = MEASURES

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        groups: dict[tuple, list[Verdict]] = defaultdict(list)
        for verdict in analyse(graph).values():
            if verdict.kind == self.verdict:
                groups[self.group_key(graph, verdict)].append(verdict)
        order = {node: index for index, node in enumerate(graph.graph)}
        for verdicts in groups.values():
            params = [v.param for v in verdicts]
            # Explain the group by its earliest cause in execution order (the block's first op).
            first = min(verdicts, key=lambda v: order.get(v.cause, len(order)))
            nodes = sorted({graph.parameters[p].node for p in params} | set(first.path))
            yield self.finding(self.message(graph, first, params), parameters=params,
                               path=readable_path(graph, first.path), location=first.location,
                               nodes=nodes, cause=_cause(graph, first))

    def group_key(self, graph: ModelGraph, verdict: Verdict) -> tuple:
        return (verdict.group,) if verdict.group else (verdict.cause, verdict.reason)

    def message(self, graph: ModelGraph, verdict: Verdict, params: list[str]) -> str:
        raise NotImplementedError


def _cause(graph: ModelGraph, verdict: Verdict) -> Cause | None:
    """The node the drawing marks: the cutting op, the op with a zero gradient, the end of a dead branch."""
    if verdict.kind == "detached" and verdict.cause in graph.graph:
        return Cause("cut", verdict.cause, verdict.edge, cut_label(graph, verdict.cause))
    if verdict.kind == "zero" and verdict.cause in graph.graph:
        return Cause("zero", verdict.cause, None, str(graph.node(verdict.cause).get("target", "")))
    if verdict.kind == "dead" and verdict.path:
        return Cause("dead-end", verdict.path[-1])
    return None


@register
class UnusedParameter(_GradientRule):
    """Parameters that forward never reads.

    ## What it does
    Finds trainable parameters that the traced forward pass never touches: a layer
    built in `__init__` but never called, a branch only taken in another mode, a
    parameter left over from refactoring.

    ## Why is this bad?
    They get no gradient (`.grad` stays `None`), so they never train, the optimizer
    state for them is wasted, and DistributedDataParallel stops with "Expected to have
    finished reduction in the prior iteration ... parameters that were not used in
    producing loss".

    ## Example
    ```python
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)   # never called

        def forward(self, x):
            return self.body(x)
    ```

    ## Use instead
    Call the layer, delete it, or freeze it on purpose (`requires_grad_(False)`),
    or list it under `ignore-parameters` in `[tool.graphcheck]`.
    """

    code = "GC101"
    name = "unused-parameter"
    verdict = "unused"

    def group_key(self, graph, verdict):
        return (graph.parameters[verdict.param].module,)

    def message(self, graph, verdict, params):
        module = graph.parameters[params[0]].module
        if not module:
            return f"{_names(params)} {'is' if len(params) == 1 else 'are'} never read in forward, so " \
                   f"{'it gets' if len(params) == 1 else 'they get'} no gradient"
        return (f"`{module}` is never used in forward, so {_names(params)} "
                f"{'gets' if len(params) == 1 else 'get'} no gradient")


@register
class DeadBranchParameter(_GradientRule):
    """Parameters whose result never reaches the loss.

    ## What it does
    Finds trainable parameters that forward does read, but whose every result is
    thrown away before the loss: an auxiliary head whose output the loss ignores, a
    pooler when the loss uses only the sequence output, a value computed and never used.

    ## Why is this bad?
    The computation costs time and memory and the parameters never train. Under
    DistributedDataParallel it is the classic "parameters that were not used in
    producing loss" error, which names indices, not the branch.

    ## Example
    ```python
    def forward(self, x):
        h = self.encoder(x)
        aux = self.aux_head(h)        # returned, but the loss uses out[0] only
        return self.head(h), aux
    ```

    ## Use instead
    Add the branch to the loss (`loss = main + 0.4 * aux`), stop computing it, or pass
    the loss you really train with (`--loss`) so graphcheck sees the same thing.
    """

    code = "GC102"
    name = "dead-branch-parameter"
    verdict = "dead"

    def message(self, graph, verdict, params):
        return f"{_names(params)}: {verdict.reason}, so {'it gets' if len(params) == 1 else 'they get'} no gradient"


@register
class DetachedParameter(_GradientRule):
    """Parameters cut from the loss on every path.

    ## What it does
    Finds trainable parameters whose values do reach the loss, but only through an op
    that autograd does not differentiate: `.detach()`, `.data`, a `torch.no_grad()` /
    `set_grad_enabled(False)` / `inference_mode()` block inside forward, `.item()` or
    `.tolist()`, or a non-differentiable op such as `argmax`, `topk` indices, a
    comparison, an integer or bool cast, `nonzero`. The finding names the op that cuts
    and its source line.

    ## Why is this bad?
    The parameters look used (DDP even counts them as used when `find_unused_parameters`
    is off) but their `.grad` stays `None`: they never train.

    ## Example
    ```python
    def forward(self, x):
        with torch.no_grad():
            h = self.backbone(x)      # backbone never trains
        return self.head(h)
    ```

    ## Use instead
    Remove the cut, or freeze the parameters explicitly (`requires_grad_(False)`) so the
    intent is visible. For a hard choice use a straight-through estimator or
    `gumbel_softmax` instead of `argmax`.
    """

    code = "GC103"
    name = "detached-parameter"
    verdict = "detached"

    def message(self, graph, verdict, params):
        subject = "they get" if len(params) > 1 else "it gets"
        return (f"{verdict.reason}; this cuts every path from {_names(params)} to the loss, "
                f"so {subject} no gradient")


@register
class ZeroGradientParameter(_GradientRule):
    """Parameters whose gradient is identically zero.

    ## What it does
    Finds trainable parameters that autograd does reach, but only through ops whose
    derivative is zero: `round`, `floor`, `ceil`, `trunc`, `sign`; a multiplication by
    a constant zero (a literal, `zeros_like`, an all-zero buffer); a weight that is all
    zeros and never gets a gradient itself (two consecutive zero-initialised layers); or
    a ReLU layer that is dead at init (every unit negative for every input, so neither
    it nor the layers before it ever move). A zero-initialised *last* layer of a residual
    branch is not reported: its own gradient is non-zero, so it wakes up after one
    optimizer step.

    ## Why is this bad?
    The `.grad` exists, so nothing complains, but it is all zeros at every step: the
    parameters never move.

    ## Example
    ```python
    def forward(self, x):
        w = torch.round(self.weight * 127) / 127   # fake quantisation, no STE
        return x @ w.t()
    ```

    ## Use instead
    Use a straight-through estimator (`w + (torch.round(w) - w).detach()`), initialise
    at most the last layer of a branch to zero, and do not multiply by constant zeros.
    """

    code = "GC104"
    name = "zero-gradient-parameter"
    verdict = "zero"

    def message(self, graph, verdict, params):
        subject = _names(params)
        return (f"{verdict.reason}; every gradient path from {subject} passes through it, "
                f"so {'its gradient is' if len(params) == 1 else 'their gradients are'} identically zero")


_KIND_ORDER = {"random": 0, "state": 1, "input": 2, "meta": 3}
_KIND_TEXT = {"random": "a random draw", "state": "state that forward itself changes",
              "input": "the input values", "meta": "a value the meta device does not have (--meta)"}


def _deciding(graph: ModelGraph, param: str) -> Decision | None:
    """The decision most likely to govern ``param``: the innermost module enclosing it that decides."""
    module = graph.parameters[param].module

    def encloses(decision: Decision) -> bool:
        return not decision.module or module == decision.module or module.startswith(decision.module + ".")
    candidates = [d for d in graph.decisions if encloses(d)] or list(graph.decisions)
    if not candidates:
        return None
    return min(candidates, key=lambda d: (-len(d.module), _KIND_ORDER.get(d.kind, 3), graph.decisions.index(d)))


@register
class ConditionallyUsedParameter(Rule):
    """Parameters that get a gradient in some executions and not in others.

    ## What it does
    Finds trainable parameters that reach the loss in some executions of forward only:
    layers skipped at random (LayerDrop, stochastic depth written as `if random.random() < p:
    continue`), experts of a mixture of experts that receive no token for some inputs,
    branches chosen by input values (`if x.sum() > 0`, `torch.equal`) or by state that
    forward changes itself (a step counter, a toggle). graphcheck records every Python
    decision forward makes on a random draw, on the inputs or on its own state, runs the
    model a few more times (other seeds and inputs, successive calls, every random draw
    forced to its lowest and its highest value) and reports the parameters whose gradient
    comes and goes, with the line that decides. It is a warning, never a GC1xx error: those
    hold for every execution.

    ## Why is this bad?
    Often it is intended, but the training setup must know. DistributedDataParallel
    expects every parameter to get a gradient in every iteration: without
    `find_unused_parameters=True` it stops with "Expected to have finished reduction in
    the prior iteration", and `static_graph=True` is unsafe because the set of used
    parameters changes between iterations. When it is not intended (a toggle left in
    forward, a branch on the batch's values), part of the model trains on a fraction of
    the batches.

    ## Example
    ```python
    def forward(self, x):
        for block in self.blocks:
            if self.training and random.random() < 0.3:   # stochastic depth
                continue
            x = x + block(x)
        return x
    ```

    ## Use instead
    Keep it and wrap the model with `DistributedDataParallel(model,
    find_unused_parameters=True)` (not `static_graph=True`), or make the computation
    static: scale the block's output by a random mask instead of skipping it
    (`x + mask * block(x)`, as `torchvision.ops.stochastic_depth` does), route every
    expert through a zero-size batch, move counters and toggles out of forward.
    """

    family = FAMILY
    measures = MEASURES
    conditional = True
    code = "GC105"
    name = "conditionally-used-parameter"
    severity = Severity.WARNING

    def check(self, graph: ModelGraph) -> Iterable[Finding]:
        conditional = [v.param for v in analyse(graph).values() if v.kind == "conditional"]
        groups: dict[int, list[str]] = defaultdict(list)
        deciding: dict[int, Decision | None] = {}
        for param in conditional:
            decision = _deciding(graph, param)
            key = -1 if decision is None else graph.decisions.index(decision)
            deciding[key] = decision
            groups[key].append(param)
        for key, params in groups.items():
            decision = deciding[key]
            if decision is None:
                cause = "forward takes another path in another execution"
            else:
                where = f" at {os.path.basename(decision.location.file)}:{decision.location.line}" \
                    if decision.location else ""
                cause = f"forward decides on {_KIND_TEXT.get(decision.kind, 'a value')}{where} ({decision.what})"
            verb = "gets" if len(params) == 1 else "get"
            message = (f"{_names(params)} {verb} a gradient in some executions and not in others: {cause}. "
                       "Under DistributedDataParallel this needs `find_unused_parameters=True`, and "
                       "`static_graph=True` is unsafe")
            yield self.finding(message, parameters=params, location=decision.location if decision else None,
                               nodes=[graph.parameters[p].node for p in params])
