"""graphcheck: find the parts of a PyTorch model that will get no gradient, before training."""

from graphcheck.check import check
from graphcheck.errors import GraphcheckError
from graphcheck.finding import Finding, Location, Severity
from graphcheck.report import Report, TargetResult

__version__ = "0.1.0"
__all__ = ["check", "Finding", "GraphcheckError", "Location", "Report", "Severity", "TargetResult"]
