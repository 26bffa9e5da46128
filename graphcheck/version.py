"""The version of graphcheck (one place, read by the package and the SARIF reporter)."""

__version__ = "0.1.0"
