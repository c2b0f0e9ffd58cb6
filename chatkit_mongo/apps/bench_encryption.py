"""What client-side encryption costs: per document, per Store operation, per MiB.

One run, figures printed, no thresholds (the machine decides the numbers), per driver:

1. **engine**: the ``data`` sub-document of every ChatKit item variant, a thread and an
   attachment, encrypted and decrypted through libmongocrypt, against BSON-encoding it
   alone (what an unencrypted write costs the client for the same content); a stream
   encrypted and decrypted piece by piece, and its size overhead, measured and predicted.
2. **store**: every Store operation of a ``MongoStore`` with ``encryption=`` against the
   same operation of one without, interleaved A/B pairs in one run on one server (the
   method of :mod:`chatkit_mongo.apps.bench_overhead`); the ratio encrypted/plain.
3. **bytes**: attachment bytes uploaded to and downloaded from a ``GridFSAttachmentStore``
   on each of the two stores, interleaved, in ms per MiB, and the bytes stored per MiB.

Needs a MongoDB-wire server for the key vault:
``python scripts/bench_encryption.py --uri mongodb://...``. Each run writes to a
database of its own, dropped afterwards where the server can drop one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Final

import bson
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    FileAttachment,
    InferenceOptions,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo.errors import OperationFailure

from .._codec import ITEM_ADAPTER, THREAD_ADAPTER, dump
from .._driver import maybe_await, open_client
from .._encryption import OwnerEncryption, encrypted_stream_size, ensure_key_vault_index
from ..attachments import GridFSAttachmentStore
from ..encryption import LOCAL_KEY_BYTES, Encryption
from ..schema import CollectionNames, GridFSField
from ..store import MongoStore, new_id
from .bench_overhead import OVERHEAD_OPERATIONS, median, time_interleaved

MiB = 1024 * 1024
DRIVERS = ("pymongo", "motor")
SIDES: Final = ("plain", "encrypted")
_OWNER: Final = "bench-encryption"
_PAGE: Final = 20
_REPLY_WORDS: Final = 40
DEFAULT_REPEATS: Final = 200
DEFAULT_MIB: Final = 64
DEFAULT_PAIRS: Final = 300
DEFAULT_STORE_MIB: Final = 4
DEFAULT_ROUNDS: Final = 5


async def _timed(repeats: int, call: Callable[[], Awaitable[Any]]) -> float:
    """Seconds per call, over ``repeats`` calls."""
    start = time.perf_counter()
    for _ in range(repeats):
        await call()
    return (time.perf_counter() - start) / repeats


async def _source(size: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    block = os.urandom(chunk)
    for start in range(0, size, chunk):
        yield block[: min(chunk, size - start)]


async def measure(
    engine: OwnerEncryption, documents: dict[str, dict[str, Any]], *, repeats: int, mib: int
) -> list[str]:
    """The benchmark's lines for one engine."""
    owner = "bench-owner"
    await engine.key_for_write(owner)
    lines = []
    for name, document in documents.items():

        async def encode(document: dict[str, Any] = document) -> bytes:
            return bson.encode(document)

        async def encrypt(document: dict[str, Any] = document) -> Any:
            return await engine.encrypt(owner, document)

        ciphertext = await engine.encrypt(owner, document)

        async def decrypt(ciphertext: Any = ciphertext) -> Any:
            return await engine.decrypt(owner, ciphertext)

        encoded = await _timed(repeats, encode)
        encrypted = await _timed(repeats, encrypt)
        decrypted = await _timed(repeats, decrypt)
        size = len(bson.encode(document))
        lines.append(
            f"  {name} ({size} B BSON, +{len(ciphertext) - size} B): "
            f"BSON encode {encoded * 1e6:.1f} us; encrypt {encrypted * 1e6:.0f} us "
            f"(x{encrypted / encoded:.0f}); decrypt {decrypted * 1e6:.0f} us "
            f"(x{decrypted / encoded:.0f})"
        )

    size = mib * MiB
    stored = 0
    start = time.perf_counter()
    async for piece in engine.encrypt_stream(owner, _source(size), bound_to="atc_bench"):
        stored += len(piece)
    encrypt_seconds = time.perf_counter() - start
    start = time.perf_counter()
    plain = 0
    stream = engine.encrypt_stream(owner, _source(size), bound_to="atc_bench")
    async for piece in engine.decrypt_stream(owner, stream, bound_to="atc_bench"):
        plain += len(piece)
    both_seconds = time.perf_counter() - start
    if plain != size or stored != encrypted_stream_size(size, "atc_bench"):
        raise AssertionError("the stream did not round-trip at its predicted size")
    lines.append(
        f"  bytes ({mib} MiB): encrypt {encrypt_seconds / mib * 1e3:.1f} ms/MiB, "
        f"decrypt {(both_seconds - encrypt_seconds) / mib * 1e3:.1f} ms/MiB; "
        f"stored {(stored - size) / mib:.0f} bytes more per MiB "
        f"({(stored - size) / size * 100:.3f} %)"
    )
    return lines


Call = Callable[[], Awaitable[object]]
Chore = Callable[[], Awaitable[None]]


class StoreSide:
    """One store (plain or encrypted): a thread of a page of items, a page of threads, an
    attachment, and every Store operation on them as a call through the Store API.

    Why each side does its own chores (the new item to add, the item to delete...)
    through its own store: the two sides then differ in encryption only, documents
    and sizes included.
    """

    def __init__(self, store: MongoStore[Any]) -> None:
        self.store = store
        self.context = {"user_id": _OWNER}
        self.text = " ".join(["word"] * _REPLY_WORDS)
        now = datetime.now()
        self.thread = ThreadMetadata(id=new_id("thread"), created_at=now, title="A/B")
        self.item = self._item()
        self.attachment = FileAttachment(
            id=new_id("attachment"),
            name="report.pdf",
            mime_type="application/pdf",
            thread_id=self.thread.id,
        )

    def _item(self, thread_id: str | None = None) -> ThreadItem:
        return AssistantMessageItem(
            id=new_id("message"),
            thread_id=thread_id or self.thread.id,
            created_at=datetime.now(),
            content=[AssistantMessageContent(text=self.text)],
        )

    async def seed(self) -> None:
        store, context = self.store, self.context
        for _ in range(_PAGE - 1):
            other = ThreadMetadata(id=new_id("thread"), created_at=datetime.now(), title="other")
            await store.save_thread(other, context)
        await store.save_thread(self.thread, context)
        for _ in range(_PAGE - 1):
            await store.add_thread_item(self.thread.id, self._item(), context)
        await store.add_thread_item(self.thread.id, self.item, context)
        await store.save_attachment(self.attachment, context)

    def operations(self) -> dict[str, tuple[Call, Chore | None, Chore | None]]:
        """Per operation of :data:`~chatkit_mongo.apps.bench_overhead.OVERHEAD_OPERATIONS`:
        the timed call, and the untimed chores before and after it."""
        store, context, thread_id = self.store, self.context, self.thread.id
        ready: list[Any] = []

        async def new_item() -> None:
            ready.append(self._item())

        async def stored_item() -> None:
            ready.append(self._item())
            await store.add_thread_item(thread_id, ready[-1], context)

        async def remove_item() -> None:
            await store.delete_thread_item(thread_id, ready.pop().id, context)

        async def stored_attachment() -> None:
            ready.append(self.attachment.model_copy(update={"id": new_id("attachment")}))
            await store.save_attachment(ready[-1], context)

        async def stored_thread() -> None:
            doomed = ThreadMetadata(id=new_id("thread"), created_at=datetime.now())
            await store.save_thread(doomed, context)
            for _ in range(2):
                await store.add_thread_item(doomed.id, self._item(doomed.id), context)
            ready.append(doomed)

        calls: dict[str, tuple[Call, Chore | None, Chore | None]] = {
            "load_thread": (lambda: store.load_thread(thread_id, context), None, None),
            "load_item": (lambda: store.load_item(thread_id, self.item.id, context), None, None),
            "load_attachment": (
                lambda: store.load_attachment(self.attachment.id, context),
                None,
                None,
            ),
            "load_thread_items": (
                lambda: store.load_thread_items(thread_id, None, _PAGE, "desc", context),
                None,
                None,
            ),
            "load_threads": (lambda: store.load_threads(_PAGE, None, "desc", context), None, None),
            "save_thread": (lambda: store.save_thread(self.thread, context), None, None),
            "save_item": (lambda: store.save_item(thread_id, self.item, context), None, None),
            "save_attachment": (
                lambda: store.save_attachment(self.attachment, context),
                None,
                None,
            ),
            "add_thread_item": (
                lambda: store.add_thread_item(thread_id, ready[-1], context),
                new_item,
                remove_item,
            ),
            "delete_thread_item": (
                lambda: store.delete_thread_item(thread_id, ready.pop().id, context),
                stored_item,
                None,
            ),
            "delete_attachment": (
                lambda: store.delete_attachment(ready.pop().id, context),
                stored_attachment,
                None,
            ),
            "delete_thread": (
                lambda: store.delete_thread(ready.pop().id, context),
                stored_thread,
                None,
            ),
        }
        assert tuple(calls) == OVERHEAD_OPERATIONS, "every Store operation, in the one order"
        return calls


def _both(chores: list[Chore | None]) -> Chore | None:
    present = [chore for chore in chores if chore is not None]
    if not present:
        return None

    async def run_all() -> None:
        for chore in present:
            await chore()

    return run_all


async def measure_store(
    stores: dict[str, MongoStore[Any]], pairs: int
) -> dict[str, dict[str, float]]:
    """``pairs`` interleaved pairs of every Store operation on the ``plain`` and the
    ``encrypted`` store; per operation each side's p50 in microseconds and their ratio."""
    sides = {name: StoreSide(store) for name, store in stores.items()}
    for side in sides.values():
        await side.seed()
    operations = {name: side.operations() for name, side in sides.items()}
    figures: dict[str, dict[str, float]] = {}
    for operation in OVERHEAD_OPERATIONS:
        calls = {name: operations[name][operation] for name in SIDES}
        seconds = await time_interleaved(
            {name: call for name, (call, _, _) in calls.items()},
            pairs,
            before=_both([before for _, before, _ in calls.values()]),
            after=_both([after for _, _, after in calls.values()]),
        )
        plain, encrypted = median(seconds["plain"]), median(seconds["encrypted"])
        figures[operation] = {
            "plain_p50_us": round(plain * 1e6, 1),
            "encrypted_p50_us": round(encrypted * 1e6, 1),
            "ratio": round(encrypted / plain, 3),
        }
    return figures


async def measure_bytes(
    stores: dict[str, MongoStore[Any]], mib: int, rounds: int
) -> dict[str, dict[str, float]]:
    """``rounds`` interleaved uploads of ``mib`` MiB through a ``GridFSAttachmentStore``
    on each store, then as many downloads of the last: ms per MiB each way, and the
    bytes GridFS stores per MiB. The attachments are deleted at the end."""
    size = mib * MiB
    block = os.urandom(size)
    attachment_stores = {
        name: GridFSAttachmentStore(store, upload_url=_no_upload_url, max_bytes=size)
        for name, store in stores.items()
    }
    context = {"user_id": _OWNER}
    uploaded: dict[str, list[str]] = {name: [] for name in SIDES}
    stored: dict[str, int] = {}

    def upload(name: str) -> Call:
        async def call() -> None:
            attachment = await attachment_stores[name].create_and_upload(
                "bench.bin", "application/octet-stream", _chunks(block), context
            )
            uploaded[name].append(attachment.id)

        return call

    def download(name: str) -> Call:
        async def call() -> None:
            opened = await attachment_stores[name].open_download(uploaded[name][-1], context)
            received = 0
            async for chunk in opened.chunks:
                received += len(chunk)
            if received != size:
                raise AssertionError(f"{name}: downloaded {received} of {size} bytes")

        return call

    uploads = await time_interleaved({name: upload(name) for name in SIDES}, rounds)
    downloads = await time_interleaved({name: download(name) for name in SIDES}, rounds)
    for name in SIDES:
        files = stores[name].database[stores[name].collections.bucket_files]
        found = await files.find_one({GridFSField.METADATA_ATTACHMENT_ID: uploaded[name][-1]})
        stored[name] = int(found[GridFSField.LENGTH])
        for attachment_id in uploaded[name]:
            await attachment_stores[name].delete_attachment(attachment_id, context)
    figures: dict[str, dict[str, float]] = {}
    for way, seconds in (("upload", uploads), ("download", downloads)):
        per_mib = {name: median(seconds[name]) / mib * 1e3 for name in SIDES}
        figures[way] = {
            "plain_ms_per_mib": round(per_mib["plain"], 2),
            "encrypted_ms_per_mib": round(per_mib["encrypted"], 2),
            "ratio": round(per_mib["encrypted"] / per_mib["plain"], 3),
        }
    figures["stored"] = {
        "plain_bytes_per_mib": stored["plain"] / mib,
        "encrypted_bytes_per_mib": stored["encrypted"] / mib,
        "overhead_bytes_per_mib": (stored["encrypted"] - stored["plain"]) / mib,
    }
    return figures


def _no_upload_url(attachment_id: str, context: Any) -> str:
    """The benchmark uploads directly; no two-phase upload URL is ever handed out."""
    raise AssertionError("the benchmark makes no two-phase upload")


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def store_lines(
    operations: dict[str, dict[str, float]],
    data: dict[str, dict[str, float]],
    *,
    pairs: int,
    mib: int,
    rounds: int,
) -> list[str]:
    """The store and bytes figures as a table."""
    lines = [
        f"  per Store operation, encrypted store / plain store "
        f"(p50 of {pairs} interleaved pairs, one run, one server):",
        f"    {'operation':<20} {'plain us':>10} {'encrypted us':>13} {'ratio':>7}",
    ]
    for operation, figures in operations.items():
        lines.append(
            f"    {operation:<20} {figures['plain_p50_us']:>10.1f} "
            f"{figures['encrypted_p50_us']:>13.1f} {figures['ratio']:>7.2f}"
        )
    lines.append(
        f"  attachment bytes through GridFSAttachmentStore, per MiB "
        f"(p50 of {rounds} interleaved pairs of {mib} MiB):"
    )
    lines.append(f"    {'':<20} {'plain ms':>10} {'encrypted ms':>13} {'ratio':>7}")
    for way in ("upload", "download"):
        figures = data[way]
        lines.append(
            f"    {way:<20} {figures['plain_ms_per_mib']:>10.2f} "
            f"{figures['encrypted_ms_per_mib']:>13.2f} {figures['ratio']:>7.2f}"
        )
    stored = data["stored"]
    lines.append(
        f"    stored: {stored['overhead_bytes_per_mib']:.0f} bytes more per MiB "
        f"({stored['overhead_bytes_per_mib'] / MiB * 100:.3f} %)"
    )
    return lines


def sample_documents() -> dict[str, dict[str, Any]]:
    """``data`` sub-documents as the store writes them: a thread, a user message and
    assistant replies of three lengths."""
    now = datetime.now()
    thread = ThreadMetadata(id="thr_bench", created_at=now, title="Planning the trip")
    documents = {"thread": dump(thread, THREAD_ADAPTER, "thread")[0]}
    for name, words in (("user message", 20), ("reply 300 words", 300), ("reply 3000 words", 3000)):
        text = " ".join(f"word{n % 97}" for n in range(words))
        item: ThreadItem
        if name == "user message":
            item = UserMessageItem(
                id="msg_user",
                thread_id=thread.id,
                created_at=now,
                content=[UserMessageTextContent(text=text)],
                inference_options=InferenceOptions(),
            )
        else:
            item = AssistantMessageItem(
                id="msg_reply",
                thread_id=thread.id,
                created_at=now,
                content=[AssistantMessageContent(text=text)],
            )
        documents[name] = dump(item, ITEM_ADAPTER, name)[0]
    return documents


async def run(
    uri: str,
    drivers: tuple[str, ...],
    *,
    repeats: int = DEFAULT_REPEATS,
    mib: int = DEFAULT_MIB,
    pairs: int = DEFAULT_PAIRS,
    store_mib: int = DEFAULT_STORE_MIB,
    rounds: int = DEFAULT_ROUNDS,
) -> list[str]:
    lines = []
    for driver in drivers:
        client: Any = open_client(uri) if driver == "pymongo" else AsyncIOMotorClient(uri)
        settings = Encryption.local(
            os.urandom(LOCAL_KEY_BYTES), key_vault_namespace=f"bench_{uuid.uuid4().hex[:8]}.keys"
        )
        try:
            await ensure_key_vault_index(settings, client)
            async with OwnerEncryption(settings, client) as engine:
                lines.append(f"{driver}:")
                lines += await measure(engine, sample_documents(), repeats=repeats, mib=mib)
            if pairs:
                lines += await _store_phases(client, settings, pairs, store_mib, rounds)
        finally:
            await maybe_await(client.close())
    return lines


async def _store_phases(
    client: Any, settings: Encryption, pairs: int, mib: int, rounds: int
) -> list[str]:
    """The store and bytes phases on a database of their own: the two stores in
    collections of their own, so each side meets its own documents only."""
    database = client[f"bench_encryption_{uuid.uuid4().hex[:8]}"]
    stores: dict[str, MongoStore[Any]] = {
        name: MongoStore(
            database,
            collections=CollectionNames(
                threads=f"{name}_threads",
                items=f"{name}_items",
                attachments=f"{name}_attachments",
                bucket=f"{name}_files",
            ),
            encryption=settings if name == "encrypted" else None,
        )
        for name in SIDES
    }
    notes = []
    try:
        for store in stores.values():
            await store.ensure_indexes()
        operations = await measure_store(stores, pairs)
        data = await measure_bytes(stores, mib, rounds)
    finally:
        for store in stores.values():
            await store.close()
        try:
            await client.drop_database(database.name)
        except OperationFailure as exc:  # jongodb cannot; the data was small
            said = (exc.details or {}).get("errmsg") or str(exc)
            notes.append(f"  note: the server cannot drop database {database.name} ({said})")
    return store_lines(operations, data, pairs=pairs, mib=mib, rounds=rounds) + notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI"), required=False)
    parser.add_argument("--driver", choices=DRIVERS, action="append")
    parser.add_argument(
        "--repeats", type=int, default=DEFAULT_REPEATS, help="engine calls per document"
    )
    parser.add_argument(
        "--mib", type=int, default=DEFAULT_MIB, help="MiB through the engine's stream"
    )
    parser.add_argument(
        "--pairs", type=int, default=DEFAULT_PAIRS, help="A/B pairs per Store operation (0: none)"
    )
    parser.add_argument(
        "--store-mib", type=int, default=DEFAULT_STORE_MIB, help="MiB per attachment upload"
    )
    parser.add_argument(
        "--rounds", type=int, default=DEFAULT_ROUNDS, help="uploads and downloads per side"
    )
    options = parser.parse_args(argv)
    if not options.uri:
        parser.error("--uri (or MONGODB_URI) must name a MongoDB-wire server for the key vault")
    for name in ("repeats", "mib", "store_mib", "rounds"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if options.pairs < 0:
        parser.error("--pairs must be at least 0")
    drivers = tuple(options.driver or DRIVERS)
    lines = asyncio.run(
        run(
            options.uri,
            drivers,
            repeats=options.repeats,
            mib=options.mib,
            pairs=options.pairs,
            store_mib=options.store_mib,
            rounds=options.rounds,
        )
    )
    for line in lines:
        print(line)
