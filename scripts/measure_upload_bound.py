"""What the attachment routes hold while refusing an upload body far past ``max_bytes``.

A 1 GiB chunked body (64 KiB pieces, no Content-Length) is offered to each upload path
straight through ASGI; the figures are the bytes the routes read before the 413, the
peak Python memory (tracemalloc) and the files they opened for writing. Runs on the
embedded backend (mongomock-motor's GridFS), so the chunk written before the refusal is
held in this process too. ``PYTHONPATH=. python scripts/measure_upload_bound.py``
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from typing import Any

import mongomock_motor
from chatkit.types import AttachmentCreateParams

from chatkit_mongo import MongoStore
from chatkit_mongo.schema import bucket_collections
from tests.attachment_support import drive, files_written, make_attachments, routes_app

KIB = 1024
MIB = 1024 * KIB
OFFERED = 1024 * MIB
PIECE = 64 * KIB
BOUNDARY = "b0undary"
HEAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
    "Content-Type: application/octet-stream\r\n\r\n"
).encode()


def body(multipart: bool) -> Iterator[bytes]:
    """``OFFERED`` bytes made as they are sent: the source holds one piece."""
    if multipart:
        yield HEAD
    piece = b"x" * PIECE
    for _ in range(OFFERED // PIECE):
        yield piece


async def measure(max_bytes: int, route: str) -> None:
    context = {"user_id": "alice"}
    with mongomock_motor.enabled_gridfs_integration():
        store: MongoStore[Any] = MongoStore(mongomock_motor.AsyncMongoMockClient()["measure"])
        attachments = make_attachments(store, max_bytes=max_bytes)
        app = routes_app(attachments)
        path = "/attachments"
        if route != "direct multipart":
            params = AttachmentCreateParams(name="big.bin", size=max_bytes, mime_type="text/plain")
            created = await attachments.create_attachment(params, context)
            path = f"/attachments/{created.id}/upload"
        multipart = route != "two-phase raw"
        headers = {"x-user": "alice", "transfer-encoding": "chunked"}
        if multipart:
            headers["content-type"] = f"multipart/form-data; boundary={BOUNDARY}"
        await drive(app, "GET", "/attachments/atc_warmup", {"x-user": "alice"})
        tracemalloc.start()
        with files_written() as written:
            exchange = await drive(app, "POST", path, headers, body(multipart))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        chunks = bucket_collections(attachments.bucket_name)[1]
        left = await store.database[chunks].count_documents({})
    print(
        f"{route:<20} max_bytes {max_bytes / MIB:>4.0f} MiB | offered {OFFERED / MIB:.0f} MiB "
        f"| answer {exchange.status} | read {exchange.consumed / MIB:6.2f} MiB "
        f"| peak {peak / MIB:6.2f} MiB (max_bytes + {(peak - max_bytes) / KIB:5.0f} KiB) "
        f"| files written {len(written)} | chunks left {left}"
    )


async def main() -> None:
    for max_bytes in (1 * MIB, 8 * MIB):
        for route in ("direct multipart", "two-phase multipart", "two-phase raw"):
            await measure(max_bytes, route)


if __name__ == "__main__":
    asyncio.run(main())
