"""Erasing data: one owner's everything, or the threads nobody has touched for a while.

Both purges run the one erase cascade of :meth:`Persistence.erase
<chatkit_mongo._persistence.Persistence.erase>` (the same as ``MongoStore.delete_thread``):
the children first, the thread last, the GridFS chunks before their files document, every
byte reached through an attachment passing the ownership proof first. An owner's purge
then shreds the owner's data keys (crypto-shredding), which reaches the copies no delete
can: backups, lagging secondaries, exports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .. import _queries as queries
from .._driver import AsyncDatabaseLike
from .._persistence import Persistence, PurgeCounts
from ..encryption import split_key_vault_namespace
from ..owner import check_owner
from ..schema import CollectionNames, Field, GridFSField, sort_key, utc_naive
from .key_vault import shred_owner_keys

__all__ = ["OwnerPurgeCounts", "Progress", "PurgeCounts", "purge_inactive", "purge_owner"]

Progress = Callable[[int], None]
"""Called with how many more units of work are done, to drive a progress bar."""


@dataclass
class OwnerPurgeCounts(PurgeCounts):
    """An owner's purge: the documents, and the data keys shredded in the key vault."""

    key_vault: str | None = None
    """The key vault searched for the owner's keys; None when none was given."""
    data_keys: int = 0
    """How many data keys of the owner were deleted (for a dry run: would be)."""

    def describe_keys(self, *, dry_run: bool = False) -> str:
        """One phrase for the report: whether the owner's content was crypto-shredded."""
        if self.key_vault is None:
            return "no key vault given, no data key looked for"
        if not self.data_keys:
            return f"no data key in {self.key_vault}"
        keys = "data key" if self.data_keys == 1 else f"{self.data_keys} data keys"
        return f"{keys} {'would be ' if dry_run else ''}shredded in {self.key_vault}"


async def purge_owner(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    owner: str,
    *,
    dry_run: bool = False,
    key_vault: str | None = None,
) -> OwnerPurgeCounts:
    """Erase every thread, item, attachment and attachment byte of ``owner``, the bytes of
    uploads cut off before their files document was written included; then, given the
    key vault's namespace (``key_vault``, e.g. ``Encryption.key_vault_namespace``), delete
    the owner's data keys there, so that no copy of the owner's encrypted content,
    backups and exports included, can be read again.

    Why the namespace and not the encryption settings or a store's engine: shredding
    deletes key documents and needs no master key; the one who erases a user should not
    need the key that reads every user. Why no default vault: a deployment without
    encryption has none, and its purge must not touch (nor need rights on) one.

    Why the keys after the documents: until the purge ends, the owner's documents and
    key both stay findable, so an interrupted purge is finished by running it again;
    and whatever a process still writes for the owner while the documents go is under
    the key shredded last, so it ends unreadable too. Shredding first would let such a
    concurrent first write make a new key the purge never sees, leaving that content
    readable. (Processes holding the key in their cache may use it for
    ``key_cache_seconds`` more: what they write then is unreadable too.)
    """
    check_owner(owner)
    if key_vault is not None:  # a bad namespace is refused before anything is erased
        split_key_vault_namespace(key_vault)
    counts = await _eraser(database, collections).erase(
        owner,
        {Field.OWNER: owner},
        files_filter={GridFSField.METADATA_OWNER: owner},
        dry_run=dry_run,
    )
    report = OwnerPurgeCounts(**vars(counts), key_vault=key_vault)
    if key_vault is not None:
        report.data_keys = await shred_owner_keys(database, key_vault, owner, dry_run=dry_run)
    return report


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
