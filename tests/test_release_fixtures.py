"""Documents written by every supported ChatKit release read under the running one.

``tests/fixtures/chatkit-RELEASE.json`` holds, per release, a thread, threads of every
status, every item kind and both attachment kinds as that release dumped them (written
by ``scripts/chatkit_fixtures.py RELEASE`` in a virtualenv of that release). Each is
stored here exactly as the store stores it, then read back through the store on every
backend: pages, single loads, nothing skipped, each equal to what the running release
makes of the stored content.
"""

from __future__ import annotations

import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Final

import pytest
from chatkit.types import Attachment, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter

from chatkit_mongo import MongoStore
from chatkit_mongo._codec import ATTACHMENT_ADAPTER, ITEM_ADAPTER, THREAD_ADAPTER
from chatkit_mongo.schema import Field

from .conftest import NAMES, RequestContext
from .release_fixtures import FIXTURES, documents_of, release_of, stored

ROOT: Final = Path(__file__).resolve().parent.parent
ALICE: Final = RequestContext("alice")
ADAPTERS: Final[dict[str, TypeAdapter[Any]]] = {
    "thread": THREAD_ADAPTER,
    "item": ITEM_ADAPTER,
    "attachment": ATTACHMENT_ADAPTER,
}


def test_the_oldest_and_newest_supported_releases_have_fixtures() -> None:
    """The lowest ChatKit the package allows (pyproject) and, in the newest fixture,
    every item and attachment type of the running release: a release adding a type
    fails here until its fixture is added (one command, see the module docstring)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    requirement = next(d for d in project["project"]["dependencies"] if "openai-chatkit" in d)
    lowest = re.search(r">=\s*([0-9.]+)", requirement)
    assert lowest is not None
    floor = tuple(int(part) for part in lowest[1].split("."))
    floor += (0,) * (3 - len(floor))
    releases = [release_of(path) for path in FIXTURES]
    assert floor in releases, f"no fixture of the oldest supported release {floor}"
    newest = documents_of(FIXTURES[releases.index(max(releases))])
    for kind, union in (("item", ThreadItem), ("attachment", Attachment)):
        stored = {d["data"]["type"] for d in newest if d["kind"] == kind}
        missing = _tags(union) - stored
        assert not missing, f"the newest fixture lacks the {kind} types {missing}"


def _tags(union: Any) -> set[str]:
    """The ``type`` values of a discriminated union's models (``Annotated[A | B, ...]``)."""
    members = typing.get_args(typing.get_args(union)[0])
    return {str(model.model_fields["type"].default) for model in members}


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda path: path.stem)
async def test_every_release_fixture_reads_through_the_store(
    store: MongoStore[Any], database: Any, fixture: Path
) -> None:
    documents = documents_of(fixture)
    expected: dict[str, list[Any]] = {kind: [] for kind in ADAPTERS}
    order: dict[str, str] = {}
    for document in documents:
        kind, data = document["kind"], document["data"]
        document_stored = stored(kind, data)
        await database[NAMES.name_of(kind)].insert_one(document_stored)
        expected[kind].append(ADAPTERS[kind].validate_python(data))
        if kind == "thread":
            order[data["id"]] = document_stored[Field.SORT_KEY]
    threads: list[ThreadMetadata] = sorted(expected["thread"], key=lambda t: order[t.id])

    listed: list[Any] = []
    after = None
    while True:
        page = await store.load_threads(2, after, "asc", ALICE)
        listed += page.data
        if not page.has_more:
            break
        after = page.after
    items = await store.load_thread_items("thr_1", None, 100, "asc", ALICE)

    assert listed == threads
    assert items.data == expected["item"]
    assert not items.has_more
    for thread in threads:
        assert await store.load_thread(thread.id, ALICE) == thread
    for item in expected["item"]:
        assert await store.load_item("thr_1", item.id, ALICE) == item
    for attachment in expected["attachment"]:
        assert await store.load_attachment(attachment.id, ALICE) == attachment
    assert store.unreadable.total == 0
    # every release since 1.0 stores both attachment kinds and eight item kinds at least
    assert {a.type for a in expected["attachment"]} == {"file", "image"}
    assert len({item.type for item in expected["item"]}) >= 8


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda path: path.stem)
async def test_saving_what_was_read_from_a_release_keeps_its_content(
    store: MongoStore[Any], database: Any, fixture: Path
) -> None:
    """A save by the running release of what it read leaves every stored field: the
    ones it knows as they were read, the others as that release wrote them."""
    for document in documents_of(fixture):
        kind, data = document["kind"], document["data"]
        await database[NAMES.name_of(kind)].insert_one(stored(kind, data))
    before = {d["_id"]: d[Field.DATA] async for d in database[NAMES.items].find({})}

    for item in (await store.load_thread_items("thr_1", None, 100, "asc", ALICE)).data:
        await store.save_item("thr_1", item, ALICE)

    after = {d["_id"]: d[Field.DATA] async for d in database[NAMES.items].find({})}
    for document_id, data in before.items():
        assert set(after[document_id]) >= set(data)
        assert ITEM_ADAPTER.validate_python(after[document_id]) == ITEM_ADAPTER.validate_python(
            data
        )
