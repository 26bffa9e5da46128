"""Suppressions in code: `# graphcheck: ignore[GC102]` comments, and GC001 for those that suppress nothing.

A comment on the line a finding points to suppresses it: ``# graphcheck: ignore`` every
finding there, ``# graphcheck: ignore[GC102, GC3]`` those whose code starts with one of the
listed codes (the same prefixes as ``--select``). Suppressed findings are kept apart (shown
with ``--show-suppressed``), never dropped silently; a comment that matches no finding is
itself reported, as GC001 ``unused-suppression``.
"""

from __future__ import annotations

import io
import os
import re
import tokenize
from dataclasses import dataclass, field
from typing import Iterable

from graphcheck.finding import Finding, Location, Severity
from graphcheck.rules.base import Rule, register

COMMENT = re.compile(r"#\s*graphcheck:\s*ignore\b(?:\[(?P<codes>[^\]]*)\])?", re.IGNORECASE)


@dataclass(frozen=True)
class Suppression:
    """One ``# graphcheck: ignore[...]`` comment; no codes means every finding on its line."""
    file: str
    line: int
    codes: tuple[str, ...] = ()

    def matches(self, code: str) -> bool:
        return not self.codes or any(code.startswith(prefix) for prefix in self.codes)

    @property
    def text(self) -> str:
        return "# graphcheck: ignore" + (f"[{', '.join(self.codes)}]" if self.codes else "")


def comments_in(path: str) -> list[Suppression]:
    """The suppression comments of a Python file (real comments only, not text in strings)."""
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except (OSError, UnicodeDecodeError):
        return []
    if "graphcheck" not in source:
        return []
    found = []
    try:
        comments = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                    if tok.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        comments = list(enumerate(source.splitlines(), start=1))
    for line, text in comments:
        match = COMMENT.search(text)
        if match:
            codes = tuple(c.strip().upper() for c in (match.group("codes") or "").split(",") if c.strip())
            found.append(Suppression(os.path.abspath(path), line, codes))
    return found


@dataclass
class Outcome:
    """Findings split by the comments: kept, suppressed, and which codes each comment matched."""
    kept: list[Finding] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    comments: list[Suppression] = field(default_factory=list)
    used: dict[Suppression, set[str]] = field(default_factory=dict)   # comment -> codes it suppressed
    ran: tuple[str, ...] = ()                                          # codes of the rules that ran


def apply_suppressions(findings: Iterable[Finding], files: Iterable[str], ran: Iterable[str]) -> Outcome:
    """Split ``findings`` by the suppression comments in ``files`` (the user's files the model ran through)."""
    comments = [c for path in sorted(set(files)) for c in comments_in(path)]
    by_line: dict[tuple[str, int], list[Suppression]] = {}
    for comment in comments:
        by_line.setdefault((comment.file, comment.line), []).append(comment)
    outcome = Outcome(comments=comments, used={c: set() for c in comments}, ran=tuple(ran))
    for finding in findings:
        where = finding.location
        matching = [c for c in by_line.get((os.path.abspath(where.file), where.line), []) if c.matches(finding.code)] \
            if where else []
        if not matching:
            outcome.kept.append(finding)
            continue
        outcome.suppressed.append(finding)
        for comment in matching:
            outcome.used[comment].add(finding.code)
    return outcome


@register
class UnusedSuppression(Rule):
    """A `# graphcheck: ignore` comment that suppresses no finding.

    ## What it does
    Reports a `# graphcheck: ignore` or `# graphcheck: ignore[CODES]` comment on a line where
    no finding of those codes points: the problem it silenced was fixed, or the comment sits
    on the wrong line (a finding points to the line of the op that cuts the gradient, or to
    the line that assigns the parameter). Codes whose rules did not run (not selected, or
    skipped on the meta device) are left alone.

    ## Why is this bad?
    A stale suppression hides the next real problem on that line: when someone adds a
    `.detach()` there later, graphcheck says nothing.

    ## Example
    ```python
    def forward(self, x):
        h = self.encoder(x)          # graphcheck: ignore[GC103]   (nothing is detached here)
        return self.head(h)
    ```

    ## Use instead
    ```python
    def forward(self, x):
        h = self.encoder(x)
        return self.head(h)
    ```
    """

    code = "GC001"
    name = "unused-suppression"
    severity = Severity.INFO
    stage = "findings"

    def check(self, outcome: Outcome) -> Iterable[Finding]:
        for comment in outcome.comments:
            if comment.codes:
                used = outcome.used[comment]
                unused = [c for c in comment.codes if not any(code.startswith(c) for code in used)
                          and any(code.startswith(c) for code in outcome.ran if code != self.code)]
            else:
                unused = [] if outcome.used[comment] else ["every code"]
            if not unused:
                continue
            what = "any finding" if not comment.codes else ", ".join(unused) + " finding"
            yield self.finding(
                f"`{comment.text}` suppresses nothing: no {what} points to this line; remove the "
                "comment (or the unused codes), or move it to the line the finding names",
                location=Location(comment.file, comment.line))
