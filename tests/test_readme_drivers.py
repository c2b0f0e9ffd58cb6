"""The ways docs/chatkit-server.md builds a store work on a real server, through each
real driver: constructor, a save/load round trip, and the library's name in the
handshake (the page's own blocks run verbatim too, through tests/docs_blocks.py; these
check what a block does not show). The Motor one once failed in the constructor (a
Motor client answers any unknown attribute, ``append_metadata`` included, with a
database)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient

from chatkit_mongo import MongoStore

from . import capabilities
from .conftest import SERVER_BACKENDS, RequestContext, close_client
from .samples import assistant_message, thread

ALICE = RequestContext(user_id="alice")


def _handshake_name(client: Any) -> str:
    """The driver name the client sends in its connection handshake."""
    sync = client.delegate if isinstance(client, AsyncIOMotorClient) else client
    name: str = sync.options.pool_options.metadata["driver"]["name"]
    return name


async def _round_trip(store: MongoStore[Any]) -> None:
    assert await store.ping()
    await store.save_thread(thread("thr_1"), ALICE)
    await store.add_thread_item("thr_1", assistant_message("msg_1"), ALICE)
    assert (await store.load_thread("thr_1", ALICE)).id == "thr_1"
    page = await store.load_thread_items("thr_1", None, 10, "asc", ALICE)
    assert [item.id for item in page.data] == ["msg_1"]


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
async def test_the_documented_constructor_works_verbatim(backend: str) -> None:
    uri = capabilities.server().uri
    name = f"chatkit_readme_{uuid.uuid4().hex[:12]}"  # "chatkit" in the docs
    if backend == "server-motor":
        store = MongoStore(AsyncIOMotorClient(uri)[name])
    else:
        store = MongoStore(AsyncMongoClient(uri)[name])
    client = store.database.client
    try:
        assert _handshake_name(client).endswith("|chatkit-mongo")
        await _round_trip(store)
    finally:
        await store.close()
        await close_client(client)


@pytest.mark.parametrize("backend", ["server-pymongo"])
async def test_from_uri_owns_its_client_and_closes_it(backend: str) -> None:
    store: MongoStore[Any] = MongoStore.from_uri(
        capabilities.server().uri, database=f"chatkit_readme_{uuid.uuid4().hex[:12]}"
    )
    assert _handshake_name(store.database.client).endswith("|chatkit-mongo")
    await _round_trip(store)
    await store.close()
    with pytest.raises(RuntimeError, match="closed"):
        await store.load_thread("thr_1", ALICE)
