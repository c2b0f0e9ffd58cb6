"""The queries the store sends, as data.

Why as data: the store runs them, and ``chatkit-mongo doctor``, the benchmark and the
real-server tests ``explain()`` the very same filters and sorts, so a check that the
hot queries are served by an index checks the queries that actually run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ._checks import Order
from .schema import Field, Kind

_DATA_ONLY: dict[str, Any] = {Field.DATA: 1, "_id": 0}
_SORT_KEY_ONLY: dict[str, Any] = {Field.SORT_KEY: 1, "_id": 0}
_PAGE_FIELDS: dict[str, Any] = {Field.DATA: 1, Field.SORT_KEY: 1, "_id": 0}


@dataclass(frozen=True)
class Find:
    """One ``find`` against the collection of ``kind``."""

    kind: Kind
    filter: dict[str, Any]
    projection: dict[str, Any] = field(default_factory=lambda: dict(_DATA_ONLY))
    sort: tuple[tuple[str, int], ...] = ()
    limit: int = 1


def thread_filter(owner: str, thread_id: str) -> dict[str, Any]:
    """The thread document; in the items and attachments collections, all of that thread."""
    return {Field.OWNER: owner, Field.THREAD_ID: thread_id}


def item_filter(owner: str, thread_id: str, item_id: str) -> dict[str, Any]:
    return {Field.OWNER: owner, Field.THREAD_ID: thread_id, Field.ITEM_ID: item_id}


def attachment_filter(owner: str, attachment_id: str) -> dict[str, Any]:
    return {Field.OWNER: owner, Field.ATTACHMENT_ID: attachment_id}


def alive(now: datetime) -> dict[str, Any]:
    """Documents whose thread has not expired at ``now``: with retention on, every read
    adds this, so expired data is gone before the server's TTL pass deletes it.

    Why ``$not: {$lte}`` rather than ``$gt``: documents written while retention was off
    carry no expiry and must stay visible. Why it costs nothing extra: it filters the
    documents the equality prefix of the index already selected, and all documents of
    a thread share one expiry, so none is examined that the page would not return.
    """
    return {Field.EXPIRES_AT: {"$not": {"$lte": now}}}


def visible(find: Find, now: datetime) -> Find:
    """``find`` restricted to documents that have not expired at ``now``."""
    return replace(find, filter={**find.filter, **alive(now)})


def anchor(kind: Kind, key: dict[str, Any]) -> Find:
    """The sort key of the element a page continues after (``after``)."""
    return Find(kind, key, projection=dict(_SORT_KEY_ONLY))


def page(
    kind: Kind, scope: dict[str, Any], after_sort_key: str | None, order: Order, limit: int
) -> Find:
    """One page in ``order``, after ``after_sort_key``: one index range, no skip.

    ``limit + 1`` documents are asked for: the extra one tells whether more remain.
    Each comes with its sort key, where the range continues when a document of it
    cannot be read (see ``MongoStore``'s pages).
    """
    direction = 1 if order == "asc" else -1
    filter_ = dict(scope)
    if after_sort_key is not None:
        filter_[Field.SORT_KEY] = {"$gt" if direction == 1 else "$lt": after_sort_key}
    return Find(
        kind,
        filter_,
        projection=dict(_PAGE_FIELDS),
        sort=((Field.SORT_KEY, direction),),
        limit=limit + 1,
    )


def threads_page(owner: str, after_sort_key: str | None, order: Order, limit: int) -> Find:
    return page("thread", {Field.OWNER: owner}, after_sort_key, order, limit)


def items_page(
    owner: str, thread_id: str, after_sort_key: str | None, order: Order, limit: int
) -> Find:
    return page("item", thread_filter(owner, thread_id), after_sort_key, order, limit)
