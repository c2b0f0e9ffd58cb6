"""``chatkit-mongo purge``: an owner's erasure and inactivity retention, bytes included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest

from chatkit_mongo.operations.erase import purge_inactive
from chatkit_mongo.schema import Field, GridFSField

from .cli_support import add_reply, all_documents, owner_documents, run, seed
from .conftest import NAMES

NOW = datetime.now(UTC).replace(tzinfo=None)
OLD = NOW - timedelta(days=60)
RECENT = NOW - timedelta(days=2)


def _snapshot(documents: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    return {name: [bson.encode(d) for d in found] for name, found in documents.items()}


async def test_purge_owner_erases_everything_of_that_owner_and_nothing_else(
    backend: str, database: Any
) -> None:
    await seed(database, "alice", ["thr_1", "thr_2"], RECENT)
    await seed(database, "bob", ["thr_1"], RECENT)
    bob_before = _snapshot(await owner_documents(database, "bob"))

    result = await run(backend, database, "purge", "--owner", "alice")

    assert result.exit_code == 0, result.output
    assert "erased 2 threads, 22 items, 4 attachments, 4 files, 12 chunks" in result.output
    assert not any((await owner_documents(database, "alice")).values())
    assert _snapshot(await owner_documents(database, "bob")) == bob_before
    chunks = await all_documents(database)
    assert len(chunks[NAMES.bucket_chunks]) == 6  # bob's only


async def test_purge_owner_dry_run_counts_and_erases_nothing(backend: str, database: Any) -> None:
    await seed(database, "alice", ["thr_1"], RECENT)
    before = _snapshot(await all_documents(database))

    result = await run(backend, database, "purge", "--owner", "alice", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "would erase 1 thread, 11 items, 2 attachments, 2 files, 6 chunks" in result.output
    assert _snapshot(await all_documents(database)) == before


async def test_purge_older_than_erases_only_threads_inactive_that_long(
    backend: str, database: Any
) -> None:
    await seed(database, "alice", ["thr_old", "thr_revived"], OLD)
    await seed(database, "bob", ["thr_old", "thr_new"], RECENT)
    await add_reply(database, "alice", "thr_revived", RECENT)
    before = await all_documents(database)

    result = await run(backend, database, "purge", "--older-than", "30d")

    assert result.exit_code == 0, result.output
    assert "erased 1 thread, 11 items, 2 attachments, 2 files, 6 chunks" in result.output
    after = await all_documents(database)
    remaining = {(d[Field.OWNER], d[Field.THREAD_ID]) for d in after[NAMES.threads]}
    assert remaining == {("alice", "thr_revived"), ("bob", "thr_old"), ("bob", "thr_new")}
    gone = [d for d in after[NAMES.items] if d[Field.THREAD_ID] == "thr_old"]
    assert {d[Field.OWNER] for d in gone} == {"bob"}
    assert len(after[NAMES.bucket_files]) == len(before[NAMES.bucket_files]) - 2
    assert len(after[NAMES.bucket_chunks]) == len(before[NAMES.bucket_chunks]) - 6
    assert {f["_id"] for f in after[NAMES.bucket_files]} == {
        c[GridFSField.FILES_ID] for c in after[NAMES.bucket_chunks]
    }


async def test_purge_older_than_dry_run_changes_nothing(backend: str, database: Any) -> None:
    await seed(database, "alice", ["thr_old"], OLD)
    before = _snapshot(await all_documents(database))

    result = await run(backend, database, "purge", "--older-than", "4w", "--dry-run")

    assert "would erase 1 thread, 11 items, 2 attachments, 2 files, 6 chunks" in result.output
    assert _snapshot(await all_documents(database)) == before


async def test_a_thread_exactly_at_the_cutoff_is_kept(database: Any) -> None:
    await seed(database, "alice", ["thr_edge"], OLD)
    # seed() stamps items up to 10 seconds after the thread: the last one is the activity
    last_activity = OLD + timedelta(seconds=10)

    kept = await purge_inactive(
        database, NAMES, timedelta(days=1), now=last_activity + timedelta(days=1)
    )
    erased = await purge_inactive(
        database,
        NAMES,
        timedelta(days=1),
        now=last_activity + timedelta(days=1, microseconds=1),
    )

    assert (kept.threads, erased.threads) == (0, 1)


@pytest.mark.parametrize("older_than", [timedelta(0), timedelta(days=-1)])
async def test_a_duration_that_is_not_positive_is_refused(
    database: Any, older_than: timedelta
) -> None:
    with pytest.raises(ValueError, match="older_than must be a positive duration"):
        await purge_inactive(database, NAMES, older_than)
