"""Bytes round-tripped and peak Python memory while streaming a large attachment.

Runs on the embedded backend (mongomock-motor's GridFS), so the figures measure this
library's streaming path, not a server. ``PYTHONPATH=. python scripts/measure_attachments.py``
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import mongomock_motor

from chatkit_mongo import GridFSAttachmentStore, MongoStore

MIB = 1024 * 1024
SIZE = 64 * MIB
PIECE = 64 * 1024
"""What an HTTP server hands over per read of a request body."""


async def pieces(digest: Any) -> AsyncIterator[bytes]:
    """64 MiB of varied bytes, made as they are sent so the source holds none of it."""
    for n in range(SIZE // PIECE):
        piece = n.to_bytes(8, "big") * (PIECE // 8)
        digest.update(piece)
        yield piece


async def main() -> None:
    context = {"user_id": "alice"}
    with mongomock_motor.enabled_gridfs_integration():
        store: MongoStore[Any] = MongoStore(mongomock_motor.AsyncMongoMockClient()["measure"])
        attachments = GridFSAttachmentStore(
            store, upload_url=lambda i, c: f"https://x.example/{i}", max_bytes=SIZE
        )
        await store.ensure_indexes()
        sent = hashlib.sha256()
        tracemalloc.start()
        started = time.perf_counter()
        created = await attachments.create_and_upload(
            "big.bin", "application/octet-stream", pieces(sent), context
        )
        upload_seconds = time.perf_counter() - started
        kept, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        received, length = hashlib.sha256(), 0
        started = time.perf_counter()
        download = await attachments.open_download(created.id, context)
        async for chunk in download.chunks:
            received.update(chunk)
            length += len(chunk)
        download_seconds = time.perf_counter() - started
        _, download_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    print(f"payload: {SIZE / MIB:.0f} MiB in {PIECE // 1024} KiB pieces")
    same = sent.digest() == received.digest()
    print(f"bytes round-tripped: {length} of {SIZE}, sha256 equal: {same}")
    print(f"the double keeps the stored file in this process: {kept / MIB:.1f} MiB")
    print(f"upload: {upload_seconds:.2f} s, peak above that: {(upload_peak - kept) / MIB:.2f} MiB")
    print(
        f"download: {download_seconds:.2f} s, "
        f"peak above that: {(download_peak - kept) / MIB:.2f} MiB"
    )


if __name__ == "__main__":
    asyncio.run(main())
