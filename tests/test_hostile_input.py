"""Hostile input through every argument of every Store call.

Each bad value must be refused with an error that names the argument, before anything is
read or written; and whatever an argument holds, no call reaches another owner's data.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import bson
import pytest
from chatkit.store import NotFoundError
from chatkit.types import AssistantMessageItem, ThreadMetadata

from chatkit_mongo import MongoStore, OwnerError, UnstorableError
from chatkit_mongo.owner import MAX_OWNER_LENGTH
from chatkit_mongo.schema import (
    MAX_DOCUMENT_BYTES,
    MAX_ID_LENGTH,
    MAX_NESTING,
    Field,
)

from .conftest import RequestContext
from .hostile_values import BAD_ID_STRINGS, INJECTIONS, ODD_BUT_VALID_IDS
from .samples import assistant_message, file_attachment, thread
from .strategies import INT64_MAX, nested

Call = Callable[[MongoStore[Any], Any, Any], Awaitable[Any]]
"""``(store, value, context) -> awaitable``: one Store call with ``value`` in one argument."""

ID_ARGUMENTS: Final[dict[str, Call]] = {
    "load_thread thread_id": lambda s, v, c: s.load_thread(v, c),
    "delete_thread thread_id": lambda s, v, c: s.delete_thread(v, c),
    "save_thread thread.id": lambda s, v, c: s.save_thread(
        thread().model_copy(update={"id": v}), c
    ),
    "load_threads after": lambda s, v, c: s.load_threads(5, v, "asc", c),
    "load_thread_items thread_id": lambda s, v, c: s.load_thread_items(v, None, 5, "asc", c),
    "load_thread_items after": lambda s, v, c: s.load_thread_items("thr_1", v, 5, "asc", c),
    "add_thread_item thread_id": lambda s, v, c: s.add_thread_item(v, _item(thread_id=v), c),
    "add_thread_item item.id": lambda s, v, c: s.add_thread_item("thr_1", _item(item_id=v), c),
    "save_item thread_id": lambda s, v, c: s.save_item(v, _item(thread_id=v), c),
    "save_item item.id": lambda s, v, c: s.save_item("thr_1", _item(item_id=v), c),
    "load_item thread_id": lambda s, v, c: s.load_item(v, "msg_1", c),
    "load_item item_id": lambda s, v, c: s.load_item("thr_1", v, c),
    "delete_thread_item thread_id": lambda s, v, c: s.delete_thread_item(v, "msg_1", c),
    "delete_thread_item item_id": lambda s, v, c: s.delete_thread_item("thr_1", v, c),
    "save_attachment attachment.id": lambda s, v, c: s.save_attachment(_attachment(v), c),
    "save_attachment attachment.thread_id": lambda s, v, c: s.save_attachment(
        _attachment("atc_1", thread_id=v), c
    ),
    "load_attachment attachment_id": lambda s, v, c: s.load_attachment(v, c),
    "delete_attachment attachment_id": lambda s, v, c: s.delete_attachment(v, c),
}
"""Every argument that names a thread, item or attachment, in every call that takes one."""

EVERY_CALL: Final[dict[str, Call]] = {
    "load_thread": lambda s, _, c: s.load_thread("thr_1", c),
    "save_thread": lambda s, _, c: s.save_thread(thread(), c),
    "load_threads": lambda s, _, c: s.load_threads(5, None, "asc", c),
    "delete_thread": lambda s, _, c: s.delete_thread("thr_1", c),
    "load_thread_items": lambda s, _, c: s.load_thread_items("thr_1", None, 5, "asc", c),
    "add_thread_item": lambda s, _, c: s.add_thread_item("thr_1", _item(), c),
    "save_item": lambda s, _, c: s.save_item("thr_1", _item(), c),
    "load_item": lambda s, _, c: s.load_item("thr_1", "msg_1", c),
    "delete_thread_item": lambda s, _, c: s.delete_thread_item("thr_1", "msg_1", c),
    "save_attachment": lambda s, _, c: s.save_attachment(_attachment("atc_1"), c),
    "load_attachment": lambda s, _, c: s.load_attachment("atc_1", c),
    "delete_attachment": lambda s, _, c: s.delete_attachment("atc_1", c),
}


def _item(thread_id: Any = "thr_1", item_id: Any = "msg_1") -> Any:
    return assistant_message("msg_1", thread_id="thr_1").model_copy(
        update={"id": item_id, "thread_id": thread_id}
    )


def _attachment(attachment_id: Any, thread_id: Any = None) -> Any:
    return file_attachment("atc_1").model_copy(update={"id": attachment_id, "thread_id": thread_id})


async def _seed(store: MongoStore[Any], context: RequestContext) -> None:
    """One thread with one item, and one attachment of it, for ``context``'s owner."""
    await store.save_thread(thread("thr_1", metadata={"owner": context.user_id}), context)
    await store.add_thread_item("thr_1", _item(), context)
    await store.save_attachment(_attachment("atc_1", thread_id="thr_1"), context)


async def _assert_intact(store: MongoStore[Any], context: RequestContext) -> None:
    loaded = await store.load_thread("thr_1", context)
    assert loaded.metadata == {"owner": context.user_id}
    assert await store.load_item("thr_1", "msg_1", context) == _item()
    assert (await store.load_attachment("atc_1", context)).thread_id == "thr_1"
    page = await store.load_thread_items("thr_1", None, 10, "asc", context)
    assert [item.id for item in page.data] == ["msg_1"]


@pytest.mark.parametrize("value", INJECTIONS, ids=repr)
@pytest.mark.parametrize("argument", ID_ARGUMENTS)
async def test_operator_injection_is_refused_naming_the_argument(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext, argument: str, value: Any
) -> None:
    await _seed(store, bob)
    name = argument.split()[1]
    with pytest.raises(TypeError, match=rf"^{name} must be a str, not {type(value).__name__}"):
        await ID_ARGUMENTS[argument](store, value, alice)
    await _assert_intact(store, bob)


@pytest.mark.parametrize("value", BAD_ID_STRINGS, ids=["empty", "too long", "surrogate"])
@pytest.mark.parametrize("argument", ID_ARGUMENTS)
async def test_bad_id_strings_are_refused_naming_the_argument(
    store: MongoStore[Any], alice: RequestContext, argument: str, value: str
) -> None:
    """Regression (surrogate): a lone surrogate in an id reached the driver, which fails
    with a bare UnicodeEncodeError (and the doubles, which never encode, stored it)."""
    await _seed(store, alice)
    name = argument.split()[1]
    with pytest.raises(ValueError, match=rf"^{name} .*{BAD_ID_STRINGS[value]}"):
        await ID_ARGUMENTS[argument](store, value, alice)
    await _assert_intact(store, alice)
    threads = await store.load_threads(10, None, "asc", alice)
    assert [loaded.id for loaded in threads.data] == ["thr_1"]


@pytest.mark.parametrize("odd_id", ODD_BUT_VALID_IDS, ids=repr)
async def test_odd_ids_round_trip_and_stay_with_their_owner(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext, odd_id: str
) -> None:
    await _seed(store, bob)
    await store.save_thread(thread(odd_id), alice)
    await store.add_thread_item(odd_id, assistant_message(odd_id, thread_id=odd_id), alice)
    await store.save_attachment(_attachment(odd_id, thread_id=odd_id), alice)

    assert (await store.load_thread(odd_id, alice)).id == odd_id
    assert (await store.load_item(odd_id, odd_id, alice)).id == odd_id
    assert (await store.load_attachment(odd_id, alice)).id == odd_id
    with pytest.raises(NotFoundError):
        await store.load_thread(odd_id, bob)
    page = await store.load_thread_items(odd_id, odd_id, 5, "asc", alice)
    assert (page.data, page.has_more) == ([], False)

    await store.delete_thread(odd_id, alice)
    with pytest.raises(NotFoundError):
        await store.load_attachment(odd_id, alice)
    await _assert_intact(store, bob)


RefusedAs = tuple[type[Exception], str]
OUT_OF_RANGE: Final[RefusedAs] = (ValueError, "between 1 and 1000")
LIMIT_ARGUMENTS: Final[dict[str, Call]] = {
    "load_threads": lambda s, v, c: s.load_threads(v, None, "asc", c),
    "load_thread_items": lambda s, v, c: s.load_thread_items("thr_1", None, v, "asc", c),
}
ORDER_ARGUMENTS: Final[dict[str, Call]] = {
    "load_threads": lambda s, v, c: s.load_threads(5, None, v, c),
    "load_thread_items": lambda s, v, c: s.load_thread_items("thr_1", None, 5, v, c),
}


@pytest.mark.parametrize(
    ("limit", "refusal"),
    [
        (0, OUT_OF_RANGE),
        (-1, OUT_OF_RANGE),
        (1001, OUT_OF_RANGE),
        (INT64_MAX + 1, OUT_OF_RANGE),
        (True, (TypeError, "not bool")),
        (1.0, (TypeError, "not float")),
        ("10", (TypeError, "not str")),
        (None, (TypeError, "not NoneType")),
        ({"$gt": 0}, (TypeError, "not dict")),
    ],
    ids=repr,
)
@pytest.mark.parametrize("call", LIMIT_ARGUMENTS)
async def test_bad_limits_are_refused(
    store: MongoStore[Any], alice: RequestContext, call: str, limit: Any, refusal: RefusedAs
) -> None:
    await _seed(store, alice)
    error, message = refusal
    with pytest.raises(error, match=rf"^limit must .*{message}"):
        await LIMIT_ARGUMENTS[call](store, limit, alice)


async def test_limit_of_max_page_size_is_served(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await _seed(store, alice)
    page = await store.load_thread_items("thr_1", None, store.max_page_size, "desc", alice)
    assert ([item.id for item in page.data], page.has_more) == (["msg_1"], False)


@pytest.mark.parametrize("order", ["ASC", "", None, 1, -1, "descending", {"$ne": "x"}], ids=repr)
@pytest.mark.parametrize("call", ORDER_ARGUMENTS)
async def test_unknown_orders_are_refused(
    store: MongoStore[Any], alice: RequestContext, call: str, order: Any
) -> None:
    with pytest.raises(ValueError, match=r'^order must be "asc" or "desc"'):
        await ORDER_ARGUMENTS[call](store, order, alice)


OWNERLESS: Final[list[Any]] = [
    None,
    {},
    object(),
    {"user_id": ""},
    {"user_id": 5},
    {"user_id": {"$ne": None}},
    RequestContext(user_id=""),
    RequestContext(user_id="x" * 513),
    RequestContext(user_id="bob\ud800"),
]


def _stable_id(value: Any) -> str:
    """repr, but the same in every process: a bare object's repr holds its address, and
    pytest-xdist requires each worker to collect the same test ids."""
    return "object()" if type(value) is object else repr(value)


@pytest.mark.parametrize("context", OWNERLESS, ids=_stable_id)
@pytest.mark.parametrize("call", EVERY_CALL)
async def test_contexts_without_a_usable_owner_touch_nothing(
    store: MongoStore[Any], bob: RequestContext, call: str, context: Any
) -> None:
    """Regression (surrogate owner): an owner holding a lone surrogate was accepted."""
    await _seed(store, bob)
    with pytest.raises(OwnerError, match="owner"):
        await EVERY_CALL[call](store, None, context)
    await _assert_intact(store, bob)


async def test_a_page_cannot_start_after_another_owners_element(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    await _seed(store, bob)
    await store.save_thread(thread("thr_a"), alice)
    with pytest.raises(NotFoundError, match="Thread thr_1 not found"):
        await store.load_threads(5, "thr_1", "asc", alice)
    with pytest.raises(NotFoundError, match="Item msg_1 not found in thread thr_1"):
        await store.load_thread_items("thr_1", "msg_1", 5, "asc", alice)


async def test_same_ids_in_two_owners_never_cross(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    await _seed(store, bob)
    await _seed(store, alice)
    await store.save_item("thr_1", _item().model_copy(update={"content": []}), alice)
    await store.delete_thread_item("thr_1", "msg_1", alice)
    await store.delete_attachment("atc_1", alice)
    await store.delete_thread("thr_1", alice)
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_1", alice)
    await _assert_intact(store, bob)


def _sized_thread(metadata_bytes: int) -> ThreadMetadata:
    return thread("thr_big", metadata={"blob": "x" * metadata_bytes})


async def test_oversized_thread_is_refused_and_not_stored(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    with pytest.raises(UnstorableError, match=r"thread thr_big is \d+ bytes as BSON"):
        await store.save_thread(_sized_thread(MAX_DOCUMENT_BYTES), alice)
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_big", alice)
    await store.save_thread(_sized_thread(MAX_DOCUMENT_BYTES - 4096), alice)
    assert len((await store.load_thread("thr_big", alice)).metadata["blob"]) > 16_000_000


_LONGEST_ID: Final = "\N{FOX FACE}" * MAX_ID_LENGTH
"""The most bytes an id takes: its most characters, each four bytes in UTF-8."""


@pytest.mark.parametrize("kind", ["thread", "item"])
async def test_the_longest_owner_and_ids_are_held_to_the_size_limit_to_the_byte(
    store: MongoStore[Any], kind: str
) -> None:
    """The size limit counts the owner and ids too: with the longest of each, a
    document of exactly the limit is stored, and one a byte larger refused with the
    stored one left as it was."""
    owner = RequestContext(user_id="\N{FOX FACE}" * MAX_OWNER_LENGTH)

    async def save(size: int) -> None:
        if kind == "thread":
            await store.save_thread(thread(_LONGEST_ID, metadata={"blob": "x" * size}), owner)
        else:
            reply = assistant_message(_LONGEST_ID, _LONGEST_ID, text="x" * size)
            await store.save_item(_LONGEST_ID, reply, owner)

    async def stored_size() -> int:
        await save(0)
        name = store.collections.threads if kind == "thread" else store.collections.items
        document = await store.database[name].find_one({Field.OWNER: owner.user_id})
        assert document is not None
        del document["_id"]  # the check is made before the driver adds it (the headroom)
        return len(bson.encode(document))

    most = MAX_DOCUMENT_BYTES - 1024 - await stored_size()
    await save(most)
    with pytest.raises(UnstorableError, match=f"is {MAX_DOCUMENT_BYTES - 1024 + 1} bytes as BSON"):
        await save(most + 1)
    if kind == "thread":
        kept = (await store.load_thread(_LONGEST_ID, owner)).metadata["blob"]
    else:
        item = await store.load_item(_LONGEST_ID, _LONGEST_ID, owner)
        assert isinstance(item, AssistantMessageItem)
        kept = item.content[0].text
    assert len(kept) == most


async def test_oversized_item_replacing_a_stored_one_leaves_it_as_it_was(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    await _seed(store, alice)
    huge = assistant_message("msg_1", text="y" * MAX_DOCUMENT_BYTES)
    with pytest.raises(UnstorableError, match=r"item msg_1 of thread thr_1 is \d+ bytes"):
        await store.save_item("thr_1", huge, alice)
    await _assert_intact(store, alice)


@pytest.mark.parametrize("value", [INT64_MAX + 1, -(2**63) - 1, 10**30], ids=repr)
async def test_integers_past_int64_are_refused(
    store: MongoStore[Any], alice: RequestContext, value: int
) -> None:
    with pytest.raises(UnstorableError, match="outside MongoDB's 64-bit range"):
        await store.save_thread(thread("thr_int", metadata={"n": [value]}), alice)
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_int", alice)


async def test_nesting_is_allowed_up_to_mongodbs_limit_and_refused_past_it(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    # The stored document is one level, ``data`` a second, so metadata gets the rest.
    deepest = MAX_NESTING - 2
    await store.save_thread(thread("thr_deep", metadata=nested(deepest)), alice)
    assert (await store.load_thread("thr_deep", alice)).metadata == nested(deepest)
    with pytest.raises(UnstorableError, match=f"nested {MAX_NESTING + 1} levels deep"):
        await store.save_thread(thread("thr_deep", metadata=nested(deepest + 1)), alice)
    assert (await store.load_thread("thr_deep", alice)).metadata == nested(deepest)
