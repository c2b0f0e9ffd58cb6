"""The automatic index check is single-flight: however many first calls arrive at once,
on however many event loops, one client sends one ``listIndexes`` per collection and
creates what is missing once.

Counted two ways: by a PyMongo ``CommandListener`` on a real ``AsyncMongoClient`` (the
exact commands on the wire), and on every backend by the database handle the store is
given (its public seam), which logs the index calls each collection receives.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, MutableMapping
from typing import Any, Final

import mongomock_motor
import pytest
from pymongo import AsyncMongoClient, IndexModel, monitoring

from chatkit_mongo import IndexConflictError, MongoStore
from chatkit_mongo.schema import INDEXES

from . import capabilities
from .conftest import NAMES, RequestContext, scratch_database
from .samples import thread

CALLERS: Final = 32
INDEXED_COLLECTIONS: Final = len({spec.kind for spec in INDEXES})
"""One ``listIndexes`` each: the store's three collections and the GridFS bucket's two."""
_INDEX_METHODS: Final = ("list_indexes", "create_indexes")


class _Collection:
    """A collection that logs its index calls; ``gate`` holds ``list_indexes`` until set."""

    def __init__(self, inner: Any, name: str, log: list[str], gate: threading.Event) -> None:
        self._inner, self._name, self._log, self._gate = inner, name, log, gate

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in _INDEX_METHODS:
            return attribute

        async def logged(*args: Any, **kwargs: Any) -> Any:
            self._log.append(f"{self._name}.{name}")
            await asyncio.sleep(0)  # a round trip suspends the caller, as on a network
            if not self._gate.is_set():  # a threading.Event: opened from any thread
                await asyncio.to_thread(self._gate.wait)
            result = attribute(*args, **kwargs)
            return await result if asyncio.iscoroutine(result) else result

        return logged


class LoggingDatabase:
    """The database handle a store is built on, logging every index call it passes on."""

    def __init__(self, inner: Any, gate: threading.Event | None = None) -> None:
        self._inner = inner
        self.log: list[str] = []
        self.gate = gate or threading.Event()
        if gate is None:
            self.gate.set()

    @property
    def name(self) -> str:
        name: str = self._inner.name
        return name

    @property
    def client(self) -> Any:
        return self._inner.client

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._inner[name], name, self.log, self.gate)

    def command(self, command: str | MutableMapping[str, Any], /) -> Any:
        return self._inner.command(command)

    def calls(self, method: str) -> Counter[str]:
        return Counter(entry.rsplit(".", 1)[0] for entry in self.log if entry.endswith(method))


def _first_calls(store: MongoStore[Any], context: RequestContext) -> list[Any]:
    """``CALLERS`` different first calls, as the first requests after a start-up make them."""
    calls: list[Any] = []
    for n in range(CALLERS):
        kind = n % 3
        if kind == 0:
            calls.append(store.save_thread(thread(f"thr_{n}"), context))
        elif kind == 1:
            calls.append(store.load_threads(10, None, "desc", context))
        else:
            calls.append(store.load_thread_items(f"thr_{n}", None, 10, "asc", context))
    return calls


async def test_concurrent_first_calls_check_the_indexes_once(
    database: Any, alice: RequestContext
) -> None:
    logging = LoggingDatabase(database)
    store: MongoStore[Any] = MongoStore(logging)
    await asyncio.gather(*_first_calls(store, alice))

    each_once = dict.fromkeys({NAMES.name_of(spec.kind) for spec in INDEXES}, 1)
    assert logging.calls("list_indexes") == each_once
    assert logging.calls("create_indexes") == each_once, "a fresh database misses them all"
    report = await store.ensure_indexes()  # explicit: checks again and finds them all
    assert {status.state for status in report} == {"present"}

    logging.log.clear()
    await asyncio.gather(*_first_calls(MongoStore(logging), alice))
    assert logging.log == [], "another store on the same client checks nothing"


async def test_a_failed_check_fails_every_caller_waiting_on_it_and_the_next_call_retries(
    database: Any, alice: RequestContext
) -> None:
    await database[NAMES.items].create_indexes(
        [IndexModel([("owner", 1)], name="owner_thread_sort")]
    )
    logging = LoggingDatabase(database)
    store: MongoStore[Any] = MongoStore(logging)

    results = await asyncio.gather(*_first_calls(store, alice), return_exceptions=True)
    assert all(isinstance(result, IndexConflictError) for result in results), results
    assert sum(logging.calls("list_indexes").values()) == INDEXED_COLLECTIONS
    assert logging.calls("create_indexes") == {}, "nothing is created while a conflict stands"

    with pytest.raises(IndexConflictError, match="owner_thread_sort"):
        await store.load_threads(10, None, "desc", alice)
    assert sum(logging.calls("list_indexes").values()) == 2 * INDEXED_COLLECTIONS


async def test_a_cancelled_first_caller_hands_the_check_over(
    database: Any, alice: RequestContext
) -> None:
    logging = LoggingDatabase(database, gate=threading.Event())
    store: MongoStore[Any] = MongoStore(logging)
    first = asyncio.ensure_future(store.save_thread(thread("thr_first"), alice))
    for _ in range(100):  # until the first caller is inside its check
        if logging.log:
            break
        await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(call) for call in _first_calls(store, alice)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(logging.log) == 1, "the others wait for the check under way"

    first.cancel()
    logging.gate.set()
    await asyncio.gather(*waiting)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert sum(logging.calls("list_indexes").values()) == 1 + INDEXED_COLLECTIONS
    threads = await store.load_threads(100, None, "asc", alice)
    assert [t.id for t in threads.data] == sorted(f"thr_{n}" for n in range(0, CALLERS, 3))


def test_callers_on_other_event_loops_wait_for_the_check_under_way() -> None:
    """One Motor-shaped client and store shared by two threads, each with its own loop."""
    client: Any = mongomock_motor.AsyncMongoMockClient()
    logging = LoggingDatabase(client["chatkit"], gate=threading.Event())
    store: MongoStore[Any] = MongoStore(logging)
    alice = RequestContext("alice")
    second_parked = threading.Event()
    failures: list[BaseException] = []

    def in_thread(main: Callable[[], Any]) -> threading.Thread:
        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:
                failures.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        return worker

    async def first() -> None:
        await store.save_thread(thread("thr_a"), alice)

    async def second() -> None:
        task = asyncio.ensure_future(store.save_thread(thread("thr_b"), alice))
        for _ in range(20):  # as far as it gets without the first thread's check
            await asyncio.sleep(0)
        second_parked.set()
        await task

    first_thread = in_thread(first)
    while not logging.log:  # the first thread is inside its check
        threading.Event().wait(0.001)
    second_thread = in_thread(second)
    assert second_parked.wait(10)
    assert len(logging.log) == 1, "the second loop waits instead of checking too"
    logging.gate.set()
    first_thread.join(10)
    second_thread.join(10)

    assert failures == []
    assert sum(logging.calls("list_indexes").values()) == INDEXED_COLLECTIONS
    assert sum(logging.calls("create_indexes").values()) == INDEXED_COLLECTIONS


class _CommandNames(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Only starts are counted."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Only starts are counted."""


@pytest.mark.parametrize("backend", ["server-pymongo"], indirect=True)
async def test_the_wire_carries_one_index_check_for_concurrent_first_calls(
    backend: str, alice: RequestContext
) -> None:
    """On a real client, counted by the driver's own command events."""
    listener = _CommandNames()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        capabilities.server().uri, event_listeners=[listener]
    )
    try:
        async with scratch_database(client, backend) as database:
            await asyncio.gather(*_first_calls(MongoStore(database), alice))
            sent = dict(listener.names)
    finally:
        await client.close()
    assert sent["listIndexes"] == INDEXED_COLLECTIONS
    assert sent["createIndexes"] == INDEXED_COLLECTIONS
    saves = len(range(0, CALLERS, 3))
    assert sent["update"] == saves
    assert sent["find"] == CALLERS  # one read per call: a save reads what it replaces
