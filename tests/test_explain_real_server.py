"""On a real server, every hot query is an index scan with no in-memory sort.

The doubles cannot explain a query, so this module runs on the server backends only,
and only where the server can explain (a real mongod, not jongodb).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from chatkit_mongo import MongoStore
from chatkit_mongo.operations.explain import explain, hot_queries
from chatkit_mongo.schema import Field

from .conftest import SERVER_BACKENDS, RequestContext, scratch_database
from .samples import BASE_TIME, assistant_message, thread

pytestmark = [
    pytest.mark.needs("explain"),
    pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True),
]


@pytest.fixture(params=[None, timedelta(days=30)], ids=["plain", "retention"])
async def real_store(
    request: pytest.FixtureRequest, client: Any, backend: str
) -> AsyncIterator[MongoStore[Any]]:
    """A store on the real server, without and with retention (whose reads add a filter)."""
    async with scratch_database(client, backend) as database:
        yield MongoStore(database, retention=request.param)


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
        sent = real_store.persistence.visible(find)  # exactly as the store sends it
        summary = await explain(real_store.database, real_store.collections, sent)
        assert summary.problems() == [], f"{name}: {summary.describe()}"
        if name != "load_attachment":
            assert summary.returned, f"{name}: {summary.describe()}"
