"""``chatkit-mongo doctor``: what the server is, and whether the store is served well.

Why explain the store's own queries (from :mod:`chatkit_mongo.queries`) rather than
hand-written look-alikes: a check of the hot queries is only worth something if it
checks the queries that actually run. Why say "unavailable" rather than guess: the
test doubles answer neither ``hello`` nor ``explain``, and a report that passed there
would claim what nobody measured.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from pymongo.errors import PyMongoError

from . import queries
from ._driver import AsyncDatabaseLike
from .indexes import plan_indexes
from .queries import Find
from .schema import CollectionNames, Field

Verdict = Literal["ok", "fail", "unavailable"]
_PROBE_ID: Final = "doctor-probe"
"""Stands in for an owner or id when a collection is empty: the plan is the same."""
_PROBE_PAGE: Final = 20
_SHARDED_ROUTER: Final = "isdbgrid"


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    subject: str
    detail: str

    def describe(self) -> str:
        return f"{self.verdict:<11} {self.subject}: {self.detail}"


@dataclass(frozen=True)
class PlanSummary:
    """What ``explain`` (executionStats) says about one query."""

    stages: tuple[str, ...]
    keys_examined: int | None
    docs_examined: int | None
    returned: int | None

    @property
    def uses_index(self) -> bool:
        return "IXSCAN" in self.stages or "EXPRESS_IXSCAN" in self.stages

    @property
    def sorts_in_memory(self) -> bool:
        return "SORT" in self.stages

    def describe(self) -> str:
        counts = (
            f"{self.keys_examined} keys and {self.docs_examined} documents examined "
            f"for {self.returned} returned"
        )
        return f"stages {' > '.join(self.stages) or '(none)'}; {counts}"


def summarise_explain(explain: Mapping[str, Any]) -> PlanSummary:
    """Read the winning plan's stages and the execution counts from an explain reply.

    Stages are collected from the whole winning plan, whatever its nesting: classic
    plans nest ``inputStage(s)``, slot-based ones wrap them in ``queryPlan``, and a
    sharded cluster lists one winning plan per shard.
    """
    planner = explain.get("queryPlanner", {})
    stats = explain.get("executionStats", {})
    return PlanSummary(
        stages=tuple(_stages(planner.get("winningPlan", {}))),
        keys_examined=stats.get("totalKeysExamined"),
        docs_examined=stats.get("totalDocsExamined"),
        returned=stats.get("nReturned"),
    )


def _stages(plan: Any) -> Iterator[str]:
    if isinstance(plan, Mapping):
        stage = plan.get("stage")
        if isinstance(stage, str):
            yield stage
        for value in plan.values():
            yield from _stages(value)
    elif isinstance(plan, list):
        for value in plan:
            yield from _stages(value)


async def diagnose(database: AsyncDatabaseLike, collections: CollectionNames) -> list[Finding]:
    """Every finding, in the order a person reads them: server, indexes, queries."""
    findings = await _server_findings(database)
    for status in await plan_indexes(database, collections):
        verdict: Verdict = "ok" if status.state == "present" else "fail"
        findings.append(Finding(verdict, "index", status.describe()))
    for label, find in await _hot_queries(database, collections):
        findings.append(await _explain_finding(database, collections, label, find))
    return findings


async def _server_findings(database: AsyncDatabaseLike) -> list[Finding]:
    build = await database.command("buildInfo")
    findings = [Finding("ok", "server version", str(build.get("version", "unknown")))]
    try:
        hello = await database.command("hello")
    except (NotImplementedError, PyMongoError) as exc:
        reason = f"the server does not answer hello ({exc})"
        findings.append(Finding("unavailable", "topology", reason))
        findings.append(Finding("unavailable", "transactions", reason))
        return findings
    if hello.get("msg") == _SHARDED_ROUTER:
        topology = "sharded cluster"
    elif hello.get("setName"):
        topology = f"replica set {hello['setName']}"
    else:
        topology = "standalone"
    findings.append(Finding("ok", "topology", topology))
    # Why not a failure: the store needs no transactions; this only tells the operator.
    transactions = "available" if topology != "standalone" else "not available on a standalone"
    findings.append(Finding("ok", "transactions", transactions))
    return findings


async def _hot_queries(
    database: AsyncDatabaseLike, collections: CollectionNames
) -> list[tuple[str, Find]]:
    """The queries of every ChatKit turn, with ids taken from stored data when there is any."""
    item = await database[collections.items].find_one({}, {"_id": 0, Field.DATA: 0}) or {}
    owner = item.get(Field.OWNER, _PROBE_ID)
    thread_id = item.get(Field.THREAD_ID, _PROBE_ID)
    item_id = item.get(Field.ITEM_ID, _PROBE_ID)
    anchor = item.get(Field.SORT_KEY)
    return [
        ("load_thread", Find("threads", queries.thread(owner, thread_id))),
        ("load_threads page", queries.threads_page(owner, None, "desc", _PROBE_PAGE)),
        ("load_thread_items page", queries.items_page(owner, thread_id, None, "desc", _PROBE_PAGE)),
        (
            "load_thread_items page after an item",
            queries.items_page(owner, thread_id, anchor, "asc", _PROBE_PAGE),
        ),
        ("load_item", Find("items", queries.item(owner, thread_id, item_id))),
        ("load_attachment", Find("attachments", queries.attachment(owner, _PROBE_ID))),
    ]


async def _explain_finding(
    database: AsyncDatabaseLike, collections: CollectionNames, label: str, find: Find
) -> Finding:
    command: dict[str, Any] = {
        "find": collections.by_role()[find.role],
        "filter": find.filter,
        "projection": find.projection,
        "limit": find.limit,
    }
    if find.sort:
        command["sort"] = dict(find.sort)
    try:
        explain = await database.command({"explain": command, "verbosity": "executionStats"})
    except (NotImplementedError, PyMongoError) as exc:
        return Finding("unavailable", label, f"explain is not available on this backend ({exc})")
    summary = summarise_explain(explain)
    problems = []
    if not summary.uses_index:
        problems.append("no index scan")
    if summary.sorts_in_memory:
        problems.append("sorts in memory")
    verdict: Verdict = "fail" if problems else "ok"
    detail = summary.describe()
    return Finding(verdict, label, f"{', '.join(problems)}: {detail}" if problems else detail)
