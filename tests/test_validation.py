"""Bad input is refused with an error that names it, before anything is written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, get_args

import pytest
from chatkit.store import StoreItemType, default_generate_id

from chatkit_mongo import MongoStore, OwnerError, UnstorableError
from chatkit_mongo.schema import MODEL_KINDS

from .conftest import RequestContext
from .samples import assistant_message, file_attachment, thread


async def _count_all(store: MongoStore[Any]) -> int:
    total = 0
    for name in store.collections.by_kind(MODEL_KINDS).values():
        total += await store.database[name].count_documents({})
    return total


@dataclass
class TenantContext:
    tenant: str


async def test_owner_from_attribute_mapping_or_custom_resolver(database: Any) -> None:
    store: MongoStore[Any] = MongoStore(database)
    await store.save_thread(thread("thr_attr"), RequestContext(user_id="u1"))
    await store.save_thread(thread("thr_map"), {"user_id": "u1"})
    assert len((await store.load_threads(10, None, "asc", {"user_id": "u1"})).data) == 2

    by_tenant: MongoStore[TenantContext] = MongoStore(database, owner=lambda ctx: ctx.tenant)
    await by_tenant.save_thread(thread("thr_t"), TenantContext("acme"))
    page = await by_tenant.load_threads(10, None, "asc", TenantContext("acme"))
    assert [t.id for t in page.data] == ["thr_t"]
    assert (await by_tenant.load_threads(10, None, "asc", TenantContext("globex"))).data == []


@pytest.mark.parametrize("context", [None, {}, {"user_id": ""}, {"user_id": 42}, object()])
async def test_context_without_owner_is_refused_and_nothing_written(
    store: MongoStore[Any], context: Any
) -> None:
    with pytest.raises(OwnerError, match=r"owner=lambda context"):
        await store.save_thread(thread(), context)
    with pytest.raises(OwnerError):
        await store.add_thread_item("thr_1", assistant_message("msg_1"), context)
    with pytest.raises(OwnerError):
        await store.load_threads(10, None, "asc", context)
    assert await _count_all(store) == 0


@pytest.mark.parametrize(
    ("limit", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (1001, ValueError),
        (10**30, ValueError),
        (True, TypeError),
        (2.0, TypeError),
        ("10", TypeError),
        (None, TypeError),
    ],
)
async def test_bad_limits_are_refused(
    store: MongoStore[Any], alice: RequestContext, limit: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="limit"):
        await store.load_threads(limit, None, "asc", alice)
    with pytest.raises(error, match="limit"):
        await store.load_thread_items("thr_1", None, limit, "asc", alice)


async def test_max_page_size_is_configurable(database: Any, alice: RequestContext) -> None:
    store: MongoStore[Any] = MongoStore(database, max_page_size=5)
    await store.load_threads(5, None, "asc", alice)
    with pytest.raises(ValueError, match=r"between 1 and 5"):
        await store.load_threads(6, None, "asc", alice)
    with pytest.raises(ValueError, match="max_page_size"):
        MongoStore(database, max_page_size=0)


@pytest.mark.parametrize("order", ["ASC", "ascending", "", None, 1])
async def test_unknown_order_is_refused(
    store: MongoStore[Any], alice: RequestContext, order: Any
) -> None:
    with pytest.raises(ValueError, match="order must be"):
        await store.load_threads(10, None, order, alice)
    with pytest.raises(ValueError, match="order must be"):
        await store.load_thread_items("thr_1", None, 10, order, alice)


@pytest.mark.parametrize(
    ("bad_id", "message"), [("", "must not be empty"), ("x" * 513, "at most 512")]
)
async def test_empty_and_huge_ids_are_refused(
    store: MongoStore[Any], alice: RequestContext, bad_id: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await store.save_thread(thread(bad_id), alice)
    with pytest.raises(ValueError, match=message):
        await store.add_thread_item("thr_1", assistant_message(bad_id), alice)
    with pytest.raises(ValueError, match=message):
        await store.save_attachment(file_attachment(bad_id), alice)
    with pytest.raises(ValueError, match=message):
        await store.load_item("thr_1", bad_id, alice)
    assert await _count_all(store) == 0


async def test_odd_but_valid_ids_round_trip(store: MongoStore[Any], alice: RequestContext) -> None:
    for odd in ("../../etc/passwd", "ünï cødé 🧵", "a.b.c", "$dollar", "x" * 512, "with\x00nul"):
        await store.save_thread(thread(odd), alice)
        assert (await store.load_thread(odd, alice)).id == odd


async def test_oversized_item_names_itself_and_writes_nothing(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    huge = assistant_message("msg_big", text="x" * (17 * 1024 * 1024))
    with pytest.raises(UnstorableError, match=r"item msg_big of thread thr_1 is \d+ bytes"):
        await store.add_thread_item("thr_1", huge, alice)
    with pytest.raises(UnstorableError, match="item msg_big"):
        await store.save_item("thr_1", huge, alice)
    assert await _count_all(store) == 0


async def test_integer_past_int64_names_the_thread_and_writes_nothing(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    with pytest.raises(UnstorableError, match=r"thread thr_1 holds an integer outside"):
        await store.save_thread(thread(metadata={"n": 2**63}), alice)
    await store.save_thread(thread(metadata={"n": 2**63 - 1, "m": -(2**63)}), alice)
    assert (await store.load_thread("thr_1", alice)).metadata == {"n": 2**63 - 1, "m": -(2**63)}


async def test_nesting_past_mongodbs_limit_is_refused(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(120):
        cursor["d"] = {}
        cursor = cursor["d"]
    with pytest.raises(UnstorableError, match=r"nested \d+ levels deep"):
        await store.save_thread(thread(metadata=deep), alice)
    assert await _count_all(store) == 0


async def test_a_value_that_contains_itself_is_refused_naming_the_thread(
    store: MongoStore[Any], alice: RequestContext
) -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = [cyclic]
    with pytest.raises(UnstorableError, match=r"thread thr_1 holds a value that contains itself"):
        await store.save_thread(thread(metadata={"v": cyclic}), alice)
    assert await _count_all(store) == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), (1, 2), b"bytes"])
async def test_values_that_would_not_read_back_are_refused(
    store: MongoStore[Any], alice: RequestContext, value: Any
) -> None:
    with pytest.raises(UnstorableError, match=r"field 'metadata'"):
        await store.save_thread(thread(metadata={"v": value}), alice)
    assert await _count_all(store) == 0


def test_generated_ids_keep_chatkits_prefixes_and_carry_96_random_bits() -> None:
    store: MongoStore[Any] = MongoStore.__new__(MongoStore)
    meta = thread()
    for kind in get_args(StoreItemType):
        # Same prefix as ChatKit's own generator, for every kind it knows.
        prefix = default_generate_id(kind).split("_")[0]
        generated = (
            store.generate_thread_id(None)
            if kind == "thread"
            else store.generate_item_id(kind, meta, None)
        )
        assert re.fullmatch(rf"{prefix}_[0-9a-f]{{24}}", generated), generated
    assert len({store.generate_thread_id(None) for _ in range(10_000)}) == 10_000


def test_an_item_type_chatkit_adds_later_gets_an_id_not_a_key_error() -> None:
    """ChatKit's prefix table is its own: a type it does not know yet is named by itself."""
    store: MongoStore[Any] = MongoStore.__new__(MongoStore)
    generated = store.generate_item_id("future_widget", thread(), None)  # type: ignore[arg-type]
    assert re.fullmatch(r"future_widget_[0-9a-f]{24}", generated), generated
