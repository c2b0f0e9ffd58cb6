"""Backends every behavioural test runs on.

Each test that takes ``database`` (or ``store``) runs four times: on the in-process
doubles mongomock-motor (Motor-shaped) and pymongo-async-mock (PyMongo-Async-shaped),
and through the real drivers, PyMongo's ``AsyncMongoClient`` and Motor's
``AsyncIOMotorClient``, over a socket to a real server: jongodb, which the suite starts
itself, or the mongod named by ``MONGODB_URI``. Every test gets a database of its own.
"""

from __future__ import annotations

import os
import resource
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import mongomock.collection
import mongomock_motor
import pymongo_async_mock
import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient

from chatkit_mongo import CollectionNames, MongoStore

from . import capabilities, jongodb, tiers

MONGODB_URI = os.environ.get("MONGODB_URI")
"""A real mongod to use instead of jongodb for the server backends, when set."""
DOUBLES = ("motor-mock", "pymongo-mock")
SERVER_BACKENDS = ("server-pymongo", "server-motor")
"""The real drivers, PyMongo's ``AsyncMongoClient`` and Motor's ``AsyncIOMotorClient``,
over a socket to the session's server (jongodb, or ``MONGODB_URI``)."""
BACKENDS = (*DOUBLES, *SERVER_BACKENDS)
NAMES = CollectionNames()
"""The default collection names: every store the tests build uses them, so a test that
reads the raw documents finds them here."""


@dataclass(frozen=True)
class RequestContext:
    """A request context as an application would pass it: one with a ``user_id``."""

    user_id: str


MEMORY_CAP: Final = 6 * 2**30
"""Address space a test process (and the jongodb it starts) may reserve. Generous: the
largest process of a full run, a worker's jongodb, reserved 2.5 GiB. Why: a runaway test
(a value walked without end) then fails fast with MemoryError instead of eating the
machine's memory, shared by every worker."""


def cap_memory() -> None:
    """Lower this process's soft RLIMIT_AS to :data:`MEMORY_CAP`, never raising it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = MEMORY_CAP if hard == resource.RLIM_INFINITY else min(MEMORY_CAP, hard)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def is_server(backend: str) -> bool:
    return backend in SERVER_BACKENDS


def pytest_configure(config: pytest.Config) -> None:
    cap_memory()  # in the controller and in each xdist worker
    config.addinivalue_line(
        "markers",
        "needs(*capabilities): the test's server runs need these server capabilities "
        "(see tests/capabilities.py); a server lacking one skips them, naming it",
    )


def pytest_report_header() -> str:
    if MONGODB_URI:
        return "real-driver tier: on the server named by MONGODB_URI"
    return f"real-driver tier: on jongodb {jongodb.VERSION}, started by the suite"


def pytest_sessionfinish(session: pytest.Session) -> None:
    capabilities.shutdown()


@pytest.fixture(autouse=True, scope="session")
def _mongomock_bulk_sort_fix() -> Iterator[None]:
    """mongomock 4.3's bulk builder rejects the ``sort=`` pymongo 4.20 passes to
    ``UpdateOne``/``ReplaceOne``; drop it so bulk writes behave as on a server."""
    builder = mongomock.collection.BulkOperationBuilder
    originals = {name: getattr(builder, name) for name in ("add_update", "add_replace")}

    def without_sort(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, sort: Any = None, **kwargs: Any) -> Any:
            return original(self, *args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(builder, name, without_sort(original))
    yield
    for name, original in originals.items():
        setattr(builder, name, original)


@pytest.fixture(autouse=True)
def _server_capabilities(request: pytest.FixtureRequest) -> None:
    """On a server run (a ``backend`` or ``gridfs_backend`` parameter naming a server,
    by fixture or by hand), skip a test marked ``needs(...)`` if the server lacks one."""
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    if any(params.get(name) in SERVER_BACKENDS for name in ("backend", "gridfs_backend")):
        needed = [c for mark in request.node.iter_markers("needs") for c in mark.args]
        capabilities.require(*needed)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def make_client(backend: str) -> Any:
    """A fresh client of the given backend kind; the real ones exactly as docs/chatkit-server.md
    builds them. Call it inside the test's event loop: both real clients bind to it."""
    if backend == "motor-mock":
        return mongomock_motor.AsyncMongoMockClient()
    if backend == "pymongo-mock":
        return pymongo_async_mock.AsyncMongoMockClient()
    uri = capabilities.server().uri
    if backend == "server-pymongo":
        return AsyncMongoClient(uri)
    assert backend == "server-motor", backend
    return AsyncIOMotorClient(uri)


async def close_client(client: Any) -> None:
    """Close a real client: a coroutine in PyMongo Async, a plain call in Motor."""
    if isinstance(client, AsyncMongoClient):
        await client.close()
    elif isinstance(client, AsyncIOMotorClient):
        client.close()


@pytest.fixture
async def client(backend: str) -> AsyncIterator[Any]:
    client = make_client(backend)
    yield client
    await close_client(client)


@asynccontextmanager
async def scratch_database(client: Any, backend: str) -> AsyncIterator[Any]:
    """A database of a fresh name: tests are isolated by name. Dropped afterwards where
    the server can (a real mongod); jongodb cannot, and its databases end with it."""
    name = f"chatkit_test_{uuid.uuid4().hex[:12]}"
    yield client[name]
    if is_server(backend) and "dropDatabase" not in capabilities.server().missing:
        await client.drop_database(name)


@pytest.fixture
async def database(client: Any, backend: str) -> AsyncIterator[Any]:
    async with scratch_database(client, backend) as database:
        yield database


@pytest.fixture
async def empty_database(client: Any, backend: str) -> AsyncIterator[Any]:
    """A second fresh database on the same client, e.g. to import into."""
    async with scratch_database(client, backend) as database:
        yield database


@pytest.fixture
async def store(database: Any) -> AsyncIterator[MongoStore[Any]]:
    store: MongoStore[Any] = MongoStore(database)
    yield store
    await store.close()


@pytest.fixture
def alice() -> RequestContext:
    return RequestContext(user_id="alice")


@pytest.fixture
def bob() -> RequestContext:
    return RequestContext(user_id="bob")


GRIDFS_BACKENDS = ("motor-mock", *SERVER_BACKENDS)
"""Backends the attachment bytes are tested on: mongomock-motor and the real drivers,
each of which also has a GridFS bucket of its own (Motor's, inside
``enabled_gridfs_integration``, on mongomock-motor) that the tests read files back
through, as any GridFS tool would. PyMongo's bucket refuses pymongo-async-mock's
collections, so that double is not among them."""


@pytest.fixture(params=GRIDFS_BACKENDS)
def gridfs_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    if is_server(name):
        yield name
    else:
        with mongomock_motor.enabled_gridfs_integration():
            yield name


@pytest.fixture
async def gridfs_store(gridfs_backend: str) -> AsyncIterator[MongoStore[Any]]:
    """A MongoStore on a fresh database of a GridFS-capable backend."""
    client = make_client(gridfs_backend)
    async with scratch_database(client, gridfs_backend) as database:
        yield MongoStore(database)
    await close_client(client)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tiers.summarise(terminalreporter)
