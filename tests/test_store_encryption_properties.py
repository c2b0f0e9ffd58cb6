"""Properties of MongoStore with encryption on, on both real drivers (the wire server):

- generated threads, items of every variant and attachments read back exactly, and as
  a store without encryption reads them; each stored document is the plain store's but
  for a ciphertext in ``data``, and no string of the content is in its raw bytes;
- pages agree with a model when some of the owner's documents are unreadable (made
  under a key since shredded, or copied from another owner): those are left out, and
  ``has_more`` and ``after`` stay exact, whatever the page size and order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

import bson
import pytest
from chatkit.store import NotFoundError
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from hypothesis import given, settings
from hypothesis import strategies as st

from chatkit_mongo._encryption import is_ciphertext
from chatkit_mongo.schema import Field, Kind

from . import samples
from .conftest import RequestContext
from .store_encryption_support import (
    KINDS,
    EncryptedStoreRunner,
    clear_part,
    content_strings,
    copy_under,
    documents,
    raw_documents,
)
from .strategies import attachments, examples, ids, items, threads

_T = TypeVar("_T", ThreadMetadata, ThreadItem)

ROUND_TRIP_EXAMPLES: Final = examples(25)
PAGE_EXAMPLES: Final = examples(25)
MAX_PAGE_SIZE: Final = 4
"""Small, so that pages over many unreadable documents reach the cap on their batches."""


def _same(saved: Any, loaded: Any) -> None:
    assert loaded == saved
    assert loaded.model_dump(mode="json") == saved.model_dump(mode="json")


pytest_plugins = ("tests.encryption_fixtures",)


@pytest.fixture
def runner(wire_driver: str, wire_server_uri: str) -> Iterator[EncryptedStoreRunner]:
    runner = EncryptedStoreRunner(wire_driver, wire_server_uri, max_page_size=MAX_PAGE_SIZE)
    yield runner
    runner.close()


# ---------------------------------------------------------------- round trips


def _distinct_ids(elements: list[Any]) -> list[Any]:
    seen: set[str] = set()
    return [e for e in elements if not (e.id in seen or seen.add(e.id))]  # type: ignore[func-returns-value]


@st.composite
def conversations(draw: st.DrawFn) -> tuple[ThreadMetadata, list[ThreadItem], Attachment]:
    thread = draw(threads())
    thread_items = _distinct_ids(draw(st.lists(items(thread_id=thread.id), min_size=1, max_size=3)))
    return thread, thread_items, draw(attachments(thread_id=thread.id))


async def _save_all(
    store: Any, conversation: tuple[ThreadMetadata, list[ThreadItem], Attachment], owner: Any
) -> None:
    thread, thread_items, attachment = conversation
    await store.save_thread(thread, owner)
    for item in thread_items:
        await store.add_thread_item(thread.id, item, owner)
    await store.save_item(thread.id, thread_items[0], owner)  # the replacing write too
    await store.save_attachment(attachment, owner)


async def _load_all(
    store: Any, conversation: tuple[ThreadMetadata, list[ThreadItem], Attachment], owner: Any
) -> list[Any]:
    thread, thread_items, attachment = conversation
    loaded: list[Any] = [await store.load_thread(thread.id, owner)]
    loaded += (await store.load_threads(MAX_PAGE_SIZE, None, "desc", owner)).data
    loaded += [await store.load_item(thread.id, item.id, owner) for item in thread_items]
    loaded += (await store.load_thread_items(thread.id, None, MAX_PAGE_SIZE, "asc", owner)).data
    loaded.append(await store.load_attachment(attachment.id, owner))
    return loaded


def test_generated_content_round_trips_and_is_never_stored_readable(
    runner: EncryptedStoreRunner,
) -> None:
    @settings(max_examples=ROUND_TRIP_EXAMPLES)
    @given(conversation=conversations())
    def property_(conversation: tuple[ThreadMetadata, list[ThreadItem], Attachment]) -> None:
        owner_name = f"owner-{uuid.uuid4().hex}"
        owner = RequestContext(owner_name)
        runner.run(_save_all(runner.plain, conversation, owner))
        runner.run(_save_all(runner.store, conversation, owner))

        loaded = runner.run(_load_all(runner.store, conversation, owner))
        plain = runner.run(_load_all(runner.plain, conversation, owner))
        for got, from_plain in zip(loaded, plain, strict=True):
            _same(from_plain, got)
        thread, thread_items, attachment = conversation
        _same(thread, loaded[0])
        for saved, got in zip(thread_items, loaded[2 : 2 + len(thread_items)], strict=True):
            _same(saved, got)
        _same(attachment, loaded[-1])

        runner.run(_check_stored(runner, owner_name))

    SEARCHED.clear()
    property_()
    print(f"searched {sum(SEARCHED)} content strings in {len(SEARCHED)} examples")
    assert sum(1 for count in SEARCHED if count) >= len(SEARCHED) // 2


SEARCHED: Final[list[int]] = []
"""How many content strings each example searched the raw documents for."""


async def _check_stored(runner: EncryptedStoreRunner, owner: str) -> None:
    """Each stored document is the plain store's in every field but ``data``, which is
    a ciphertext; no content string of any ``data`` is anywhere in the raw bytes."""
    secrets: set[str] = set()
    clear: list[bytes] = []
    for kind in KINDS:
        encrypted = await documents(runner.database, kind, owner)
        plain = await documents(runner.plain_database, kind, owner)
        assert sorted(map(repr, map(clear_part, encrypted))) == sorted(
            map(repr, map(clear_part, plain))
        )
        assert all(is_ciphertext(document[Field.DATA]) for document in encrypted)
        for document in plain:
            secrets.update(content_strings(document[Field.DATA]))
            clear.append(bson.encode(clear_part(document)))
    # What the store keeps in the clear by design (the owner, ids, sort key, dates and
    # field names, as a plain store has them) is not content: a content string inside
    # those bytes (an id repeated in ``data``) proves nothing either way.
    secrets = {secret for secret in secrets if not any(secret.encode() in c for c in clear)}
    stored = await raw_documents(runner.database, owner)
    leaked = [secret for secret in secrets if any(secret.encode() in raw for raw in stored)]
    assert leaked == []
    SEARCHED.append(len(secrets))


def test_the_round_trip_check_sees_content_strings() -> None:
    """The raw-bytes check above looks for the content strings of a stored ``data``:
    titles, message texts, attachment names, metadata keys and values."""
    item = samples.every_item()[0]
    data = item.model_dump(mode="json")
    found = set(content_strings(data))
    assert {"Hi, ça va? 你好", "report ü.pdf", "inference_options"} <= found
    assert "cat.png" not in found  # too short to search for: 7 bytes


# ---------------------------------------------------------------- pages with unreadable documents

READABLE, SHREDDED, FOREIGN = "readable", "shredded", "foreign"
TIMES: Final = tuple(samples.BASE_TIME + timedelta(milliseconds=n) for n in (0, 0, 1, 2))
"""Few times, so that ties (broken by id) are common."""


def _order_key(element: ThreadMetadata | ThreadItem) -> tuple[datetime, str]:
    return (element.created_at, element.id)


def _expected_page(elements: list[_T], after: str | None, limit: int, order: str) -> Page[_T]:
    ordered = sorted(elements, key=_order_key, reverse=order == "desc")
    ids_ = [element.id for element in ordered]
    rest = ordered[ids_.index(after) + 1 :] if after is not None else ordered
    data = rest[:limit]
    has_more = len(rest) > limit
    return Page(data=data, has_more=has_more, after=data[-1].id if has_more else None)


elements = st.lists(
    st.tuples(ids, st.sampled_from(TIMES), st.sampled_from([READABLE, SHREDDED, FOREIGN])),
    max_size=12,
    unique_by=lambda element: element[0],
)


async def _store_with_unreadable(
    runner: EncryptedStoreRunner, owner: str, kind_of: list[tuple[str, datetime, str]]
) -> tuple[list[ThreadMetadata], list[ThreadItem], list[str]]:
    """``owner``'s threads and items of thread ``thr_p``: the readable ones written by
    the owner; the shredded ones written by the owner under a key since shredded; the
    foreign ones written by another owner and copied under this one."""
    store = runner.store
    engine = store.persistence.encryption
    assert engine is not None
    me, other = RequestContext(owner), RequestContext(f"{owner}-other")

    def thread(element_id: str, created_at: datetime) -> ThreadMetadata:
        return samples.thread(element_id, created_at, title=f"title of {element_id}")

    def item(element_id: str, created_at: datetime) -> ThreadItem:
        return samples.assistant_message(element_id, "thr_p", created_at, f"text {element_id}")

    for wanted, context in ((SHREDDED, me), (FOREIGN, other)):
        for element_id, created_at, kind in kind_of:
            if kind == wanted:
                await store.save_thread(thread(element_id, created_at), context)
                await store.add_thread_item("thr_p", item(element_id, created_at), context)
    await engine.shred(owner)
    members: tuple[Kind, ...] = ("thread", "item")
    for kind in members:
        await copy_under(runner.database, kind, other.user_id, owner)
    readable = [(i, t) for i, t, kind in kind_of if kind == READABLE]
    for element_id, created_at in readable:
        await store.save_thread(thread(element_id, created_at), me)
        await store.add_thread_item("thr_p", item(element_id, created_at), me)
    unreadable = [i for i, _, kind in kind_of if kind != READABLE]
    return (
        [thread(i, t) for i, t in readable],
        [item(i, t) for i, t in readable],
        unreadable,
    )


async def _check_pages(
    store: Any, owner: RequestContext, threads_: list[Any], items_: list[Any], limit: int
) -> None:
    """Every page, as a client follows ``after`` from the start, and from every readable
    element, in both orders, equals the model's page of the readable elements."""

    def page_of(kind: str, after: str | None, order: str) -> Any:
        if kind == "thread":
            return store.load_threads(limit, after, order, owner)
        return store.load_thread_items("thr_p", after, limit, order, owner)

    for kind, model in (("thread", threads_), ("item", items_)):
        for order in ("asc", "desc"):
            # Page by page, as a client follows ``after``, from the start to the end.
            after: str | None = None
            while True:
                got = await page_of(kind, after, order)
                expected = _expected_page(model, after, limit, order)
                assert [e.id for e in got.data] == [e.id for e in expected.data]
                assert (got.has_more, got.after) == (expected.has_more, expected.after)
                assert got.data == expected.data
                if not got.has_more:
                    break
                after = got.after
            # And from every readable element.
            for element in model:
                got = await page_of(kind, element.id, order)
                expected = _expected_page(model, element.id, limit, order)
                assert [e.id for e in got.data] == [e.id for e in expected.data]
                assert (got.has_more, got.after) == (expected.has_more, expected.after)


def test_pages_leave_out_unreadable_documents_and_stay_exact(
    runner: EncryptedStoreRunner,
) -> None:
    _pages_property(runner)


def _pages_property(runner: EncryptedStoreRunner) -> None:
    @settings(max_examples=PAGE_EXAMPLES)
    @given(kind_of=elements, limit=st.integers(1, MAX_PAGE_SIZE))
    def property_(kind_of: list[tuple[str, datetime, str]], limit: int) -> None:
        owner = f"owner-{uuid.uuid4().hex}"
        threads_, items_, unreadable = runner.run(_store_with_unreadable(runner, owner, kind_of))
        context = RequestContext(owner)
        runner.run(_check_pages(runner.store, context, threads_, items_, limit))
        for element_id in unreadable:
            with pytest.raises(NotFoundError):
                runner.run(runner.store.load_thread(element_id, context))
            with pytest.raises(NotFoundError):
                runner.run(runner.store.load_item("thr_p", element_id, context))

    property_()
