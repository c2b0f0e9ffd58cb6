"""The end-of-run summary: how many tests ran, passed and were skipped on each tier,
and why the skipped ones were skipped, grouped by reason."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Final

import pytest

from . import capabilities

TIERS: Final = {
    "server-pymongo": "real server, PyMongo AsyncMongoClient",
    "server-motor": "real server, Motor AsyncIOMotorClient",
}
DOUBLES: Final = "in-process doubles and no server"
DOCS: Final = "code blocks of README.md and docs/"
OUTCOMES: Final = ("passed", "failed", "error", "skipped")


def tier_of(nodeid: str) -> str:
    """The tier a test ran on, from its backend parameter id; a docs page's blocks (see
    tests/docs_blocks.py) are a tier of their own."""
    if nodeid.partition("::")[0].endswith(".md"):
        return DOCS
    params = nodeid.partition("[")[2]
    return next((name for backend, name in TIERS.items() if backend in params), DOUBLES)


def _reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def summarise(terminal: pytest.TerminalReporter) -> None:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for outcome in OUTCOMES:
        for report in terminal.stats.get(outcome, []):
            if not isinstance(report, pytest.TestReport):
                continue
            tier = tier_of(report.nodeid)
            counts[tier][outcome] += 1
            if outcome == "skipped":
                reasons[tier][_reason(report)] += 1
    if not counts:
        return
    server = capabilities.started()
    terminal.write_sep("=", "tests per tier")
    if server is not None:
        terminal.write_line(f"real server: {server.name} at {server.uri}")
    elif getattr(terminal.config.option, "dist", "no") != "no":
        # Under pytest-xdist the tests ran in workers, each with a server of its own;
        # their reports (and so the tallies below) reach this controller.
        terminal.write_line("real server: one per pytest-xdist worker (see the header)")
    for tier in (DOUBLES, *TIERS.values(), DOCS):
        if tier == DOCS and tier not in counts:
            continue  # a run of some test files, without the pages
        tally = counts.get(tier, Counter())
        ran = tally["passed"] + tally["failed"] + tally["error"]
        terminal.write_line(
            f"{tier}: {ran} ran, {tally['passed']} passed, {tally['failed']} failed, "
            f"{tally['error']} errors, {tally['skipped']} skipped"
        )
        for reason, count in reasons.get(tier, Counter()).most_common():
            terminal.write_line(f"    skipped {count}: {reason}")
