"""pytest support: assert that a model has no findings, with the text report as the failure message.

    from graphcheck.testing import assert_clean

    def test_model_trains_everywhere():
        assert_clean(MyModel(), (torch.randn(2, 16),), loss=my_loss)
"""

from __future__ import annotations

from typing import Any

from graphcheck.checker import check
from graphcheck.finding import Severity
from graphcheck.report import Report, TargetResult
from graphcheck.reporters import format_report


def assert_clean(model: Any, inputs=None, *, fail_on: str = "error", **options) -> TargetResult:
    """Run graphcheck and raise AssertionError listing the findings at or above ``fail_on``."""
    result = check(model, inputs, **options)
    report = Report([result])
    if result.status == "error":
        raise AssertionError(f"graphcheck could not analyse the model: {result.error}")
    threshold = Severity(fail_on).rank
    if any(f.severity.rank >= threshold for f in result.findings):
        raise AssertionError("graphcheck found problems:\n" + format_report(report, "text"))
    return result
