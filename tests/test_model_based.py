"""Model-based test: random sequences of Store calls from several owners, against a model.

The model is a few dicts and a sort, written here without the store's code (no sort
keys, no queries): pages are slices of a list ordered by (UTC instant, id). After every
step the whole visible state of every owner is compared: every thread page, every item
page and every attachment. Small pools of ids, owners and times make collisions, ties
and cross-owner reuse of the same ids the common case rather than the rare one.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar, Final, TypeVar

import pytest
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    Attachment,
    FileAttachment,
    Page,
    ThreadItem,
    ThreadMetadata,
)
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from chatkit_mongo import ItemConflictError

from .conftest import BACKENDS, RequestContext
from .samples import BASE_TIME
from .strategies import StoreRunner

_T = TypeVar("_T", ThreadMetadata, ThreadItem)

OWNERS: Final = ("alice", "bob", "ünïcode org")
THREAD_IDS: Final = ("thr_a", "thr_b", "Thr é", "thr_a ")
ITEM_IDS: Final = ("msg_1", "msg_2", "msg_1\t", "Ω", "tc_9")
ATTACHMENT_IDS: Final = ("atc_1", "atc_2")
TIMES: Final = (
    BASE_TIME,
    BASE_TIME + timedelta(microseconds=1),
    BASE_TIME + timedelta(milliseconds=1),
    # The same instant as BASE_TIME, written in another zone: ties with it, broken by id.
    (BASE_TIME + timedelta(hours=2)).replace(tzinfo=timezone(timedelta(hours=2))),
    BASE_TIME - timedelta(days=365 * 30),
)
FULL_PAGE: Final = 1000
RUNS: Final[defaultdict[str, Counter[str]]] = defaultdict(Counter)
"""Sequences run and whole-state comparisons made, per backend; printed by the test."""

owners = st.sampled_from(OWNERS)
thread_ids = st.sampled_from(THREAD_IDS)
item_ids = st.sampled_from(ITEM_IDS)
attachment_ids = st.sampled_from(ATTACHMENT_IDS)
times = st.sampled_from(TIMES)
texts = st.sampled_from(("hello", "hello again", ""))
orders = st.sampled_from(("asc", "desc"))
limits = st.integers(1, 6)


def _order_key(element: ThreadMetadata | ThreadItem) -> tuple[datetime, str]:
    created = element.created_at
    instant = created.replace(tzinfo=UTC) if created.tzinfo is None else created
    return (instant, element.id)


def _expected_page(elements: list[_T], after: str | None, limit: int, order: str) -> Page[_T]:
    ordered = sorted(elements, key=_order_key, reverse=order == "desc")
    ids = [element.id for element in ordered]
    rest = ordered[ids.index(after) + 1 :] if after is not None else ordered
    data = rest[:limit]
    has_more = len(rest) > limit
    return Page(data=data, has_more=has_more, after=data[-1].id if has_more else None)


@dataclass
class Model:
    """What each owner should see."""

    threads: dict[tuple[str, str], ThreadMetadata] = field(default_factory=dict)
    items: dict[tuple[str, str, str], ThreadItem] = field(default_factory=dict)
    attachments: dict[tuple[str, str], Attachment] = field(default_factory=dict)

    def threads_of(self, owner: str) -> list[ThreadMetadata]:
        return [thread for (o, _), thread in self.threads.items() if o == owner]

    def items_of(self, owner: str, thread_id: str) -> list[ThreadItem]:
        return [item for (o, t, _), item in self.items.items() if (o, t) == (owner, thread_id)]

    def delete_thread(self, owner: str, thread_id: str) -> None:
        self.threads.pop((owner, thread_id), None)
        for item_key in [key for key in self.items if key[:2] == (owner, thread_id)]:
            del self.items[item_key]
        for attachment_key, attachment in list(self.attachments.items()):
            if attachment_key[0] == owner and attachment.thread_id == thread_id:
                del self.attachments[attachment_key]


def _same_page(got: Page[Any], expected: Page[Any]) -> None:
    assert [e.id for e in got.data] == [e.id for e in expected.data]
    assert (got.has_more, got.after) == (expected.has_more, expected.after)
    assert got.data == expected.data
    assert [e.model_dump(mode="json") for e in got.data] == [
        e.model_dump(mode="json") for e in expected.data
    ]


class StoreMachine(RuleBasedStateMachine):
    """Drives one MongoStore on a fresh database and the model with the same calls."""

    backend: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.runner = StoreRunner(self.backend)
        self.store = self.runner.store
        self.model = Model()
        RUNS[self.backend]["sequences"] += 1

    def teardown(self) -> None:
        self.runner.close()

    # ---------------------------------------------------------------- threads

    @rule(owner=owners, thread_id=thread_ids, created_at=times, title=texts)
    def save_thread(self, owner: str, thread_id: str, created_at: datetime, title: str) -> None:
        thread = ThreadMetadata(id=thread_id, created_at=created_at, title=title)
        self.runner.run(self.store.save_thread(thread, RequestContext(owner)))
        self.model.threads[owner, thread_id] = thread

    @rule(owner=owners, thread_id=thread_ids)
    def load_thread(self, owner: str, thread_id: str) -> None:
        expected = self.model.threads.get((owner, thread_id))
        if expected is None:
            with pytest.raises(NotFoundError, match=f"Thread {thread_id} not found"):
                self.runner.run(self.store.load_thread(thread_id, RequestContext(owner)))
        else:
            assert self.runner.run(self.store.load_thread(thread_id, RequestContext(owner))) == (
                expected
            )

    @rule(owner=owners, thread_id=thread_ids)
    def delete_thread(self, owner: str, thread_id: str) -> None:
        self.runner.run(self.store.delete_thread(thread_id, RequestContext(owner)))
        self.model.delete_thread(owner, thread_id)

    @rule(owner=owners, after=st.none() | thread_ids, limit=limits, order=orders)
    def load_threads(self, owner: str, after: str | None, limit: int, order: str) -> None:
        call = self.store.load_threads(limit, after, order, RequestContext(owner))
        if after is not None and (owner, after) not in self.model.threads:
            with pytest.raises(NotFoundError, match=f"Thread {after} not found"):
                self.runner.run(call)
            return
        expected = _expected_page(self.model.threads_of(owner), after, limit, order)
        _same_page(self.runner.run(call), expected)

    # ---------------------------------------------------------------- items

    def _item(self, thread_id: str, item_id: str, created_at: datetime, text: str) -> ThreadItem:
        return AssistantMessageItem(
            id=item_id,
            thread_id=thread_id,
            created_at=created_at,
            content=[AssistantMessageContent(text=text)],
        )

    @rule(owner=owners, thread_id=thread_ids, item_id=item_ids, created_at=times, text=texts)
    def add_thread_item(
        self, owner: str, thread_id: str, item_id: str, created_at: datetime, text: str
    ) -> None:
        item = self._item(thread_id, item_id, created_at, text)
        call = self.store.add_thread_item(thread_id, item, RequestContext(owner))
        stored = self.model.items.get((owner, thread_id, item_id))
        if stored is None:
            self.runner.run(call)
            self.model.items[owner, thread_id, item_id] = item
        elif stored.model_dump(mode="json") == item.model_dump(mode="json"):
            self.runner.run(call)  # a retry of the same add: a no-op
        else:
            with pytest.raises(ItemConflictError, match=f"Item {item_id} already exists"):
                self.runner.run(call)

    @rule(owner=owners, thread_id=thread_ids, item_id=item_ids, created_at=times, text=texts)
    def save_item(
        self, owner: str, thread_id: str, item_id: str, created_at: datetime, text: str
    ) -> None:
        item = self._item(thread_id, item_id, created_at, text)
        self.runner.run(self.store.save_item(thread_id, item, RequestContext(owner)))
        self.model.items[owner, thread_id, item_id] = item

    @rule(owner=owners, thread_id=thread_ids, item_id=item_ids)
    def load_item(self, owner: str, thread_id: str, item_id: str) -> None:
        call = self.store.load_item(thread_id, item_id, RequestContext(owner))
        expected = self.model.items.get((owner, thread_id, item_id))
        if expected is None:
            with pytest.raises(NotFoundError, match=f"Item {item_id} not found in thread"):
                self.runner.run(call)
        else:
            assert self.runner.run(call) == expected

    @rule(owner=owners, thread_id=thread_ids, item_id=item_ids)
    def delete_thread_item(self, owner: str, thread_id: str, item_id: str) -> None:
        self.runner.run(self.store.delete_thread_item(thread_id, item_id, RequestContext(owner)))
        self.model.items.pop((owner, thread_id, item_id), None)

    @rule(
        owner=owners, thread_id=thread_ids, after=st.none() | item_ids, limit=limits, order=orders
    )
    def load_thread_items(
        self, owner: str, thread_id: str, after: str | None, limit: int, order: str
    ) -> None:
        call = self.store.load_thread_items(thread_id, after, limit, order, RequestContext(owner))
        if after is not None and (owner, thread_id, after) not in self.model.items:
            with pytest.raises(NotFoundError, match=f"Item {after} not found in thread"):
                self.runner.run(call)
            return
        expected = _expected_page(self.model.items_of(owner, thread_id), after, limit, order)
        _same_page(self.runner.run(call), expected)

    # ---------------------------------------------------------------- attachments

    @rule(owner=owners, attachment_id=attachment_ids, thread_id=st.none() | thread_ids)
    def save_attachment(self, owner: str, attachment_id: str, thread_id: str | None) -> None:
        attachment = FileAttachment(
            id=attachment_id, name="f.txt", mime_type="text/plain", thread_id=thread_id
        )
        self.runner.run(self.store.save_attachment(attachment, RequestContext(owner)))
        self.model.attachments[owner, attachment_id] = attachment

    @rule(owner=owners, attachment_id=attachment_ids)
    def delete_attachment(self, owner: str, attachment_id: str) -> None:
        self.runner.run(self.store.delete_attachment(attachment_id, RequestContext(owner)))
        self.model.attachments.pop((owner, attachment_id), None)

    # ---------------------------------------------------------------- after every step

    @invariant()
    def every_owner_sees_exactly_the_model(self) -> None:
        RUNS[self.backend]["comparisons"] += 1
        for owner in OWNERS:
            context = RequestContext(owner)
            for order in ("asc", "desc"):
                threads = self.runner.run(self.store.load_threads(FULL_PAGE, None, order, context))
                _same_page(
                    threads, _expected_page(self.model.threads_of(owner), None, FULL_PAGE, order)
                )
            for thread_id in THREAD_IDS:
                page = self.runner.run(
                    self.store.load_thread_items(thread_id, None, FULL_PAGE, "asc", context)
                )
                expected = _expected_page(
                    self.model.items_of(owner, thread_id), None, FULL_PAGE, "asc"
                )
                _same_page(page, expected)
            for attachment_id in ATTACHMENT_IDS:
                stored = self.model.attachments.get((owner, attachment_id))
                if stored is None:
                    with pytest.raises(NotFoundError):
                        self.runner.run(self.store.load_attachment(attachment_id, context))
                else:
                    loaded = self.runner.run(self.store.load_attachment(attachment_id, context))
                    assert loaded == stored


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_agrees_with_the_model(backend: str) -> None:
    machine = type(f"StoreMachine[{backend}]", (StoreMachine,), {"backend": backend})
    run_state_machine_as_test(machine)
    counts = RUNS[backend]
    print(f"{backend}: {counts['sequences']} sequences, {counts['comparisons']} comparisons")
    assert counts["sequences"] > 0
