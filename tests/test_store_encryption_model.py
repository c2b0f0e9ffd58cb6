"""The model-based test of ``test_model_based.py`` on an encrypted store (PyMongo Async on
the wire server), with one more rule: an owner's data key is shredded.

After a shred, the owner's documents are still stored but unreadable: the model keeps
them apart, so that loads say not found, pages leave them out with ``has_more`` and
``after`` exact, ``after`` may still name one (ids and order are not secret: a page
continues from its position), ``add_thread_item`` under its id is a conflict (the
store never overwrites what it cannot compare), and any write of it by id
(``save_thread``, ``save_item``, ``save_attachment``) makes it readable again, under the
owner's new key.

Pages that must read past a run of unreadable documents to fill up are rare in these
sequences; ``test_store_encryption_properties.py`` generates them on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar

import pytest
from chatkit.store import NotFoundError
from chatkit.types import Attachment, ThreadItem, ThreadMetadata
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

from chatkit_mongo import ItemConflictError, MongoStore

from .conftest import RequestContext
from .encryption_support import fresh_encryption
from .strategies import examples
from .test_model_based import (
    RUNS,
    Model,
    StoreMachine,
    _expected_page,
    _order_key,
    _same_page,
    attachment_ids,
    item_ids,
    limits,
    orders,
    owners,
    texts,
    thread_ids,
    times,
)

_T = TypeVar("_T", ThreadMetadata, ThreadItem)

BACKEND: Final = "server-pymongo"
SEQUENCES: Final = examples(25)
"""Fewer sequences than the plain model test's 60: each read also decrypts, and the
plain test already covers the store's logic on every backend."""


def _readable_anchor(
    readable: list[_T], unreadable: list[_T], after: str | None, order: str
) -> str | None:
    """The readable element a page after ``after`` (which may name an unreadable one)
    continues from as if ``after`` named it: the last readable one at or before its
    position, None if there is none."""
    everything = sorted([*readable, *unreadable], key=_order_key, reverse=order == "desc")
    readable_ids = {element.id for element in readable}
    anchor = None
    for element in everything:
        if element.id in readable_ids:
            anchor = element.id
        if element.id == after:
            return anchor
    return None


@dataclass
class Unreadable:
    """What each owner has stored under a key since shredded."""

    threads: dict[tuple[str, str], ThreadMetadata] = field(default_factory=dict)
    items: dict[tuple[str, str, str], ThreadItem] = field(default_factory=dict)
    attachments: dict[tuple[str, str], Attachment] = field(default_factory=dict)

    def shred(self, model: Model, owner: str) -> None:
        """Every readable element of ``owner`` in ``model`` becomes unreadable."""
        for readable, unreadable in self._pairs(model):
            for key in [key for key in readable if key[0] == owner]:
                unreadable[key] = readable.pop(key)

    def delete_thread(self, owner: str, thread_id: str) -> None:
        self.threads.pop((owner, thread_id), None)
        for item_key in [key for key in self.items if key[:2] == (owner, thread_id)]:
            del self.items[item_key]
        for attachment_key, attachment in list(self.attachments.items()):
            if attachment_key[0] == owner and attachment.thread_id == thread_id:
                del self.attachments[attachment_key]

    def _pairs(self, model: Model) -> list[tuple[dict[Any, Any], dict[Any, Any]]]:
        return [
            (model.threads, self.threads),
            (model.items, self.items),
            (model.attachments, self.attachments),
        ]


class EncryptedStoreMachine(StoreMachine):
    backend = BACKEND

    def __init__(self) -> None:
        super().__init__()
        self.store = MongoStore(self.runner.database, encryption=fresh_encryption())
        self.unreadable = Unreadable()

    def teardown(self) -> None:
        self.runner.run(self.store.close())
        super().teardown()

    @rule(owner=owners)
    def shred(self, owner: str) -> None:
        engine = self.store.persistence.encryption
        assert engine is not None
        had_content = any(key[0] == owner for key in self.model.threads) or any(
            key[0] == owner for key in [*self.model.items, *self.model.attachments]
        )
        shredded = self.runner.run(engine.shred(owner))
        assert shredded or not had_content
        self.unreadable.shred(self.model, owner)
        RUNS[self.backend]["shreds"] += 1

    # Writes by id make an unreadable element readable again, under the owner's new key.

    @rule(owner=owners, thread_id=thread_ids, created_at=times, title=texts)
    def save_thread(self, owner: str, thread_id: str, created_at: datetime, title: str) -> None:
        super().save_thread(owner, thread_id, created_at, title)
        self.unreadable.threads.pop((owner, thread_id), None)

    @rule(owner=owners, thread_id=thread_ids, item_id=item_ids, created_at=times, text=texts)
    def save_item(
        self, owner: str, thread_id: str, item_id: str, created_at: datetime, text: str
    ) -> None:
        super().save_item(owner, thread_id, item_id, created_at, text)
        self.unreadable.items.pop((owner, thread_id, item_id), None)

    @rule(owner=owners, attachment_id=attachment_ids, thread_id=st.none() | thread_ids)
    def save_attachment(self, owner: str, attachment_id: str, thread_id: str | None) -> None:
        super().save_attachment(owner, attachment_id, thread_id)
        self.unreadable.attachments.pop((owner, attachment_id), None)

    @rule(owner=owners, thread_id=thread_ids, item_id=item_ids, created_at=times, text=texts)
    def add_thread_item(
        self, owner: str, thread_id: str, item_id: str, created_at: datetime, text: str
    ) -> None:
        if (owner, thread_id, item_id) not in self.unreadable.items:
            super().add_thread_item(owner, thread_id, item_id, created_at, text)
            return
        item = self._item(thread_id, item_id, created_at, text)
        with pytest.raises(ItemConflictError, match=f"Item {item_id} already exists"):
            self.runner.run(self.store.add_thread_item(thread_id, item, RequestContext(owner)))

    # Deletes reach unreadable elements too.

    @rule(owner=owners, thread_id=thread_ids)
    def delete_thread(self, owner: str, thread_id: str) -> None:
        super().delete_thread(owner, thread_id)
        self.unreadable.delete_thread(owner, thread_id)

    @rule(owner=owners, thread_id=thread_ids, item_id=item_ids)
    def delete_thread_item(self, owner: str, thread_id: str, item_id: str) -> None:
        super().delete_thread_item(owner, thread_id, item_id)
        self.unreadable.items.pop((owner, thread_id, item_id), None)

    @rule(owner=owners, attachment_id=attachment_ids)
    def delete_attachment(self, owner: str, attachment_id: str) -> None:
        super().delete_attachment(owner, attachment_id)
        self.unreadable.attachments.pop((owner, attachment_id), None)

    # Pages may continue after an unreadable element: its position is not secret.

    @rule(owner=owners, after=st.none() | thread_ids, limit=limits, order=orders)
    def load_threads(self, owner: str, after: str | None, limit: int, order: str) -> None:
        call = self.store.load_threads(limit, after, order, RequestContext(owner))
        readable = self.model.threads_of(owner)
        unreadable = [t for (o, _), t in self.unreadable.threads.items() if o == owner]
        if after is not None and after not in {t.id for t in [*readable, *unreadable]}:
            with pytest.raises(NotFoundError, match=f"Thread {after} not found"):
                self.runner.run(call)
            return
        anchor = _readable_anchor(readable, unreadable, after, order)
        expected = _expected_page(readable, anchor, limit, order)
        _same_page(self.runner.run(call), expected)

    @rule(
        owner=owners, thread_id=thread_ids, after=st.none() | item_ids, limit=limits, order=orders
    )
    def load_thread_items(
        self, owner: str, thread_id: str, after: str | None, limit: int, order: str
    ) -> None:
        call = self.store.load_thread_items(thread_id, after, limit, order, RequestContext(owner))
        readable = self.model.items_of(owner, thread_id)
        unreadable = [
            i for (o, t, _), i in self.unreadable.items.items() if (o, t) == (owner, thread_id)
        ]
        if after is not None and after not in {i.id for i in [*readable, *unreadable]}:
            with pytest.raises(NotFoundError, match=f"Item {after} not found in thread"):
                self.runner.run(call)
            return
        anchor = _readable_anchor(readable, unreadable, after, order)
        expected = _expected_page(readable, anchor, limit, order)
        _same_page(self.runner.run(call), expected)


@pytest.mark.parametrize("backend", [BACKEND])
def test_an_encrypted_store_agrees_with_the_model_through_shreds(backend: str) -> None:
    before = RUNS[backend].copy()  # the plain model test counts on the same backend
    run_state_machine_as_test(EncryptedStoreMachine, settings=settings(max_examples=SEQUENCES))
    counts = RUNS[backend] - before
    print(
        f"encrypted {backend}: {counts['sequences']} sequences, {counts['comparisons']} "
        f"comparisons, {counts['shreds']} shreds"
    )
    assert counts["shreds"] > 0
