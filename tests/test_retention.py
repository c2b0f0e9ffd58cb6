"""Retention: one shared expiry per thread, extended on activity at most once per refresh
interval, hidden from every read once past, TTL indexes only when retention is on.

The clock is injected and starts at the real present, so every expiry lies in the real
future: the server's TTL pass (and mongomock's TTL on read) never removes what these
tests write, and anything hidden is hidden by the store's own read filter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from typing import Any

import pytest
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams
from pymongo import IndexModel

from chatkit_mongo import GridFSAttachmentStore, IndexConflictError, MongoStore, Retention
from chatkit_mongo.apps.cli import create_indexes_main
from chatkit_mongo.apps.create_indexes import planned
from chatkit_mongo.schema import INDEXES, MODEL_KINDS, RETENTION_INDEXES, Field

from .cli_support import run
from .conftest import NAMES, RequestContext
from .retention_support import Clock
from .round_trip_support import count_round_trips
from .round_trip_support import trips as round_trips
from .samples import assistant_message, file_attachment, thread

RETENTION = timedelta(days=30)
REFRESH = timedelta(days=1)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def kept(database: Any, clock: Clock) -> AsyncIterator[MongoStore[Any]]:
    store: MongoStore[Any] = MongoStore(
        database, retention=RETENTION, retention_refresh=REFRESH, clock=clock
    )
    yield store
    await store.close()


async def _expiries(database: Any, thread_id: str = "thr_1") -> dict[str, Any]:
    """Every document of the thread, by collection and id, with its stored expiry."""
    found: dict[str, Any] = {}
    for collection, id_field in (
        (NAMES.threads, Field.THREAD_ID),
        (NAMES.items, Field.ITEM_ID),
        (NAMES.attachments, Field.ATTACHMENT_ID),
    ):
        async for document in database[collection].find({Field.THREAD_ID: thread_id}):
            found[f"{collection}/{document[id_field]}"] = document.get(Field.EXPIRES_AT, "none")
    return found


async def _write_thread(store: MongoStore[Any], context: RequestContext, thread_id: str) -> None:
    await store.save_thread(thread(thread_id), context)
    await store.add_thread_item(
        thread_id, assistant_message(f"msg_u_{thread_id}", thread_id), context
    )
    await store.save_item(thread_id, assistant_message(f"msg_a_{thread_id}", thread_id), context)
    await store.save_attachment(file_attachment(f"atc_{thread_id}", thread_id), context)


# ------------------------------------------------------------------ options


def test_options_are_checked_and_named() -> None:
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"retention": 30}, TypeError, "retention must be a timedelta"),
        ({"retention": timedelta(0)}, ValueError, "retention must be positive"),
        (
            {"retention": RETENTION, "retention_refresh": -REFRESH},
            ValueError,
            "retention_refresh must be positive",
        ),
        (
            {"retention": REFRESH, "retention_refresh": REFRESH},
            ValueError,
            "must be shorter than retention",
        ),
        ({"retention_refresh": REFRESH}, ValueError, "retention_refresh needs retention"),
        ({"retention": RETENTION, "clock": "now"}, TypeError, "clock must be callable"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            Retention.of(
                options.get("retention"), options.get("retention_refresh"), options.get("clock")
            )


def test_default_refresh_is_a_tenth_of_retention_and_at_most_a_day() -> None:
    short = Retention.of(timedelta(hours=5), None, None)
    long = Retention.of(timedelta(days=30), None, None)
    assert short is not None
    assert short.refresh == timedelta(minutes=30)
    assert long is not None
    assert long.refresh == timedelta(days=1)
    assert Retention.of(None, None, None) is None


async def test_a_clock_that_returns_no_datetime_is_refused(
    database: Any, alice: RequestContext
) -> None:
    not_a_clock: Any = lambda: "soon"  # noqa: E731  # a wrong type on purpose
    store: MongoStore[Any] = MongoStore(database, retention=RETENTION, clock=not_a_clock)
    with pytest.raises(TypeError, match="clock returned str, not a datetime"):
        await store.save_thread(thread(), alice)
    assert await database[NAMES.threads].count_documents({}) == 0


# ------------------------------------------------------------------ retention off


async def test_retention_off_adds_no_field_and_no_ttl_index(
    store: MongoStore[Any], database: Any, alice: RequestContext
) -> None:
    assert store.retention is None
    await _write_thread(store, alice, "thr_1")
    stored = await _expiries(database)
    assert len(stored) == 4
    assert set(stored.values()) == {"none"}
    report = await store.ensure_indexes()
    assert [status.spec for status in report] == list(INDEXES)
    for collection in NAMES.by_kind(MODEL_KINDS).values():
        indexes = await _index_options(database, collection)
        assert "expires_at_ttl" not in indexes
        assert all("expireAfterSeconds" not in options for options in indexes.values())


# ------------------------------------------------------------------ TTL indexes


async def _index_options(database: Any, collection: str) -> dict[str, dict[str, Any]]:
    cursor = database[collection].list_indexes()
    if not hasattr(cursor, "to_list"):
        cursor = await cursor
    return {index["name"]: dict(index) for index in await cursor.to_list(None)}


async def test_retention_creates_a_ttl_index_per_collection(
    kept: MongoStore[Any], database: Any, alice: RequestContext
) -> None:
    await kept.load_threads(10, None, "desc", alice)  # first use creates the indexes
    for collection in NAMES.by_kind(MODEL_KINDS).values():
        ttl = (await _index_options(database, collection))["expires_at_ttl"]
        assert dict(ttl["key"]) == {Field.EXPIRES_AT: 1}
        assert ttl["expireAfterSeconds"] == 0
    report = await kept.ensure_indexes()
    assert [status.spec for status in report] == [*INDEXES, *RETENTION_INDEXES]
    assert {status.state for status in report} == {"present"}


async def test_a_ttl_index_with_another_delay_is_a_named_conflict(
    database: Any, clock: Clock
) -> None:
    await database[NAMES.items].create_indexes(
        [IndexModel([(Field.EXPIRES_AT, 1)], name="expires_at_ttl", expireAfterSeconds=60)]
    )
    store: MongoStore[Any] = MongoStore(database, retention=RETENTION, clock=clock)
    with pytest.raises(
        IndexConflictError,
        match="has the same keys but expireAfterSeconds=60, "
        "where chatkit-mongo needs expireAfterSeconds=0",
    ):
        await store.ensure_indexes()


async def test_a_store_with_retention_checks_indexes_even_after_one_without(
    database: Any, alice: RequestContext, clock: Clock
) -> None:
    plain: MongoStore[Any] = MongoStore(database)
    await plain.load_threads(10, None, "desc", alice)
    kept: MongoStore[Any] = MongoStore(database, retention=RETENTION, clock=clock)
    await kept.load_threads(10, None, "desc", alice)
    assert "expires_at_ttl" in await _index_options(database, NAMES.threads)


async def test_init_and_the_script_take_the_ttl_indexes_on_request(
    backend: str, database: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = await run(backend, database, "init")
    assert plain.exit_code == 0, plain.output
    assert "expires_at_ttl" not in plain.output
    result = await run(backend, database, "init", "--retention")
    assert result.exit_code == 0, result.output
    assert result.output.count("expires_at_ttl {expires_at: 1} expireAfterSeconds=0: created") == 3
    assert "expires_at_ttl" in await _index_options(database, NAMES.attachments)

    with pytest.raises(SystemExit) as exited:
        create_indexes_main(["--dry-run", "--retention", "--uri", ""])
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == planned(NAMES, retention=True)
    assert len(lines) == len(INDEXES) + 3
    assert len(planned(NAMES)) == len(INDEXES)


# ------------------------------------------------------------------ shared expiry


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_every_document_of_a_thread_shares_one_expiry(
    kept: MongoStore[Any], database: Any, alice: RequestContext, clock: Clock
) -> None:
    await _write_thread(kept, alice, "thr_1")
    stored = await _expiries(database)
    assert len(stored) == 4
    assert set(stored.values()) == {clock.now + RETENTION}


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_activity_within_the_refresh_interval_keeps_the_expiry(
    kept: MongoStore[Any], database: Any, alice: RequestContext, clock: Clock
) -> None:
    await _write_thread(kept, alice, "thr_1")
    first_expiry = clock.now + RETENTION
    clock.advance(REFRESH - timedelta(seconds=1))
    await kept.add_thread_item("thr_1", assistant_message("msg_later"), alice)
    await kept.save_thread(thread(title="renamed"), alice)
    stored = await _expiries(database)
    assert len(stored) == 5
    assert set(stored.values()) == {first_expiry}


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_activity_after_the_refresh_interval_moves_every_document(
    kept: MongoStore[Any], database: Any, alice: RequestContext, clock: Clock
) -> None:
    await _write_thread(kept, alice, "thr_1")
    await _write_thread(kept, alice, "thr_2")
    clock.advance(REFRESH + timedelta(seconds=1))
    await kept.add_thread_item("thr_1", assistant_message("msg_later"), alice)
    stored = await _expiries(database)
    assert len(stored) == 5
    assert set(stored.values()) == {clock.now + RETENTION}
    untouched = await _expiries(database, "thr_2")
    assert set(untouched.values()) == {clock.now - REFRESH - timedelta(seconds=1) + RETENTION}

    clock.advance(REFRESH + timedelta(seconds=1))  # saving the thread extends it too
    await kept.save_thread(thread(), alice)
    assert set((await _expiries(database)).values()) == {clock.now + RETENTION}


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_an_attachment_without_a_thread_lives_on_its_own_until_attached(
    kept: MongoStore[Any], database: Any, alice: RequestContext, clock: Clock
) -> None:
    await kept.save_attachment(file_attachment("atc_loose", thread_id=None), alice)
    created = clock.now
    loose = await database[NAMES.attachments].find_one({Field.ATTACHMENT_ID: "atc_loose"})
    assert loose[Field.EXPIRES_AT] == created + RETENTION
    clock.advance(timedelta(hours=1))
    await kept.save_thread(thread(), alice)
    await kept.save_attachment(file_attachment("atc_loose", "thr_1"), alice)
    assert set((await _expiries(database)).values()) == {clock.now + RETENTION}


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_a_thread_saved_after_its_items_adopts_them(
    kept: MongoStore[Any], database: Any, alice: RequestContext, clock: Clock
) -> None:
    await kept.add_thread_item("thr_1", assistant_message("msg_early"), alice)
    clock.advance(timedelta(hours=2))
    await kept.save_thread(thread(), alice)
    assert set((await _expiries(database)).values()) == {clock.now + RETENTION}


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_data_written_before_retention_stays_visible_until_its_next_activity(
    store: MongoStore[Any], database: Any, alice: RequestContext, clock: Clock
) -> None:
    await _write_thread(store, alice, "thr_1")
    kept: MongoStore[Any] = MongoStore(database, retention=RETENTION, clock=clock)
    assert (await kept.load_thread_items("thr_1", None, 10, "asc", alice)).data
    await kept.add_thread_item("thr_1", assistant_message("msg_later"), alice)
    stored = await _expiries(database)
    assert len(stored) == 5
    assert set(stored.values()) == {clock.now + RETENTION}


# ------------------------------------------------------------------ round trips


@pytest.fixture
async def counted_kept(kept: MongoStore[Any]) -> tuple[MongoStore[Any], list[str]]:
    return await count_round_trips(kept)


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_round_trips_with_retention(
    counted_kept: tuple[MongoStore[Any], list[str]], alice: RequestContext, clock: Clock
) -> None:
    store, log = counted_kept
    restamp = ["item.update_many", "attachment.update_many"]

    async def trips(call: Any) -> list[str]:
        log.clear()
        await call
        return round_trips(log)

    # a save reads what it replaces first (see MongoStore._replace)
    assert await trips(store.save_thread(thread(), alice)) == [
        "thread.find_one",
        "thread.find_one_and_update",
        *restamp,
    ]
    assert await trips(store.save_thread(thread(), alice)) == [
        "thread.find_one",
        "thread.find_one_and_update",
    ]
    assert await trips(store.add_thread_item("thr_1", assistant_message("msg_1"), alice)) == [
        "thread.find_one",
        "item.insert_one",
    ]
    assert await trips(store.save_item("thr_1", assistant_message("msg_1"), alice)) == [
        "thread.find_one",
        "item.find_one",
        "item.update_one",
    ]
    assert await trips(store.save_attachment(file_attachment("atc_1", "thr_1"), alice)) == [
        "thread.find_one",
        "attachment.find_one",
        "attachment.update_one",
    ]
    assert await trips(store.save_attachment(file_attachment("atc_2", None), alice)) == [
        "attachment.find_one",
        "attachment.update_one",
    ]
    for read, expected in [
        (store.load_thread("thr_1", alice), ["thread.find_one"]),
        (store.load_threads(10, "thr_1", "asc", alice), ["thread.find_one", "thread.find"]),
        (store.load_item("thr_1", "msg_1", alice), ["item.find_one"]),
        (store.load_thread_items("thr_1", None, 10, "asc", alice), ["item.find"]),
        (store.load_attachment("atc_1", alice), ["attachment.find_one"]),
    ]:
        assert await trips(read) == expected

    clock.advance(REFRESH + timedelta(seconds=1))
    assert await trips(store.add_thread_item("thr_1", assistant_message("msg_2"), alice)) == [
        "thread.find_one",
        *restamp,
        "thread.update_one",
        "item.insert_one",
    ]
    clock.advance(REFRESH + timedelta(seconds=1))
    assert await trips(store.save_thread(thread(), alice)) == [
        "thread.find_one",
        "thread.find_one_and_update",
        *restamp,
        "thread.update_one",
    ]


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_a_busy_thread_is_restamped_at_most_once_per_refresh_interval(
    counted_kept: tuple[MongoStore[Any], list[str]], alice: RequestContext, clock: Clock
) -> None:
    store, log = counted_kept
    await store.save_thread(thread(), alice)
    log.clear()
    # A message every hour for 50 hours, with a one-day refresh: the expiry is due only
    # once more than a day has passed since it last moved, at hours 25 and 50.
    for n in range(50):
        clock.advance(timedelta(hours=1))
        await store.add_thread_item("thr_1", assistant_message(f"msg_{n:02d}"), alice)
    assert log.count("item.update_many") == 2
    assert log.count("thread.update_one") == 2


# ------------------------------------------------------------------ reads


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_an_expired_thread_is_gone_for_every_read(
    kept: MongoStore[Any], database: Any, alice: RequestContext, clock: Clock
) -> None:
    await _write_thread(kept, alice, "thr_old")
    clock.advance(RETENTION / 2)
    await _write_thread(kept, alice, "thr_new")
    clock.advance(RETENTION / 2)  # thr_old's expiry is now, thr_new's half a period away

    missing = [
        (kept.load_thread("thr_old", alice), "Thread thr_old not found"),
        (kept.load_item("thr_old", "msg_u_thr_old", alice), "Item msg_u_thr_old not found"),
        (kept.load_attachment("atc_thr_old", alice), "Attachment atc_thr_old not found"),
        (kept.load_threads(10, "thr_old", "asc", alice), "Thread thr_old not found"),
        (
            kept.load_thread_items("thr_old", "msg_u_thr_old", 10, "asc", alice),
            "Item msg_u_thr_old not found",
        ),
    ]
    for call, message in missing:
        with pytest.raises(NotFoundError, match=message):
            await call
    assert (await kept.load_thread_items("thr_old", None, 10, "asc", alice)).data == []
    threads = await kept.load_threads(10, None, "asc", alice)
    assert [t.id for t in threads.data] == ["thr_new"]
    assert len((await kept.load_thread_items("thr_new", None, 10, "asc", alice)).data) == 2
    assert (await kept.load_attachment("atc_thr_new", alice)).id == "atc_thr_new"
    # Still stored: the read filter hid them, not a deletion.
    assert len(await _expiries(database, "thr_old")) == 4


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_an_expired_thread_is_not_brought_back_by_activity(
    kept: MongoStore[Any], database: Any, alice: RequestContext, clock: Clock
) -> None:
    await _write_thread(kept, alice, "thr_1")
    clock.advance(RETENTION + timedelta(seconds=1))
    await kept.add_thread_item("thr_1", assistant_message("msg_late"), alice)
    with pytest.raises(NotFoundError):
        await kept.load_thread("thr_1", alice)

    await kept.save_thread(thread(title="again"), alice)  # saved anew: a fresh thread
    assert (await kept.load_thread("thr_1", alice)).title == "again"
    items = await kept.load_thread_items("thr_1", None, 10, "asc", alice)
    assert [item.id for item in items.data] == ["msg_late"]
    with pytest.raises(NotFoundError):
        await kept.load_attachment("atc_thr_1", alice)


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_expiry_is_per_owner(
    kept: MongoStore[Any], alice: RequestContext, bob: RequestContext, clock: Clock
) -> None:
    await _write_thread(kept, alice, "thr_1")
    clock.advance(RETENTION / 2)
    await kept.save_thread(thread(), bob)  # bob's thr_1 is another thread
    clock.advance(RETENTION / 2)
    with pytest.raises(NotFoundError):
        await kept.load_thread("thr_1", alice)
    assert (await kept.load_thread("thr_1", bob)).id == "thr_1"


# ------------------------------------------------------------------ attachment bytes


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
async def test_expired_attachment_bytes_cannot_be_read_and_the_sweep_removes_them(
    gridfs_store: MongoStore[Any], alice: RequestContext, clock: Clock
) -> None:
    database = gridfs_store.database
    kept: MongoStore[Any] = MongoStore(
        database, retention=RETENTION, retention_refresh=REFRESH, clock=clock
    )
    attachments = GridFSAttachmentStore(
        kept, upload_url=lambda attachment_id, context: "https://chat.example/upload"
    )
    await kept.save_thread(thread(), alice)
    old = await attachments.create_and_upload("old.txt", "text/plain", b"old bytes", alice)
    pending = await attachments.create_attachment(
        AttachmentCreateParams(name="p.txt", size=1, mime_type="text/plain"), alice
    )
    await kept.save_attachment(old.model_copy(update={"thread_id": "thr_1"}), alice)
    clock.advance(RETENTION / 2)
    await kept.save_thread(thread("thr_2"), alice)
    new = await attachments.create_and_upload("new.txt", "text/plain", b"new bytes", alice)
    await kept.save_attachment(new.model_copy(update={"thread_id": "thr_2"}), alice)
    clock.advance(RETENTION / 2)

    for call in (
        attachments.read_bytes(old.id, alice),
        attachments.upload(pending.id, b"x", alice),
        kept.load_attachment(pending.id, alice),
    ):
        with pytest.raises(NotFoundError, match="not found"):
            await call
    report = await attachments.sweep_orphans(now=clock.now.replace(tzinfo=UTC))
    assert report.orphaned_files == 1
    files = database[NAMES.bucket_files]
    assert await files.count_documents({}) == 1
    assert await database[NAMES.bucket_chunks].count_documents({}) == 1
    assert await attachments.read_bytes(new.id, alice) == b"new bytes"


async def test_a_pending_attachment_expires_on_its_own(
    kept: MongoStore[Any], database: Any, alice: RequestContext, clock: Clock
) -> None:
    attachments = GridFSAttachmentStore(
        kept, upload_url=lambda attachment_id, context: "https://chat.example/upload"
    )
    pending = await attachments.create_attachment(
        AttachmentCreateParams(name="p.txt", size=1, mime_type="text/plain"), alice
    )
    stored = await database[NAMES.attachments].find_one({Field.ATTACHMENT_ID: pending.id})
    assert stored[Field.EXPIRES_AT] == clock.now + RETENTION
