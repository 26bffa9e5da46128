"""graphcheck: find the parts of a PyTorch model that will get no gradient, before training."""

from graphcheck.check import check
from graphcheck.errors import GraphcheckError
from graphcheck.finding import Finding, Location, Severity
from graphcheck.report import Report, TargetResult

from graphcheck.version import __version__
__all__ = ["check", "Finding", "GraphcheckError", "Location", "Report", "Severity", "TargetResult"]
