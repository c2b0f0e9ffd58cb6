"""Fixtures of the encryption tests, loaded by their modules through ``pytest_plugins``:
a MongoDB-wire server, a client of each driver, and an engine on a key vault of its own.

libmongocrypt's key vault needs a real server (the in-process doubles cannot run it):
the suite's session server (see ``tests/capabilities.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from chatkit_mongo._encryption import OwnerEncryption, ensure_key_vault_index
from chatkit_mongo.encryption import Encryption

from . import capabilities
from .encryption_support import (
    DRIVERS,
    close_client,
    fresh_encryption,
    open_client,
)


@pytest.fixture(scope="session")
def wire_server_uri() -> str:
    """The suite's real server (``MONGODB_URI``, else the jongodb the suite starts): the
    key vault of libmongocrypt needs one, the in-process doubles cannot run it."""
    return capabilities.server().uri


@pytest.fixture(params=DRIVERS, ids=[f"server-{driver}" for driver in DRIVERS])
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
