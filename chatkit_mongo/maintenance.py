"""Erasing data: one owner's everything, or the threads nobody has touched for a while.

Why the children go first and the thread last (as in ``MongoStore.delete_thread``):
should the process stop halfway, a second run still finds the thread, and through it
what is left of it. Deleting the thread first would hide the thread, but leave items
and bytes that nothing points to any more, which a data-protection erasure must never
do. For the same reason the
GridFS chunks go before their files document: the files document is how the bytes
of an owner are found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from . import queries
from ._checks import check_id
from ._driver import AsyncDatabaseLike, shielded
from ._text import plural
from .schema import CollectionNames, Field, GridFSField, sort_key, utc_naive

Progress = Callable[[int], None]
"""Called with how many more units of work are done, to drive a progress bar."""


@dataclass
class PurgeCounts:
    """How many documents a purge removed (or, for a dry run, would remove)."""

    threads: int = 0
    items: int = 0
    attachments: int = 0
    files: int = 0
    chunks: int = 0

    def add(self, other: PurgeCounts) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def describe(self) -> str:
        return ", ".join(
            plural(getattr(self, f.name), f.name.removesuffix("s")) for f in fields(self)
        )


async def purge_owner(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    owner: str,
    *,
    dry_run: bool = False,
) -> PurgeCounts:
    """Erase every thread, item, attachment and attachment byte of ``owner``."""
    check_id(owner, "owner")
    scope = {Field.OWNER: owner}
    return await _erase(database, collections, scope, {GridFSField.METADATA_OWNER: owner}, dry_run)


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
    threads = database[collections.threads]
    items = database[collections.items]
    # Why through the sort key: it starts with the creation time in fixed-width
    # digits, so "older than" is a string range, and the items check is one range on
    # the owner_thread_sort index.
    candidates = threads.find(
        {Field.SORT_KEY: {"$lt": cutoff}}, {Field.OWNER: 1, Field.THREAD_ID: 1, "_id": 0}
    )
    counts = PurgeCounts()
    async for thread in candidates:
        scope = queries.thread(thread[Field.OWNER], thread[Field.THREAD_ID])
        recent = await items.find_one({**scope, Field.SORT_KEY: {"$gte": cutoff}}, {"_id": 1})
        if recent is None:
            attachment_ids = await _attachment_ids(database, collections, scope)
            files_filter = {
                GridFSField.METADATA_OWNER: thread[Field.OWNER],
                GridFSField.METADATA_ATTACHMENT_ID: {"$in": attachment_ids},
            }
            counts.add(await _erase(database, collections, scope, files_filter, dry_run))
        if on_progress is not None:
            on_progress(1)
    return counts


async def _attachment_ids(
    database: AsyncDatabaseLike, collections: CollectionNames, scope: dict[str, Any]
) -> list[str]:
    cursor = database[collections.attachments].find(scope, {Field.ATTACHMENT_ID: 1, "_id": 0})
    return [document[Field.ATTACHMENT_ID] async for document in cursor]


async def _erase(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    scope: dict[str, Any],
    files_filter: dict[str, Any],
    dry_run: bool,
) -> PurgeCounts:
    """Delete (or count) the documents of ``scope`` and the GridFS files of ``files_filter``."""
    files = database[collections.bucket_files]
    chunks = database[collections.bucket_chunks]
    file_ids = [document["_id"] async for document in files.find(files_filter, {"_id": 1})]
    chunks_filter = {GridFSField.FILES_ID: {"$in": file_ids}}
    ordered = (
        ("chunks", chunks, chunks_filter),
        ("files", files, {"_id": {"$in": file_ids}}),
        ("attachments", database[collections.attachments], scope),
        ("items", database[collections.items], scope),
        ("threads", database[collections.threads], scope),
    )
    counts = PurgeCounts()
    if dry_run:
        for name, collection, filter_ in ordered:
            setattr(counts, name, await collection.count_documents(filter_))
        return counts

    async def delete_in_order() -> None:
        for name, collection, filter_ in ordered:
            result = await collection.delete_many(filter_)
            setattr(counts, name, result.deleted_count)

    await shielded(delete_in_order())
    return counts
