"""Faults: driver errors injected mid-write, and cancellation at every await of every write.

Afterwards a write is either fully applied or not at all (``delete_thread``, which spans
three collections, is the documented exception: the thread goes last, so it stays
listed until the cascade is complete and a retry finishes it); the error that reaches
the caller is the driver's own, so retry policies keyed on its type keep working; a
retry gives exactly the state of a fault-free run, with nothing duplicated; and the
other owner's data never changes.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import pytest
from pymongo.errors import DuplicateKeyError

from chatkit_mongo import ItemConflictError, MongoStore
from chatkit_mongo.schema import MODEL_KINDS, Kind

from . import capabilities
from .conftest import RequestContext, is_server
from .fault_support import FAULTS, Faulty, Switchboard, Timing, cancel_at_every_step
from .samples import assistant_message, file_attachment, thread

ALICE: Final = RequestContext("alice")
BOB: Final = RequestContext("bob")

Write = Callable[[MongoStore[Any]], Awaitable[None]]
WRITES: Final[dict[str, tuple[Write, tuple[tuple[Kind, str], ...]]]] = {
    "save_thread": (
        lambda s: s.save_thread(thread("thr_1", title="renamed"), ALICE),
        (("thread", "update_one"),),
    ),
    "delete_thread": (
        lambda s: s.delete_thread("thr_1", ALICE),
        (
            ("attachment", "delete_many"),
            ("item", "delete_many"),
            ("thread", "delete_many"),
        ),
    ),
    "add_thread_item": (
        lambda s: s.add_thread_item("thr_1", assistant_message("msg_new"), ALICE),
        (("item", "insert_one"),),
    ),
    "save_item": (
        lambda s: s.save_item("thr_1", assistant_message("msg_1", text="edited"), ALICE),
        (("item", "update_one"),),
    ),
    "delete_thread_item": (
        lambda s: s.delete_thread_item("thr_1", "msg_1", ALICE),
        (("item", "delete_one"),),
    ),
    "save_attachment": (
        lambda s: s.save_attachment(file_attachment("atc_2", thread_id="thr_1"), ALICE),
        (("attachment", "update_one"),),
    ),
    "delete_attachment": (
        lambda s: s.delete_attachment("atc_1", ALICE),
        (("attachment", "delete_one"),),
    ),
}
"""Every write, with the driver calls it makes, in order."""

FAULT_POINTS: Final[list[tuple[str, Kind, str]]] = [
    (name, kind, method) for name, (_, calls) in WRITES.items() for kind, method in calls
]


@pytest.fixture
async def databases(client: Any, backend: str) -> AsyncIterator[Callable[[], Any]]:
    """Fresh databases on one client, dropped afterwards on the real server."""
    names: list[str] = []

    def fresh() -> Any:
        names.append(f"chatkit_fault_{uuid.uuid4().hex[:12]}")
        return client[names[-1]]

    yield fresh
    if is_server(backend) and capabilities.has("dropDatabase"):
        for name in names:
            await client.drop_database(name)


async def _seeded(database: Any, board: Switchboard | None = None) -> MongoStore[Any]:
    store: MongoStore[Any] = MongoStore(
        database, wrap_collection=None if board is None else board.wrap
    )
    for context in (ALICE, BOB):
        await store.save_thread(thread("thr_1"), context)
        await store.add_thread_item("thr_1", assistant_message("msg_1"), context)
        await store.save_attachment(file_attachment("atc_1", thread_id="thr_1"), context)
    return store


async def _snapshot(store: MongoStore[Any], owner: str) -> list[str]:
    """Every stored document of ``owner``, raw: duplicates and stray fields would show."""
    documents: list[str] = []
    for kind in MODEL_KINDS:
        collection = store.persistence.collection(kind)
        # ``_id`` dropped here, not by a projection: a retried insert gets a new one,
        # and a server may ignore projections (jongodb does).
        found = await collection.find({"owner": owner}).to_list(None)
        documents.extend(
            f"{kind} {sorted((k, v) for k, v in document.items() if k != '_id')!r}"
            for document in found
        )
    return sorted(documents)


async def _expected_after(database: Any, write: Write) -> list[str]:
    reference = await _seeded(database)
    await write(reference)
    return await _snapshot(reference, "alice")


@pytest.mark.parametrize("timing", ["request lost", "reply lost"])
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("point", FAULT_POINTS, ids=" ".join)
async def test_driver_fault_mid_write_leaves_all_or_nothing_and_a_retry_completes(
    databases: Callable[[], Any], point: tuple[str, Kind, str], fault: str, timing: Timing
) -> None:
    write_name, kind, method = point
    write, calls = WRITES[write_name]
    after = await _expected_after(databases(), write)
    board = Switchboard()
    store = await _seeded(databases(), board)
    before, bob_before = await _snapshot(store, "alice"), await _snapshot(store, "bob")
    assert before != after

    error = FAULTS[fault]
    board[kind].inner = Faulty(board[kind].inner, method, error, timing)
    with pytest.raises(type(error)) as raised:
        await write(store)
    assert raised.value is error

    state = await _snapshot(store, "alice")
    if len(calls) == 1 or (timing == "request lost" and (kind, method) == calls[0]):
        assert state in (before, after)
    elif timing == "reply lost" and (kind, method) == calls[-1]:
        assert state == after  # delete_thread's last step, the thread, was applied
    else:  # delete_thread cut short: the thread is still listed, so it can be deleted again
        assert any(document.startswith("thread ") for document in state)

    await write(store)  # the retry
    assert await _snapshot(store, "alice") == after
    assert await _snapshot(store, "bob") == bob_before


@pytest.mark.parametrize("same_content", [True, False])
async def test_add_after_another_writer_added_the_same_id(
    databases: Callable[[], Any], same_content: bool
) -> None:
    """The same content is a retry (no-op); other content is a conflict, nothing changes."""
    store = await _seeded(databases())
    racing = assistant_message("msg_new", text="hello" if same_content else "other")
    await store.add_thread_item("thr_1", racing, ALICE)
    state = await _snapshot(store, "alice")
    ours = assistant_message("msg_new")
    if same_content:
        await store.add_thread_item("thr_1", ours, ALICE)
    else:
        with pytest.raises(ItemConflictError, match="Item msg_new already exists in thread thr_1"):
            await store.add_thread_item("thr_1", ours, ALICE)
    assert await _snapshot(store, "alice") == state


async def test_duplicate_key_from_a_racing_upsert_is_read_again_and_written(
    databases: Callable[[], Any],
) -> None:
    """Two upserts of one new key can race on a server; the loser gets E11000, reads
    what the winner wrote (it must not replace what it has not read) and writes again."""
    write, _ = WRITES["save_thread"]
    board = Switchboard()
    store = await _seeded(databases(), board)
    after = await _expected_after(databases(), write)
    error = DuplicateKeyError("E11000 duplicate key error", 11000)
    faulty = Faulty(board["thread"].inner, "update_one", error, "request lost")
    board["thread"].inner = faulty
    await write(store)
    assert faulty.fired
    assert await _snapshot(store, "alice") == after


@pytest.mark.parametrize("write_name", WRITES)
async def test_cancellation_at_every_await_leaves_all_or_nothing(
    databases: Callable[[], Any], write_name: str
) -> None:
    """Cancel the write after 0, 1, 2... loop steps, until it finishes uncancelled."""
    write, _ = WRITES[write_name]
    after = await _expected_after(databases(), write)

    async def prepare() -> tuple[MongoStore[Any], list[str]]:
        store = await _seeded(databases())
        return store, await _snapshot(store, "alice")

    async def check(prepared: tuple[MongoStore[Any], list[str]], points: int) -> None:
        store, before = prepared
        assert await _snapshot(store, "alice") in (before, after), f"cancelled at step {points}"
        await write(store)
        assert await _snapshot(store, "alice") == after

    points = await cancel_at_every_step(prepare, lambda prepared: write(prepared[0]), check)
    assert points >= 1


async def test_duplicate_key_with_nothing_stored_is_not_called_other_content(
    databases: Callable[[], Any],
) -> None:
    """Regression: E11000 on insert with no item under the id (a racing writer deleted it,
    or another unique index refused it) was reported as "already exists ... with other
    content", which sent the caller looking for an item that is not there."""
    board = Switchboard()
    store = await _seeded(databases(), board)
    before = await _snapshot(store, "alice")
    error = DuplicateKeyError("E11000 duplicate key error", 11000)
    board["item"].inner = Faulty(board["item"].inner, "insert_one", error, "request lost")
    with pytest.raises(ItemConflictError, match="yet no item with this id is stored") as raised:
        await store.add_thread_item("thr_1", assistant_message("msg_new"), ALICE)
    assert raised.value.__cause__ is error
    assert await _snapshot(store, "alice") == before
    await store.add_thread_item("thr_1", assistant_message("msg_new"), ALICE)
    assert (await store.load_item("thr_1", "msg_new", ALICE)) == assistant_message("msg_new")
