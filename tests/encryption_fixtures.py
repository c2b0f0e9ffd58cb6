"""Fixtures of the encryption tests, loaded by their modules through ``pytest_plugins``:
a MongoDB-wire server, a client of each driver, and an engine on a key vault of its own.

libmongocrypt's key vault needs a real server (the in-process doubles cannot run it):
``MONGODB_URI`` if set, else a jongodb started here from ``JONGODB_BIN``, else skipped.

INTEGRATION NOTE: ``wire_server_uri`` and ``start_jongodb`` are a stand-in for the
suite-wide jongodb session fixture in ``tests/conftest.py``; once that lands, delete them
and take the URI from it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from chatkit_mongo._encryption import OwnerEncryption, ensure_key_vault_index
from chatkit_mongo.encryption import Encryption

from .encryption_support import (
    DRIVERS,
    JONGODB_BIN_VARIABLE,
    close_client,
    fresh_encryption,
    open_client,
    start_jongodb,
)


@pytest.fixture(scope="session")
def wire_server_uri() -> Iterator[str]:
    """A MongoDB-wire server's URI for tests that need libmongocrypt's key vault."""
    if uri := os.environ.get("MONGODB_URI"):
        yield uri
        return
    binary = os.environ.get(JONGODB_BIN_VARIABLE)
    if not binary:
        pytest.skip(
            f"encryption tests need a server: set MONGODB_URI, or {JONGODB_BIN_VARIABLE} to a "
            "jongodb binary"
        )
    process, uri = start_jongodb(binary)
    try:
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(params=DRIVERS)
def wire_driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def wire_client(wire_driver: str, wire_server_uri: str) -> AsyncIterator[Any]:
    client = open_client(wire_driver, wire_server_uri)
    try:
        yield client
    finally:
        await close_client(client)


@pytest.fixture
def key_settings() -> Encryption:
    return fresh_encryption()


@pytest.fixture
async def engine(key_settings: Encryption, wire_client: Any) -> AsyncIterator[OwnerEncryption]:
    """An engine on a fresh key vault with its unique index, as ``init`` would leave it."""
    await ensure_key_vault_index(key_settings, wire_client)
    async with OwnerEncryption(key_settings, wire_client) as engine:
        yield engine
