"""On a real server, every hot query is an index scan with no in-memory sort.

The doubles cannot explain a query, so this module needs ``MONGODB_URI``; without it
each test is skipped with that reason.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from chatkit_mongo import Field, MongoStore
from chatkit_mongo.explain import explain, hot_queries

from .conftest import MONGODB_URI, REAL_SERVER_SKIP, RequestContext, make_client
from .samples import BASE_TIME, assistant_message, thread


@pytest.fixture(params=[None, timedelta(days=30)], ids=["plain", "retention"])
async def real_store(request: pytest.FixtureRequest) -> AsyncIterator[MongoStore[Any]]:
    """A store on the real server, without and with retention (whose reads add a filter)."""
    if not MONGODB_URI:
        pytest.skip(REAL_SERVER_SKIP)
    client = make_client("mongodb")
    name = f"chatkit_test_{uuid.uuid4().hex[:12]}"
    yield MongoStore(client[name], retention=request.param)
    await client.drop_database(name)
    await client.close()


async def test_hot_queries_are_index_scans_without_sort(
    real_store: MongoStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    for ctx in (alice, bob):  # another owner's data must not be examined either
        for n in range(5):
            await real_store.save_thread(thread(f"thr_{n}"), ctx)
        for n in range(300):
            created = BASE_TIME + timedelta(microseconds=n)
            await real_store.add_thread_item(
                "thr_1", assistant_message(f"msg_{n:03d}", created_at=created), ctx
            )
    anchor = await real_store.database[real_store.collections.items].find_one(
        {Field.OWNER: "alice", Field.ITEM_ID: "msg_150"}
    )
    for name, find in hot_queries("alice", "thr_1", "msg_150", anchor[Field.SORT_KEY]):
        sent = real_store._visible(find)  # exactly as the store sends it
        summary = await explain(real_store.database, real_store.collections, sent)
        assert summary.problems() == [], f"{name}: {summary.describe()}"
        if name != "load_attachment":
            assert summary.returned, f"{name}: {summary.describe()}"
