"""Counting the round trips a store makes, at the collection objects it talks to; shared
by the round-trip suite and the retention suite, whose writes may restamp expiries."""

from __future__ import annotations

from typing import Any

from chatkit_mongo import MongoStore

_ROUND_TRIP_METHODS = frozenset(
    {
        "find",
        "find_one",
        "insert_one",
        "insert_many",
        "update_one",
        "update_many",
        "replace_one",
        "delete_one",
        "delete_many",
        "aggregate",
        "count_documents",
        "find_one_and_update",
        "bulk_write",
        "list_indexes",
        "create_indexes",
    }
)


class _CountingCursor:
    def __init__(self, inner: Any, log: list[str]) -> None:
        self._inner, self._log = inner, log

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name in ("sort", "limit", "skip", "batch_size"):

            def chained(*args: Any, **kwargs: Any) -> _CountingCursor:
                self._log.append(f"cursor.{name}")
                return _CountingCursor(attribute(*args, **kwargs), self._log)

            return chained
        return attribute


class CountingCollection:
    """Delegates to a driver collection, logging every method that talks to the server."""

    def __init__(self, inner: Any, kind: str, log: list[str]) -> None:
        self._inner, self._kind, self._log = inner, kind, log

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in _ROUND_TRIP_METHODS:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._log.append(f"{self._kind}.{name}")
            result = attribute(*args, **kwargs)
            return _CountingCursor(result, self._log) if name == "find" else result

        return call


def trips(log: list[str]) -> list[str]:
    """The logged server calls, without the cursor modifiers that travel with a find."""
    return [entry for entry in log if not entry.startswith("cursor.")]


async def count_round_trips(store: MongoStore[Any]) -> tuple[MongoStore[Any], list[str]]:
    """A twin of ``store`` (same database, collections and retention) that logs every
    server call to the returned list, through the public ``wrap_collection`` seam; once
    warm: its indexes are ensured first so their one-off creation is not counted."""
    log: list[str] = []
    retention = store.retention
    counted: MongoStore[Any] = MongoStore(
        store.database,
        collections=store.collections,
        max_page_size=store.max_page_size,
        retention=None if retention is None else retention.period,
        retention_refresh=None if retention is None else retention.refresh,
        clock=None if retention is None else retention.clock,
        wrap_collection=lambda kind, collection: CountingCollection(collection, kind, log),
    )
    await counted.ensure_indexes()
    log.clear()
    return counted, log
