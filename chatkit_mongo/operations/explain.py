"""What the server says about the store's hot queries (``explain``).

Used by ``chatkit-mongo doctor``, the benchmark and the real-server tests, on the very
queries the store sends (see :mod:`chatkit_mongo._queries`): a check of the hot queries
is only worth something if it checks the queries that actually run. A healthy plan
scans an index (``IXSCAN``), never the collection, sorts nothing in memory (no ``SORT``
stage), and examines about as many keys as it returns documents.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .. import _queries as queries
from .._driver import AsyncDatabaseLike
from .._queries import Find
from ..schema import CollectionNames

_INDEX_SCANS = frozenset({"IXSCAN", "EXPRESS_IXSCAN", "IDHACK", "EXPRESS_IDHACK"})


@dataclass(frozen=True)
class PlanSummary:
    """The parts of an ``executionStats`` explain that tell whether a query is served well."""

    stages: tuple[str, ...]
    index_names: tuple[str, ...]
    keys_examined: int | None
    documents_examined: int | None
    returned: int | None

    @property
    def uses_index(self) -> bool:
        return bool(_INDEX_SCANS.intersection(self.stages)) and "COLLSCAN" not in self.stages

    @property
    def sorts_in_memory(self) -> bool:
        return "SORT" in self.stages

    @property
    def examines_extra_keys(self) -> bool:
        """More keys than one page needs: a page asks one document more than it returns."""
        if self.keys_examined is None or self.returned is None:
            return False
        return self.keys_examined > self.returned + 1

    def problems(self) -> list[str]:
        found = []
        if not self.uses_index:
            found.append("no index scan")
        if self.sorts_in_memory:
            found.append("sorts in memory")
        if self.examines_extra_keys:
            found.append("examines more keys than it returns")
        return found

    def describe(self) -> str:
        counts = (
            f"{self.keys_examined} keys and {self.documents_examined} documents examined "
            f"for {self.returned} returned"
        )
        indexes = ", ".join(self.index_names) or "-"
        return f"stages {' > '.join(self.stages) or '(none)'}; index {indexes}; {counts}"


def hot_queries(
    owner: str, thread_id: str, item_id: str, anchor_sort_key: str | None, page_size: int = 20
) -> list[tuple[str, Find]]:
    """The queries of a ChatKit turn, named, for one thread and one of its items."""
    return [
        ("load_thread", Find("thread", queries.thread_filter(owner, thread_id))),
        ("load_threads page", queries.threads_page(owner, None, "desc", page_size)),
        ("load_thread_items page", queries.items_page(owner, thread_id, None, "desc", page_size)),
        (
            "load_thread_items page after an item",
            queries.items_page(owner, thread_id, anchor_sort_key, "asc", page_size),
        ),
        ("page anchor", queries.anchor("item", queries.item_filter(owner, thread_id, item_id))),
        ("load_item", Find("item", queries.item_filter(owner, thread_id, item_id))),
        ("load_attachment", Find("attachment", queries.attachment_filter(owner, item_id))),
    ]


async def explain(
    database: AsyncDatabaseLike, collections: CollectionNames, find: Find
) -> PlanSummary:
    """Run ``explain`` (executionStats) of ``find``; the doubles raise, having no planner."""
    command: dict[str, Any] = {
        "find": collections.name_of(find.kind),
        "filter": find.filter,
        "projection": find.projection,
        "limit": find.limit,
    }
    if find.sort:
        command["sort"] = dict(find.sort)
    return summarise(await database.command({"explain": command, "verbosity": "executionStats"}))


def summarise(reply: Mapping[str, Any]) -> PlanSummary:
    """Read the winning plan's stages and the execution counts from an explain reply.

    Stages are collected from the whole winning plan, whatever its nesting: classic
    plans nest ``inputStage(s)``, slot-based ones wrap them in ``queryPlan``, and a
    sharded cluster lists one winning plan per shard.
    """
    plan = reply.get("queryPlanner", {}).get("winningPlan", {})
    stats = reply.get("executionStats", {})
    return PlanSummary(
        stages=tuple(_values(plan, "stage")),
        index_names=tuple(dict.fromkeys(_values(plan, "indexName"))),
        keys_examined=stats.get("totalKeysExamined"),
        documents_examined=stats.get("totalDocsExamined"),
        returned=stats.get("nReturned"),
    )


def _values(plan: Any, key: str) -> Iterator[str]:
    """Every string under ``key`` in a nested plan, in reading order."""
    if isinstance(plan, Mapping):
        value = plan.get(key)
        if isinstance(value, str):
            yield value
        for child in plan.values():
            yield from _values(child, key)
    elif isinstance(plan, list):
        for child in plan:
            yield from _values(child, key)
