"""The store's own cost: each Store operation against the bare driver call it makes.

Why A/B pairs interleaved in one run, on one collection, with the same document and
the same filter: on a shared machine the server's and the machine's speed drift by
more than the store costs; measured in turn, both sides meet the same drift, the same
collection size and the same caches, so their ratio is the store's overhead. The side
that goes first alternates from pair to pair.

The bare side is the driver call the store makes, given a document that is ready to
send (the very document the store wrote, read back, under a fresh id where a new one
is needed) and the filter from :mod:`chatkit_mongo._queries`. Everything the store does
besides (checking arguments and the owner, turning models into documents and back,
refusing what would not round-trip, the size and depth limits, shielding writes from
cancellation) is its overhead. Work the measurement itself needs (seeding, removing
what a pair added) happens outside the timed calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    FileAttachment,
    ThreadMetadata,
)

from .. import _queries as queries
from .._queries import Find
from ..schema import MODEL_KINDS, Field, Kind
from ..store import MongoStore, new_id

OVERHEAD_OPERATIONS: Final = (
    "load_thread",
    "load_item",
    "load_attachment",
    "load_thread_items",
    "load_threads",
    "save_thread",
    "save_item",
    "save_attachment",
    "add_thread_item",
    "delete_thread_item",
    "delete_attachment",
    "delete_thread",
)
"""Every Store operation that talks to the database."""
OWNER: Final = "bench-overhead"
_SEEDED_ITEMS: Final = 20
_PAGE: Final = 20


@dataclass(frozen=True)
class _Pair:
    """One operation's two sides: each a fresh awaitable per call, and its untimed chores."""

    store: Callable[[], Awaitable[object]]
    bare: Callable[[], Awaitable[object]]
    before: Callable[[], Awaitable[None]] | None = None
    after: Callable[[], Awaitable[None]] | None = None


class OverheadRun:
    """The A/B pairs of every operation on one store, one owner, one thread."""

    def __init__(self, store: MongoStore[Any], reply_words: int = 40) -> None:
        self.store = store
        self.context = {"user_id": OWNER}
        self.text = " ".join(["word"] * reply_words)
        self.collections: dict[Kind, Any] = {
            kind: store.database[name]
            for kind, name in store.collections.by_kind(MODEL_KINDS).items()
        }
        self.thread = ThreadMetadata(id=new_id("thread"), created_at=datetime.now(), title="A/B")
        self.item = self._item(self.thread.id)
        self.attachment = FileAttachment(
            id=new_id("attachment"),
            name="report.pdf",
            mime_type="application/pdf",
            thread_id=self.thread.id,
        )
        self.documents: dict[Kind, dict[str, Any]] = {}

    def _item(self, thread_id: str) -> AssistantMessageItem:
        return AssistantMessageItem(
            id=new_id("message"),
            thread_id=thread_id,
            created_at=datetime.now(),
            content=[AssistantMessageContent(text=self.text)],
        )

    async def seed(self) -> None:
        """A thread with a page of items and an attachment; their stored documents are
        the bare side's templates."""
        await self.store.save_thread(self.thread, self.context)
        for _ in range(_SEEDED_ITEMS - 1):
            await self.store.add_thread_item(
                self.thread.id, self._item(self.thread.id), self.context
            )
        await self.store.add_thread_item(self.thread.id, self.item, self.context)
        await self.store.save_attachment(self.attachment, self.context)
        keys: dict[Kind, dict[str, Any]] = {
            "thread": queries.thread_filter(OWNER, self.thread.id),
            "item": queries.item_filter(OWNER, self.thread.id, self.item.id),
            "attachment": queries.attachment_filter(OWNER, self.attachment.id),
        }
        for kind, key in keys.items():
            document = await self.collections[kind].find_one(key)
            assert document is not None, f"the seeded {kind} document is missing"
            del document["_id"]  # each copy gets its own, as a driver insert gives it
            self.documents[kind] = document

    # ------------------------------------------------------------------ documents

    def _new_item_document(self, thread_id: str) -> tuple[str, dict[str, Any]]:
        """The stored item's document under a fresh id (and thread), as an insert sends it."""
        template = self.documents["item"]
        item_id = new_id("message")
        sort_key = template[Field.SORT_KEY].split(" ")[0] + " " + item_id
        data = {**template[Field.DATA], "id": item_id, "thread_id": thread_id}
        return item_id, {
            **template,
            Field.THREAD_ID: thread_id,
            Field.ITEM_ID: item_id,
            Field.SORT_KEY: sort_key,
            Field.DATA: data,
        }

    def _new_attachment_document(self) -> tuple[str, dict[str, Any]]:
        template = self.documents["attachment"]
        attachment_id = new_id("attachment")
        data = {**template[Field.DATA], "id": attachment_id}
        return attachment_id, {**template, Field.ATTACHMENT_ID: attachment_id, Field.DATA: data}

    # ------------------------------------------------------------------ the pairs

    def pairs(self) -> dict[str, _Pair]:
        store, context, thread_id = self.store, self.context, self.thread.id
        threads, items, attachments = (
            self.collections["thread"],
            self.collections["item"],
            self.collections["attachment"],
        )

        def find_one(find: Find) -> Callable[[], Awaitable[object]]:
            collection = self.collections[find.kind]
            return lambda: collection.find_one(find.filter, find.projection)

        def page(find: Find) -> Callable[[], Awaitable[object]]:
            collection = self.collections[find.kind]

            async def bare() -> object:
                cursor = collection.find(find.filter, find.projection)
                return await cursor.sort(list(find.sort)).limit(find.limit).to_list(None)

            return bare

        item_key = queries.item_filter(OWNER, thread_id, self.item.id)
        attachment_key = queries.attachment_filter(OWNER, self.attachment.id)
        thread_key = queries.thread_filter(OWNER, thread_id)

        def upsert(collection: Any, key: dict[str, Any], kind: Kind) -> Any:
            """A save's commands: the read of what it replaces, then the upsert
            conditional on it (see ``MongoStore._replace``)."""
            document = self.documents[kind]

            async def bare() -> object:
                stored = await collection.find_one(key, {Field.DATA: 1, "_id": 0})
                match = (
                    {Field.DATA: {"$exists": False}}
                    if stored is None
                    else {Field.DATA: {"$eq": stored[Field.DATA]}}
                )
                return await collection.update_one(
                    {**key, **match}, {"$set": document}, upsert=True
                )

            return bare

        added: list[str] = []
        ready: dict[str, dict[str, Any]] = {}

        next_item: list[AssistantMessageItem] = []

        async def new_item_and_document() -> None:
            """Both sides' new items, made before the clock starts."""
            item_id, document = self._new_item_document(thread_id)
            ready["item"] = document
            next_item.append(self._item(thread_id))
            added.extend((item_id, next_item[-1].id))

        async def remove_added() -> None:
            for item_id in added:
                await items.delete_one(queries.item_filter(OWNER, thread_id, item_id))
            added.clear()

        doomed: dict[str, list[str]] = {"item": [], "attachment": [], "thread": []}

        async def two_items() -> None:
            for _ in range(2):
                item_id, document = self._new_item_document(thread_id)
                await items.insert_one(document)
                doomed["item"].append(item_id)

        async def two_attachments() -> None:
            for _ in range(2):
                attachment_id, document = self._new_attachment_document()
                await attachments.insert_one(document)
                doomed["attachment"].append(attachment_id)

        async def two_threads() -> None:
            for _ in range(2):
                doomed_id = new_id("thread")
                await threads.insert_one(
                    {
                        **self.documents["thread"],
                        **queries.thread_filter(OWNER, doomed_id),
                        Field.DATA: {**self.documents["thread"][Field.DATA], "id": doomed_id},
                    }
                )
                for _ in range(2):
                    await items.insert_one(self._new_item_document(doomed_id)[1])
                doomed["thread"].append(doomed_id)

        async def bare_delete_thread() -> None:
            scope = queries.thread_filter(OWNER, doomed["thread"].pop())
            await attachments.delete_many(scope)  # the store's cascade, in its order
            await items.delete_many(scope)
            await threads.delete_many(scope)

        return {
            "load_thread": _Pair(
                lambda: store.load_thread(thread_id, context), find_one(Find("thread", thread_key))
            ),
            "load_item": _Pair(
                lambda: store.load_item(thread_id, self.item.id, context),
                find_one(Find("item", item_key)),
            ),
            "load_attachment": _Pair(
                lambda: store.load_attachment(self.attachment.id, context),
                find_one(Find("attachment", attachment_key)),
            ),
            "load_thread_items": _Pair(
                lambda: store.load_thread_items(thread_id, None, _PAGE, "desc", context),
                page(queries.items_page(OWNER, thread_id, None, "desc", _PAGE)),
            ),
            "load_threads": _Pair(
                lambda: store.load_threads(_PAGE, None, "desc", context),
                page(queries.threads_page(OWNER, None, "desc", _PAGE)),
            ),
            "save_thread": _Pair(
                lambda: store.save_thread(self.thread, context),
                upsert(threads, thread_key, "thread"),
            ),
            "save_item": _Pair(
                lambda: store.save_item(thread_id, self.item, context),
                upsert(items, item_key, "item"),
            ),
            "save_attachment": _Pair(
                lambda: store.save_attachment(self.attachment, context),
                upsert(attachments, attachment_key, "attachment"),
            ),
            "add_thread_item": _Pair(
                lambda: store.add_thread_item(thread_id, next_item.pop(), context),
                lambda: items.insert_one(ready.pop("item")),
                before=new_item_and_document,
                after=remove_added,
            ),
            "delete_thread_item": _Pair(
                lambda: store.delete_thread_item(thread_id, doomed["item"].pop(), context),
                lambda: items.delete_one(
                    queries.item_filter(OWNER, thread_id, doomed["item"].pop())
                ),
                before=two_items,
            ),
            "delete_attachment": _Pair(
                lambda: store.delete_attachment(doomed["attachment"].pop(), context),
                lambda: attachments.delete_one(
                    queries.attachment_filter(OWNER, doomed["attachment"].pop())
                ),
                before=two_attachments,
            ),
            "delete_thread": _Pair(
                lambda: store.delete_thread(doomed["thread"].pop(), context),
                bare_delete_thread,
                before=two_threads,
            ),
        }


async def measure_overhead(
    store: MongoStore[Any],
    pairs: int,
    *,
    label: Callable[[str | None], None] = lambda name: None,
    step: Callable[[], None] = lambda: None,
    reply_words: int = 40,
) -> dict[str, dict[str, float]]:
    """``pairs`` A/B pairs of every operation; per operation the p50 of each side in
    microseconds and their ratio (store over bare). ``label`` is told which side runs
    (``"<operation>/store"`` or ``"<operation>/bare"``), e.g. to count its commands;
    ``step`` is called after each pair, for progress."""
    run = OverheadRun(store, reply_words)
    await run.seed()
    figures: dict[str, dict[str, float]] = {}
    for operation, pair in run.pairs().items():

        def label_side(side: str | None, operation: str = operation) -> None:
            label(None if side is None else f"{operation}/{side}")

        sides = await time_interleaved(
            {"store": pair.store, "bare": pair.bare},
            pairs,
            before=pair.before,
            after=pair.after,
            label=label_side,
            step=step,
        )
        store_p50, bare_p50 = median(sides["store"]), median(sides["bare"])
        figures[operation] = {
            "pairs": pairs,
            "store_p50_us": round(store_p50 * 1e6, 1),
            "bare_p50_us": round(bare_p50 * 1e6, 1),
            "ratio": round(store_p50 / bare_p50, 3),
        }
    return figures


async def time_interleaved(
    sides: dict[str, Callable[[], Awaitable[object]]],
    pairs: int,
    *,
    before: Callable[[], Awaitable[None]] | None = None,
    after: Callable[[], Awaitable[None]] | None = None,
    label: Callable[[str | None], None] = lambda side: None,
    step: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """``pairs`` rounds of the two ``sides`` (name -> a fresh awaitable per call) in
    turn, the side that goes first alternating; each side's seconds per call.

    The one A/B method of the benchmarks (the store's overhead, the cost of
    encryption): see the module's docstring for why interleaved. ``before`` and
    ``after`` run untimed around each round; ``label`` is told which side runs
    (None between calls); ``step`` is called after each round, for progress.
    """
    first, second = sides
    seconds: dict[str, list[float]] = {first: [], second: []}
    for index in range(pairs):
        if before is not None:
            await before()
        for side in (first, second) if index % 2 == 0 else (second, first):
            label(side)
            start = time.perf_counter()
            await sides[side]()
            seconds[side].append(time.perf_counter() - start)
            label(None)
        if after is not None:
            await after()
        step()
        await asyncio.sleep(0)
    return seconds


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
