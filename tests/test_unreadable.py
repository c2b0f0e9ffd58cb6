"""A document the running ChatKit release cannot read is contained: pages skip it with
exact paging and report each skip once; single loads raise UnreadableDocumentError
(ChatKit's NotFoundError too); writes never replace it, and keep the stored fields this
release does not know."""

from __future__ import annotations

import logging
import pickle
from datetime import timedelta
from typing import Any

import pytest
from chatkit.store import NotFoundError
from chatkit.types import AttachmentCreateParams, ThreadMetadata
from pydantic import ValidationError
from pymongo.errors import DuplicateKeyError

from chatkit_mongo import (
    ChatKitMongoError,
    ConflictError,
    ItemConflictError,
    MongoStore,
    SkippedDocument,
    UnreadableDocumentError,
    UnreadableDocuments,
)
from chatkit_mongo.schema import Field

from .attachment_support import make_attachments
from .conftest import NAMES, RequestContext
from .samples import BASE_TIME, assistant_message, file_attachment, thread, tool_call
from .unreadable_support import (
    DAMAGES,
    THREAD_DAMAGES,
    Damage,
    damage_attachment,
    damage_item,
    damage_thread,
    stored_data,
)

ALICE = RequestContext("alice")
PAGE_LIMITS = (1, 2, 3, 10)


async def _items(store: MongoStore[Any], count: int) -> list[str]:
    ids = [f"msg_{n:02d}" for n in range(count)]
    for n, item_id in enumerate(ids):
        created = BASE_TIME + timedelta(seconds=n)
        await store.add_thread_item("thr_1", assistant_message(item_id, created_at=created), ALICE)
    return ids


async def _read_all_items(
    store: MongoStore[Any], limit: int, order: str
) -> tuple[list[str], list[list[str]]]:
    """Every item, page after page as ChatKit reads them; and each page's ids."""
    pages: list[list[str]] = []
    after = None
    while True:
        page = await store.load_thread_items("thr_1", after, limit, order, ALICE)
        ids = [item.id for item in page.data]
        pages.append(ids)
        assert len(ids) <= limit
        if not page.has_more:
            assert page.after is None
            break
        assert ids, "a page with more to come must advance"
        assert page.after == ids[-1]
        after = page.after
        assert len(pages) < 50
    return [item_id for ids in pages for item_id in ids], pages


# Which of 8 items are unreadable: at the start, in the middle, at a page's end, the
# whole tail, all of them, every other one.
LAYOUTS = {
    "first": {0},
    "middle": {3, 4},
    "tail": {5, 6, 7},
    "every other": {1, 3, 5, 7},
    "all": set(range(8)),
    "all but the last": set(range(7)),
}


@pytest.mark.parametrize("damage_name", DAMAGES)
@pytest.mark.parametrize("layout", LAYOUTS)
async def test_item_pages_skip_unreadable_items_with_exact_paging(
    store: MongoStore[Any], database: Any, damage_name: str, layout: str
) -> None:
    ids = await _items(store, 8)
    bad = LAYOUTS[layout]
    for n in bad:
        await damage_item(database, DAMAGES[damage_name], "alice", "thr_1", ids[n])
    readable = [item_id for n, item_id in enumerate(ids) if n not in bad]
    skipped = 0
    for limit in PAGE_LIMITS:
        for order, expected in (("asc", readable), ("desc", readable[::-1])):
            read, pages = await _read_all_items(store, limit, order)
            assert read == expected, (limit, order, pages)
            skipped += len(bad)
            # each skip reported once per reading of the conversation, whatever the paging
            assert store.unreadable.skipped == {NAMES.items: skipped}, (limit, order, pages)


async def test_a_page_whose_last_documents_are_unreadable_says_no_more(
    store: MongoStore[Any], database: Any
) -> None:
    ids = await _items(store, 4)
    for item_id in ids[2:]:
        await damage_item(database, DAMAGES["newer item type"], "alice", "thr_1", item_id)

    page = await store.load_thread_items("thr_1", None, 2, "asc", ALICE)

    assert [item.id for item in page.data] == ids[:2]
    assert (page.has_more, page.after) == (False, None)


async def test_a_page_of_unreadable_documents_only_is_empty_and_advances_past_them(
    store: MongoStore[Any], database: Any
) -> None:
    ids = await _items(store, 6)
    for item_id in ids[1:5]:
        await damage_item(database, DAMAGES["truncated"], "alice", "thr_1", item_id)

    first = await store.load_thread_items("thr_1", None, 1, "asc", ALICE)
    second = await store.load_thread_items("thr_1", first.after, 1, "asc", ALICE)

    assert ([i.id for i in first.data], first.has_more, first.after) == ([ids[0]], True, ids[0])
    assert ([i.id for i in second.data], second.has_more) == ([ids[5]], False)


@pytest.mark.parametrize("damage_name", THREAD_DAMAGES)
async def test_thread_pages_skip_unreadable_threads(
    store: MongoStore[Any], database: Any, damage_name: str
) -> None:
    ids = [f"thr_{n}" for n in range(6)]
    for n, thread_id in enumerate(ids):
        await store.save_thread(thread(thread_id, BASE_TIME + timedelta(seconds=n)), ALICE)
    for thread_id in (ids[1], ids[4], ids[5]):
        await damage_thread(database, THREAD_DAMAGES[damage_name], "alice", thread_id)

    seen: list[str] = []
    after = None
    while True:
        page = await store.load_threads(2, after, "desc", ALICE)
        seen += [t.id for t in page.data]
        if not page.has_more:
            break
        after = page.after

    assert seen == [ids[3], ids[2], ids[0]]
    assert store.unreadable.skipped == {NAMES.threads: 3}
    assert store.unreadable.total == 3


async def test_each_skip_is_logged_once_naming_collection_id_and_first_error(
    store: MongoStore[Any], database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await _items(store, 3)
    await damage_item(database, DAMAGES["hand-edited field"], "alice", "thr_1", ids[1])
    caplog.set_level(logging.WARNING, logger="chatkit_mongo")

    page = await store.load_thread_items("thr_1", None, 10, "asc", ALICE)

    assert [item.id for item in page.data] == [ids[0], ids[2]]
    lines = [r.getMessage() for r in caplog.records if r.name == "chatkit_mongo"]
    assert len(lines) == 1
    assert NAMES.items in lines[0]
    assert repr(ids[1]) in lines[0]
    assert "created_at" in lines[0]
    assert "last tuesday" not in lines[0], "the log line must not copy stored content"


async def test_hooks_hear_of_each_skip_and_a_failing_hook_does_not_fail_the_page(
    database: Any,
) -> None:
    counter = UnreadableDocuments()
    heard: list[SkippedDocument] = []

    def broken(skipped: SkippedDocument) -> None:
        raise RuntimeError("metrics exporter down")

    counter.add_hook(broken)
    counter.add_hook(heard.append)
    store: MongoStore[Any] = MongoStore(database, unreadable=counter)
    other: MongoStore[Any] = MongoStore(database, unreadable=counter)
    ids = await _items(store, 2)
    await damage_item(database, DAMAGES["newer item type"], "alice", "thr_1", ids[0])

    await store.load_thread_items("thr_1", None, 5, "asc", ALICE)
    await other.load_thread_items("thr_1", None, 5, "asc", ALICE)

    assert [(h.collection, h.document_id) for h in heard] == [(NAMES.items, ids[0])] * 2
    assert "type" in heard[0].reason
    assert store.unreadable is counter
    assert counter.total == 2


def _check_error(error: UnreadableDocumentError, collection: str, document_id: str) -> None:
    assert isinstance(error, ChatKitMongoError)
    assert isinstance(error, NotFoundError)
    assert not isinstance(error, ValidationError)
    assert (error.collection, error.document_id) == (collection, document_id)
    assert collection in str(error)
    assert repr(document_id) in str(error)
    assert error.reason in str(error)


@pytest.mark.parametrize("damage_name", DAMAGES)
async def test_load_item_of_an_unreadable_item_names_it(
    store: MongoStore[Any], database: Any, damage_name: str
) -> None:
    ids = await _items(store, 1)
    await damage_item(database, DAMAGES[damage_name], "alice", "thr_1", ids[0])

    with pytest.raises(UnreadableDocumentError) as raised:
        await store.load_item("thr_1", ids[0], ALICE)

    _check_error(raised.value, NAMES.items, ids[0])


@pytest.mark.parametrize("damage_name", THREAD_DAMAGES)
async def test_load_thread_and_load_attachment_of_unreadable_ones_name_them(
    store: MongoStore[Any], database: Any, damage_name: str
) -> None:
    await store.save_thread(thread("thr_1"), ALICE)
    await store.save_attachment(file_attachment("atc_1", "thr_1"), ALICE)
    await damage_thread(database, THREAD_DAMAGES[damage_name], "alice", "thr_1")
    await damage_attachment(database, THREAD_DAMAGES[damage_name], "alice", "atc_1")

    with pytest.raises(UnreadableDocumentError) as thread_error:
        await store.load_thread("thr_1", ALICE)
    with pytest.raises(UnreadableDocumentError) as attachment_error:
        await store.load_attachment("atc_1", ALICE)

    _check_error(thread_error.value, NAMES.threads, "thr_1")
    _check_error(attachment_error.value, NAMES.attachments, "atc_1")


@pytest.mark.parametrize("damage_name", THREAD_DAMAGES)
async def test_a_download_or_upload_of_an_unreadable_attachment_names_it(
    gridfs_store: MongoStore[Any], damage_name: str
) -> None:
    """The attachment store reads the metadata through the same check as the store: an
    attachment this release cannot read is named, never a bare ValidationError."""
    attachments = make_attachments(gridfs_store)
    uploaded = await attachments.create_and_upload("a.txt", "text/plain", b"bytes", ALICE)
    await damage_attachment(
        gridfs_store.database, THREAD_DAMAGES[damage_name], "alice", uploaded.id
    )
    awaiting = await attachments.create_attachment(
        AttachmentCreateParams(name="b.txt", size=5, mime_type="text/plain"), ALICE
    )
    await damage_attachment(
        gridfs_store.database, THREAD_DAMAGES[damage_name], "alice", awaiting.id
    )

    with pytest.raises(UnreadableDocumentError) as download:
        await attachments.read_bytes(uploaded.id, ALICE)
    with pytest.raises(UnreadableDocumentError) as upload:
        await attachments.upload(awaiting.id, b"bytes", ALICE)

    _check_error(download.value, NAMES.attachments, uploaded.id)
    _check_error(upload.value, NAMES.attachments, awaiting.id)
    stored = await gridfs_store.database[NAMES.attachments].find_one(
        {Field.ATTACHMENT_ID: awaiting.id}
    )
    assert stored is not None, "a refused upload leaves the attachment to wait for its bytes"


@pytest.mark.parametrize("damage_name", DAMAGES)
async def test_writes_never_replace_an_item_they_could_not_read(
    store: MongoStore[Any], database: Any, damage_name: str
) -> None:
    ids = await _items(store, 1)
    await damage_item(database, DAMAGES[damage_name], "alice", "thr_1", ids[0])
    key = {Field.OWNER: "alice", Field.THREAD_ID: "thr_1", Field.ITEM_ID: ids[0]}
    before = await stored_data(database[NAMES.items], key)

    with pytest.raises(UnreadableDocumentError):
        await store.save_item("thr_1", assistant_message(ids[0], text="over it"), ALICE)
    with pytest.raises(ItemConflictError):
        await store.add_thread_item("thr_1", assistant_message(ids[0], text="over it"), ALICE)

    assert await stored_data(database[NAMES.items], key) == before


@pytest.mark.parametrize("damage_name", THREAD_DAMAGES)
async def test_writes_never_replace_a_thread_or_attachment_they_could_not_read(
    store: MongoStore[Any], database: Any, damage_name: str
) -> None:
    damage: Damage = THREAD_DAMAGES[damage_name]
    await store.save_thread(thread("thr_1"), ALICE)
    await store.save_attachment(file_attachment("atc_1", "thr_1"), ALICE)
    await damage_thread(database, damage, "alice", "thr_1")
    await damage_attachment(database, damage, "alice", "atc_1")
    thread_key = {Field.OWNER: "alice", Field.THREAD_ID: "thr_1"}
    attachment_key = {Field.OWNER: "alice", Field.ATTACHMENT_ID: "atc_1"}
    threads_before = await stored_data(database[NAMES.threads], thread_key)
    attachments_before = await stored_data(database[NAMES.attachments], attachment_key)

    with pytest.raises(UnreadableDocumentError):
        await store.save_thread(thread("thr_1", title="renamed"), ALICE)
    with pytest.raises(UnreadableDocumentError):
        await store.save_attachment(file_attachment("atc_1", "thr_1"), ALICE)

    assert await stored_data(database[NAMES.threads], thread_key) == threads_before
    assert await stored_data(database[NAMES.attachments], attachment_key) == attachments_before


async def test_saving_a_thread_keeps_the_fields_this_release_does_not_know(
    store: MongoStore[Any], database: Any
) -> None:
    """A newer release wrote fields this one ignores on reading; saving what it read
    (a new title) must not erase them."""
    await store.save_thread(thread("thr_1", title="old"), ALICE)
    key = {Field.OWNER: "alice", Field.THREAD_ID: "thr_1"}
    newer = {"pinned": True, "labels": ["work", {"colour": "blue"}]}
    await database[NAMES.threads].update_one(
        key, {"$set": {f"{Field.DATA}.{name}": value for name, value in newer.items()}}
    )

    loaded = await store.load_thread("thr_1", ALICE)
    loaded.title = "new"
    await store.save_thread(loaded, ALICE)

    data = await stored_data(database[NAMES.threads], key)
    assert {name: data[name] for name in newer} == newer
    assert data["title"] == "new"
    assert await store.load_thread("thr_1", ALICE) == loaded


async def test_saving_an_item_or_attachment_keeps_unknown_fields_too(
    store: MongoStore[Any], database: Any
) -> None:
    await store.add_thread_item("thr_1", assistant_message("msg_1"), ALICE)
    await store.save_attachment(file_attachment("atc_1", "thr_1"), ALICE)
    item_key = {Field.OWNER: "alice", Field.THREAD_ID: "thr_1", Field.ITEM_ID: "msg_1"}
    attachment_key = {Field.OWNER: "alice", Field.ATTACHMENT_ID: "atc_1"}
    for collection, key in ((NAMES.items, item_key), (NAMES.attachments, attachment_key)):
        await database[collection].update_one(key, {"$set": {f"{Field.DATA}.later": 1}})

    await store.save_item("thr_1", assistant_message("msg_1", text="edited"), ALICE)
    await store.save_attachment(file_attachment("atc_1", None), ALICE)

    item = await stored_data(database[NAMES.items], item_key)
    attachment = await stored_data(database[NAMES.attachments], attachment_key)
    assert (item["later"], item["content"][0]["text"]) == (1, "edited")
    assert (attachment["later"], attachment["thread_id"]) == (1, None)


async def test_a_save_that_keeps_meeting_a_duplicate_key_gives_up_with_nothing_written(
    database: Any,
) -> None:
    """The retry of a save whose condition failed is bounded: a unique index other than
    the key's refusing it every time ends in ConflictError, not a loop."""

    class Refusing:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            if name == "update_one":

                async def refuse(*args: Any, **kwargs: Any) -> Any:
                    raise DuplicateKeyError("E11000 duplicate key error", 11000)

                return refuse
            return getattr(self._inner, name)

    store: MongoStore[Any] = MongoStore(
        database, wrap_collection=lambda kind, c: Refusing(c) if kind == "item" else c
    )
    with pytest.raises(ConflictError, match="item msg_1 of thread thr_1"):
        await store.save_item("thr_1", assistant_message("msg_1"), ALICE)
    assert await database[NAMES.items].count_documents({}) == 0


async def test_a_thread_changed_between_the_read_and_the_write_is_read_again(
    database: Any,
) -> None:
    """The save's condition is the content it read: a write landing in between is
    never overwritten blindly; the save reads it (keeping its unknown fields) and
    writes again."""
    seed: MongoStore[Any] = MongoStore(database)
    await seed.save_thread(thread("thr_1", title="first"), ALICE)
    key = {Field.OWNER: "alice", Field.THREAD_ID: "thr_1"}

    class InterleavedWrite:
        """Lands another release's write right after the save's first read."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self.landed = False

        def __getattr__(self, name: str) -> Any:
            target = getattr(self._inner, name)
            if name != "find_one" or self.landed:
                return target

            async def then_write(*args: Any, **kwargs: Any) -> Any:
                found = await target(*args, **kwargs)
                self.landed = True
                await self._inner.update_one(key, {"$set": {f"{Field.DATA}.later": "x"}})
                return found

            return then_write

    wrapped: list[InterleavedWrite] = []

    def wrap(kind: str, collection: Any) -> Any:
        if kind != "thread":
            return collection
        wrapped.append(InterleavedWrite(collection))
        return wrapped[0]

    store: MongoStore[Any] = MongoStore(database, wrap_collection=wrap)
    await store.save_thread(thread("thr_1", title="second"), ALICE)

    data = await stored_data(database[NAMES.threads], key)
    assert wrapped[0].landed
    assert (data["title"], data["later"]) == ("second", "x")
    assert isinstance(await store.load_thread("thr_1", ALICE), ThreadMetadata)


async def test_an_item_replaced_by_another_kind_keeps_none_of_the_old_kinds_fields(
    store: MongoStore[Any], database: Any
) -> None:
    await store.add_thread_item("thr_1", tool_call("tc_1", "thr_1", {"q": 1}), ALICE)

    await store.save_item("thr_1", assistant_message("tc_1", text="replaced"), ALICE)

    key = {Field.OWNER: "alice", Field.THREAD_ID: "thr_1", Field.ITEM_ID: "tc_1"}
    data = await stored_data(database[NAMES.items], key)
    assert data["type"] == "assistant_message"
    assert "arguments" not in data
    assert "call_id" not in data


def test_the_error_pickles_as_it_was_raised() -> None:
    error = UnreadableDocumentError("chatkit_items", "msg_1", "type: unknown tag")

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.collection, copy.document_id, copy.reason) == (
        "chatkit_items",
        "msg_1",
        "type: unknown tag",
    )
    assert str(copy) == str(error)
    assert "'msg_1' of chatkit_items cannot be read" in str(copy)
