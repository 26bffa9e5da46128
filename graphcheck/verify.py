"""`--verify`: cross-check the GC1xx verdict against what autograd really does.

After the static analysis, the model runs forward + loss + backward with its example
inputs, outside every tracer:

* on the ``meta`` device (no weights allocated, no arithmetic): which parameters end with
  ``.grad is None``; when meta cannot run the model, the same pass on the CPU;
* when the weights are real and the model is small enough: a few random input draws with
  a few SGD steps each, on copies of the weights, to learn which gradients are not only
  present but identically zero (and stay zero once the other weights have moved).

The parameters autograd leaves without gradient are compared with graphcheck's own
verdict for every trainable parameter (``analysis.gradient_flow.analyse``, so a narrowed
``--select`` or ``ignore-parameters`` does not look like a disagreement). Any difference
is a graphcheck bug: the result becomes an error (exit code 2) that shows both sets.
"""

from __future__ import annotations

import traceback

import torch
from torch.utils import _pytree as pytree

from graphcheck import phases
from graphcheck.analysis.gradient_flow import analyse
from graphcheck.finding import name_list
from graphcheck.report import FindingCheck, Verification
from graphcheck.running import buffers_on, canonical_parameters, inputs_on, own_leaves, preserved, swapped_parameters
from graphcheck.subject import Subject, backward, loss_of

# Above these sizes the real-valued pass is skipped: it would allocate or compute too much.
MAX_REAL_PARAMETERS = 50_000_000
MAX_REAL_INPUT_ELEMENTS = 10_000_000
DRAWS = 3
STEPS = 3
LEARNING_RATE = 0.1


class _RunFailed(Exception):
    pass


def _run(subject: Subject, tensors: dict[str, torch.Tensor], inputs: tuple) -> bool:
    """forward + loss + backward (or the training step + backward) with ``tensors`` swapped in;
    ``inputs`` is ``(args, kwargs)``. Returns False when nothing reaches the loss."""
    model = subject.model
    try:
        with preserved(model), swapped_parameters(model, tensors), torch.enable_grad():
            return backward(loss_of(subject, subject.call(*inputs)))
    except Exception as exc:
        raise _RunFailed(f"{type(exc).__name__}: {exc}") from exc


def none_gradient_pass(subject: Subject, device: str) -> set[str]:
    """Trainable parameters whose ``.grad`` is None after one backward pass on ``device``."""
    leaves = own_leaves(canonical_parameters(subject.model)[0], device)
    _run(subject, {**buffers_on(subject.model, device), **leaves}, inputs_on(subject.inputs, device))
    return {n for n, p in leaves.items() if p.requires_grad and p.grad is None}


def zero_gradient_steps(subject: Subject, draws: int = DRAWS, steps: int = STEPS,
                        lr: float = LEARNING_RATE) -> set[str]:
    """Trainable parameters whose gradient is None or all zeros for every draw and SGD step (CPU)."""
    canonical, _ = canonical_parameters(subject.model)
    trainable = [n for n, p in canonical.items() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    ever_nonzero: set[str] = set()
    for draw in range(draws):
        weights = {n: p.detach().clone().requires_grad_(p.requires_grad) for n, p in canonical.items()}
        buffers = buffers_on(subject.model, "cpu")
        for step in range(steps):
            batch = inputs_on(subject.inputs, "cpu", None if draw == step == 0 else generator)
            for tensor in weights.values():
                tensor.grad = None
            if not _run(subject, {**buffers, **weights}, batch):
                break
            with torch.no_grad():
                for name in trainable:
                    grad = weights[name].grad
                    if grad is None:
                        continue
                    if bool(grad.ne(0).any()):
                        ever_nonzero.add(name)
                    weights[name].sub_(lr * grad)
        if len(ever_nonzero) == len(trainable):
            break
    return set(trainable) - ever_nonzero


def _numel(values) -> int:
    return sum(t.numel() for t in pytree.tree_leaves(values) if isinstance(t, torch.Tensor))


def autograd_verdict(subject: Subject) -> tuple[set[str], str, bool]:
    """(parameters autograd leaves without gradient, how that was measured, whether zeros were tested).

    The subject's mode override applies for the check only (None keeps the factory's modes)."""
    with preserved(subject.model):
        if subject.train_override is not None:
            subject.model.train(subject.train_override)
        return _autograd_verdict(subject)


def _autograd_verdict(subject: Subject) -> tuple[set[str], str, bool]:
    canonical, _ = canonical_parameters(subject.model)
    real = bool(canonical) and not any(p.is_meta for p in canonical.values())
    try:
        none_set, method = none_gradient_pass(subject, "meta"), "meta"
    except _RunFailed as meta_failure:
        if not real:
            raise _RunFailed(f"the forward/backward pass on the meta device failed ({meta_failure}) "
                             "and the model has no real weights to run on the CPU") from None
        none_set, method = none_gradient_pass(subject, "cpu"), "cpu"
    if not real:
        return none_set, method, not canonical
    small = (_numel(list(canonical.values())) <= MAX_REAL_PARAMETERS
             and _numel(subject.inputs) <= MAX_REAL_INPUT_ELEMENTS)
    if not small:
        return none_set, method, False
    zero_set = zero_gradient_steps(subject)
    return zero_set | none_set, method + "+cpu-steps", True


def verify_graph(graph, subject: Subject, findings=()) -> Verification:
    """Compare graphcheck's verdicts on ``graph`` (a ModelGraph of ``subject``) with autograd's."""
    verdicts = analyse(graph)
    # Conditionally used parameters (GC105) get a gradient in some executions only: not comparable.
    conditional = {name for name, v in verdicts.items() if v.kind == "conditional"}
    flagged = {name for name, v in verdicts.items() if v.kind not in ("ok", "conditional")}
    zero_kind = {name for name, v in verdicts.items() if v.kind == "zero"}
    phases.enter("verify")
    try:
        autograd, method, values_tested = autograd_verdict(subject)
        autograd -= conditional
    except _RunFailed as exc:
        return Verification(status="failed", graphcheck=flagged,
                            message=f"could not verify: {exc}")
    if values_tested:
        missed, spurious, undecided = autograd - flagged, flagged - autograd, set()
    else:
        # Without values autograd only shows missing gradients, not identically zero ones.
        missed = autograd - flagged
        undecided = zero_kind - autograd
        spurious = (flagged - zero_kind) - autograd
    checks = []
    reported = set()
    for finding in findings:
        if not finding.no_gradient:
            continue
        params = list(finding.parameters)
        reported.update(params)
        if all(p in autograd for p in params):
            confirmed = True
        elif any(p in spurious or p not in flagged for p in params):
            confirmed = False
        else:
            confirmed = None
        checks.append(FindingCheck(finding.code, finding.name, params, confirmed))
    status = "disagree" if missed or spurious else "agree"
    verification = Verification(status=status, method=method, autograd=autograd, graphcheck=flagged,
                                missed=missed, spurious=spurious, undecided=undecided,
                                findings=checks, unreported=(autograd & flagged) - reported)
    verification.message = _describe(verification)
    return verification


def _names(names: set[str]) -> str:
    return name_list(sorted(names), 12, empty="none")


def _describe(v: Verification) -> str:
    how = {"meta": "one backward pass on the meta device",
           "cpu": "one backward pass on the CPU",
           "meta+cpu-steps": f"a meta backward pass and {DRAWS} random draws x {STEPS} SGD steps on the CPU",
           "cpu+cpu-steps": f"a CPU backward pass and {DRAWS} random draws x {STEPS} SGD steps"}.get(v.method, v.method)
    if v.status == "agree":
        confirmed = sum(1 for f in v.findings if f.confirmed)
        text = (f"verified with {how}: autograd agrees ({len(v.autograd)} parameter(s) without gradient; "
                f"{confirmed} of {len(v.findings)} GC1xx finding(s) confirmed)")
        if v.undecided:
            text += (f"; identically-zero gradients of {_names(v.undecided)} need real weights "
                     "and were not checked")
        if v.unreported:
            text += f"; not reported because of --select/--ignore/ignore-parameters: {_names(v.unreported)}"
        return text
    return ("graphcheck and autograd disagree about which parameters get no gradient "
            f"(checked with {how}). Parameters missed because their gradient depends on the values "
            "(a condition never true for these inputs, `min`/`max` selecting one branch, exact "
            "cancellation) are a known limit of the static analysis (docs/limitations.md); anything "
            "else is a bug in graphcheck: please report it with this message and the model. "
            f"Autograd leaves without gradient: {_names(v.autograd)}. "
            f"graphcheck says: {_names(v.graphcheck)}. "
            f"Missed by graphcheck: {_names(v.missed)}. "
            f"Wrongly flagged by graphcheck: {_names(v.spurious)}.")


def verify_result(result) -> "Verification | None":
    """Verify one ok TargetResult in place: ``result.verification``, a note, and an error on disagreement."""
    if result.status != "ok" or result.graph is None or result.subject is None:
        return None
    try:
        verification = verify_graph(result.graph, result.subject, result.findings)
    except Exception as exc:   # the checker must not crash the report
        verification = Verification(status="failed", message=(
            f"could not verify: internal error {type(exc).__name__}: {exc}"))
        result.detail = (result.detail or "") + traceback.format_exc()
    result.verification = verification
    result.notes.append(verification.message)
    if verification.status == "disagree":
        result.status = "error"
        result.error = verification.message
    return verification
