"""The write path skips the validate-back check only where its answer is proved.

``dump`` first tries ``proved_dump`` (a walk over the model's values that also dumps
them); when that fails, pydantic dumps the model and ``dump`` validates the dump back
and compares. These properties hold ``dump`` to the full check (``dump`` with the proof
switched off): for every generated model, ChatKit's own and ones with hostile values
put into any field at any depth, both accept with the very same stored dict (same
types, same key order) or both refuse with the very same error; and a model the proof
accepts is one the full check accepts.
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from unittest import mock
from zoneinfo import ZoneInfo

import bson
import pytest
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    FileAttachment,
    InferenceOptions,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter

from chatkit_mongo import UnstorableError
from chatkit_mongo import _codec as codec
from chatkit_mongo._codec import ATTACHMENT_ADAPTER, ITEM_ADAPTER, THREAD_ADAPTER, dump

from .samples import every_item
from .strategies import attachments, datetimes, items, json_values, threads


class _Colour(enum.StrEnum):
    RED = "red"


class _Str(str):
    pass


class _Int(int):
    pass


odd_values: st.SearchStrategy[Any] = st.one_of(
    json_values,
    datetimes,
    st.sampled_from(
        [
            math.nan,
            math.inf,
            -math.inf,
            b"bytes",
            b"\xff",
            (1, 2),
            {1, 2},
            frozenset(),
            Decimal("1.5"),
            _Colour.RED,
            _Str("s"),
            _Int(3),
            True,
            1.0,
            -0.0,
            2**70,
            "\ud800",
            [(1,)],
            {"k": math.nan},
            {1: "int key"},
            {"k": datetime(2020, 1, 1)},
            datetime(2020, 1, 1, tzinfo=timezone(timedelta(seconds=30))),
            datetime(2020, 1, 1, tzinfo=timezone(timedelta(microseconds=5))),
            datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30), "IST")),
            datetime(2021, 11, 7, 1, 30, tzinfo=ZoneInfo("America/New_York")),
            datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
            datetime(2021, 6, 1, tzinfo=ZoneInfo("Europe/Paris")),
            datetime(2021, 6, 1, fold=1),
            None,
            "assistant_message",
            "user_message",
            "file",
            "image",
            "active",
            [],
            {},
            ThreadMetadata(id="t", created_at=datetime(2020, 1, 1)),
            AssistantMessageContent(text="nested model in the wrong place"),
        ]
    ),
)
"""Values JSON keeps and values it does not, of exact types and of subclasses."""


def _slots(model: BaseModel) -> Iterator[tuple[Any, Any]]:
    """Every place a value can be put: (model, field name) for each field of each
    model at any depth, and (dict, key) for each key of each dict at any depth."""
    stack: list[Any] = [model]
    while stack:
        current = stack.pop()
        if isinstance(current, BaseModel):
            for name in type(current).model_fields:
                yield current, name
                stack.append(getattr(current, name, None))
        elif isinstance(current, dict):
            for key in list(current):
                yield current, key
                stack.append(current[key])
        elif isinstance(current, list):
            stack.extend(current)


@st.composite
def hostile_models(draw: st.DrawFn) -> tuple[BaseModel, TypeAdapter[Any]]:
    """A ChatKit model with up to three odd values put anywhere, unvalidated (as
    assignment or ``model_construct`` would), or a field deleted, or an extra attribute."""
    model, adapter = draw(
        st.one_of(
            st.tuples(items(), st.just(ITEM_ADAPTER)),
            st.tuples(threads(), st.just(THREAD_ADAPTER)),
            st.tuples(attachments(), st.just(ATTACHMENT_ADAPTER)),
        )
    )
    model = model.model_copy(deep=True)  # the strategies share their templates' values
    for _ in range(draw(st.integers(0, 3))):
        slots = list(_slots(model))
        owner, name = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["set", "set", "set", "delete", "extra"]))
        if isinstance(owner, dict):
            owner[name] = draw(odd_values)
        elif action == "set":
            owner.__dict__[name] = draw(odd_values)
        elif action == "delete":
            owner.__dict__.pop(name, None)
        else:
            owner.__dict__["not_a_field"] = draw(odd_values)
    return model, adapter


def _outcome(model: BaseModel, adapter: TypeAdapter[Any]) -> tuple[str, Any]:
    try:
        return "stored", dump(model, adapter, "model m")[0]
    except UnstorableError as exc:
        return "refused", str(exc)
    except Exception as exc:
        return "raised", (type(exc), str(exc))


def _full_outcome(model: BaseModel, adapter: TypeAdapter[Any]) -> tuple[str, Any]:
    with mock.patch.object(codec, "proved_dump", return_value=None):
        return _outcome(model, adapter)


def _typed(value: Any) -> Any:
    """``value`` with every leaf paired with its type (``1 == 1.0 == True`` in Python,
    but a stored document must hold the very same JSON) and every object's keys in
    their order (the stored document keeps it)."""
    if isinstance(value, dict):
        return [(key, _typed(child)) for key, child in value.items()]
    if isinstance(value, list):
        return [_typed(child) for child in value]
    return (type(value), value)


def _assert_same_as_full_check(model: BaseModel, adapter: TypeAdapter[Any]) -> None:
    proved = codec.proved_dump(model, adapter) is not None
    full = _full_outcome(model, adapter)
    fast = _outcome(model, adapter)
    if proved:
        assert full[0] == "stored", f"proved, yet the full check says {full}"
    assert fast[0] == full[0]
    if fast[0] == "stored":
        assert _typed(fast[1]) == _typed(full[1])
    else:
        assert fast[1] == full[1]


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
@given(hostile_models())
def test_dump_stores_and_refuses_exactly_as_the_full_check(
    case: tuple[BaseModel, TypeAdapter[Any]],
) -> None:
    _assert_same_as_full_check(*case)


@given(st.one_of(items(), threads(), attachments()))
def test_chatkit_models_with_hostile_json_get_the_full_checks_verdict(model: BaseModel) -> None:
    adapter = (
        THREAD_ADAPTER
        if isinstance(model, ThreadMetadata)
        else ATTACHMENT_ADAPTER
        if isinstance(model, FileAttachment) or hasattr(model, "preview_url")
        else ITEM_ADAPTER
    )
    _assert_same_as_full_check(model, adapter)


@given(threads())
def test_every_plain_thread_is_proved(thread: ThreadMetadata) -> None:
    """The fast path is the common path: JSON metadata, naive or fixed-offset times."""
    assert codec.proved_dump(thread, THREAD_ADAPTER) is not None


_PROVED_SAMPLES = (
    "ClientToolCallItem",
    "GeneratedImageItem",
    "WorkflowItem",
    "TaskItem",
    "HiddenContextItem",
    "SDKHiddenContextItem",
    "EndOfTurnItem",
)
"""The sample items with no URL and no annotation source (their schemas validate those
through functions and smart unions, which the proof leaves to the full check)."""


@pytest.mark.parametrize(
    "model",
    [
        AssistantMessageItem(
            id="m",
            thread_id="t",
            created_at=datetime.now(),
            content=[AssistantMessageContent(text="hello")],
        ),
        UserMessageItem(
            id="u",
            thread_id="t",
            created_at=datetime.now(),
            content=[UserMessageTextContent(text="hi")],
            attachments=[FileAttachment(id="a", name="n", mime_type="text/plain")],
            inference_options=InferenceOptions(),
        ),
        *[item for item in every_item() if type(item).__name__ in _PROVED_SAMPLES],
    ],
    ids=lambda model: type(model).__name__,
)
def test_the_items_a_turn_saves_are_proved(model: BaseModel) -> None:
    assert codec.proved_dump(model, ITEM_ADAPTER) is not None


def test_attachments_are_proved_through_their_metadata_dropping_serializer() -> None:
    attachment = FileAttachment(
        id="a", name="n", mime_type="text/plain", thread_id="t", metadata={"k": [1, "v"]}
    )
    assert codec.proved_dump(attachment, ATTACHMENT_ADAPTER) is not None
    assert None is codec.proved_dump(
        attachment.model_copy(update={"metadata": {"k": (1,)}}), ATTACHMENT_ADAPTER
    )


def test_a_subclass_is_never_proved_and_the_full_check_refuses_it() -> None:
    class Mine(AssistantMessageItem):
        pass

    item = Mine(id="m", thread_id="t", created_at=datetime.now(), content=[])
    assert codec.proved_dump(item, ITEM_ADAPTER) is None
    with pytest.raises(UnstorableError, match="would not read back as saved"):
        dump(item, ITEM_ADAPTER, "item m")


@pytest.mark.parametrize(
    ("value", "proved"),
    [
        (datetime(2020, 1, 1), True),
        (datetime(2020, 1, 1, tzinfo=timezone(timedelta(minutes=-90))), True),
        (datetime(2020, 1, 1, tzinfo=timezone(timedelta(seconds=30))), False),
        (datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")), False),
    ],
)
def test_only_naive_and_whole_minute_offsets_are_proved(value: datetime, proved: bool) -> None:
    thread = ThreadMetadata(id="t", created_at=value)
    assert (codec.proved_dump(thread, THREAD_ADAPTER) is not None) is proved
    _assert_same_as_full_check(thread, THREAD_ADAPTER)


def test_a_constrained_field_is_never_proved_and_a_violation_is_refused() -> None:
    """A constraint is a schema key the proof does not know: it gives up on the model,
    and the full check refuses a value built past the constraint."""

    class Plain(BaseModel):
        name: str

    class Constrained(BaseModel):
        name: str = Field(min_length=2)

    assert codec.proved_dump(Plain(name="x"), TypeAdapter(Plain)) == ({"name": "x"}, 8 + 15)
    constrained: TypeAdapter[Any] = TypeAdapter(Constrained)
    assert codec.proved_dump(Constrained(name="xy"), constrained) is None
    dump(Constrained(name="xy"), constrained, "model m")
    with pytest.raises(UnstorableError, match=r"^model m would not read back"):
        dump(Constrained.model_construct(name="x"), constrained, "model m")


_ROUND_TRIP_ZONES = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes))),
)


@given(st.datetimes(timezones=_ROUND_TRIP_ZONES))
def test_a_proved_datetime_is_written_as_pydantic_writes_it(value: datetime) -> None:
    """The proof writes datetimes itself: every one it proves, exactly as pydantic."""
    thread = ThreadMetadata(id="t", created_at=value)
    proved = codec.proved_dump(thread, THREAD_ADAPTER)
    assert proved is not None
    assert proved[0]["created_at"] == TypeAdapter(datetime).dump_python(value, mode="json")


class _Times(BaseModel):
    at: datetime
    maybe: datetime | None = None
    every: list[datetime] = []


@given(
    st.datetimes(timezones=_ROUND_TRIP_ZONES),
    st.lists(st.datetimes(timezones=_ROUND_TRIP_ZONES), max_size=3),
)
def test_a_datetime_in_any_place_of_a_model_is_written_as_pydantic_writes_it(
    value: datetime, values: list[datetime]
) -> None:
    """A datetime field, a nullable one and a list of them: the dump is pydantic's, and
    the bound covers its BSON."""
    model = _Times(at=value, maybe=value, every=values)
    proved = codec.proved_dump(model, TypeAdapter(_Times))
    assert proved is not None
    data, bound = proved
    assert data == model.model_dump(mode="json")
    assert bound is not None
    assert len(bson.encode(data)) <= bound


def test_a_proved_dump_keeps_the_schemas_field_order_and_shares_nothing_mutable() -> None:
    """What is sent must be what was checked: the event loop runs other tasks between
    the checks and the driver's encoding, and they may change the caller's model."""
    item = AssistantMessageItem(id="m", thread_id="t", created_at=datetime(2020, 1, 1), content=[])
    proved = codec.proved_dump(item, ITEM_ADAPTER)
    assert proved is not None
    assert list(proved[0]) == list(item.model_dump(mode="json"))
    thread = ThreadMetadata(
        id="t", created_at=datetime(2020, 1, 1), metadata={"tags": ["a"], "more": {"k": 1}}
    )
    dumped = codec.proved_dump(thread, THREAD_ADAPTER)
    assert dumped is not None
    item.content.append(AssistantMessageContent(text="later"))
    thread.metadata["tags"].append(math.nan)
    thread.metadata["more"]["k"] = math.inf
    thread.metadata["new"] = 1
    assert proved[0]["content"] == []
    assert dumped[0]["metadata"] == {"tags": ["a"], "more": {"k": 1}}


def test_metadata_that_contains_itself_is_refused_as_a_cycle_not_walked_for_ever() -> None:
    thread = ThreadMetadata(id="t", created_at=datetime(2020, 1, 1), metadata={})
    thread.metadata["self"] = [thread.metadata]
    assert codec.proved_dump(thread, THREAD_ADAPTER) is None
    with pytest.raises(UnstorableError, match="contains itself"):
        dump(thread, THREAD_ADAPTER, "thread t")


class _Node(BaseModel):
    children: list[_Node] = []


def test_a_model_nested_past_the_interpreters_limit_goes_to_the_full_check() -> None:
    node = _Node()
    for _ in range(3 * sys.getrecursionlimit()):
        node = _Node(children=[node])
    adapter: TypeAdapter[_Node] = TypeAdapter(_Node)
    proved = codec.proved_dump(_Node(children=[_Node()]), adapter)
    assert proved is not None
    assert proved[0] == {"children": [{"children": []}]}
    assert codec.proved_dump(node, adapter) is None
    with pytest.raises(UnstorableError, match=r"^node n holds a value"):
        dump(node, adapter, "node n")
