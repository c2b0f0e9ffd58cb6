"""Round-trip properties: what is saved loads back exactly, or is refused and not stored.

Generated threads, every ThreadItem variant and both attachment types carry hostile
metadata (deep nesting, unicode, empty, dotted and dollar-led keys, int64 edges, long
strings). Each must read back equal, field for field and in its JSON form, or be refused
with an error that names the element, leaving nothing behind.
"""

from __future__ import annotations

import math
import re
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, Final

import bson
import pytest
from chatkit.store import NotFoundError
from chatkit.types import (
    Attachment,
    ClientToolCallItem,
    FileAttachment,
    HiddenContextItem,
    ThreadItem,
    ThreadMetadata,
)
from hypothesis import given
from hypothesis import strategies as st

from chatkit_mongo import UnstorableError

from .conftest import BACKENDS, RequestContext
from .samples import BASE_TIME, tool_call
from .strategies import (
    INT64_MAX,
    INT64_MIN,
    StoreRunner,
    attachments,
    items,
    metadata,
    nested,
    special_metadata,
    threads,
)

ALICE: Final = RequestContext(user_id="alice")

UNSTORABLE: Final[dict[str, Any]] = {
    "nan": math.nan,
    "infinity": -math.inf,
    "past int64": INT64_MAX + 1,
    "before int64": INT64_MIN - 1,
    "nested 101 deep": nested(101),
    "lone surrogate": "ok \ud800",
    "NUL in a key": {"k\x00": 1},
    "datetime": datetime(2026, 1, 1),
    "bytes": b"ok",
    "bytes not UTF-8": b"\x00\xff",
    "an object": object(),
    "tuple": (1, 2),
}
"""Values that cannot be stored so as to read back equal, each with what it is."""

unstorable = st.sampled_from(sorted(UNSTORABLE))


def _same(saved: Any, loaded: Any) -> None:
    assert loaded == saved
    assert loaded.model_dump(mode="json") == saved.model_dump(mode="json")


def _with_value(document: dict[str, Any], value: Any) -> dict[str, Any]:
    """``document`` with ``value`` added under a key, one level down."""
    return {**document, "inner": {"bad": value}}


@pytest.mark.parametrize("backend", BACKENDS)
@given(thread=threads())
def test_thread_round_trips(backend: str, thread: ThreadMetadata) -> None:
    runner = StoreRunner(backend)
    try:
        runner.run(runner.store.save_thread(thread, ALICE))
        _same(thread, runner.run(runner.store.load_thread(thread.id, ALICE)))
        page = runner.run(runner.store.load_threads(10, None, "asc", ALICE))
        assert [loaded.id for loaded in page.data] == [thread.id]
        _same(thread, page.data[0])
    finally:
        runner.close()


@pytest.mark.parametrize("backend", BACKENDS)
@given(item=items())
def test_item_round_trips(backend: str, item: ThreadItem) -> None:
    runner = StoreRunner(backend)
    try:
        runner.run(runner.store.add_thread_item(item.thread_id, item, ALICE))
        _same(item, runner.run(runner.store.load_item(item.thread_id, item.id, ALICE)))
        page = runner.run(runner.store.load_thread_items(item.thread_id, None, 5, "desc", ALICE))
        assert len(page.data) == 1
        _same(item, page.data[0])
        # An identical re-add (a retry) is a no-op, whatever the content holds.
        runner.run(runner.store.add_thread_item(item.thread_id, item, ALICE))
    finally:
        runner.close()


@pytest.mark.parametrize("backend", BACKENDS)
@given(attachment=attachments(thread_id="thr_1") | attachments())
def test_attachment_round_trips(backend: str, attachment: Attachment) -> None:
    runner = StoreRunner(backend)
    try:
        runner.run(runner.store.save_attachment(attachment, ALICE))
        _same(attachment, runner.run(runner.store.load_attachment(attachment.id, ALICE)))
    finally:
        runner.close()


@pytest.mark.parametrize("backend", BACKENDS)
@given(thread=threads(), bad=unstorable)
def test_unstorable_thread_is_refused_and_not_stored(
    backend: str, thread: ThreadMetadata, bad: str
) -> None:
    hostile = thread.model_copy(update={"metadata": _with_value(thread.metadata, UNSTORABLE[bad])})
    runner = StoreRunner(backend)
    try:
        with pytest.raises(UnstorableError, match=re.escape(f"thread {thread.id}")):
            runner.run(runner.store.save_thread(hostile, ALICE))
        with pytest.raises(NotFoundError):
            runner.run(runner.store.load_thread(thread.id, ALICE))
    finally:
        runner.close()


@pytest.mark.parametrize("backend", BACKENDS)
@given(
    item=items(variant=st.sampled_from(["ClientToolCallItem", "HiddenContextItem"])),
    bad=unstorable,
    replace=st.booleans(),
)
def test_unstorable_item_is_refused_and_not_stored(
    backend: str, item: ThreadItem, bad: str, replace: bool
) -> None:
    value = UNSTORABLE[bad]
    hostile: ThreadItem
    if isinstance(item, ClientToolCallItem):
        hostile = item.model_copy(update={"arguments": _with_value(item.arguments, value)})
    else:
        assert isinstance(item, HiddenContextItem)
        hostile = item.model_copy(update={"content": [item.content, value]})
    runner = StoreRunner(backend)
    write = runner.store.save_item if replace else runner.store.add_thread_item
    try:
        with pytest.raises(
            UnstorableError, match=re.escape(f"item {item.id} of thread {item.thread_id}")
        ):
            runner.run(write(item.thread_id, hostile, ALICE))
        page = runner.run(runner.store.load_thread_items(item.thread_id, None, 5, "asc", ALICE))
        assert page.data == []
    finally:
        runner.close()


@pytest.mark.parametrize("backend", BACKENDS)
@given(extra=metadata, bad=unstorable)
def test_unstorable_attachment_is_refused_and_not_stored(
    backend: str, extra: dict[str, Any], bad: str
) -> None:
    hostile = FileAttachment(
        id="atc_1", name="a", mime_type="text/plain", metadata=_with_value(extra, UNSTORABLE[bad])
    )
    runner = StoreRunner(backend)
    try:
        with pytest.raises(UnstorableError, match="attachment atc_1"):
            runner.run(runner.store.save_attachment(hostile, ALICE))
        with pytest.raises(NotFoundError):
            runner.run(runner.store.load_attachment("atc_1", ALICE))
    finally:
        runner.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_lone_surrogate_in_metadata_is_a_clear_unstorable_error(backend: str) -> None:
    """Regression: a lone surrogate in a metadata string escaped as a bare
    UnicodeEncodeError from the BSON encoder, naming neither the thread nor the cause."""
    thread = ThreadMetadata(id="thr_s", created_at=BASE_TIME, metadata={"s": "\ud800"})
    runner = StoreRunner(backend)
    try:
        with pytest.raises(UnstorableError, match=r"thread thr_s holds a string with a lone"):
            runner.run(runner.store.save_thread(thread, ALICE))
        with pytest.raises(NotFoundError):
            runner.run(runner.store.load_thread("thr_s", ALICE))
    finally:
        runner.close()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", ["bytes not UTF-8", "an object"])
def test_value_json_cannot_write_is_a_clear_unstorable_error(backend: str, bad: str) -> None:
    """Regression: bytes that are not UTF-8, or an object pydantic cannot serialise, in
    metadata escaped from ``model_dump`` as a bare UnicodeDecodeError or
    PydanticSerializationError that named neither the thread nor the fix."""
    thread = ThreadMetadata(id="thr_b", created_at=BASE_TIME, metadata={"b": UNSTORABLE[bad]})
    runner = StoreRunner(backend)
    try:
        with pytest.raises(UnstorableError, match=r"thread thr_b holds a value that cannot be"):
            runner.run(runner.store.save_thread(thread, ALICE))
        with pytest.raises(NotFoundError):
            runner.run(runner.store.load_thread("thr_b", ALICE))
    finally:
        runner.close()


def _decodes_differently(value: Any) -> bool:
    """Whether BSON gives ``value`` back as something else (the oracle: PyMongo's decoder)."""
    return bool(bson.decode(bson.encode({"v": value})) != {"v": value})


@pytest.mark.parametrize("backend", BACKENDS)
@given(
    extra=special_metadata,
    kind=st.sampled_from(["thread", "item", "attachment"]),
)
def test_special_keys_in_metadata_load_back_equal_or_are_refused_naming_the_field(
    backend: str, extra: dict[str, Any], kind: str
) -> None:
    """Every key Extended JSON or BSON gives a meaning ($oid, $date, $numberLong, $binary,
    $regularExpression, $timestamp, $minKey, $code, $ref/$id/$db...), in objects of any
    shape: each loads back equal, or, exactly when BSON would decode it as something
    else (a DBRef), is refused with UnstorableError naming the element and the field,
    and nothing is stored. On the real server this goes through the driver's decoder."""
    runner = StoreRunner(backend)
    store = runner.store
    saved: Any
    save: Coroutine[Any, Any, None]
    load: Coroutine[Any, Any, Any]
    if kind == "thread":
        saved = ThreadMetadata(id="thr_s", created_at=BASE_TIME, metadata=extra)
        save, load = store.save_thread(saved, ALICE), store.load_thread("thr_s", ALICE)
    elif kind == "item":
        saved = tool_call("tc_s", "thr_s", extra)
        save, load = (
            store.add_thread_item("thr_s", saved, ALICE),
            store.load_item("thr_s", "tc_s", ALICE),
        )
    else:
        saved = FileAttachment(id="atc_s", name="a", mime_type="text/plain", metadata=extra)
        save, load = store.save_attachment(saved, ALICE), store.load_attachment("atc_s", ALICE)
    try:
        if _decodes_differently(extra):
            with pytest.raises(
                UnstorableError,
                match=r"(thread thr_s|item tc_s of thread thr_s|attachment atc_s) holds, "
                # the path is shown as repr() shows it: in double quotes when it holds a '
                r"at ['\"]data\.(metadata|arguments)",
            ):
                runner.run(save)
            with pytest.raises(NotFoundError):
                runner.run(load)
        else:
            runner.run(save)
            _same(saved, runner.run(load))
    finally:
        runner.close()
