"""Fixtures of the encryption tests: a MongoDB-wire server, clients of both drivers, and
an engine on a key vault of its own per test. Loaded by the encryption test modules
through ``pytest_plugins``.

libmongocrypt's key vault needs a real server (the in-process doubles cannot run it):
``MONGODB_URI`` if set, else a jongodb started here from ``JONGODB_BIN``, else skipped.

INTEGRATION NOTE: ``wire_server_uri`` below is a stand-in for the suite-wide jongodb
session fixture in ``tests/conftest.py``; once that lands, delete ``wire_server_uri``
and ``_start_jongodb`` and take the URI from it.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient

from chatkit_mongo._encryption import OwnerEncryption, ensure_key_vault_index
from chatkit_mongo.encryption import LOCAL_KEY_BYTES, Encryption

DRIVERS = ("pymongo", "motor")
JONGODB_BIN_VARIABLE = "JONGODB_BIN"
_URI_LINE = re.compile(r"mongodb://\S+")


def _start_jongodb(binary: str) -> tuple[subprocess.Popen[str], str]:
    """jongodb on a free local port; returns the process and the URI it prints."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--host=127.0.0.1", f"--port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = _URI_LINE.search(line)
    if match is None:
        process.kill()
        raise RuntimeError(f"jongodb did not start: {line!r}")
    return process, match.group(0)


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
    process, uri = _start_jongodb(binary)
    try:
        yield uri
    finally:
        process.terminate()
        process.wait(timeout=10)


def open_client(driver: str, uri: str) -> Any:
    """A client of ``driver`` ("pymongo" or "motor") on ``uri``."""
    if driver == "pymongo":
        return AsyncMongoClient(uri)
    return AsyncIOMotorClient(uri)


async def close_client(client: Any) -> None:
    closing = client.close()
    if asyncio.iscoroutine(closing):  # PyMongo Async's close is a coroutine, Motor's is not
        await closing


def fresh_encryption(**options: Any) -> Encryption:
    """Local-provider settings on a key vault no other test uses (the server keeps
    every database for its whole life, and jongodb cannot drop one)."""
    return Encryption.local(
        os.urandom(LOCAL_KEY_BYTES),
        key_vault_namespace=f"kv_{uuid.uuid4().hex[:12]}.__keyVault",
        **options,
    )


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client(driver: str, wire_server_uri: str) -> AsyncIterator[Any]:
    client = open_client(driver, wire_server_uri)
    try:
        yield client
    finally:
        await close_client(client)


@pytest.fixture
def settings() -> Encryption:
    return fresh_encryption()


@pytest.fixture
async def engine(settings: Encryption, client: Any) -> AsyncIterator[OwnerEncryption]:
    """An engine on a fresh key vault with its unique index, as ``init`` would leave it."""
    await ensure_key_vault_index(settings, client)
    async with OwnerEncryption(settings, client) as engine:
        yield engine
