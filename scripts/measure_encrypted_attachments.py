"""Peak Python memory and stored bytes while streaming a large ENCRYPTED attachment,
beside the same upload without encryption.

A 64 MiB upload (64 KiB pieces, made as they are sent) through ``create_and_upload`` on a
store with ``encryption=`` (a local master key, a fresh key vault), then its download,
through PyMongo's ``AsyncMongoClient`` on a real server: ``MONGODB_URI``, else the
jongodb the test suite uses (``make wire-server`` installs it). libmongocrypt's key
vault needs a real server, so this cannot run on the embedded backend.

Prints the peak traced by tracemalloc (Python allocations; libmongocrypt's own C
buffers are not traced, each holds one 255 KiB piece at a time) and the bytes GridFS
stores per MiB of plaintext. The plain run is the baseline; the difference between the
two runs is what encryption adds. Both ways the store holds a few chunks at a time (it
writes and reads the chunks itself, ``_gridfs``), so the peaks stay the same whatever
the size. ``PYTHONPATH=. python scripts/measure_encrypted_attachments.py [MiB]``
(default 64).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pymongo import AsyncMongoClient

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.encryption import LOCAL_KEY_BYTES, Encryption
from chatkit_mongo.schema import bucket_collections

MIB = 1024 * 1024
SIZE = (int(sys.argv[1]) if len(sys.argv) > 1 else 64) * MIB
PIECE = 64 * 1024
"""What an HTTP server hands over per read of a request body."""


async def pieces(digest: Any) -> AsyncIterator[bytes]:
    """64 MiB of varied bytes, made as they are sent so the source holds none of it."""
    for n in range(SIZE // PIECE):
        piece = n.to_bytes(8, "big") * (PIECE // 8)
        digest.update(piece)
        yield piece


async def measure(uri: str, encrypted: bool) -> None:
    context = {"user_id": "alice"}
    client: AsyncMongoClient[Any] = AsyncMongoClient(uri)
    settings = Encryption.local(
        os.urandom(LOCAL_KEY_BYTES), key_vault_namespace=f"kv_{uuid.uuid4().hex[:12]}.__keyVault"
    )
    store: MongoStore[Any] = MongoStore(
        client[f"measure_{uuid.uuid4().hex[:12]}"], encryption=settings if encrypted else None
    )
    attachments = GridFSAttachmentStore(
        store, upload_url=lambda i, c: f"https://x.example/{i}", max_bytes=SIZE
    )
    await store.ensure_indexes()
    await attachments.create_and_upload("warm-up.bin", "text/plain", b"key and pools", context)
    sent = hashlib.sha256()
    tracemalloc.start()
    started = time.perf_counter()
    created = await attachments.create_and_upload(
        "big.bin", "application/octet-stream", pieces(sent), context
    )
    upload_seconds = time.perf_counter() - started
    upload_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    received, length = hashlib.sha256(), 0
    started = time.perf_counter()
    download = await attachments.open_download(created.id, context)
    async for chunk in download.chunks:
        received.update(chunk)
        length += len(chunk)
    download_seconds = time.perf_counter() - started
    download_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    files = bucket_collections(attachments.bucket_name)[0]
    stored = await store.database[files].find_one({"metadata.attachment_id": created.id})
    assert stored is not None
    await store.close()
    await client.close()
    form = "encrypted" if encrypted else "plain"
    print(f"{form}: {SIZE / MIB:.0f} MiB in {PIECE // 1024} KiB pieces through PyMongo Async")
    same = sent.digest() == received.digest()
    print(
        f"bytes round-tripped: {length} of {SIZE}, Download.length {download.length}, "
        f"sha256 equal: {same}"
    )
    print(
        f"stored: {stored['length']} bytes, {stored['length'] / (SIZE / MIB):.0f} bytes per MiB "
        f"(+{(stored['length'] - SIZE) / (SIZE / MIB):.0f} per MiB, "
        f"{100 * (stored['length'] - SIZE) / SIZE:.3f}%)"
    )
    print(f"upload: {upload_seconds:.2f} s, peak traced: {upload_peak / MIB:.2f} MiB")
    print(f"download: {download_seconds:.2f} s, peak traced: {download_peak / MIB:.2f} MiB")


def main() -> None:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        for encrypted in (False, True):
            asyncio.run(measure(uri, encrypted))
        return
    from tests import capabilities  # noqa: PLC0415  (the suite's jongodb, started here)

    try:
        for encrypted in (False, True):
            asyncio.run(measure(capabilities.server().uri, encrypted))
    finally:
        capabilities.shutdown()


if __name__ == "__main__":
    main()
