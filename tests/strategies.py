"""Hypothesis budgets and strategies shared by the property, fault and hostile-input suites.

Budgets: the default ``ci`` profile is derandomized (the same examples on every run, no
example database), so CI is deterministic and bounded. ``CHATKIT_MONGO_EXAMPLES=N`` loads
the ``long`` profile instead: N examples per property and random seeds, for soak runs.
``pytest --hypothesis-show-statistics`` prints how many examples each property ran.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import math
import os
from collections.abc import Awaitable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

from chatkit.types import (
    ActiveStatus,
    AssistantMessageContent,
    Attachment,
    ClosedStatus,
    FileAttachment,
    ImageAttachment,
    LockedStatus,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTagContent,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from chatkit_mongo import MongoStore
from chatkit_mongo._codec import ATTACHMENT_ADAPTER, ITEM_ADAPTER, THREAD_ADAPTER

from . import capabilities
from .conftest import close_client, is_server, make_client
from .samples import every_item

_T = TypeVar("_T")

EXAMPLES_VARIABLE: Final = "CHATKIT_MONGO_EXAMPLES"
CI_EXAMPLES: Final = 60
_LONG_EXAMPLES = int(os.environ.get(EXAMPLES_VARIABLE) or 0)

settings.register_profile(
    "ci",
    max_examples=CI_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    stateful_step_count=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=max(_LONG_EXAMPLES, 1),
    deadline=None,
    stateful_step_count=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("long" if _LONG_EXAMPLES else "ci")


def examples(ci: int) -> int:
    """A property's example budget: ``ci`` by default (for properties whose examples are
    costly, e.g. several CLI runs each), or ``CHATKIT_MONGO_EXAMPLES`` when set."""
    return _LONG_EXAMPLES or ci


class StoreRunner:
    """An event loop and a fresh store on a fresh database, for one hypothesis example.

    Why not pytest-asyncio: hypothesis calls the test body (and each state machine step)
    synchronously, so each example drives its own loop. A fresh client per example keeps
    examples independent; on the real server the database is dropped afterwards.
    """

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._runner = asyncio.Runner()
        self._database_name = f"chatkit_prop_{os.urandom(6).hex()}"
        self.client = self.run(_make_client(backend))
        self.database = self.client[self._database_name]
        self.store: MongoStore[Any] = MongoStore(self.database)

    def run(self, awaitable: Awaitable[_T]) -> _T:
        """Await ``awaitable`` in the runner's loop: a coroutine, or the future Motor's
        methods return (which the runner does not take as it is)."""

        async def wait() -> _T:
            return await awaitable

        return self._runner.run(wait())

    def close(self) -> None:
        if is_server(self.backend) and capabilities.has("dropDatabase"):
            self.run(self.client.drop_database(self._database_name))
        self.run(close_client(self.client))
        self._runner.close()


async def _make_client(backend: str) -> Any:
    """Made inside the runner's loop: an ``AsyncMongoClient`` belongs to one event loop."""
    return make_client(backend)


# ---------------------------------------------------------------- values

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

utf8_text = st.text(st.characters(codec="utf-8"), max_size=20)
"""Any text BSON can hold: every code point except lone surrogates."""

hostile_keys = st.one_of(
    st.sampled_from(["", ".", "$", "$gt", "$where", "a.b", "$set", "_id", "owner", "data"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
)
"""Mapping keys users put in metadata: empty, dotted, dollar-led, our own field names."""

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MAX, 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    utf8_text,
    st.integers(1, 20_000).map(lambda n: "λ🦊" * n),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(hostile_keys, children, max_size=4)
    ),
    max_leaves=20,
)
"""JSON values with the shapes that break stores: deep, unicode, odd keys, int64 edges."""

metadata = st.dictionaries(hostile_keys, json_values, max_size=5)

SPECIAL_KEYS: Final = (
    "$oid", "$date", "$numberInt", "$numberLong", "$numberDouble", "$numberDecimal",
    "$binary", "base64", "subType", "$type", "$uuid", "$regularExpression", "pattern",
    "options", "$regex", "$options", "$timestamp", "t", "i", "$minKey", "$maxKey", "$code",
    "$scope", "$symbol", "$dbPointer", "$undefined", "$ref", "$id", "$db",
)  # fmt: skip
"""Every key Extended JSON (canonical, relaxed and legacy) or BSON's DBRef decoding gives
a meaning, with the inner keys of the wrappers that nest ($binary, $regularExpression,
$timestamp)."""

_payloads = st.one_of(
    json_scalars,
    st.sampled_from(["0123456789abcdef01234567", "soon", "not-hex", "1", "x", "AQID", "04"]),
    st.lists(json_scalars, max_size=2),
    st.fixed_dictionaries({"$numberLong": st.sampled_from(["1", "x"])}),
)
_wrappers = st.dictionaries(
    st.sampled_from(SPECIAL_KEYS),
    st.recursive(
        _payloads,
        lambda inner: st.dictionaries(st.sampled_from(SPECIAL_KEYS), inner, max_size=3),
        max_leaves=4,
    ),
    min_size=1,
    max_size=3,
)
_dbrefs = st.fixed_dictionaries(
    {"$ref": st.sampled_from(["x", ""]) | json_scalars, "$id": _payloads},
    optional={"$db": st.none() | st.sampled_from(["db", ""]) | json_scalars, "k": _payloads},
)
special_objects: st.SearchStrategy[dict[str, Any]] = _wrappers | _dbrefs
"""Objects made of those keys, with payloads of the right shape, the wrong shape and none:
type wrappers to Extended JSON, a DBRef to BSON, or plain user metadata to the store."""

special_metadata = st.dictionaries(
    hostile_keys,
    special_objects | st.lists(special_objects, max_size=2) | json_values,
    min_size=1,
    max_size=3,
)
"""Metadata holding such objects, at the top and inside lists."""


def nested(depth: int) -> dict[str, Any]:
    """A dict nested ``depth`` levels deep (the dict itself counts as one)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


# ---------------------------------------------------------------- models

_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.one_of(st.none(), _offsets),
)
"""Naive (as ChatKit stamps) and aware times; a day inside the range so UTC still fits."""

ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)

statuses = st.one_of(
    st.builds(ActiveStatus),
    st.builds(LockedStatus, reason=st.none() | utf8_text),
    st.builds(ClosedStatus, reason=st.none() | utf8_text),
)


@st.composite
def threads(draw: st.DrawFn, thread_id: st.SearchStrategy[str] = ids) -> ThreadMetadata:
    return ThreadMetadata(
        id=draw(thread_id),
        created_at=draw(datetimes),
        title=draw(st.none() | utf8_text),
        status=draw(statuses),
        allowed_image_domains=draw(st.none() | st.lists(utf8_text, max_size=3)),
        metadata=draw(metadata),
    )


@st.composite
def attachments(draw: st.DrawFn, thread_id: str | None = None) -> Attachment:
    fields: dict[str, Any] = {
        "id": draw(ids),
        "name": draw(utf8_text),
        "mime_type": draw(st.sampled_from(["image/png", "application/pdf", "", "x/ü;q=1"])),
        "thread_id": thread_id,
        "metadata": draw(st.none() | metadata),
    }
    if draw(st.booleans()):
        return ImageAttachment(preview_url="https://files.example.test/p", **fields)  # type: ignore[arg-type]
    return FileAttachment(**fields)


_TEMPLATES: Final = {type(item).__name__: item for item in every_item()}
ITEM_VARIANTS: Final = tuple(_TEMPLATES)
"""Every ThreadItem variant, by class name."""
any_variant = st.sampled_from(ITEM_VARIANTS)


@st.composite
def items(
    draw: st.DrawFn,
    thread_id: str = "thr_1",
    item_id: st.SearchStrategy[str] = ids,
    variant: st.SearchStrategy[str] = any_variant,
) -> ThreadItem:
    """An item of any variant, with hostile values in every field typed ``Any``."""
    template = _TEMPLATES[draw(variant)]
    update: dict[str, Any] = {
        "id": draw(item_id),
        "thread_id": thread_id,
        "created_at": draw(datetimes),
    }
    if hasattr(template, "arguments"):
        update["arguments"] = draw(metadata)
        update["output"] = draw(json_values)
    if type(template).__name__ == "HiddenContextItem":
        update["content"] = draw(json_values)
    if isinstance(template, UserMessageItem):
        tag = UserMessageTagContent(id="tag", text=draw(utf8_text), data=draw(metadata))
        update["content"] = [*template.content, tag]
        update["attachments"] = [draw(attachments(thread_id=thread_id))]
    item: ThreadItem = template.model_copy(update=update)
    return item


# ---------------------------------------------------------------- hostile models


class _Colour(enum.StrEnum):
    RED = "red"


class _Str(str):
    __slots__ = ()


class _Int(int):
    pass


_ODD_CONSTANTS: Final[tuple[Any, ...]] = (
    math.nan, math.inf, -math.inf, b"bytes", b"\xff", (1, 2), {1, 2}, frozenset(),
    Decimal("1.5"), _Colour.RED, _Str("s"), _Int(3), True, 1.0, -0.0, 2**70, "\ud800",
    [(1,)], {"k": math.nan}, {1: "int key"}, {"k": datetime(2020, 1, 1)},
    datetime(2020, 1, 1, tzinfo=timezone(timedelta(seconds=30))),
    datetime(2020, 1, 1, tzinfo=timezone(timedelta(microseconds=5))),
    datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30), "IST")),
    datetime(2021, 11, 7, 1, 30, tzinfo=ZoneInfo("America/New_York")),
    datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York")),
    datetime(2021, 6, 1, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(2021, 6, 1, fold=1),
    None, "assistant_message", "user_message", "file", "image", "active", [], {},
    ThreadMetadata(id="t", created_at=datetime(2020, 1, 1)),
    AssistantMessageContent(text="nested model in the wrong place"),
)  # fmt: skip
"""Values JSON keeps and values it does not, of exact types and of subclasses."""

odd_values: st.SearchStrategy[Any] = st.one_of(
    json_values, datetimes, st.sampled_from(_ODD_CONSTANTS).map(copy.deepcopy)
)
"""One of those, or a JSON value or a datetime. Why each constant is copied as it is
drawn: a shared list or dict put in two places, one inside the other, would contain
itself, and walking it would never end (it once filled 23 GB)."""


def model_slots(model: BaseModel) -> list[tuple[Any, Any]]:
    """Every place a value can be put: (model, field name) for each field of each model
    at any depth, and (dict, key) for each key of each dict at any depth. Each object
    is visited once (by identity), so a value that contains itself ends the walk."""
    slots: list[tuple[Any, Any]] = []
    seen: set[int] = set()
    stack: list[Any] = [model]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseModel):
            for name in type(current).model_fields:
                slots.append((current, name))
                stack.append(current.__dict__.get(name))
        elif isinstance(current, dict):
            for key, value in current.items():
                slots.append((current, key))
                stack.append(value)
        elif isinstance(current, list):
            stack.extend(current)
    return slots


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
        owner, name = draw(st.sampled_from(model_slots(model)))
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
