"""Backends every behavioural test runs on.

Each test that takes ``database`` (or ``store``) runs three times: on mongomock-motor
(Motor-shaped), on pymongo-async-mock (PyMongo-Async-shaped), and against the real
server named by ``MONGODB_URI``, which is skipped, with the reason shown, when unset.
Every test gets a database of its own, dropped afterwards on the real server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import mongomock.collection
import mongomock_motor
import pymongo_async_mock
import pytest
from pymongo import AsyncMongoClient

from chatkit_mongo import CollectionNames, MongoStore

MONGODB_URI = os.environ.get("MONGODB_URI")
BACKENDS = ("motor-mock", "pymongo-mock", "mongodb")
REAL_SERVER_SKIP = "MONGODB_URI is not set: the real-server run of this test is skipped"
NAMES = CollectionNames()
"""The default collection names: every store the tests build uses them, so a test that
reads the raw documents finds them here."""


@dataclass(frozen=True)
class RequestContext:
    """A request context as an application would pass it: one with a ``user_id``."""

    user_id: str


def pytest_report_header() -> str:
    if MONGODB_URI:
        return "real MongoDB: MONGODB_URI is set; every behavioural test also runs against it"
    return "real MongoDB: MONGODB_URI is not set, so the 'mongodb' runs are skipped"


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


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "mongodb" and not MONGODB_URI:
        pytest.skip(REAL_SERVER_SKIP)
    return name


def make_client(backend: str) -> Any:
    """A fresh client of the given backend kind."""
    if backend == "motor-mock":
        return mongomock_motor.AsyncMongoMockClient()
    if backend == "pymongo-mock":
        return pymongo_async_mock.AsyncMongoMockClient()
    assert MONGODB_URI, REAL_SERVER_SKIP
    return AsyncMongoClient(MONGODB_URI, serverSelectionTimeoutMS=10_000)


@pytest.fixture
async def client(backend: str) -> AsyncIterator[Any]:
    client = make_client(backend)
    yield client
    if backend == "mongodb":
        await client.close()


@asynccontextmanager
async def scratch_database(client: Any, backend: str) -> AsyncIterator[Any]:
    """A database of a fresh name, dropped afterwards on a real server."""
    name = f"chatkit_test_{uuid.uuid4().hex[:12]}"
    yield client[name]
    if backend == "mongodb":
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


@pytest.fixture(params=["motor-mock", "mongodb"])
def gridfs_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Backends whose GridFS bucket moves bytes: mongomock-motor (Motor's bucket, inside
    ``enabled_gridfs_integration``) and the real server. PyMongo's bucket refuses
    pymongo-async-mock's collections, so that double is not among them."""
    name: str = request.param
    if name == "mongodb" and not MONGODB_URI:
        pytest.skip(REAL_SERVER_SKIP)
    if name == "motor-mock":
        with mongomock_motor.enabled_gridfs_integration():
            yield name
    else:
        yield name


@pytest.fixture
async def gridfs_store(gridfs_backend: str) -> AsyncIterator[MongoStore[Any]]:
    """A MongoStore on a fresh database of a GridFS-capable backend."""
    client = make_client(gridfs_backend)
    async with scratch_database(client, gridfs_backend) as database:
        yield MongoStore(database)
    if gridfs_backend == "mongodb":
        await client.close()
