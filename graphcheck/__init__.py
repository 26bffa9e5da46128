"""graphcheck: find the parts of a PyTorch model that will get no gradient, before training."""

from graphcheck.errors import GraphcheckError
from graphcheck.finding import Finding, Location, Severity
from graphcheck.report import Report, TargetResult

from graphcheck.version import __version__
__all__ = ["check", "Finding", "GraphcheckError", "Location", "Report", "Severity", "TargetResult"]


def __getattr__(name: str):
    """``graphcheck.check`` imports torch: loaded on first use, so the CLI starts fast."""
    if name == "check":
        from graphcheck.checker import check
        return check
    raise AttributeError(f"module 'graphcheck' has no attribute {name!r}")
