"""Concurrent ChatKit users through a fault-injecting proxy (``tests/fault_proxy.py``),
on both real drivers, against a standalone server and a replica set.

Each user, through ChatKit's server as an application runs it, uploads attachments
(direct and two-phase), sends messages with them, deletes some attachments and some
threads, and retries what failed as a client would. The proxy meanwhile resets
connections mid-reply, drops replies after the server executed the command, stalls
past the socket timeout and delays replies. Afterwards, reading directly from the
server (no proxy):

1. no acknowledged write is lost: every thread, message and attachment a caller was
   told about is there, whole, unless a later acknowledged delete removed it;
2. nothing is duplicated: no message text twice in a thread, no upload's bytes twice;
   every attachment stored is one a caller received (or nothing of it is left);
3. no attachment a caller holds is left in an upload state; what no caller holds is
   pending with ``pending_since``, and the sweep removes it once past its cut-off;
4. only documented errors (``UploadConflictError``) or the drivers' connection
   errors reached callers;
5. the event loop never ran code for over 100 ms at a stretch (CPU time of the loop's
   thread between two ticks of a watchdog: time the machine gave to others, and the
   garbage collector's passes over the whole test process, are not the code's; both
   are reported).
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final
from urllib.parse import urlsplit

import pytest
from bson import Int64
from chatkit.server import NonStreamingResult, StreamingResult
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, PyMongoError

from chatkit_mongo import GridFSAttachmentStore, MongoStore, UploadConflictError
from chatkit_mongo.schema import Field, UploadField

from . import capabilities, jongodb
from .attachment_support import make_attachments
from .conftest import NAMES, RequestContext, close_client
from .fault_proxy import FaultProxy, FaultRates
from .test_chatkit_server import EchoServer

SEED: Final = 26
ALICE: Final = RequestContext("alice")
USERS: Final = 8
ROUNDS: Final = 4
LEASE: Final = timedelta(seconds=1)
"""The upload lease of the run: short, so a retry after a failed hand-back waits little."""
SOCKET_TIMEOUT_MS: Final = 1500
RATES: Final = FaultRates(
    reset=0.03, drop=0.03, stall=0.005, max_latency=0.05, stall_seconds=SOCKET_TIMEOUT_MS / 400
)
"""Per command reply: 3% resets, 3% drops, 0.5% stalls of 3.75 s (past the 1.5 s socket
timeout), and 0-50 ms of latency on the rest."""
ATTEMPTS: Final = 12
ALLOWED: Final = (ConnectionFailure, UploadConflictError)
"""What may reach a caller: the drivers' connection errors, and the documented 409."""


@dataclass
class Ledger:
    """What callers were told (acknowledged), and every error that reached them."""

    threads: set[tuple[str, str]] = field(default_factory=set)
    deleted_threads: set[tuple[str, str]] = field(default_factory=set)
    messages: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    attachments: dict[tuple[str, str], bytes] = field(default_factory=dict)
    """(owner, attachment id) -> bytes, for every upload a caller was told finished."""
    deleted_attachments: set[tuple[str, str]] = field(default_factory=set)
    """Deleted by an acknowledged request: gone."""
    with_deleted_thread: set[tuple[str, str]] = field(default_factory=set)
    """Sent with a message to a thread deleted since: gone if the message's turn gave
    them the thread before it failed (or succeeded), else still there."""
    maybe_deleted: set[tuple[str, str]] = field(default_factory=set)
    """Whose delete, or whose thread's delete, was tried and never acknowledged: a delete
    cut short after its first step leaves the metadata without its bytes (the bytes go
    first, see ``delete_attachment``), or nothing; either is allowed, a duplicate not."""
    maybe_deleted_threads: set[tuple[str, str]] = field(default_factory=set)
    """Threads whose delete was tried and never acknowledged: there, partly or not."""
    attached: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """(owner, thread id) -> the attachments sent with its messages, acknowledged or not."""
    sent: dict[bytes, str] = field(default_factory=dict)
    """Every upload's bytes (unique per upload) -> its owner, acknowledged or not."""
    errors: Counter[str] = field(default_factory=Counter)
    unexpected: list[BaseException] = field(default_factory=list)

    def failed(self, error: BaseException) -> None:
        if isinstance(error, ALLOWED):
            self.errors[type(error).__name__] += 1
        else:
            self.unexpected.append(error)


async def _streamed(server: EchoServer, request: dict[str, Any], ctx: RequestContext) -> list[Any]:
    result = await server.process(json.dumps(request), ctx)
    assert isinstance(result, StreamingResult)
    events = []
    async for chunk in result:
        for line in chunk.decode().splitlines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


async def _call(server: EchoServer, request: dict[str, Any], ctx: RequestContext) -> Any:
    result = await server.process(json.dumps(request), ctx)
    assert isinstance(result, NonStreamingResult)
    return json.loads(result.json)


async def _until_done(ledger: Ledger, attempt: Callable[[], Any]) -> Any:
    """``attempt()`` retried as a client retries: after a connection error, a moment
    later; after a 409 "under way", once the lease has run out. None if it never
    succeeded (the caller then holds nothing)."""
    for _ in range(ATTEMPTS):
        try:
            return await attempt()
        except UploadConflictError as exc:
            ledger.failed(exc)
            if "already has its bytes" in str(exc):
                return exc
            await asyncio.sleep(LEASE.total_seconds())
        except Exception as exc:  # every error is sorted into the ledger
            ledger.failed(exc)
            await asyncio.sleep(0.2)
    return None


async def _user(
    number: int, server: EchoServer, attachments: GridFSAttachmentStore[Any], ledger: Ledger
) -> None:
    owner = f"user{number}"
    ctx = RequestContext(owner)
    rng = random.Random(SEED * 1000 + number)
    thread_id: str | None = None
    for round_ in range(ROUNDS):
        direct = f"{owner} direct {round_} ".encode() * rng.randint(1, 30_000)
        ledger.sent[direct] = owner
        uploaded = await _until_done(
            ledger, partial(attachments.create_and_upload, "d.txt", "text/plain", direct, ctx)
        )
        if uploaded is not None:
            ledger.attachments[owner, uploaded.id] = direct
        two_phase = f"{owner} two-phase {round_} ".encode() * rng.randint(1, 20_000)
        ledger.sent[two_phase] = owner
        params = {"name": "t.txt", "size": len(two_phase), "mime_type": "text/plain"}
        created = await _until_done(
            ledger, partial(_call, server, {"type": "attachments.create", "params": params}, ctx)
        )
        if created is not None:
            done = await _until_done(
                ledger,
                partial(attachments.upload, created["id"], two_phase, ctx),
            )
            if done is not None:
                ledger.attachments[owner, created["id"]] = two_phase
        ids = [i for (o, i) in ledger.attachments if o == owner]
        text = f"{owner} says {round_}"
        message = {
            "content": [{"type": "input_text", "text": text}],
            "attachments": ids[-1:],
            "inference_options": {},
        }
        if thread_id is None:
            request: dict[str, Any] = {"type": "threads.create", "params": {"input": message}}
        else:
            request = {
                "type": "threads.add_user_message",
                "params": {"thread_id": thread_id, "input": message},
            }
        try:
            events = await _streamed(server, request, ctx)
        except Exception as exc:  # sorted into the ledger
            ledger.failed(exc)
            events = []
        for event in events:
            if event["type"] == "thread.created":
                thread_id = event["thread"]["id"]
                ledger.threads.add((owner, thread_id))
        if thread_id is not None:
            ledger.attached.setdefault((owner, thread_id), set()).update(ids[-1:])
        for event in events:
            if event["type"] == "thread.item.done" and thread_id is not None:
                ledger.messages.setdefault((owner, thread_id), []).append(
                    event["item"]["content"][0]["text"]
                )
        if ids and rng.random() < 0.3:
            await _delete_attachment(server, ctx, ledger, ids[0])
        if thread_id is not None and round_ == ROUNDS - 2 and number % 3 == 0:
            await _delete_thread(server, ctx, ledger, thread_id)
            thread_id = None  # deleted, or maybe: the next message starts a thread


async def _delete_attachment(
    server: EchoServer, ctx: RequestContext, ledger: Ledger, doomed: str
) -> None:
    request = {"type": "attachments.delete", "params": {"attachment_id": doomed}}
    if await _until_done(ledger, partial(_call, server, request, ctx)) is not None:
        ledger.deleted_attachments.add((ctx.user_id, doomed))
    else:
        ledger.maybe_deleted.add((ctx.user_id, doomed))


async def _delete_thread(
    server: EchoServer, ctx: RequestContext, ledger: Ledger, thread_id: str
) -> None:
    """Acknowledged or not, what the delete may have removed is noted (the cascade
    removes attachments and items before the thread)."""
    request = {"type": "threads.delete", "params": {"thread_id": thread_id}}
    done = await _until_done(ledger, partial(_call, server, request, ctx)) is not None
    key = (ctx.user_id, thread_id)
    (ledger.deleted_threads if done else ledger.maybe_deleted_threads).add(key)
    gone = ledger.with_deleted_thread if done else ledger.maybe_deleted
    for attachment_id in ledger.attached.get(key, ()):
        gone.add((ctx.user_id, attachment_id))


class Watchdog:
    """Ticks every 10 ms; notes the most CPU time the loop's thread spent between two
    ticks running code (code holding the loop), the longest wall-clock gap (which
    includes time the machine gave to other processes), and the longest garbage
    collection on the loop's thread.

    Why the collector's time is not the code's: a full collection walks every object
    of the process, here the whole test session's (pytest, hypothesis, every module
    imported), and took up to 600 ms on this machine whichever thread triggered it; an
    application's process holds far fewer objects. It is reported apart."""

    def __init__(self) -> None:
        self.most_cpu = self.most_wall = self.most_gc = 0.0
        self._collected = self._collecting_since = 0.0
        self._loop_thread = threading.get_ident()
        self._task: asyncio.Task[None] | None = None

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if threading.get_ident() != self._loop_thread:
            return
        if phase == "start":
            self._collecting_since = time.thread_time()
        else:
            spent = time.thread_time() - self._collecting_since
            self._collected += spent
            self.most_gc = max(self.most_gc, spent)

    async def _run(self) -> None:
        while True:
            wall, cpu, collected = time.monotonic(), time.thread_time(), self._collected
            await asyncio.sleep(0.01)
            self.most_wall = max(self.most_wall, time.monotonic() - wall - 0.01)
            running = time.thread_time() - cpu - (self._collected - collected)
            self.most_cpu = max(self.most_cpu, running)

    def start(self) -> None:
        gc.callbacks.append(self._on_collection)
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        gc.callbacks.remove(self._on_collection)
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task


def _retryable_writes(uri: str) -> str | None:
    """Why the server at ``uri`` has no retryable writes, or None if it has them: drivers
    retry a write only when ``hello`` names a replica set (or a mongos), and the server
    must answer a resent ``txnNumber`` with its recorded result, not run it again."""
    lacking = []
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri, directConnection=True, serverSelectionTimeoutMS=5000) as client:
        hello = client.admin.command("hello")
        if "setName" not in hello and hello.get("msg") != "isdbgrid":
            lacking.append("its hello names no replica set, so drivers send no txnNumber")
        database: Any = client[f"chatkit_txn_{random.getrandbits(32):x}"]
        with client.start_session() as session:
            command = {
                "insert": "probe",
                "documents": [{"_id": 1}],
                "lsid": session.session_id,
                "txnNumber": Int64(1),
            }
            database.command(command)
            try:
                database.command(command)
            except PyMongoError as exc:
                answer = str(exc).split(", full error")[0]
                lacking.append(f"an insert resent with its txnNumber is run again ({answer})")
    return "; ".join(lacking) or None


@pytest.fixture(params=["standalone", "replica set"])
def topology(request: pytest.FixtureRequest) -> Any:
    """The server the proxy forwards to: the session's one (standalone), or a jongodb of
    this test's started with ``--replica-set-name=rs0``, skipped unless it honours
    retryable writes."""
    if request.param == "standalone":
        yield capabilities.server().uri
        return
    process, uri = jongodb.start("--replica-set-name=rs0")
    try:
        lacking = _retryable_writes(uri)
        if lacking is not None:
            pytest.skip(f"jongodb --replica-set-name=rs0 has no retryable writes: {lacking}")
        yield uri
    finally:
        jongodb.stop(process)


def _client(driver: str, address: str, **overrides: Any) -> Any:
    uri = f"mongodb://{address}/?directConnection=true"
    options: dict[str, Any] = {
        "socketTimeoutMS": SOCKET_TIMEOUT_MS,
        "connectTimeoutMS": SOCKET_TIMEOUT_MS,
        "serverSelectionTimeoutMS": 10_000,
        **overrides,
    }
    if driver == "server-pymongo":
        return AsyncMongoClient(uri, **options)
    return AsyncIOMotorClient(uri, **options)


@pytest.mark.parametrize("driver", ["server-pymongo", "server-motor"])
async def test_users_through_a_faulty_network_lose_nothing_and_duplicate_nothing(
    driver: str, topology: str
) -> None:
    upstream = urlsplit(topology)
    assert upstream.hostname is not None
    assert upstream.port is not None
    proxy = FaultProxy((upstream.hostname, upstream.port), SEED, RATES)
    proxy.start()
    name = f"chatkit_faults_{random.getrandbits(48):x}"
    faulty_client = _client(driver, proxy.address)
    direct_client = _client(driver, f"{upstream.hostname}:{upstream.port}")
    store: MongoStore[Any] = MongoStore(faulty_client[name])
    attachments = make_attachments(store, upload_lease=LEASE)
    server = EchoServer(store, attachments)
    await store.ensure_indexes()
    ledger = Ledger()
    watchdog = Watchdog()
    try:
        proxy.faulty = True
        watchdog.start()
        await asyncio.gather(*(_user(n, server, attachments, ledger) for n in range(USERS)))
        await watchdog.stop()
        proxy.faulty = False
        await _check(direct_client[name], ledger)
    finally:
        await store.close()
        await close_client(faulty_client)
        await close_client(direct_client)
        proxy.close()
    print(
        f"\n{driver} / {topology}: faults {dict(proxy.counts)}; errors that reached callers "
        f"{dict(ledger.errors)}; loop: most CPU between ticks {watchdog.most_cpu * 1000:.1f} ms, "
        f"longest wall gap {watchdog.most_wall * 1000:.1f} ms, longest garbage collection on "
        f"its thread {watchdog.most_gc * 1000:.1f} ms"
    )
    assert not ledger.unexpected, ledger.unexpected
    assert watchdog.most_cpu < 0.1
    injected = proxy.counts
    assert injected["reset mid-reply"]
    assert injected["reply dropped after execution"]


async def _check(database: Any, ledger: Ledger) -> None:
    """The invariants of the module docstring, read directly from the server."""
    store: MongoStore[Any] = MongoStore(database)
    attachments = make_attachments(store, upload_lease=LEASE)
    items = await database[NAMES.items].find({}).to_list(None)
    threads = {
        (t[Field.OWNER], t[Field.THREAD_ID])
        for t in await database[NAMES.threads].find({}).to_list(None)
    }
    # 1. acknowledged threads and messages are there, unless deleted
    assert ledger.threads - ledger.deleted_threads - ledger.maybe_deleted_threads <= threads
    texts: dict[tuple[str, str], list[str]] = {}
    for item in items:
        content = item[Field.DATA].get("content") or [{}]
        texts.setdefault((item[Field.OWNER], item[Field.THREAD_ID]), []).append(
            content[0].get("text", "")
        )
    for key, acknowledged in ledger.messages.items():
        if key not in ledger.deleted_threads | ledger.maybe_deleted_threads:
            assert set(acknowledged) <= set(texts.get(key, [])), key
    # 2. no message twice in a thread
    for key, stored in texts.items():
        assert len(stored) == len(set(stored)), (key, stored)
    # 2. and 3. every attachment stored: complete ones hold one upload's bytes, once
    documents = await database[NAMES.attachments].find({}).to_list(None)
    seen: Counter[bytes] = Counter()
    for document in documents:
        owner, attachment_id = document[Field.OWNER], document[Field.ATTACHMENT_ID]
        if UploadField.STATE in document:
            assert (owner, attachment_id) not in ledger.attachments, "held, yet pending"
            assert isinstance(document[UploadField.PENDING_SINCE], datetime)
            continue
        if document.get(UploadField.FILE_ID) is None:  # a delete cut short after the bytes
            assert (owner, attachment_id) in ledger.maybe_deleted, "bytes gone, not deleted"
            continue
        data = await attachments.read_bytes(attachment_id, RequestContext(owner))
        assert ledger.sent.get(data) == owner
        seen[data] += 1
        assert (owner, attachment_id) not in ledger.deleted_attachments
    assert [data for data, count in seen.items() if count > 1] == []
    for (owner, attachment_id), data in ledger.attachments.items():
        if (owner, attachment_id) in ledger.deleted_attachments:
            assert seen[data] == 0, f"deleted attachment {attachment_id} of {owner} is there"
        elif (owner, attachment_id) in ledger.maybe_deleted:
            assert seen[data] <= 1
        elif (owner, attachment_id) not in ledger.with_deleted_thread:
            assert seen[data] == 1, f"acknowledged attachment {attachment_id} of {owner} is lost"
    # 3. what no caller holds is removed by the sweep past its cut-off (the sweep takes
    # find_one_and_delete's findAndModify form, which jongodb lacks)
    if not capabilities.has("find_one_and_delete"):
        return
    await attachments.sweep_orphans(now=datetime.now(UTC) + timedelta(days=2))
    left = await database[NAMES.attachments].count_documents({UploadField.STATE: {"$exists": True}})
    assert left == 0


# ------------------------------------------------------------------- the proxy itself


async def _through(proxy: FaultProxy, driver: str, **options: Any) -> tuple[Any, Any, str]:
    """A client through ``proxy``, one straight to the server, and a fresh database name."""
    upstream = urlsplit(capabilities.server().uri)
    proxy.upstream = (str(upstream.hostname), int(upstream.port or 0))
    proxy.start()
    return (
        _client(driver, proxy.address, **options),
        _client(driver, f"{upstream.hostname}:{upstream.port}"),
        f"chatkit_proxy_{random.getrandbits(48):x}",
    )


@pytest.mark.parametrize("driver", ["server-pymongo", "server-motor"])
async def test_a_direct_upload_whose_completion_reply_the_proxy_drops_is_stored_once(
    driver: str,
) -> None:
    """The reply to the completion (the direct upload's second findAndModify, after the
    claim) is dropped on the wire after the server applied it: the upload still returns
    the attachment, and the server holds it once, whole."""
    proxy = FaultProxy(("", 0), SEED, FaultRates())
    faulty, direct, name = await _through(proxy, driver)
    store: MongoStore[Any] = MongoStore(faulty[name])
    attachments = make_attachments(store)
    try:
        await store.ensure_indexes()
        data = b"sent once " * 40_000
        proxy.lose_reply("findAndModify", after=1)
        attachment = await attachments.create_and_upload("a.txt", "text/plain", data, ALICE)
        assert proxy.counts["planned reply lost"] == 1
        stored = await direct[name][NAMES.attachments].find({}).to_list(None)
        assert [d[Field.ATTACHMENT_ID] for d in stored] == [attachment.id]
        assert UploadField.STATE not in stored[0]
        assert await attachments.read_bytes(attachment.id, ALICE) == data
    finally:
        await store.close()
        await close_client(faulty)
        await close_client(direct)
        proxy.close()


@pytest.mark.parametrize(
    ("rates", "error", "fault"),
    [
        (FaultRates(reset=1), AutoReconnect, "reset mid-reply"),
        (FaultRates(drop=1), AutoReconnect, "reply dropped after execution"),
        (FaultRates(stall=1, stall_seconds=1), NetworkTimeout, "stalled past the socket timeout"),
    ],
)
@pytest.mark.parametrize("driver", ["server-pymongo", "server-motor"])
async def test_each_fault_reaches_the_driver_after_the_server_executed_the_command(
    driver: str, rates: FaultRates, error: type[Exception], fault: str
) -> None:
    proxy = FaultProxy(("", 0), SEED, rates)
    faulty, direct, name = await _through(proxy, driver, socketTimeoutMS=300)
    try:
        await faulty[name]["probe"].insert_one({"_id": "warm-up"})
        proxy.faulty = True
        with pytest.raises(error):
            await faulty[name]["probe"].insert_one({"_id": "faulted"})
        proxy.faulty = False
        assert proxy.counts[fault] == 1
        assert await direct[name]["probe"].count_documents({"_id": "faulted"}) == 1
    finally:
        await close_client(faulty)
        await close_client(direct)
        proxy.close()


async def test_latency_delays_replies_within_its_bound_and_the_seed_fixes_the_choices() -> None:
    def draws(seed: int) -> list[float]:
        generator = random.Random(seed)
        return [generator.random() for _ in range(5)]

    assert draws(SEED) == draws(SEED)
    proxy = FaultProxy(("", 0), SEED, FaultRates(max_latency=0.05))
    faulty, direct, name = await _through(proxy, "server-pymongo")
    try:
        await faulty[name]["probe"].insert_one({"_id": 0})
        proxy.faulty = True
        started = time.monotonic()
        for number in range(1, 11):
            await faulty[name]["probe"].insert_one({"_id": number})
        elapsed = time.monotonic() - started
        assert proxy.counts["replies delayed"] == 10
        assert elapsed < 10 * 0.05 + 1
        assert await direct[name]["probe"].count_documents({}) == 11
    finally:
        await close_client(faulty)
        await close_client(direct)
        proxy.close()
