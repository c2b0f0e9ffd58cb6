"""MongoStore with encryption on, through PyMongo Async and Motor on the wire server:
copies under another owner and shredded owners read as not found, add_thread_item's
retry and conflict, stores without encryption meeting ciphertext and the reverse,
faults and cancellation during an owner's first write, the key vault's index, and the
store's lifecycle. Round trips and pages are properties in
``test_store_encryption_properties.py``."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, NamedTuple

import mongomock_motor
import pytest
from chatkit.store import NotFoundError
from pymongo.errors import InvalidOperation

from chatkit_mongo import (
    EncryptionConfigError,
    ItemConflictError,
    MongoStore,
    OwnerEncryption,
    StoreClosedError,
)
from chatkit_mongo._encryption import (
    ensure_key_vault_index,
    has_key_vault_index,
    is_ciphertext,
    key_vault_indexes,
)
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.schema import Field, Kind, document_kind

from . import samples
from .conftest import NAMES, RequestContext
from .encryption_support import (
    count_keys,
    fresh_encryption,
    interrupting_engine,
)
from .store_encryption_support import (
    KINDS,
    copy_under,
    documents,
    raw_collection,
    raw_documents,
)

pytest_plugins = ("tests.encryption_fixtures",)

ALICE = RequestContext("alice")
BOB = RequestContext("bob")
CAROL = RequestContext("carol")
SECRET = "zebra-crossing-7f3a"
LATER = samples.BASE_TIME + timedelta(seconds=1)
"""After every sample item."""


@pytest.fixture
def wire_database(wire_client: Any) -> Any:
    """A database of its own on the wire server (jongodb cannot drop one)."""
    return wire_client[f"chatkit_enc_{uuid.uuid4().hex[:12]}"]


@pytest.fixture
async def store(wire_database: Any, key_settings: Encryption) -> AsyncIterator[MongoStore[Any]]:
    store: MongoStore[Any] = MongoStore(wire_database, encryption=key_settings)
    yield store
    await store.close()


async def fill(store: MongoStore[Any], context: RequestContext, thread_id: str = "thr_1") -> None:
    """A thread holding every item variant and an attachment, with a secret in each."""
    await store.save_thread(samples.thread(thread_id, title=SECRET), context)
    for item in samples.every_item(thread_id):
        await store.add_thread_item(thread_id, item, context)
    await store.add_thread_item(
        thread_id, samples.assistant_message("msg_secret", thread_id, LATER, SECRET), context
    )
    attachment = samples.file_attachment("atc_1", thread_id).model_copy(update={"name": SECRET})
    await store.save_attachment(attachment, context)


async def assert_nothing_readable(
    store: MongoStore[Any], context: RequestContext, own_threads: tuple[str, ...] = ()
) -> None:
    """``context`` sees nothing of thread ``thr_1``: not found, and pages without it
    (holding exactly ``own_threads``)."""
    with pytest.raises(NotFoundError, match="Thread thr_1 not found"):
        await store.load_thread("thr_1", context)
    with pytest.raises(NotFoundError, match="Item msg_secret not found in thread thr_1"):
        await store.load_item("thr_1", "msg_secret", context)
    with pytest.raises(NotFoundError, match="Attachment atc_1 not found"):
        await store.load_attachment("atc_1", context)
    for order in ("asc", "desc"):
        threads = await store.load_threads(10, None, order, context)
        assert [thread.id for thread in threads.data] == list(own_threads)
        assert (threads.has_more, threads.after) == (False, None)
        items = await store.load_thread_items("thr_1", None, 10, order, context)
        assert (items.data, items.has_more, items.after) == ([], False, None)


# ---------------------------------------------------------------- who can read what


async def test_content_is_stored_as_ciphertext_and_reads_back(
    store: MongoStore[Any], wire_database: Any
) -> None:
    await fill(store, ALICE)
    stored = await raw_documents(wire_database, "alice")
    assert len(stored) == 1 + len(samples.every_item()) + 1 + 1
    assert not [raw for raw in stored if SECRET.encode() in raw]
    for kind in KINDS:
        assert all(
            is_ciphertext(d[Field.DATA]) for d in await documents(wire_database, kind, "alice")
        )
    assert (await store.load_thread("thr_1", ALICE)).title == SECRET
    page = await store.load_thread_items("thr_1", None, 100, "asc", ALICE)
    assert [item.id for item in page.data] == [
        *(item.id for item in samples.every_item()),
        "msg_secret",
    ]
    assert (await store.load_attachment("atc_1", ALICE)).name == SECRET


@pytest.mark.parametrize("reader", ["bob", "carol"], ids=["with-a-key", "without-a-key"])
async def test_a_document_copied_under_another_owner_reads_as_not_found(
    store: MongoStore[Any], wire_database: Any, key_settings: Encryption, reader: str
) -> None:
    """The application could decrypt the copy (same key vault, same master key): the
    store refuses it because it was not made with the reader's key."""
    await fill(store, ALICE)
    if reader == "bob":
        await store.save_thread(samples.thread("thr_bob"), BOB)
    for kind in KINDS:
        assert await copy_under(wire_database, kind, "alice", reader) > 0
    await assert_nothing_readable(
        store, RequestContext(reader), ("thr_bob",) if reader == "bob" else ()
    )
    assert await count_keys(key_settings, wire_database.client, "carol") == 0  # reads make none
    assert (await store.load_thread("thr_1", ALICE)).title == SECRET  # the original still reads


async def test_ciphertexts_swapped_between_an_owners_documents_read_as_not_found(
    store: MongoStore[Any], wire_database: Any
) -> None:
    """The key proves the owner only: a ciphertext moved over another document of the
    same owner is caught by the id inside it, in loads and in pages."""
    await store.save_thread(samples.thread("thr_1", title="first"), ALICE)
    await store.save_thread(samples.thread("thr_2", title="second"), ALICE)
    items = samples.every_item("thr_1")[:3]
    for item in items:
        await store.add_thread_item("thr_1", item, ALICE)
    await store.save_attachment(samples.file_attachment("atc_1", "thr_1"), ALICE)
    await store.save_attachment(samples.file_attachment("atc_2", "thr_1"), ALICE)
    swaps: dict[Kind, tuple[str, str]] = {
        "thread": ("thr_1", "thr_2"),
        "item": (items[0].id, items[1].id),
        "attachment": ("atc_1", "atc_2"),
    }
    for kind, (one, other) in swaps.items():
        await swap_data(wire_database, kind, one, other)
    for thread_id in ("thr_1", "thr_2"):
        with pytest.raises(NotFoundError):
            await store.load_thread(thread_id, ALICE)
    assert (await store.load_threads(10, None, "asc", ALICE)).data == []
    for item in items[:2]:
        with pytest.raises(NotFoundError):
            await store.load_item("thr_1", item.id, ALICE)
    page = await store.load_thread_items("thr_1", None, 10, "asc", ALICE)
    assert [item.id for item in page.data] == [items[2].id]
    for attachment_id in ("atc_1", "atc_2"):
        with pytest.raises(NotFoundError):
            await store.load_attachment(attachment_id, ALICE)


async def swap_data(database: Any, kind: Kind, one: str, other: str) -> None:
    """Exchange the stored ``data`` of two documents of ``kind``, as an administrator could."""
    id_field = document_kind(kind).id_field
    assert id_field is not None
    collection = database[NAMES.name_of(kind)]
    first = await collection.find_one({id_field: one})
    second = await collection.find_one({id_field: other})
    await collection.update_one({"_id": first["_id"]}, {"$set": {Field.DATA: second[Field.DATA]}})
    await collection.update_one({"_id": second["_id"]}, {"$set": {Field.DATA: first[Field.DATA]}})


async def test_a_shredded_owner_reads_as_not_found_and_writes_again_under_a_new_key(
    store: MongoStore[Any], wire_database: Any, key_settings: Encryption
) -> None:
    await fill(store, ALICE)
    await fill(store, BOB)
    engine = store.persistence.encryption
    assert engine is not None
    assert await engine.shred("alice") is True
    assert await count_keys(key_settings, wire_database.client, "alice") == 0
    await assert_nothing_readable(store, ALICE)
    assert (await store.load_thread("thr_1", BOB)).title == SECRET  # others are untouched
    # The shredded documents stay unreadable after the owner writes again, and are skipped.
    await store.save_thread(samples.thread("thr_2", title="new"), ALICE)
    await store.add_thread_item("thr_1", samples.assistant_message("msg_new"), ALICE)
    assert [t.id for t in (await store.load_threads(10, None, "desc", ALICE)).data] == ["thr_2"]
    items = await store.load_thread_items("thr_1", None, 10, "asc", ALICE)
    assert [item.id for item in items.data] == ["msg_new"]
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_1", ALICE)
    assert await count_keys(key_settings, wire_database.client, "alice") == 1


# ---------------------------------------------------------------- add_thread_item


async def test_add_thread_item_retry_is_a_no_op_and_other_content_is_a_conflict(
    store: MongoStore[Any], wire_database: Any
) -> None:
    item = samples.assistant_message("msg_1", text=SECRET)
    await store.add_thread_item("thr_1", item, ALICE)
    items = raw_collection(wire_database, "item")
    before = (await items.find_one({Field.ITEM_ID: "msg_1"})).raw

    await store.add_thread_item("thr_1", item, ALICE)  # a retry: equal plaintext, new IV
    other = samples.assistant_message("msg_1", text="something else")
    with pytest.raises(ItemConflictError, match="Item msg_1 already exists in thread thr_1"):
        await store.add_thread_item("thr_1", other, ALICE)

    assert (await items.find_one({Field.ITEM_ID: "msg_1"})).raw == before
    assert await items.count_documents({}) == 1
    assert await store.load_item("thr_1", "msg_1", ALICE) == item


async def test_add_thread_item_over_a_copy_it_cannot_read_is_a_conflict(
    store: MongoStore[Any], wire_database: Any
) -> None:
    """Even with equal content: what is stored under the id is not the owner's, so
    the add neither succeeds silently nor overwrites it."""
    item = samples.assistant_message("msg_1", text=SECRET)
    await store.add_thread_item("thr_1", item, BOB)
    await copy_under(wire_database, "item", "bob", "alice")
    with pytest.raises(ItemConflictError, match="already exists"):
        await store.add_thread_item("thr_1", item, ALICE)
    with pytest.raises(NotFoundError):
        await store.load_item("thr_1", "msg_1", ALICE)


# ---------------------------------------------------------------- with and without encryption


async def test_a_store_without_encryption_refuses_ciphertext_clearly(
    store: MongoStore[Any], wire_database: Any
) -> None:
    await fill(store, ALICE)
    plain: MongoStore[Any] = MongoStore(wire_database)
    message = r"encrypted, and this store has no encryption settings.*encryption="
    reads = [
        plain.load_thread("thr_1", ALICE),
        plain.load_threads(10, None, "asc", ALICE),
        plain.load_item("thr_1", "msg_secret", ALICE),
        plain.load_thread_items("thr_1", None, 10, "desc", ALICE),
        plain.load_attachment("atc_1", ALICE),
        plain.add_thread_item("thr_1", samples.assistant_message("msg_secret"), ALICE),
    ]
    for read in reads:
        with pytest.raises(EncryptionConfigError, match=message):
            await read
    assert await store.load_item("thr_1", "msg_secret", ALICE)  # nothing was changed


async def test_an_encrypted_store_reads_what_was_written_before_encryption(
    wire_database: Any, key_settings: Encryption
) -> None:
    """A store being migrated (``strict=False``): plaintext and ciphertext documents side
    by side, in one order, and a write turns a plaintext document into a ciphertext."""
    store: MongoStore[Any] = MongoStore(
        wire_database, encryption=dataclasses.replace(key_settings, strict=False)
    )
    plain: MongoStore[Any] = MongoStore(wire_database)
    await fill(plain, ALICE)
    await store.save_thread(samples.thread("thr_0", created_at=samples.AWARE_TIME), ALICE)
    late = samples.assistant_message("msg_late", created_at=samples.BASE_TIME.replace(year=2027))
    await store.add_thread_item("thr_1", late, ALICE)

    assert (await store.load_thread("thr_1", ALICE)).title == SECRET
    assert (await store.load_attachment("atc_1", ALICE)).name == SECRET
    threads = await store.load_threads(1, None, "asc", ALICE)
    assert ([t.id for t in threads.data], threads.has_more) == (["thr_1"], True)
    threads = await store.load_threads(1, threads.after, "asc", ALICE)
    assert ([t.id for t in threads.data], threads.has_more) == (["thr_0"], False)
    items = await store.load_thread_items("thr_1", None, 100, "asc", ALICE)
    secret = samples.assistant_message("msg_secret", "thr_1", LATER, SECRET)
    assert items.data == [*samples.every_item(), secret, late]

    await store.add_thread_item("thr_1", secret, ALICE)  # equal to the plaintext stored: no-op
    with pytest.raises(ItemConflictError):
        await store.add_thread_item("thr_1", samples.assistant_message("msg_secret"), ALICE)

    await store.save_thread(samples.thread("thr_1", title="renamed"), ALICE)
    [thread] = [
        d for d in await documents(wire_database, "thread", "alice") if d["thread_id"] == "thr_1"
    ]
    assert is_ciphertext(thread[Field.DATA])
    assert (await store.load_thread("thr_1", ALICE)).title == "renamed"
    await store.close()


# ---------------------------------------------------------------- the owner's first write

FIRST_WRITE_CALLS = ("get_key_by_alt_name", "create_data_key", "encrypt")
"""The engine's driver calls in an owner's first write: look the key up, create it,
encrypt with it."""


class Interruption(NamedTuple):
    method: str
    """The store's write that is the owner's first."""
    how: str
    """``cancel`` (the caller's task is cancelled there) or ``fault`` (the call raises)."""
    at: int
    """Which of :data:`FIRST_WRITE_CALLS` stops, counting from 1."""
    after: bool
    """Whether it stops after the call reached the server, or before."""


def interruptions() -> list[Any]:
    return [
        pytest.param(
            Interruption(method, how, at, after),
            id=f"{method}-{how}-at-{FIRST_WRITE_CALLS[at - 1]}-{'after' if after else 'before'}",
        )
        for method, how, at, after in itertools.product(
            ["save_thread", "add_thread_item", "save_attachment"],
            ["cancel", "fault"],
            range(1, len(FIRST_WRITE_CALLS) + 1),
            [False, True],
        )
    ]


def first_write(store: MongoStore[Any], method: str) -> Any:
    if method == "save_thread":
        return store.save_thread(samples.thread("thr_1", title=SECRET), ALICE)
    if method == "add_thread_item":
        return store.add_thread_item("thr_1", samples.assistant_message("msg_1"), ALICE)
    return store.save_attachment(samples.file_attachment("atc_1"), ALICE)


@pytest.mark.parametrize("case", interruptions())
async def test_an_interrupted_first_write_leaves_no_document_and_no_stray_key(
    wire_database: Any, key_settings: Encryption, case: Interruption
) -> None:
    """Through the public seam: the store takes an engine whose driver calls stop at
    the ``at``-th, before or after it reached the server, by a fault or a cancellation."""
    method, how, at, after = case
    client = wire_database.client
    await ensure_key_vault_index(key_settings, client)
    error = None if how == "cancel" else ConnectionError("connection reset")
    engine, seam = interrupting_engine(key_settings, client, at=at, after=after, error=error)
    async with engine:
        store: MongoStore[Any] = MongoStore(wire_database, encryption=engine)
        await store.ensure_indexes()
        task = asyncio.ensure_future(first_write(store, method))
        if how == "cancel":
            await asyncio.wait_for(seam.reached.wait(), timeout=10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(ConnectionError):
                await task
        assert tuple(seam.calls) == FIRST_WRITE_CALLS[:at]
        for kind in KINDS:
            assert await documents(wire_database, kind, "alice") == []
        key_made = at == 3 or (at == 2 and after)  # create_data_key reached the server
        assert await count_keys(key_settings, client, "alice") == int(key_made)

        seam.at = 0  # the retry runs through
        await first_write(store, method)
        assert await count_keys(key_settings, client, "alice") == 1
        assert [len(await documents(wire_database, kind, "alice")) for kind in KINDS].count(1) == 1
        assert await load_back(store, method)
        await store.close()


async def load_back(store: MongoStore[Any], method: str) -> Any:
    if method == "save_thread":
        return await store.load_thread("thr_1", ALICE)
    if method == "add_thread_item":
        return await store.load_item("thr_1", "msg_1", ALICE)
    return await store.load_attachment("atc_1", ALICE)


# ---------------------------------------------------------------- the key vault's index


async def test_ensure_indexes_creates_the_key_vault_index(
    wire_database: Any, key_settings: Encryption
) -> None:
    client = wire_database.client
    store: MongoStore[Any] = MongoStore(
        wire_database, encryption=key_settings, auto_create_indexes=False
    )
    try:
        assert not has_key_vault_index(await key_vault_indexes(key_settings, client))
        with pytest.raises(
            EncryptionConfigError, match=rf"{key_settings.key_vault_namespace} has no unique index"
        ):
            await store.save_thread(samples.thread(title=SECRET), ALICE)
        assert await documents(wire_database, "thread", "alice") == []
        assert await count_keys(key_settings, client, "alice") == 0

        await store.ensure_indexes()
        assert has_key_vault_index(await key_vault_indexes(key_settings, client))
        await store.save_thread(samples.thread(title=SECRET), ALICE)
        assert (await store.load_thread("thr_1", ALICE)).title == SECRET
    finally:
        await store.close()


async def test_the_key_vault_index_is_made_though_a_plain_store_checked_the_indexes_first(
    wire_database: Any, key_settings: Encryption
) -> None:
    """Index checks run once per client and collection set: a store without encryption
    that ran them first must not make an encrypted store on the same collections skip
    its key vault's index (its owners' first writes would then all be refused)."""
    plain: MongoStore[Any] = MongoStore(wire_database)
    await plain.save_thread(samples.thread("thr_plain"), BOB)
    store: MongoStore[Any] = MongoStore(wire_database, encryption=key_settings)
    try:
        await store.save_thread(samples.thread(title=SECRET), ALICE)
        assert (await store.load_thread("thr_1", ALICE)).title == SECRET
        # Another key vault on the same client and collections gets its index too.
        other: MongoStore[Any] = MongoStore(wire_database, encryption=fresh_encryption())
        await other.save_thread(samples.thread(title="other"), CAROL)
        assert (await other.load_thread("thr_1", CAROL)).title == "other"
        await other.close()
    finally:
        await store.close()


# ---------------------------------------------------------------- lifecycle


async def test_from_uri_encrypts_and_close_closes_the_engine_and_the_client(
    wire_server_uri: str, key_settings: Encryption
) -> None:
    name = f"chatkit_enc_{uuid.uuid4().hex[:12]}"
    store = MongoStore.from_uri(wire_server_uri, database=name, encryption=key_settings)
    assert store.encryption == key_settings
    await store.save_thread(samples.thread(title=SECRET), ALICE)
    assert (await store.load_thread("thr_1", ALICE)).title == SECRET
    [stored] = await documents(store.database, "thread", "alice")
    assert is_ciphertext(stored[Field.DATA])
    engine = store.persistence.encryption
    assert engine is not None

    await store.close()
    with pytest.raises(StoreClosedError):
        await store.load_thread("thr_1", ALICE)
    with pytest.raises(StoreClosedError):
        await store.save_thread(samples.thread(), ALICE)
    with pytest.raises(InvalidOperation, match="closed"):
        await engine.encrypt("alice", {"text": SECRET})


async def test_close_closes_an_engine_made_from_settings_but_not_the_client(
    store: MongoStore[Any], wire_database: Any
) -> None:
    await store.save_thread(samples.thread(title=SECRET), ALICE)
    engine = store.persistence.encryption
    assert engine is not None
    await store.close()
    with pytest.raises(StoreClosedError, match="closed"):
        await store.load_threads(10, None, "asc", ALICE)
    with pytest.raises(InvalidOperation, match="closed"):
        await engine.encrypt("alice", {"text": SECRET})
    assert len(await documents(wire_database, "thread", "alice")) == 1  # the client is open


async def test_a_store_leaves_an_engine_it_was_given_open(
    wire_database: Any, engine: OwnerEncryption
) -> None:
    """Stores built per request share one engine: closing one closes neither the engine
    nor the client, and the others keep reading with it."""
    first: MongoStore[Any] = MongoStore(wire_database, encryption=engine)
    second: MongoStore[Any] = MongoStore(wire_database, encryption=engine)
    assert first.encryption is engine.config
    await first.save_thread(samples.thread(title=SECRET), ALICE)
    await first.close()
    with pytest.raises(StoreClosedError):
        await first.load_thread("thr_1", ALICE)
    assert (await second.load_thread("thr_1", ALICE)).title == SECRET
    assert await engine.decrypt("alice", await engine.encrypt("alice", {"a": 1})) == {"a": 1}


def test_encryption_must_be_settings_or_an_engine() -> None:
    database: Any = mongomock_motor.AsyncMongoMockClient()["db"]
    with pytest.raises(TypeError, match="Encryption settings or an OwnerEncryption engine"):
        MongoStore(database, encryption={"local": {"key": b"k" * 96}})  # type: ignore[arg-type]


def test_encryption_needs_a_real_driver(key_settings: Encryption) -> None:
    """The in-process doubles cannot run libmongocrypt's key vault: said at once."""
    database: Any = mongomock_motor.AsyncMongoMockClient()["db"]
    with pytest.raises(TypeError, match="AsyncMongoClient or a motor AsyncIOMotorClient"):
        MongoStore(database, encryption=key_settings)
