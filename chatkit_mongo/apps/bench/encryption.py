"""Phase (``--encryption``): what client-side encryption costs, on the run's driver.

1. **store**: every Store operation, and a whole ChatKit turn, on a ``MongoStore`` with
   ``encryption=`` against the same on one without, in interleaved A/B pairs
   (:meth:`.harness.Run.ab`); the ratio encrypted/plain.
2. **bytes**: attachment bytes uploaded to and downloaded from a
   ``GridFSAttachmentStore`` on each of the two stores, interleaved, and the bytes
   stored per MiB.
3. **engine**: the ``data`` of a thread and of items of three lengths, as the plain
   store wrote them, encrypted and decrypted by the engine alone, against BSON-encoding
   them (what a plain write costs the client for the same content); and a stream of
   attachment bytes.

Needs a server, for the key vault. Why the key vault is a collection of the run's own
database: the run drops that database afterwards (or, where the server cannot, empties
what it wrote), so no key-vault database is left behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

import bson
from chatkit.types import ThreadItem

from ... import _queries as queries
from ...attachments import GridFSAttachmentStore
from ...encryption import LOCAL_KEY_BYTES, Encryption
from ...schema import CollectionNames, Field, GridFSField, Kind
from ...store import MongoStore
from .calls import QUESTION_WORDS, StoreCalls, assistant_message, user_message, words
from .harness import BenchSettings, Phase, Run, Side, beside

MiB: Final = 1024 * 1024
KEY_VAULT: Final = "bench_key_vault"
SIDES: Final = ("encrypted", "plain")
OWNER: Final = "bench-encryption"
ROUNDS: Final = 5
"""Interleaved uploads (and downloads) per side: each moves ``--mib`` MiB."""
_BOUND_TO: Final = "atc_bench"


def writes(base: CollectionNames, settings: BenchSettings) -> list[str]:
    names = [name for side in SIDES for name in beside(base, side).by_kind().values()]
    return [*names, KEY_VAULT]


async def measure(run: Run) -> dict[str, Any]:
    # Why here: the engine loads libmongocrypt's bindings and the cloud providers' SDKs,
    # a second that ``bench --help`` and every other phase do without.
    from ..._encryption import ensure_key_vault_index  # noqa: PLC0415

    database = run.store.database
    settings = Encryption.local(
        os.urandom(LOCAL_KEY_BYTES), key_vault_namespace=f"{database.name}.{KEY_VAULT}"
    )
    await ensure_key_vault_index(settings, database.client)
    stores = {
        side: run.new_store(
            beside(run.store.collections, side), settings if side == "encrypted" else None
        )
        for side in SIDES
    }
    calls = {side: StoreCalls(store, OWNER, run.settings) for side, store in stores.items()}
    for side in SIDES:
        await stores[side].ensure_indexes()
        await calls[side].seed()
    operations = {}
    if run.settings.pairs:
        label = "encryption: Store operations, encrypted store vs plain store"
        encrypted, plain = (calls[side].sides() for side in SIDES)
        operations = await run.ab(label, encrypted, plain, SIDES)
    return {
        "encryption": {
            "operations": operations,
            "bytes": await _bytes(run, stores),
            "engine": await _engine(run, settings, calls["plain"]),
        }
    }


async def _bytes(run: Run, stores: dict[str, MongoStore[Any]]) -> dict[str, Any]:
    """Uploads and downloads of ``--mib`` MiB through each side's attachment store."""
    size, context = run.settings.mib * MiB, {"user_id": OWNER}
    block = os.urandom(size)
    uploaded: dict[str, list[str]] = {side: [] for side in SIDES}
    sides: dict[str, dict[str, Side]] = {}
    for side, store in stores.items():
        attachments = GridFSAttachmentStore(store, upload_url=_no_upload_url, max_bytes=size)

        async def upload(
            side: str = side, attachments: GridFSAttachmentStore = attachments
        ) -> None:
            added = await attachments.create_and_upload(
                "bench.bin", "application/octet-stream", _chunks(block), context
            )
            uploaded[side].append(added.id)

        async def download(
            side: str = side, attachments: GridFSAttachmentStore = attachments
        ) -> None:
            opened = await attachments.open_download(uploaded[side][-1], context)
            received = sum([len(chunk) async for chunk in opened.chunks])
            if received != size:
                raise AssertionError(f"{side}: downloaded {received} of {size} bytes")

        sides[side] = {"upload": Side(upload), "download": Side(download)}
    label = f"encryption: attachment bytes, {run.settings.mib} MiB each way"
    figures: dict[str, Any] = await run.ab(label, sides["encrypted"], sides["plain"], SIDES, ROUNDS)
    for side, store in stores.items():
        files = store.database[store.collections.bucket_files]
        found = await files.find_one({GridFSField.METADATA_ATTACHMENT_ID: uploaded[side][-1]})
        figures[f"{side}_stored_bytes_per_mib"] = int(found[GridFSField.LENGTH]) / run.settings.mib
        for attachment_id in uploaded[side]:
            await store.delete_attachment(attachment_id, context)
    return {"mib": run.settings.mib, **figures}


async def _engine(run: Run, settings: Encryption, plain: StoreCalls) -> dict[str, Any]:
    """The engine's cost per document, and per MiB of a stream."""
    store, thread_id = plain.store, plain.thread_id
    items: dict[str, ThreadItem] = {
        "user message": user_message(thread_id, words(QUESTION_WORDS)),
        "reply 300 words": assistant_message(thread_id, words(300)),
        "reply 3000 words": assistant_message(thread_id, words(3000)),
    }
    for item in items.values():
        await store.add_thread_item(thread_id, item, plain.context)
    keys: dict[str, tuple[Kind, dict[str, Any]]] = {
        "thread": ("thread", queries.thread_filter(OWNER, thread_id))
    }
    for name, item in items.items():
        keys[name] = ("item", queries.item_filter(OWNER, thread_id, item.id))
    run.progress.phase("encryption: the engine alone", len(keys) + 1)
    from ..._encryption import OwnerEncryption  # noqa: PLC0415  (see measure)

    repeats, figures = max(run.settings.pairs, 1), {}
    async with OwnerEncryption(settings, store.database.client) as engine:
        for name, (kind, key) in keys.items():
            found = await store.database[store.collections.name_of(kind)].find_one(key)
            document: dict[str, Any] = found[Field.DATA]
            ciphertext = await engine.encrypt(OWNER, document)

            async def encode(document: dict[str, Any] = document) -> bytes:
                return bson.encode(document)

            async def encrypt(document: dict[str, Any] = document) -> object:
                return await engine.encrypt(OWNER, document)

            async def decrypt(ciphertext: Any = ciphertext) -> object:
                return await engine.decrypt(OWNER, ciphertext)

            figures[name] = {
                "bson_bytes": len(bson.encode(document)),
                "ciphertext_bytes": len(ciphertext),
                "bson_encode_us": await _per_call(repeats, encode),
                "encrypt_us": await _per_call(repeats, encrypt),
                "decrypt_us": await _per_call(repeats, decrypt),
            }
            run.progress.step()
        size = run.settings.mib * MiB
        start, stored, source = time.perf_counter(), 0, _chunks(os.urandom(size))
        async for piece in engine.encrypt_stream(OWNER, source, bound_to=_BOUND_TO):
            stored += len(piece)
        encrypted = time.perf_counter() - start
        stream = engine.encrypt_stream(OWNER, _chunks(os.urandom(size)), bound_to=_BOUND_TO)
        start, plain_size = time.perf_counter(), 0
        async for piece in engine.decrypt_stream(OWNER, stream, bound_to=_BOUND_TO):
            plain_size += len(piece)
        both = time.perf_counter() - start
        if plain_size != size:
            raise AssertionError(f"the stream of {size} bytes came back as {plain_size}")
        figures["stream"] = {
            "encrypt_ms_per_mib": round(encrypted / run.settings.mib * 1e3, 2),
            "decrypt_ms_per_mib": round((both - encrypted) / run.settings.mib * 1e3, 2),
            "overhead_bytes_per_mib": round((stored - size) / run.settings.mib),
        }
        run.progress.step()
    return figures


async def _per_call(repeats: int, call: Callable[[], Awaitable[object]]) -> float:
    """Microseconds per call, over ``repeats`` calls one after another."""
    start = time.perf_counter()
    for _ in range(repeats):
        await call()
    return round((time.perf_counter() - start) / repeats * 1e6, 1)


def _no_upload_url(attachment_id: str, context: Any) -> str:
    """The benchmark uploads directly; no two-phase upload URL is ever handed out."""
    raise AssertionError("the benchmark makes no two-phase upload")


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def table(report: dict[str, Any]) -> list[str]:
    figures = report["encryption"]
    lines = [f"{'encrypted / plain store':<24} {'plain us':>10} {'encrypted us':>13} {'ratio':>7}"]
    for operation, row in figures["operations"].items():
        lines.append(
            f"{operation:<24} {row['plain_p50_us']:>10.1f} "
            f"{row['encrypted_p50_us']:>13.1f} {row['ratio']:>7.2f}"
        )
    data, mib = figures["bytes"], figures["bytes"]["mib"]
    lines.append(f"{'attachment bytes':<24} {'plain ms/MiB':>10} {'encrypted ms/MiB':>13}")
    for way in ("upload", "download"):
        row = data[way]
        lines.append(
            f"{way:<24} {row['plain_p50_us'] / 1e3 / mib:>10.2f} "
            f"{row['encrypted_p50_us'] / 1e3 / mib:>13.2f} {row['ratio']:>7.2f}"
        )
    extra = data["encrypted_stored_bytes_per_mib"] - data["plain_stored_bytes_per_mib"]
    lines.append(f"stored: {extra:.0f} bytes more per MiB ({extra / MiB * 100:.3f} %)")
    for name, row in figures["engine"].items():
        if name == "stream":
            lines.append(
                f"engine, a stream: encrypt {row['encrypt_ms_per_mib']:.1f} ms/MiB, decrypt "
                f"{row['decrypt_ms_per_mib']:.1f} ms/MiB, +{row['overhead_bytes_per_mib']} B/MiB"
            )
        else:
            lines.append(
                f"engine, {name} ({row['bson_bytes']} B BSON, "
                f"+{row['ciphertext_bytes'] - row['bson_bytes']} B): BSON encode "
                f"{row['bson_encode_us']:.1f} us; encrypt {row['encrypt_us']:.0f} us; "
                f"decrypt {row['decrypt_us']:.0f} us"
            )
    return lines


def chart(axes: Any, report: dict[str, Any]) -> None:
    rows = {**report["encryption"]["operations"]}
    rows |= {way: report["encryption"]["bytes"][way] for way in ("upload", "download")}
    axes.bar(list(rows), [row["ratio"] for row in rows.values()])
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.tick_params(axis="x", labelrotation=60)
    axes.set_ylabel("encrypted p50 / plain p50")
    axes.set_title(f"Encryption's cost (interleaved A/B, {report.get('driver', '?')})")


PHASE = Phase("encryption", measure, table, chart, writes)
