"""What differs between PyMongo's native async API and Motor, kept in one place.

Both drivers share method names, but a few methods are coroutines in PyMongo Async
and plain calls in Motor (``aggregate``, ``list_indexes``, ``client.close``). The
store calls those through :func:`maybe_await`, so one code path serves both.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import types
from collections.abc import Awaitable, Generator, MutableMapping
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace
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


@types.coroutine
def shielded(awaitable: Awaitable[_T]) -> Generator[Any, None, _T]:
    """Run a write to its end even if the calling task is cancelled meanwhile.

    Why: a request cancelled halfway through ``delete_thread`` or between an insert and
    its acknowledgement would otherwise leave the caller not knowing what was written.
    The write finishes, then the cancellation is re-raised, so the caller still stops.

    How: the write runs inside the caller's own task, stepped by hand. Each time the
    write waits for a future, the caller's task waits for a view of the same future
    whose ``cancel()`` refuses (:func:`_refuse`): cancelling the task then only marks it
    cancelled (asyncio's documented fallback when a task's future cannot be cancelled),
    the write's future is untouched and wakes the task as it would have anyway, and the
    cancellation is raised once the write has finished (with its error, if it failed,
    as the cause). The view holds the part of the future protocol a task uses on what it
    waits for (``_asyncio_future_blocking``, ``get_loop``, ``add_done_callback``,
    ``cancel``), the first three the future's own bound methods, so the task is woken by
    the very future with no extra turn of the event loop and no Python frame.

    Why not a task of its own awaited through ``asyncio.wait`` (the obvious shield): that
    costs a task, a waiter and extra turns of the event loop per write, as much CPU as
    all the rest of the store's work on a write. Why a generator-based coroutine
    (``types.coroutine``) rather than an object with ``__await__``: one frame fewer and
    no object per write; every write pays this, so it is kept to the minimum. Why the
    view is a ``SimpleNamespace`` made inline: it is built in C, with no frame of ours,
    and every wait of every write makes one (a class with ``__init__`` cost a frame).
    """
    task = asyncio.current_task()
    asked_before = task.cancelling() if task is not None else 0
    steps = awaitable.__await__()
    cancellation: asyncio.CancelledError | None = None
    while True:
        try:
            waited_for = steps.send(None)
        except StopIteration as finished:
            if cancellation is not None:
                raise cancellation from None
            result: _T = finished.value
            return result
        except BaseException as failure:
            if cancellation is not None:
                raise cancellation from failure
            raise
        try:
            # A bare yield (``asyncio.sleep(0)``) gives the loop a turn as it is.
            yield (
                None
                if waited_for is None
                else SimpleNamespace(
                    _asyncio_future_blocking=True,
                    get_loop=waited_for.get_loop,
                    add_done_callback=waited_for.add_done_callback,
                    cancel=_refuse,
                )
            )
        except asyncio.CancelledError as exc:
            # The task was cancelled, or the write's own future was (the write then
            # sees that itself when resumed): only the first is the caller's.
            if task is None or task.cancelling() > asked_before:
                cancellation = cancellation or exc
        except BaseException:
            continue  # the write's future failed: resumed, the write reads that itself


def _refuse(msg: Any = None) -> bool:
    """An uncancellable future's ``cancel``: refused, as a done future refuses it."""
    return False
