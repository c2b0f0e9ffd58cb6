"""What client-side encryption costs: per document and per MiB of attachment bytes.

One run, figures printed, no thresholds (the machine decides the numbers). Per document:
the ``data`` sub-document of every ChatKit item variant, a thread and an attachment,
encrypted and decrypted through libmongocrypt, against BSON-encoding it alone (what an
unencrypted write costs the client for the same content). Per MiB: a stream encrypted
and decrypted piece by piece, and its size overhead, measured and predicted.

Needs a MongoDB-wire server for the key vault (the data key is fetched once; the rest
runs in the client): ``python scripts/bench_encryption.py --uri mongodb://...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import bson
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    InferenceOptions,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)
from motor.motor_asyncio import AsyncIOMotorClient

from .._codec import ITEM_ADAPTER, THREAD_ADAPTER, dump
from .._driver import maybe_await, open_client
from .._encryption import OwnerEncryption, encrypted_stream_size, ensure_key_vault_index
from ..encryption import LOCAL_KEY_BYTES, Encryption

MiB = 1024 * 1024
DRIVERS = ("pymongo", "motor")


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


def sample_documents() -> dict[str, dict[str, Any]]:
    """``data`` sub-documents as the store writes them: a thread, a user message and
    assistant replies of three lengths."""
    now = datetime.now()
    thread = ThreadMetadata(id="thr_bench", created_at=now, title="Planning the trip")
    documents = {"thread": dump(thread, THREAD_ADAPTER, "thread")}
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
        documents[name] = dump(item, ITEM_ADAPTER, name)
    return documents


async def run(uri: str, drivers: tuple[str, ...], *, repeats: int, mib: int) -> list[str]:
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
        finally:
            await maybe_await(client.close())
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", default=os.environ.get("MONGODB_URI"), required=False)
    parser.add_argument("--driver", choices=DRIVERS, action="append")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--mib", type=int, default=64)
    options = parser.parse_args(argv)
    if not options.uri:
        parser.error("--uri (or MONGODB_URI) must name a MongoDB-wire server for the key vault")
    drivers = tuple(options.driver or DRIVERS)
    for line in asyncio.run(run(options.uri, drivers, repeats=options.repeats, mib=options.mib)):
        print(line)
