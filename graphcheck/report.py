"""The report: results per target, and the one object that decides the exit code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from graphcheck.finding import Finding, Severity

if TYPE_CHECKING:
    from graphcheck.model_graph import ModelGraph
    from graphcheck.subject import Subject


@dataclass
class FindingCheck:
    """One GC1xx finding and whether autograd agrees that its parameters get no gradient."""
    code: str
    name: str
    parameters: list[str]
    confirmed: bool | None          # None: cannot be decided (zero-gradient verdict on meta only)

    def to_dict(self) -> dict:
        return {"code": self.code, "name": self.name, "parameters": list(self.parameters),
                "confirmed": self.confirmed}


@dataclass
class Verification:
    """The outcome of ``--verify`` for one target."""
    status: str                                   # "agree" | "disagree" | "failed"
    method: str = ""                              # "meta", "cpu", "meta+cpu-steps", "cpu+cpu-steps"
    autograd: set[str] = field(default_factory=set)       # no gradient according to autograd
    graphcheck: set[str] = field(default_factory=set)     # no gradient according to graphcheck
    missed: set[str] = field(default_factory=set)         # autograd: none; graphcheck: fine
    spurious: set[str] = field(default_factory=set)       # graphcheck: none; autograd: fine
    undecided: set[str] = field(default_factory=set)      # zero-gradient verdicts seen only on meta
    findings: list[FindingCheck] = field(default_factory=list)
    unreported: set[str] = field(default_factory=set)     # no gradient, but filtered by --select/ignore
    message: str = ""

    @property
    def agrees(self) -> bool:
        return self.status == "agree"

    def to_dict(self) -> dict:
        return {"status": self.status, "method": self.method,
                "autograd": sorted(self.autograd), "graphcheck": sorted(self.graphcheck),
                "missed": sorted(self.missed), "spurious": sorted(self.spurious),
                "undecided": sorted(self.undecided), "unreported": sorted(self.unreported),
                "findings": [f.to_dict() for f in self.findings], "message": self.message}


@dataclass
class TargetResult:
    target: str
    status: str = "ok"                  # "ok" or "error"
    error: str | None = None
    frontend: str | None = None
    mode: str = "train"
    mode_source: str = "factory"        # "factory" | "--train" | "--eval" | "config" | "api"
    device: str | None = None
    parameters: dict = field(default_factory=lambda: {"total": 0, "trainable": 0, "frozen": 0})
    findings: list[Finding] = field(default_factory=list)
    # Which loss was analysed: "output.loss", "default: every floating-point output",
    # "loss: file.py:fn" or "step: file.py:fn".
    loss: str | None = None
    suppressed: list[Finding] = field(default_factory=list)   # by `# graphcheck: ignore` comments
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # said on stderr and in JSON (a NaN loss)
    skipped_rules: list[str] = field(default_factory=list)   # need real weights; the model is meta
    timings: dict = field(default_factory=dict)
    graph: "ModelGraph | None" = None
    subject: "Subject | None" = None    # what was analysed and how it runs (in the process that ran it)
    detail: str | None = None           # traceback of an error, shown with --debug
    verification: Verification | None = None     # set by --verify (graphcheck/verify.py)

    def to_dict(self, show_suppressed: bool = False) -> dict:
        data = {
            "target": self.target,
            "status": self.status,
        }
        if self.status == "error":
            data["error"] = self.error
        data.update({
            "frontend": self.frontend,
            "mode": self.mode,
            "mode_source": self.mode_source,
            "loss": self.loss,
            "parameters": dict(self.parameters),
            "findings": [f.to_dict() for f in self.findings],
        })
        if self.warnings:
            data["warnings"] = list(self.warnings)
        if show_suppressed:
            data["suppressed"] = [f.to_dict() for f in self.suppressed]
        if self.verification is not None:
            data["verification"] = self.verification.to_dict()
        return data

    def parameters_without_gradient(self) -> set[str]:
        """Union of the GC1xx findings' parameters: what autograd will leave without gradient
        in every execution (GC105's parameters get one in some executions, so they are not here)."""
        return {p for f in self.findings if f.no_gradient for p in f.parameters}

    def conditionally_used_parameters(self) -> set[str]:
        """The GC105 findings' parameters: they get a gradient in some executions only."""
        return {p for f in self.findings if f.conditional for p in f.parameters}


@dataclass
class Report:
    results: list[TargetResult] = field(default_factory=list)
    show_suppressed: bool = False       # list suppressed findings too (marked as such)

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.results for f in r.findings]

    def exit_code(self, fail_on: str = "error", exit_zero: bool = False) -> int:
        if any(r.status == "error" for r in self.results):
            return 2
        threshold = Severity(fail_on).rank
        failing = any(f.severity.rank >= threshold for f in self.findings)
        return 1 if failing and not exit_zero else 0

    def to_dict(self) -> dict:
        return {"version": 1, "targets": [r.to_dict(self.show_suppressed) for r in self.results]}
