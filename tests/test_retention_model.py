"""Model-based test of retention: random activity from two owners and clock advances,
against a model in which a thread and everything of it vanish together at its expiry.

The model's policy, written without the store's code: activity (saving the thread,
adding or saving an item, saving an attachment of the thread) on a living thread moves
its expiry to ``now + N`` when it is earlier than ``now + N - R``; a thread is visible
while ``now < expiry``, and its items and attachments exactly as long. Steps run one at
a time: docs/retention.md's documented limit (a write racing a refresh may keep an older
expiry) concerns concurrent writers only. The clock starts at the real present, so no
TTL pass removes anything: what disappears, the store's reads hid.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Any, ClassVar, Final

import pytest
from chatkit.store import NotFoundError
from chatkit.types import FileAttachment, ThreadMetadata
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chatkit_mongo import MongoStore

from .conftest import BACKENDS, RequestContext
from .retention_support import Clock
from .samples import assistant_message
from .strategies import StoreRunner

PERIOD: Final = timedelta(days=10)
REFRESH: Final = timedelta(days=1)
OWNERS: Final = ("alice", "bob")
THREAD_IDS: Final = ("thr_1", "thr_2")
ITEM_IDS: Final = ("msg_1", "msg_2", "msg_3")
ATTACHMENT_IDS: Final = ("atc_1", "atc_2")
STEPS: Final = (
    timedelta(milliseconds=1),
    timedelta(hours=12),
    REFRESH,
    timedelta(days=3),
    PERIOD - REFRESH,
    PERIOD,
)
"""Clock advances that land on and just past each boundary of the policy."""
RUNS: Final[defaultdict[str, Counter[str]]] = defaultdict(Counter)

owners = st.sampled_from(OWNERS)
thread_ids = st.sampled_from(THREAD_IDS)


class RetentionMachine(RuleBasedStateMachine):
    backend: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.runner = StoreRunner(self.backend)
        self.clock = Clock()
        self.store: MongoStore[Any] = MongoStore(
            self.runner.database, retention=PERIOD, retention_refresh=REFRESH, clock=self.clock
        )
        self.expiry: dict[tuple[str, str], datetime] = {}
        self.items: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.attachments: dict[tuple[str, str], str] = {}
        """``(owner, attachment id) -> thread id``."""
        RUNS[self.backend]["sequences"] += 1

    def teardown(self) -> None:
        self.runner.close()

    # ---------------------------------------------------------------- the model

    def _alive(self, owner: str, thread_id: str) -> bool:
        expiry = self.expiry.get((owner, thread_id))
        return expiry is not None and self.clock.now < expiry

    def _forget_expired(self) -> None:
        for key in [key for key in self.expiry if not self._alive(*key)]:
            self._forget(*key)

    def _forget(self, owner: str, thread_id: str) -> None:
        self.expiry.pop((owner, thread_id), None)
        self.items.pop((owner, thread_id), None)
        for key in [k for k, t in self.attachments.items() if (k[0], t) == (owner, thread_id)]:
            del self.attachments[key]

    def _activity(self, owner: str, thread_id: str) -> None:
        deadline = self.clock.now + PERIOD
        if self.expiry[owner, thread_id] < deadline - REFRESH:
            self.expiry[owner, thread_id] = deadline

    # ---------------------------------------------------------------- rules

    @rule(by=st.sampled_from(STEPS))
    def advance_clock(self, by: timedelta) -> None:
        self.clock.advance(by)
        self._forget_expired()

    @rule(owner=owners, thread_id=thread_ids)
    def save_thread(self, owner: str, thread_id: str) -> None:
        thread = ThreadMetadata(id=thread_id, created_at=self.clock.now, title=owner)
        self.runner.run(self.store.save_thread(thread, RequestContext(owner)))
        if self._alive(owner, thread_id):
            self._activity(owner, thread_id)
        else:
            self.expiry[owner, thread_id] = self.clock.now + PERIOD

    @precondition(lambda self: bool(self.expiry))
    @rule(data=st.data(), item_id=st.sampled_from(ITEM_IDS), add=st.booleans())
    def write_item(self, data: st.DataObject, item_id: str, add: bool) -> None:
        owner, thread_id = data.draw(st.sampled_from(sorted(self.expiry)))
        item = assistant_message(item_id, thread_id, self.clock.now)
        context = RequestContext(owner)
        if add and item_id not in self.items[owner, thread_id]:
            self.runner.run(self.store.add_thread_item(thread_id, item, context))
        else:
            self.runner.run(self.store.save_item(thread_id, item, context))
        self.items[owner, thread_id].add(item_id)
        self._activity(owner, thread_id)

    @precondition(lambda self: bool(self.expiry))
    @rule(data=st.data(), attachment_id=st.sampled_from(ATTACHMENT_IDS))
    def save_attachment(self, data: st.DataObject, attachment_id: str) -> None:
        owner, thread_id = data.draw(st.sampled_from(sorted(self.expiry)))
        attachment = FileAttachment(
            id=attachment_id, name="a.txt", mime_type="text/plain", thread_id=thread_id
        )
        self.runner.run(self.store.save_attachment(attachment, RequestContext(owner)))
        self.attachments[owner, attachment_id] = thread_id
        self._activity(owner, thread_id)

    @rule(owner=owners, thread_id=thread_ids)
    def delete_thread(self, owner: str, thread_id: str) -> None:
        self.runner.run(self.store.delete_thread(thread_id, RequestContext(owner)))
        self._forget(owner, thread_id)

    # ---------------------------------------------------------------- after every step

    @invariant()
    def every_read_agrees_with_the_model(self) -> None:
        RUNS[self.backend]["comparisons"] += 1
        for owner in OWNERS:
            context = RequestContext(owner)
            page = self.runner.run(self.store.load_threads(100, None, "asc", context))
            alive = sorted(t for (o, t) in self.expiry if o == owner)
            assert sorted(thread.id for thread in page.data) == alive
            for thread_id in THREAD_IDS:
                load = self.store.load_thread(thread_id, context)
                if thread_id in alive:
                    assert self.runner.run(load).id == thread_id
                else:
                    with pytest.raises(NotFoundError):
                        self.runner.run(load)
                items = self.runner.run(
                    self.store.load_thread_items(thread_id, None, 100, "asc", context)
                )
                expected = self.items.get((owner, thread_id), set())
                assert sorted(item.id for item in items.data) == sorted(expected)
            for attachment_id in ATTACHMENT_IDS:
                load_attachment = self.store.load_attachment(attachment_id, context)
                if (owner, attachment_id) in self.attachments:
                    thread_id = self.attachments[owner, attachment_id]
                    assert self.runner.run(load_attachment).thread_id == thread_id
                else:
                    with pytest.raises(NotFoundError):
                        self.runner.run(load_attachment)


@pytest.mark.needs("$max/$min update operators")  # retention's re-stamp
@pytest.mark.parametrize("backend", BACKENDS)
def test_retention_agrees_with_the_model(backend: str) -> None:
    machine = type(f"RetentionMachine[{backend}]", (RetentionMachine,), {"backend": backend})
    run_state_machine_as_test(machine)
    counts = RUNS[backend]
    print(f"{backend}: {counts['sequences']} sequences, {counts['comparisons']} comparisons")
    assert counts["sequences"] > 0
