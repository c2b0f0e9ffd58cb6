"""What differs between PyMongo's native async API and Motor, kept in one place.

Both drivers share method names, but a few methods are coroutines in PyMongo Async
and plain calls in Motor (``aggregate``, ``list_indexes``, ``client.close``). The
store calls those through :func:`resolve`, so one code path serves both.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, MutableMapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, Protocol, TypeVar

from gridfs import AsyncGridFSBucket
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.driver_info import DriverInfo

_T = TypeVar("_T")

try:
    _VERSION: str | None = version("chatkit-mongo")
except PackageNotFoundError:  # running from a source tree that was never installed
    _VERSION = None

DRIVER_INFO: Final = DriverInfo(name="chatkit-mongo", version=_VERSION)
"""Names this library in the connection handshake, for server-side telemetry."""


class AsyncDatabaseLike(Protocol):
    """An async database handle: PyMongo's ``AsyncDatabase``, Motor's, or a test double."""

    @property
    def name(self) -> str: ...

    @property
    def client(self) -> Any: ...

    def __getitem__(self, name: str) -> Any: ...

    def command(self, command: str | MutableMapping[str, Any], /) -> Awaitable[Any]: ...


async def resolve(value: _T | Awaitable[_T]) -> _T:
    """Await ``value`` if the driver returned a coroutine (PyMongo Async), else pass it on."""
    if inspect.isawaitable(value):
        return await value
    return value


def identify(client: Any) -> None:
    """Add our DriverInfo to an injected client's handshake, where the driver allows it.

    ``append_metadata`` exists on PyMongo 4.14+ clients, and on the PyMongo client a
    Motor client wraps (its ``delegate``); older clients and the doubles lack it.
    Why every check is on the type: a Motor client answers any unknown attribute with a
    database (and that looks callable), so ``getattr(client, ...)`` finds "methods"
    that do not exist. ``type()`` also tells mongomock-motor's client, which passes
    ``isinstance`` for Motor's, from the real one.
    """
    motor = sys.modules.get("motor.motor_asyncio")  # a Motor client implies it is loaded
    if motor is not None and issubclass(type(client), motor.AsyncIOMotorClient):
        client = client.delegate
    append = getattr(type(client), "append_metadata", None)
    if append is not None:
        append(client, DRIVER_INFO)


def gridfs_bucket(database: Any, bucket_name: str) -> Any:
    """The driver's GridFS bucket: PyMongo's for a PyMongo Async database, Motor's
    otherwise (Motor's module is imported only then).

    ``isinstance`` and not ``type()`` here on purpose: pymongo-async-mock's database
    passes it, so that double is handed PyMongo's bucket, as a PyMongo database would be.
    """
    if isinstance(database, AsyncDatabase):
        return AsyncGridFSBucket(database, bucket_name=bucket_name)
    from motor.motor_asyncio import AsyncIOMotorGridFSBucket  # noqa: PLC0415

    return AsyncIOMotorGridFSBucket(database, bucket_name=bucket_name)


async def shielded(awaitable: Awaitable[_T]) -> _T:
    """Run a write to its end even if the calling task is cancelled meanwhile.

    Why: a request cancelled halfway through ``delete_thread`` or between an insert and
    its acknowledgement would otherwise leave the caller not knowing what was written.
    The write finishes, then the cancellation is re-raised, so the caller still stops.
    """
    task = asyncio.ensure_future(awaitable)
    cancellation: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError as exc:
            cancellation = cancellation or exc
    if cancellation is not None:
        failure = None if task.cancelled() else task.exception()
        raise cancellation from failure
    return task.result()
