"""The text, concise and github reporters, line by line, on reports built by hand (no model, no torch)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from graphcheck.finding import Finding, Location, Severity
from graphcheck.report import Report, TargetResult
from graphcheck.reporters import format_report

TARGET = "models/net.py:build_model"
PARAMETERS = {"total": 10, "trainable": 8, "frozen": 2}
DEFAULT_LOSS = "default: every floating-point output"
SUMMARY_TAIL = ("(fx frontend on cpu, train mode (the factory's choice); 10 parameters: 8 trainable, 2 frozen; "
                f"loss: {DEFAULT_LOSS})")


@pytest.fixture(autouse=True)
def cwd(tmp_path, monkeypatch) -> Path:
    """Run in an empty folder: files under it are printed relative to it, others absolute."""
    monkeypatch.chdir(tmp_path)
    return Path.cwd()   # resolved, as os.path.relpath sees it


def at(line: int, file: str = "models/net.py") -> Location:
    """A location in `file` under the working directory (absolute, as graphcheck records them)."""
    return Location(str(Path.cwd() / file), line)


def unused(line: int | None = 12, parameter: str = "head.weight", **kw) -> Finding:
    return Finding("GC101", "unused-parameter", Severity.ERROR, f"`{parameter}` is never used in forward",
                   parameters=(parameter,), location=None if line is None else at(line), **kw)


def conditional(line: int | None = 20) -> Finding:
    return Finding("GC105", "conditionally-used-parameter", Severity.WARNING,
                   "`gate.weight` gets a gradient in some executions only", parameters=("gate.weight",),
                   location=None if line is None else at(line))


def unused_suppression(line: int | None = 3) -> Finding:
    return Finding("GC001", "unused-suppression", Severity.INFO, "this `# graphcheck: ignore` suppresses nothing",
                   location=None if line is None else at(line))


def result(findings=(), target: str = TARGET, **kw) -> TargetResult:
    kw.setdefault("frontend", "fx")
    kw.setdefault("device", "cpu")
    kw.setdefault("loss", DEFAULT_LOSS)
    kw.setdefault("parameters", dict(PARAMETERS))
    return TargetResult(target, findings=list(findings), **kw)


def failed(target: str = "broken.py:build_model", error: str | None = "ImportError: no module named `missing`"):
    return TargetResult(target, status="error", error=error)


def lines(report: Report, fmt: str) -> list[str]:
    text = format_report(report, fmt)
    assert text.endswith("\n"), repr(text)
    return text.splitlines()


# -- text -----------------------------------------------------------------------------------------

def test_text_finding_line_path_and_summary():
    report = Report([result([unused(path=("head.weight", "linear", "<dropped>"))])])
    assert format_report(report, "text") == (
        "models/net.py:12: GC101 unused-parameter: `head.weight` is never used in forward\n"
        "    path: head.weight -> linear -> <dropped>\n"
        f"{TARGET}: 1 error {SUMMARY_TAIL}\n")


def test_text_finding_without_location_is_prefixed_by_its_target_and_has_no_path_line():
    assert lines(Report([result([unused(line=None)])]), "text") == [
        f"{TARGET}: GC101 unused-parameter: `head.weight` is never used in forward",
        f"{TARGET}: 1 error {SUMMARY_TAIL}",
    ]


def test_text_file_outside_the_working_directory_stays_absolute(cwd):
    outside = str(cwd.parent / "elsewhere" / "net.py")
    finding = Finding("GC402", "deep-plain-stack", Severity.WARNING, "11 layers in a row", location=Location(outside, 7))
    assert lines(Report([result([finding])]), "text")[0] == f"{outside}:7: GC402 deep-plain-stack: 11 layers in a row"


def test_text_counts_severities_in_order_with_plurals():
    findings = [unused_suppression(1), unused(2, "a"), conditional(3), unused(4, "b"),
                Finding("GC402", "deep-plain-stack", Severity.WARNING, "deep", location=at(5))]
    assert lines(Report([result(findings)]), "text") == [
        "models/net.py:1: GC001 unused-suppression: this `# graphcheck: ignore` suppresses nothing",
        "models/net.py:2: GC101 unused-parameter: `a` is never used in forward",
        "models/net.py:3: GC105 conditionally-used-parameter: `gate.weight` gets a gradient in some executions only",
        "models/net.py:4: GC101 unused-parameter: `b` is never used in forward",
        "models/net.py:5: GC402 deep-plain-stack: deep",
        f"{TARGET}: 2 errors, 1 info, 2 warnings {SUMMARY_TAIL}",
    ]


def test_text_clean_target_is_one_summary_line():
    assert lines(Report([result()]), "text") == [f"{TARGET}: no findings {SUMMARY_TAIL}"]


@pytest.mark.parametrize("mode, mode_source, shown", [
    ("train", "factory", "train mode (the factory's choice)"),
    ("eval", "factory", "eval mode (the factory's choice)"),
    ("eval", "--eval", "eval mode (--eval)"),
    ("train", "--train", "train mode (--train)"),
    ("eval", "config", "eval mode (config)"),
    ("train", "api", "train mode (api)"),
])
def test_text_summary_names_the_mode_and_who_chose_it(mode, mode_source, shown):
    report = Report([result(mode=mode, mode_source=mode_source)])
    assert lines(report, "text") == [
        f"{TARGET}: no findings (fx frontend on cpu, {shown}; 10 parameters: 8 trainable, 2 frozen; "
        f"loss: {DEFAULT_LOSS})"]


@pytest.mark.parametrize("loss, shown", [
    ("output.loss", "output.loss"),
    (DEFAULT_LOSS, DEFAULT_LOSS),
    ("loss: train.py:loss", "train.py:loss"),          # not "loss: loss: train.py:loss"
    ("step: train.py:training_step", "step: train.py:training_step"),
    (None, "unknown"),
])
def test_text_summary_names_the_loss(loss, shown):
    assert lines(Report([result(loss=loss)]), "text")[-1].endswith(f"; loss: {shown})")


def test_text_summary_names_frontend_device_and_parameter_counts():
    report = Report([result(frontend="export", device="meta", parameters={"total": 1234, "trainable": 1000,
                                                                          "frozen": 234})])
    assert lines(report, "text") == [
        f"{TARGET}: no findings (export frontend on meta, train mode (the factory's choice); "
        f"1234 parameters: 1000 trainable, 234 frozen; loss: {DEFAULT_LOSS})"]


def test_text_error_target_is_one_line_without_summary():
    assert lines(Report([failed()]), "text") == ["broken.py:build_model: error: ImportError: no module named `missing`"]


def test_text_suppressed_findings_are_counted_but_hidden_by_default():
    report = Report([result([conditional(20)], suppressed=[unused(12)])])
    assert lines(report, "text") == [
        "models/net.py:20: GC105 conditionally-used-parameter: `gate.weight` gets a gradient in some executions only",
        f"{TARGET}: 1 warning, 1 suppressed {SUMMARY_TAIL}",
    ]
    report = Report([result(suppressed=[unused(12), unused(13, "b")])])
    assert lines(report, "text") == [f"{TARGET}: no findings, 2 suppressed {SUMMARY_TAIL}"]


def test_text_show_suppressed_merges_them_in_file_and_line_order_marked():
    suppressed = [unused(30, "late"), unused(None, "nowhere"), unused(20, "shadow")]
    report = Report([result([conditional(20), unused(5, "early", path=("early", "loss"))], suppressed=suppressed)],
                    show_suppressed=True)
    assert lines(report, "text") == [
        # no location first, then by file, line and code
        f"{TARGET}: GC101 unused-parameter (suppressed): `nowhere` is never used in forward",
        "models/net.py:5: GC101 unused-parameter: `early` is never used in forward",
        "    path: early -> loss",
        "models/net.py:20: GC101 unused-parameter (suppressed): `shadow` is never used in forward",
        "models/net.py:20: GC105 conditionally-used-parameter: `gate.weight` gets a gradient in some executions only",
        "models/net.py:30: GC101 unused-parameter (suppressed): `late` is never used in forward",
        # the counts are of the findings that count: the suppressed ones apart
        f"{TARGET}: 1 error, 1 warning, 3 suppressed {SUMMARY_TAIL}",
    ]


def test_text_skipped_rules_and_verification_follow_the_summary():
    report = Report([result(device="meta", skipped_rules=["dead-relu-at-init", "saturated-at-init"],
                            verification=SimpleNamespace(message="verified: autograd agrees (meta)"))])
    assert lines(report, "text") == [
        f"{TARGET}: no findings (fx frontend on meta, train mode (the factory's choice); "
        f"10 parameters: 8 trainable, 2 frozen; loss: {DEFAULT_LOSS})",
        f"{TARGET}: skipped on the meta device (they need real weights): dead-relu-at-init, saturated-at-init",
        f"{TARGET}: verified: autograd agrees (meta)",
    ]


def test_text_several_targets_in_order_each_with_its_summary():
    other = "pkg.models:build"
    report = Report([result([unused(12)]), failed(), result([conditional(None)], target=other, frontend="autograd")])
    assert lines(report, "text") == [
        "models/net.py:12: GC101 unused-parameter: `head.weight` is never used in forward",
        f"{TARGET}: 1 error {SUMMARY_TAIL}",
        "broken.py:build_model: error: ImportError: no module named `missing`",
        f"{other}: GC105 conditionally-used-parameter: `gate.weight` gets a gradient in some executions only",
        f"{other}: 1 warning (autograd frontend on cpu, train mode (the factory's choice); "
        f"10 parameters: 8 trainable, 2 frozen; loss: {DEFAULT_LOSS})",
    ]


# -- concise --------------------------------------------------------------------------------------

def test_concise_is_one_line_per_finding_and_nothing_else():
    report = Report([result([unused(12, path=("head.weight", "loss")), conditional(None), unused_suppression(3)])])
    assert format_report(report, "concise") == (
        "models/net.py:12: GC101 `head.weight` is never used in forward\n"
        f"{TARGET}: GC105 `gate.weight` gets a gradient in some executions only\n"
        "models/net.py:3: GC001 this `# graphcheck: ignore` suppresses nothing\n")


def test_concise_clean_report_is_empty():
    assert format_report(Report([result(), result(target="other.py:build")]), "concise") == ""


def test_concise_error_targets_and_several_targets():
    report = Report([failed(), result([unused(12)]), result([conditional(8)], target="pkg.models:build")])
    assert lines(report, "concise") == [
        "broken.py:build_model: error: ImportError: no module named `missing`",
        "models/net.py:12: GC101 `head.weight` is never used in forward",
        "models/net.py:8: GC105 `gate.weight` gets a gradient in some executions only",
    ]


@pytest.mark.parametrize("show_suppressed", [False, True])
def test_concise_never_lists_suppressed_findings(show_suppressed):
    report = Report([result([conditional(20)], suppressed=[unused(12)])], show_suppressed=show_suppressed)
    assert lines(report, "concise") == [
        "models/net.py:20: GC105 `gate.weight` gets a gradient in some executions only"]


# -- github ---------------------------------------------------------------------------------------

def test_github_annotation_per_finding_with_level_file_line_and_title():
    report = Report([result([unused(12), conditional(20), unused_suppression(3)])])
    assert format_report(report, "github") == (
        "::error file=models/net.py,line=12,title=GC101 unused-parameter::`head.weight` is never used in forward\n"
        "::warning file=models/net.py,line=20,title=GC105 conditionally-used-parameter::"
        "`gate.weight` gets a gradient in some executions only\n"
        "::notice file=models/net.py,line=3,title=GC001 unused-suppression::"
        "this `# graphcheck: ignore` suppresses nothing\n")


def test_github_finding_without_location_has_only_a_title():
    assert lines(Report([result([conditional(None)])]), "github") == [
        "::warning title=GC105 conditionally-used-parameter::`gate.weight` gets a gradient in some executions only"]


def test_github_file_outside_the_working_directory_stays_absolute(cwd):
    outside = str(cwd.parent / "elsewhere" / "net.py")
    finding = Finding("GC402", "deep-plain-stack", Severity.WARNING, "deep", location=Location(outside, 7))
    assert lines(Report([result([finding])]), "github") == [
        f"::warning file={outside},line=7,title=GC402 deep-plain-stack::deep"]


def test_github_message_escapes_percent_and_newlines_but_not_colons():
    message = "50% of `a::b`\r\nsee: %0A stays text\nend"
    finding = Finding("GC101", "unused-parameter", Severity.ERROR, message, location=at(1))
    assert lines(Report([result([finding])]), "github") == [
        "::error file=models/net.py,line=1,title=GC101 unused-parameter::"
        "50%25 of `a::b`%0D%0Asee: %250A stays text%0Aend"]


def test_github_properties_escape_percent_newlines_colons_and_commas():
    finding = Finding("GC101", "odd::name,x", Severity.ERROR, "m", location=at(4, "dir/we,ird:100%.py"))
    target = "mod::el.py:build\nx"
    report = Report([result([finding], target=target), failed(target, error="bad: 100%\nnext::line")])
    assert lines(report, "github") == [
        "::error file=dir/we%2Cird%3A100%25.py,line=4,title=GC101 odd%3A%3Aname%2Cx::m",
        "::error title=graphcheck mod%3A%3Ael.py%3Abuild%0Ax::bad: 100%25%0Anext::line",
    ]


def test_github_error_targets_and_several_targets_in_order():
    report = Report([result([unused(12)]), failed(), failed("none.py:build", error=None),
                     result([conditional(None)], target="pkg.models:build")])
    assert lines(report, "github") == [
        "::error file=models/net.py,line=12,title=GC101 unused-parameter::`head.weight` is never used in forward",
        "::error title=graphcheck broken.py%3Abuild_model::ImportError: no module named `missing`",
        "::error title=graphcheck none.py%3Abuild::",
        "::warning title=GC105 conditionally-used-parameter::`gate.weight` gets a gradient in some executions only",
    ]


@pytest.mark.parametrize("show_suppressed", [False, True])
def test_github_never_annotates_suppressed_findings(show_suppressed):
    report = Report([result(suppressed=[unused(12)])], show_suppressed=show_suppressed)
    assert format_report(report, "github") == ""
