"""The pytest plugin: a ``graphcheck`` fixture that lints a model and fails the test with the text report.

    def test_model_trains_everywhere(graphcheck):
        graphcheck(MyModel(), (torch.randn(2, 16),), loss=my_loss)

Registered through the ``pytest11`` entry point, so installing graphcheck is enough.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest


from graphcheck.finding import Severity
from graphcheck.report import Report, TargetResult
from graphcheck.reporters import format_report


def run_graphcheck(model_or_target: Any, inputs=None, *, loss=None, step=None, fail_on: str = "error",
                   **options) -> TargetResult:
    """Analyse the model; fail the running test (with the text report) on findings at or above ``fail_on``."""
    from graphcheck.checker import check   # torch is imported by the tests that use graphcheck, not by every session
    result = check(model_or_target, inputs, loss=loss, step=step, **options)
    if result.status == "error":
        pytest.fail(f"graphcheck could not analyse the model: {result.error}", pytrace=False)
    threshold = Severity(fail_on).rank
    if any(f.severity.rank >= threshold for f in result.findings):
        pytest.fail("graphcheck found problems:\n" + format_report(Report([result]), "text"), pytrace=False)
    return result


@pytest.fixture
def graphcheck() -> Callable[..., TargetResult]:
    """``graphcheck(model_or_target, inputs=..., loss=..., step=..., fail_on="error", **options)``."""
    return run_graphcheck
