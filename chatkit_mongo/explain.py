"""What the server says about the store's hot queries (``explain``).

Used by the real-server tests, ``chatkit-mongo doctor`` and the benchmark, on the very
queries the store sends (see :mod:`chatkit_mongo.queries`). A healthy plan scans an
index (``IXSCAN``), never the collection, sorts nothing in memory (no ``SORT`` stage),
and examines about as many keys as it returns documents.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import queries
from ._driver import AsyncDatabaseLike
from .queries import Find
from .schema import CollectionNames


@dataclass(frozen=True)
class PlanSummary:
    """The parts of an ``executionStats`` explain that tell whether a query is healthy."""

    query: str
    stages: tuple[str, ...]
    index_names: tuple[str, ...]
    keys_examined: int
    documents_examined: int
    returned: int

    @property
    def uses_index(self) -> bool:
        return "IXSCAN" in self.stages and "COLLSCAN" not in self.stages

    @property
    def sorts_in_memory(self) -> bool:
        return "SORT" in self.stages

    @property
    def healthy(self) -> bool:
        """Index scan, no in-memory sort, and no more keys examined than one page needs."""
        return (
            self.uses_index and not self.sorts_in_memory and self.keys_examined <= self.returned + 1
        )

    def describe(self) -> str:
        verdict = "ok" if self.healthy else "NOT SERVED WELL"
        return (
            f"{self.query}: {verdict}; stages {' > '.join(self.stages)}; "
            f"index {', '.join(self.index_names) or '-'}; keys examined {self.keys_examined}, "
            f"documents examined {self.documents_examined}, returned {self.returned}"
        )


def hot_queries(owner: str, thread_id: str, item_id: str, page_size: int = 20) -> dict[str, Find]:
    """The queries a ChatKit turn sends, by name, for a thread and one of its items."""
    item_anchor = queries.anchor("items", queries.item(owner, thread_id, item_id))
    return {
        "load_thread": Find("threads", queries.thread(owner, thread_id)),
        "load_threads": queries.threads_page(owner, None, "desc", page_size),
        "load_item": Find("items", queries.item(owner, thread_id, item_id)),
        "load_thread_items desc": queries.items_page(owner, thread_id, None, "desc", page_size),
        "load_thread_items anchor": item_anchor,
        "load_thread_items asc after": queries.items_page(owner, thread_id, "0", "asc", page_size),
    }


async def explain(
    database: AsyncDatabaseLike, collections: CollectionNames, name: str, find: Find
) -> PlanSummary:
    """Run ``explain`` (executionStats) of ``find`` and summarise the winning plan."""
    command: dict[str, Any] = {
        "find": collections.by_role()[find.role],
        "filter": find.filter,
        "projection": find.projection,
        "limit": find.limit,
    }
    if find.sort:
        command["sort"] = dict(find.sort)
    result = await database.command({"explain": command, "verbosity": "executionStats"})
    plan = result["queryPlanner"]["winningPlan"]
    stats = result["executionStats"]
    stages = tuple(_stages(plan.get("queryPlan", plan)))
    indexes = tuple(dict.fromkeys(_index_names(plan.get("queryPlan", plan))))
    return PlanSummary(
        query=name,
        stages=stages,
        index_names=indexes,
        keys_examined=int(stats["totalKeysExamined"]),
        documents_examined=int(stats["totalDocsExamined"]),
        returned=int(stats["nReturned"]),
    )


def _walk(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for key in ("inputStage", "innerStage", "outerStage"):
        if key in plan:
            yield from _walk(plan[key])
    for child in plan.get("inputStages", []):
        yield from _walk(child)


def _stages(plan: dict[str, Any]) -> Iterator[str]:
    return (str(node["stage"]) for node in _walk(plan) if "stage" in node)


def _index_names(plan: dict[str, Any]) -> Iterator[str]:
    return (str(node["indexName"]) for node in _walk(plan) if "indexName" in node)
