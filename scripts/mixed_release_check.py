"""The mixed-release check, run by ``scripts/mixed_release.py`` with the Python of a
virtualenv holding the oldest supported ChatKit: documents written by the newest ChatKit
(its fixture file), plus an item of a type no release has yet, read by this one.

Pages must skip what this release cannot read and return the rest in order, with exact
paging in both orders and at every page size; a single load of a skipped item raises
``UnreadableDocumentError``; saving a thread this release read keeps the fields only the
newer release knows. Exits 1 (an AssertionError) on the first difference.

On the embedded in-process backend (mongomock-motor): the check is about ChatKit's
models, not the server, and CI runs it without one.
"""

from __future__ import annotations

import asyncio
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from mongomock_motor import AsyncMongoMockClient
from pydantic import TypeAdapter, ValidationError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chatkit.types import ThreadItem  # noqa: E402  # after the path: the repository's tests

from chatkit_mongo import MongoStore, UnreadableDocumentError  # noqa: E402
from chatkit_mongo.schema import CollectionNames, Field  # noqa: E402
from tests.release_fixtures import FIXTURES, documents_of, stored  # noqa: E402

OWNER = {"user_id": "alice"}
NAMES = CollectionNames()
FUTURE_ITEM = {
    "id": "holo_1",
    "thread_id": "thr_1",
    "created_at": "2026-11-22T09:30:16",
    "type": "hologram",
    "frames": [1, 2, 3],
}
"""An item of a type no ChatKit release has: unreadable here whatever this release is."""


def readable_here(data: dict[str, Any]) -> bool:
    try:
        TypeAdapter(ThreadItem).validate_python(data)
    except ValidationError:
        return False
    return True


async def read_all(store: MongoStore[Any], limit: int, order: str) -> list[str]:
    ids: list[str] = []
    after = None
    for _ in range(100):
        page = await store.load_thread_items("thr_1", after, limit, order, OWNER)
        ids += [item.id for item in page.data]
        if not page.has_more:
            assert page.after is None
            return ids
        assert page.data, "a page with more to come must advance"
        assert page.after == page.data[-1].id
        after = page.after
    raise AssertionError("pages did not end")


async def check() -> str:
    newest = FIXTURES[-1]
    database: Any = AsyncMongoMockClient()["mixed_release"]
    store: MongoStore[Any] = MongoStore(database)
    await store.ensure_indexes()
    items: list[dict[str, Any]] = []
    for element in [*documents_of(newest), {"kind": "item", "data": FUTURE_ITEM}]:
        document = stored(element["kind"], element["data"])
        await database[NAMES.name_of(element["kind"])].insert_one(document)
        if element["kind"] == "item":
            items.append(document)
    items.sort(key=lambda document: document[Field.SORT_KEY])
    readable = [d[Field.DATA]["id"] for d in items if readable_here(d[Field.DATA])]
    unreadable = [d[Field.DATA]["id"] for d in items if not readable_here(d[Field.DATA])]
    assert unreadable, "nothing here is unreadable: the check would prove nothing"

    readings = 0
    for limit in (1, 2, 3, 100):
        for order, expected in (("asc", readable), ("desc", readable[::-1])):
            assert await read_all(store, limit, order) == expected, (limit, order)
            readings += 1
    assert store.unreadable.skipped == {NAMES.items: readings * len(unreadable)}
    for item_id in unreadable:
        raised: UnreadableDocumentError | None = None
        try:
            await store.load_item("thr_1", item_id, OWNER)
        except UnreadableDocumentError as error:
            raised = error
        assert raised is not None, f"load_item of {item_id} did not raise"
        assert item_id in str(raised)

    threads = (await store.load_threads(100, None, "asc", OWNER)).data
    before = {d[Field.THREAD_ID]: d[Field.DATA] async for d in database[NAMES.threads].find({})}
    for thread in threads:
        thread.title = "renamed by the older release"
        await store.save_thread(thread, OWNER)
    after = {d[Field.THREAD_ID]: d[Field.DATA] async for d in database[NAMES.threads].find({})}
    for thread_id, data in before.items():
        kept = {name: value for name, value in data.items() if name != "title"}
        assert {name: after[thread_id][name] for name in kept} == kept, thread_id
    return (
        f"ChatKit {version('openai-chatkit')} read {newest.name} and a future item: "
        f"{len(readable)} items read, {len(unreadable)} skipped in each of {readings} "
        f"readings ({', '.join(unreadable)}), {len(threads)} threads saved with their fields"
    )


if __name__ == "__main__":
    print(asyncio.run(check()))
