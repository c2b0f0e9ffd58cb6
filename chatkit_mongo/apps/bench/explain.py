"""Phase: documents and keys examined per document returned by the queries of a turn
(the very filters the store sends, :mod:`chatkit_mongo._queries`), where the server can
``explain()``; on the grown thread when the growth phase ran, where it matters most."""

from __future__ import annotations

from typing import Any

from pymongo.errors import PyMongoError

from ... import _queries as queries
from ...operations.explain import PlanSummary, explain, hot_queries
from ...schema import Field
from ..connection import one_line
from . import growth, workload
from .harness import Phase, Run


async def measure(run: Run) -> dict[str, Any]:
    run.progress.phase("explain: the plans of a turn's queries", 0)
    owner = growth.GROWER if run.settings.growth else workload.user(0)
    found, note = None, None
    threads = await run.store.load_threads(1, None, "asc", {"user_id": owner})
    thread_id = threads.data[0].id
    items = run.store.database[run.store.collections.items]
    item = await items.find_one(queries.thread_filter(owner, thread_id), {Field.DATA: 0}) or {}
    try:
        found = {
            name: explain_figures(await explain(run.store.database, run.store.collections, find))
            for name, find in hot_queries(
                owner,
                thread_id,
                item.get(Field.ITEM_ID, ""),
                item.get(Field.SORT_KEY),
                run.settings.page_size,
            )
        }
    except NotImplementedError:
        note = "cannot explain queries: this backend has no query planner"
    except PyMongoError as exc:
        note = f"cannot explain queries: the server refused explain ({one_line(exc)})"
    if note is not None:
        run.progress.note(note)
    return {"explain": found, "explain_note": note}


def explain_figures(summary: PlanSummary) -> dict[str, Any]:
    """What an explain says about a query's cost, as the report's JSON gives it."""
    returned, examined = summary.returned or 0, summary.documents_examined or 0
    return {
        "returned": returned,
        "keys_examined": summary.keys_examined,
        "docs_examined": examined,
        "docs_examined_per_returned": round(examined / max(returned, 1), 3),
        "index_scan": summary.uses_index,
        "in_memory_sort": summary.sorts_in_memory,
    }


def table(report: dict[str, Any]) -> list[str]:
    if report["explain"] is None:
        return [f"docs examined per doc returned: unknown; {report['explain_note']}"]
    return [
        f"explain {name}: {figures['docs_examined_per_returned']} docs and "
        f"{figures['keys_examined']} keys examined for {figures['returned']} returned; "
        f"index scan {figures['index_scan']}, in-memory sort {figures['in_memory_sort']}"
        for name, figures in report["explain"].items()
    ]


PHASE = Phase("explain", measure, table)
