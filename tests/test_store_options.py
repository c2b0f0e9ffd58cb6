"""``MongoStore.from_uri`` takes every option ``MongoStore`` does, and a closed store says so
with the library's own error. No server is contacted: the client connects on first use."""

from __future__ import annotations

import inspect
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import InvalidOperation, ServerSelectionTimeoutError

from chatkit_mongo import (
    ChatKitMongoError,
    CollectionNames,
    MongoStore,
    StoreClosedError,
    Telemetry,
    UnreadableDocuments,
)
from chatkit_mongo.encryption import LOCAL_KEY_BYTES, Encryption

from .conftest import RequestContext

_UNREACHABLE = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=50"


def _clock() -> datetime:
    return datetime(2030, 1, 1, tzinfo=UTC)


def _wrap(kind: str, collection: Any) -> Any:
    return collection


OPTIONS: dict[str, Any] = {
    "owner": lambda context: "tenant-" + context.user_id,
    "collections": CollectionNames(threads="t", items="i", attachments="a", bucket="b"),
    "auto_create_indexes": False,
    "max_page_size": 7,
    "retention": timedelta(days=3),
    "retention_refresh": timedelta(hours=2),
    "clock": _clock,
    "wrap_collection": _wrap,
    "encryption": Encryption.local(os.urandom(LOCAL_KEY_BYTES)),
    "telemetry": Telemetry(enabled=False, record_identifiers=True),
    "owns_client": True,
    "unreadable": UnreadableDocuments(),
}
"""A value other than the default for every keyword option of ``MongoStore``."""


def test_the_options_list_covers_every_keyword_of_the_constructor() -> None:
    keywords = {
        parameter.name
        for parameter in inspect.signature(MongoStore).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert keywords == set(OPTIONS)


async def test_from_uri_gives_every_store_option_to_the_store_and_the_rest_to_the_client() -> None:
    store: MongoStore[Any] = MongoStore.from_uri(
        _UNREACHABLE, database="db", appname="options-test", **OPTIONS
    )
    try:
        assert store.database.name == "db"
        assert store.collections == OPTIONS["collections"]
        assert store.max_page_size == 7
        assert store.retention is not None
        assert (store.retention.period, store.retention.refresh) == (
            timedelta(days=3),
            timedelta(hours=2),
        )
        assert store.retention.clock is _clock
        assert store.retention.now() == datetime(2030, 1, 1)
        assert await store.persistence.begin(RequestContext("alice")) == "tenant-alice"
        assert store.persistence.collection("thread").name == "t"
        assert store.encryption == OPTIONS["encryption"]
        assert store.persistence.encryption is not None
        assert store.telemetry_target.settings == OPTIONS["telemetry"]
        assert store.unreadable is OPTIONS["unreadable"]
        assert store.database.client.options.pool_options.metadata["application"] == {
            "name": "options-test"
        }
    finally:
        await store.close()


async def test_a_closed_store_raises_the_librarys_closed_error() -> None:
    store: MongoStore[Any] = MongoStore.from_uri(_UNREACHABLE, auto_create_indexes=False)
    await store.close()
    with pytest.raises(StoreClosedError, match="closed") as raised:
        await store.load_thread("thr_1", RequestContext("alice"))
    assert isinstance(raised.value, ChatKitMongoError)
    assert isinstance(raised.value, RuntimeError)  # what callers caught before
    with pytest.raises(StoreClosedError):
        await store.ping()


@pytest.mark.parametrize("owns_client", [False, True])
async def test_close_closes_the_client_only_of_a_store_that_owns_it(owns_client: bool) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(_UNREACHABLE)
    store: MongoStore[Any] = MongoStore(
        client["db"], auto_create_indexes=False, owns_client=owns_client
    )
    await store.close()
    try:
        if owns_client:
            with pytest.raises(StoreClosedError):
                await store.load_thread("thr_1", RequestContext("alice"))
            with pytest.raises(InvalidOperation, match="after close"):
                await client["db"].command("ping")
        else:  # the caller's client and the store both still work (no server: a timeout)
            with pytest.raises(ServerSelectionTimeoutError):
                await store.load_thread("thr_1", RequestContext("alice"))
    finally:
        await client.close()


async def test_from_uri_always_owns_the_client_it_opens() -> None:
    store: MongoStore[Any] = MongoStore.from_uri(
        _UNREACHABLE, auto_create_indexes=False, owns_client=False
    )
    client = store.database.client
    await store.close()
    with pytest.raises(InvalidOperation, match="after close"):
        await client["db"].command("ping")
