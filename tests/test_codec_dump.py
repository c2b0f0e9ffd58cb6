"""``dump`` stores a model only as it reads back, and refuses anything else by name.

For every generated model, ChatKit's own and ones with hostile values put into any
field at any depth (unvalidated, as assignment or ``model_construct`` would), ``dump``
either returns pydantic's JSON dump of it, which validates back equal to the model and,
once the document check accepts it, comes back equal through BSON; or it refuses with
an :class:`UnstorableError` that names the model, never another exception.
"""

from __future__ import annotations

import math
import sys
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import bson
import pytest
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    FileAttachment,
    ThreadMetadata,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter

from chatkit_mongo import UnstorableError
from chatkit_mongo._codec import (
    ATTACHMENT_ADAPTER,
    ITEM_ADAPTER,
    THREAD_ADAPTER,
    check_document,
    dump,
)

from .strategies import attachments, hostile_models, items, model_slots, odd_values, threads


def _typed(value: Any) -> Any:
    """``value`` with every leaf paired with its type (``1 == 1.0 == True`` in Python,
    but a stored document must hold the very same JSON) and every object's keys in
    their order (the stored document keeps it)."""
    if isinstance(value, dict):
        return [(key, _typed(child)) for key, child in value.items()]
    if isinstance(value, list):
        return [_typed(child) for child in value]
    return (type(value), value)


def _assert_stored_as_it_reads_back(model: BaseModel, adapter: TypeAdapter[Any]) -> bool:
    """Refused by name, or stored as pydantic's dump that reads back equal, in memory
    and through BSON; whether it was stored."""
    refusal: str | None = None
    try:
        data = dump(model, adapter, "model m")
    except UnstorableError as exc:
        refusal = str(exc)
    if refusal is not None:
        assert refusal.startswith("model m ")
        return False
    assert _typed(data) == _typed(model.model_dump(mode="json", warnings=False))
    assert adapter.validate_python(data) == model
    try:
        check_document({"owner": "o", "data": data}, "model m")
    except UnstorableError:  # test_codec_checks holds the document check's verdicts
        return True
    assert adapter.validate_python(bson.decode(bson.encode({"data": data}))["data"]) == model
    return True


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
@given(hostile_models())
def test_a_hostile_model_is_stored_as_it_reads_back_or_refused_by_name(
    case: tuple[BaseModel, TypeAdapter[Any]],
) -> None:
    _assert_stored_as_it_reads_back(*case)


@given(st.one_of(items(), threads(), attachments()))
def test_chatkit_models_with_hostile_json_are_stored_as_they_read_back(model: BaseModel) -> None:
    adapter = (
        THREAD_ADAPTER
        if isinstance(model, ThreadMetadata)
        else ATTACHMENT_ADAPTER
        if isinstance(model, FileAttachment) or hasattr(model, "preview_url")
        else ITEM_ADAPTER
    )
    assert _assert_stored_as_it_reads_back(model, adapter)


def test_a_subclass_is_refused_as_it_would_read_back_as_its_base() -> None:
    class Mine(AssistantMessageItem):
        pass

    item = Mine(id="m", thread_id="t", created_at=datetime.now(), content=[])
    with pytest.raises(UnstorableError, match="would not read back as saved"):
        dump(item, ITEM_ADAPTER, "item m")


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (datetime(2020, 1, 1), True),
        (datetime(2020, 1, 1, tzinfo=timezone(timedelta(minutes=-90))), True),
        (datetime(2020, 1, 1, tzinfo=timezone(timedelta(seconds=30))), False),
        (datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")), False),
    ],
)
def test_only_datetimes_that_read_back_equal_are_stored(value: datetime, stored: bool) -> None:
    """pydantic writes offsets in whole minutes, and a zone whose offset depends on
    ``fold`` reads back as a fixed offset, which compares unequal."""
    thread = ThreadMetadata(id="t", created_at=value)
    if stored:
        assert dump(thread, THREAD_ADAPTER, "thread t")["created_at"] == (
            TypeAdapter(datetime).dump_python(value, mode="json")
        )
    else:
        with pytest.raises(UnstorableError, match="field 'created_at'"):
            dump(thread, THREAD_ADAPTER, "thread t")


def test_a_constraint_broken_past_validation_is_refused() -> None:
    class Constrained(BaseModel):
        name: str = Field(min_length=2)

    adapter: TypeAdapter[Constrained] = TypeAdapter(Constrained)
    assert dump(Constrained(name="xy"), adapter, "model m") == {"name": "xy"}
    with pytest.raises(UnstorableError, match=r"^model m would not read back"):
        dump(Constrained.model_construct(name="x"), adapter, "model m")


@pytest.mark.parametrize(
    ("value", "field"),
    [(math.nan, "metadata"), ((1, 2), "metadata"), (datetime(2020, 1, 1), "metadata")],
)
def test_a_value_json_cannot_keep_is_refused_naming_its_field(value: Any, field: str) -> None:
    thread = ThreadMetadata(id="t", created_at=datetime(2020, 1, 1), metadata={"k": value})
    with pytest.raises(
        UnstorableError, match=f"^thread t would not read back as saved: field {field!r}"
    ):
        dump(thread, THREAD_ADAPTER, "thread t")


def test_the_dump_keeps_the_field_order_and_shares_nothing_mutable() -> None:
    """What is sent must be what was checked: the event loop runs other tasks between
    the checks and the driver's encoding, and they may change the caller's model."""
    item = AssistantMessageItem(id="m", thread_id="t", created_at=datetime(2020, 1, 1), content=[])
    dumped_item = dump(item, ITEM_ADAPTER, "item m")
    assert list(dumped_item) == list(item.model_dump(mode="json"))
    thread = ThreadMetadata(
        id="t", created_at=datetime(2020, 1, 1), metadata={"tags": ["a"], "more": {"k": 1}}
    )
    dumped_thread = dump(thread, THREAD_ADAPTER, "thread t")
    item.content.append(AssistantMessageContent(text="later"))
    thread.metadata["tags"].append(math.nan)
    thread.metadata["more"]["k"] = math.inf
    thread.metadata["new"] = 1
    assert dumped_item["content"] == []
    assert dumped_thread["metadata"] == {"tags": ["a"], "more": {"k": 1}}


def test_metadata_that_contains_itself_is_refused_as_a_cycle_not_walked_for_ever() -> None:
    thread = ThreadMetadata(id="t", created_at=datetime(2020, 1, 1), metadata={})
    thread.metadata["self"] = [thread.metadata]
    with pytest.raises(UnstorableError, match="contains itself"):
        dump(thread, THREAD_ADAPTER, "thread t")


class _Node(BaseModel):
    children: list[_Node] = []


def test_a_model_nested_past_the_interpreters_limit_is_refused_by_name() -> None:
    adapter: TypeAdapter[_Node] = TypeAdapter(_Node)
    assert dump(_Node(children=[_Node()]), adapter, "node n") == {"children": [{"children": []}]}
    node = _Node()
    for _ in range(3 * sys.getrecursionlimit()):
        node = _Node(children=[node])
    with pytest.raises(UnstorableError, match=r"^node n holds a value"):
        dump(node, adapter, "node n")


def test_the_hostile_strategys_walk_ends_on_a_value_that_contains_itself() -> None:
    """It once walked such a value until the machine ran out of memory (23 GB)."""
    thread = ThreadMetadata(id="t", created_at=datetime(2020, 1, 1), metadata={"k": []})
    thread.metadata["k"].append(thread.metadata)
    thread.metadata["self"] = thread.metadata
    slots = model_slots(thread)
    assert len(slots) == len(ThreadMetadata.model_fields) + 1 + 2  # the status' type, k, self
    assert (thread.metadata, "self") in slots


@given(odd_values, odd_values)
def test_no_two_drawn_odd_values_are_one_mutable_object(first: Any, second: Any) -> None:
    """Put one inside the other, a shared list or dict would contain itself."""
    assert first is not second or not isinstance(first, list | dict | BaseModel)


def test_a_model_stripped_of_a_field_is_refused_naming_it() -> None:
    """Regression (found by the hostile-model property): a model built without
    validation and stripped of a field reads back with the field's default; the refusal
    names the field instead of raising ``AttributeError`` while naming it."""
    model = ThreadMetadata(id="thr_1", created_at=datetime(2000, 1, 1), title="kept")
    del model.__dict__["title"]
    with pytest.raises(
        UnstorableError, match="thread thr_1 would not read back as saved: field 'title'"
    ):
        dump(model, THREAD_ADAPTER, "thread thr_1")
