"""Helpers of the encryption tests: clients of both drivers, fresh key vaults, a seam
that interrupts the engine's calls, and a runner for hypothesis properties. The fixtures
are in ``tests/encryption_fixtures.py``."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from bson.codec_options import DEFAULT_CODEC_OPTIONS
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient

from chatkit_mongo._driver import maybe_await
from chatkit_mongo._encryption import (
    ClientEncryptionLike,
    OwnerEncryption,
    ensure_key_vault_index,
    open_client_encryption,
)
from chatkit_mongo.encryption import LOCAL_KEY_BYTES, Encryption

DRIVERS = ("pymongo", "motor")


def open_client(driver: str, uri: str) -> Any:
    """A client of ``driver`` ("pymongo" or "motor") on ``uri``."""
    if driver == "pymongo":
        return AsyncMongoClient(uri)
    return AsyncIOMotorClient(uri)


async def close_client(client: Any) -> None:
    await maybe_await(client.close())  # a coroutine in PyMongo Async, a plain call in Motor


def fresh_encryption(**options: Any) -> Encryption:
    """Local-provider settings on a key vault no other test uses (the server keeps
    every database for its whole life, and jongodb cannot drop one)."""
    return Encryption.local(
        os.urandom(LOCAL_KEY_BYTES),
        key_vault_namespace=f"kv_{uuid.uuid4().hex[:12]}.__keyVault",
        **options,
    )


class Interrupting:
    """A real ``ClientEncryptionLike`` whose ``at``-th call stops: it raises ``error``
    (``before`` or ``after`` the real call ran), or, with ``error=None``, blocks there so
    the test can cancel the calling task for real. Counts every call, so a test can
    enumerate each await of a code path."""

    def __init__(
        self,
        inner: ClientEncryptionLike,
        *,
        at: int = 0,
        after: bool = False,
        error: BaseException | None = None,
    ) -> None:
        self.inner = inner
        self.at = at
        self.after = after
        self.error = error
        self.calls: list[str] = []
        self.reached = asyncio.Event()
        self.stale_lookups = 0
        """This many first ``get_key_by_alt_name`` answers are None, as for a process
        that looked just before another one created the key."""

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(name)
        stop = len(self.calls) == self.at
        if stop and not self.after:
            await self._stop()
        if name == "get_key_by_alt_name" and self.stale_lookups:
            self.stale_lookups -= 1
            result = None
        else:
            try:
                result = await getattr(self.inner, name)(*args, **kwargs)
            except Exception:
                if stop and self.after:  # the call reached the server and failed there
                    await self._stop()
                raise
        if stop and self.after:
            await self._stop()
        return result

    async def _stop(self) -> None:
        self.reached.set()
        if self.error is not None:
            raise self.error
        await asyncio.Event().wait()  # until cancelled

    async def create_data_key(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("create_data_key", *args, **kwargs)

    async def get_key_by_alt_name(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("get_key_by_alt_name", *args, **kwargs)

    async def get_key(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("get_key", *args, **kwargs)

    async def delete_key(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("delete_key", *args, **kwargs)

    async def encrypt(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("encrypt", *args, **kwargs)

    async def decrypt(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("decrypt", *args, **kwargs)

    async def close(self) -> None:
        await self.inner.close()


def interrupting_engine(
    settings: Encryption, client: Any, **options: Any
) -> tuple[OwnerEncryption, Interrupting]:
    """An engine whose explicit-encryption calls go through :class:`Interrupting`."""
    seam = Interrupting(open_client_encryption(settings, client, DEFAULT_CODEC_OPTIONS), **options)
    return OwnerEncryption(settings, client, client_encryption=seam), seam


_T = TypeVar("_T")


class EngineRunner:
    """An event loop, a client and an engine for hypothesis properties, which call the
    test body synchronously (so each property drives its own loop)."""

    def __init__(self, driver: str, uri: str) -> None:
        self._runner = asyncio.Runner()
        self.settings = fresh_encryption()
        self.client = self.run(_open(driver, uri))
        self.run(ensure_key_vault_index(self.settings, self.client))
        self.engine = OwnerEncryption(self.settings, self.client)

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return self._runner.run(coroutine)

    def close(self) -> None:
        self.run(self.engine.close())
        self.run(close_client(self.client))
        self._runner.close()


async def _open(driver: str, uri: str) -> Any:
    """Made inside the runner's loop: a client belongs to the loop it starts on."""
    return open_client(driver, uri)


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    """``data`` as an async stream of ``size``-byte chunks, as an upload or GridFS gives."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def count_keys(settings: Encryption, client: Any, owner: str) -> int:
    vault = client[settings.key_vault_database][settings.key_vault_collection]
    return int(await vault.count_documents({"keyAltNames": owner}))
