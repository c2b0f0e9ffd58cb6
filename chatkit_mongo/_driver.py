"""What differs between PyMongo's native async API and Motor, kept in one place.

Both drivers share method names, but a few methods are coroutines in PyMongo Async
and plain calls in Motor (``aggregate``, ``list_indexes``, ``client.close``). The
store calls those through :func:`maybe_await`, so one code path serves both.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, MutableMapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, Protocol, TypeVar

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


async def maybe_await(value: _T | Awaitable[_T]) -> _T:
    """Await ``value`` if the driver returned a coroutine (PyMongo Async), else pass it on."""
    if inspect.isawaitable(value):
        return await value
    return value


def open_client(uri: str, **options: Any) -> Any:
    """The one way the library opens a URI: PyMongo's ``AsyncMongoClient`` naming
    chatkit-mongo in its handshake; ``options`` go to the client. Used by
    ``MongoStore.from_uri``, every CLI command and the benchmark. Imported late so that
    modules that only describe data (and ``--help``) do not load the driver's client."""
    from pymongo import AsyncMongoClient  # noqa: PLC0415

    return AsyncMongoClient(uri, driver=DRIVER_INFO, **options)


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


async def shielded(awaitable: Awaitable[_T]) -> _T:
    """Run a write to its end even if the calling task is cancelled meanwhile.

    Why: a request cancelled halfway through ``delete_thread`` or between an insert and
    its acknowledgement would otherwise leave the caller not knowing what was written.
    The write finishes, then the cancellation is re-raised (with the write's error, if
    it failed, as the cause), so the caller still stops.

    How: the write runs as a task of its own, which the caller awaits through
    ``asyncio.shield``; a cancelled caller waits on for it to end. Why a task of its own
    and not the caller's task stepped by hand (what this did before, a task and a few
    microseconds cheaper): since Python 3.12 ``asyncio.wait_for``, which PyMongo wraps
    around its socket reads, times out by cancelling the task it runs in. Inside the
    caller's task that cancellation was taken for the caller's, so a timed-out write
    surfaced as ``CancelledError`` (seen by the fault-proxy test on Python 3.13). In a
    task of its own, the driver's timeout stays the driver's and ends as its own error.
    """
    write = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(write)
    except asyncio.CancelledError as cancellation:
        if write.cancelled():  # the write itself was cancelled, not its caller
            raise
        while not write.done():
            try:
                await asyncio.shield(write)
            except asyncio.CancelledError:
                continue  # the caller, cancelled again: the write still goes on
            except BaseException:
                break
        failure = None if write.cancelled() else write.exception()
        raise cancellation from failure
