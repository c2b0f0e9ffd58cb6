"""Erasing data: one owner's everything, or the threads nobody has touched for a while.

Both purges run the one erase cascade of :meth:`Persistence.erase
<chatkit_mongo._persistence.Persistence.erase>` (the same as ``MongoStore.delete_thread``):
the children first, the thread last, the GridFS chunks before their files document, every
byte reached through an attachment passing the ownership proof first.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import _queries as queries
from .._driver import AsyncDatabaseLike
from .._persistence import Persistence, PurgeCounts
from ..owner import check_owner
from ..schema import CollectionNames, Field, GridFSField, sort_key, utc_naive

__all__ = ["Progress", "PurgeCounts", "purge_inactive", "purge_owner"]

Progress = Callable[[int], None]
"""Called with how many more units of work are done, to drive a progress bar."""


async def purge_owner(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    owner: str,
    *,
    dry_run: bool = False,
) -> PurgeCounts:
    """Erase every thread, item, attachment and attachment byte of ``owner``, the bytes of
    uploads cut off before their files document was written included."""
    check_owner(owner)
    return await _eraser(database, collections).erase(
        owner,
        {Field.OWNER: owner},
        files_filter={GridFSField.METADATA_OWNER: owner},
        dry_run=dry_run,
    )


async def purge_inactive(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    older_than: timedelta,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    on_progress: Progress | None = None,
) -> PurgeCounts:
    """Erase the threads whose last activity is older than ``older_than``.

    Last activity is the newest of the thread's and its items' ``created_at`` (naive
    datetimes count as UTC, as everywhere in the store). Each expired thread goes with
    its items, its attachments' metadata and their bytes. Attachments never linked to
    a thread are not touched: only :func:`purge_owner` reaches them.
    """
    if older_than <= timedelta(0):
        raise ValueError(f"older_than must be a positive duration, got {older_than}")
    try:
        oldest = utc_naive(now or datetime.now(UTC)) - older_than
    except OverflowError:
        raise ValueError(f"older_than ({older_than}) reaches back before the year 1") from None
    cutoff = sort_key(oldest, "")
    eraser = _eraser(database, collections)
    threads = eraser.collection("thread")
    items = eraser.collection("item")
    # Why through the sort key: it starts with the creation time in fixed-width
    # digits, so "older than" is a string range, and the items check is one range on
    # the owner_thread_sort index.
    candidates = threads.find(
        {Field.SORT_KEY: {"$lt": cutoff}}, {Field.OWNER: 1, Field.THREAD_ID: 1, "_id": 0}
    )
    counts = PurgeCounts()
    async for thread in candidates:
        scope = queries.thread_filter(thread[Field.OWNER], thread[Field.THREAD_ID])
        recent = await items.find_one({**scope, Field.SORT_KEY: {"$gte": cutoff}}, {"_id": 1})
        if recent is None:
            attachment_ids = await _attachment_ids(eraser, scope)
            files_filter = {
                GridFSField.METADATA_OWNER: thread[Field.OWNER],
                GridFSField.METADATA_ATTACHMENT_ID: {"$in": attachment_ids},
            }
            counts.add(
                await eraser.erase(
                    thread[Field.OWNER], scope, files_filter=files_filter, dry_run=dry_run
                )
            )
        if on_progress is not None:
            on_progress(1)
    return counts


def _eraser(database: AsyncDatabaseLike, collections: CollectionNames) -> Persistence:
    """The persistence object over ``collections`` and their bucket, for a purge: no owner
    resolver (the owner is given), no index check (purges never create indexes)."""
    persistence = Persistence(database, collections, auto_create_indexes=False)
    persistence.use_bucket(collections.bucket)
    return persistence


async def _attachment_ids(eraser: Persistence, scope: dict[str, Any]) -> list[str]:
    cursor = eraser.collection("attachment").find(scope, {Field.ATTACHMENT_ID: 1, "_id": 0})
    return [document[Field.ATTACHMENT_ID] async for document in cursor]
