"""Phase: the store's own cost, each Store operation against the bare driver call it makes.

The bare side is the driver call the store makes, given a document ready to send (the
very document the store wrote, read back, under a fresh id where a new one is needed)
and the filter from :mod:`chatkit_mongo._queries`, on the same collection and the same
thread. Everything the store does besides (checking arguments and the owner, turning
models into documents and back, refusing what would not round-trip, the size and depth
limits, shielding writes from cancellation) is its overhead. Both sides are timed in
interleaved pairs (:meth:`.harness.Run.ab`), and each side's commands are counted, so
a reader sees that like is compared with like.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from ... import _queries as queries
from ..._queries import Find
from ...schema import Field, Kind
from ...store import MongoStore, new_id
from .calls import StoreCalls
from .harness import Phase, Run, Side, tabulate

OWNER: Final = "bench-overhead"
OVERHEAD_LIMIT: Final = 1.10
"""The store may cost at most 10% more than the bare driver call it makes."""


class BareCalls:
    """The bare driver calls of every Store operation on the thread ``calls`` seeded."""

    def __init__(self, run: Run, calls: StoreCalls, documents: dict[Kind, dict[str, Any]]):
        self.run, self.calls, self.documents = run, calls, documents
        self.thread_id = calls.thread_id

    @classmethod
    async def read(cls, run: Run, calls: StoreCalls) -> BareCalls:
        """The seeded documents, read back: the bare side's templates."""
        keys: dict[Kind, dict[str, Any]] = {
            "thread": queries.thread_filter(OWNER, calls.thread_id),
            "item": queries.item_filter(OWNER, calls.thread_id, calls.item.id),
            "attachment": queries.attachment_filter(OWNER, calls.attachment.id),
        }
        documents = {}
        for kind, key in keys.items():
            document = await calls.store.database[calls.store.collections.name_of(kind)].find_one(
                key
            )
            assert document is not None, f"the seeded {kind} document is missing"
            del document["_id"]  # each copy gets its own, as a driver insert gives it
            documents[kind] = document
        return cls(run, calls, documents)

    def item(self, thread_id: str) -> tuple[str, dict[str, Any]]:
        """The stored item's document under a fresh id (and thread), as an insert sends it."""
        template, item_id = self.documents["item"], new_id("message")
        return item_id, {
            **template,
            Field.THREAD_ID: thread_id,
            Field.ITEM_ID: item_id,
            Field.SORT_KEY: template[Field.SORT_KEY].split(" ")[0] + " " + item_id,
            Field.DATA: {**template[Field.DATA], "id": item_id, "thread_id": thread_id},
        }

    def sides(self) -> dict[str, Side]:
        thread_id, collection = self.thread_id, self.run.collection
        threads, items, attachments = (collection(k) for k in ("thread", "item", "attachment"))
        thread_key = queries.thread_filter(OWNER, thread_id)
        item_key = queries.item_filter(OWNER, thread_id, self.calls.item.id)
        attachment_key = queries.attachment_filter(OWNER, self.calls.attachment.id)
        page = self.run.settings.page_size
        ready: list[dict[str, Any]] = []
        doomed: list[str] = []

        def find(find: Find) -> Callable[[], Awaitable[object]]:
            handle = collection(find.kind)
            if find.limit == 1:
                return lambda: handle.find_one(find.filter, find.projection)
            return lambda: (
                handle.find(find.filter, find.projection)
                .sort(list(find.sort))
                .limit(find.limit)
                .to_list(None)
            )

        def upsert(handle: Any, key: dict[str, Any], kind: Kind) -> Side:
            return Side(lambda: handle.update_one(key, {"$set": self.documents[kind]}, upsert=True))

        async def new_item() -> None:
            item_id, document = self.item(thread_id)
            doomed.append(item_id)
            ready.append(document)

        async def stored_item() -> None:
            item_id, document = self.item(thread_id)
            await items.insert_one(document)
            doomed.append(item_id)

        async def remove_item() -> None:
            await items.delete_one(queries.item_filter(OWNER, thread_id, doomed.pop()))

        async def stored_attachment() -> None:
            doomed.append(new_id("attachment"))
            template = self.documents["attachment"]
            data = {**template[Field.DATA], "id": doomed[-1]}
            await attachments.insert_one(
                {**template, Field.ATTACHMENT_ID: doomed[-1], Field.DATA: data}
            )

        async def stored_thread() -> None:
            doomed.append(new_id("thread"))
            template = self.documents["thread"]
            data = {**template[Field.DATA], "id": doomed[-1]}
            await threads.insert_one(
                {**template, **queries.thread_filter(OWNER, doomed[-1]), Field.DATA: data}
            )
            for _ in range(2):
                await items.insert_one(self.item(doomed[-1])[1])

        async def delete_thread() -> None:
            scope = queries.thread_filter(OWNER, doomed.pop())
            await attachments.delete_many(scope)  # the store's cascade, in its order
            await items.delete_many(scope)
            await threads.delete_many(scope)

        return {
            "load_thread": Side(find(Find("thread", thread_key))),
            "load_item": Side(find(Find("item", item_key))),
            "load_attachment": Side(find(Find("attachment", attachment_key))),
            "load_thread_items": Side(
                find(queries.items_page(OWNER, thread_id, None, "desc", page))
            ),
            "load_threads": Side(find(queries.threads_page(OWNER, None, "desc", page))),
            "save_thread": upsert(threads, thread_key, "thread"),
            "save_item": upsert(items, item_key, "item"),
            "save_attachment": upsert(attachments, attachment_key, "attachment"),
            "add_thread_item": Side(lambda: items.insert_one(ready.pop()), new_item, remove_item),
            "delete_thread_item": Side(remove_item, stored_item),
            "delete_attachment": Side(
                lambda: attachments.delete_one(queries.attachment_filter(OWNER, doomed.pop())),
                stored_attachment,
            ),
            "delete_thread": Side(delete_thread, stored_thread),
        }


def phase(
    variant: str | None = None, store: Callable[[Run], MongoStore[Any]] | None = None
) -> Phase:
    """The overhead phase, on the run's store; or, as a ``variant``, on the store that
    ``store`` builds (e.g. with tracing on), reported as ``overhead[variant]`` beside
    the plain run's, so one run compares the two configurations."""
    key = "overhead" if variant is None else f"overhead[{variant}]"

    async def measure(run: Run) -> dict[str, Any]:
        if not run.settings.pairs:
            return {key: {}, "overhead_limit": OVERHEAD_LIMIT}
        calls = StoreCalls(run.store if store is None else store(run), OWNER, run.settings)
        await calls.seed()
        bare = await BareCalls.read(run, calls)
        label = f"{key}: store vs bare driver, interleaved A/B pairs"
        figures = await run.ab(label, calls.sides(), bare.sides(), ("store", "bare"))
        return {key: figures, "overhead_limit": OVERHEAD_LIMIT}

    def table(report: dict[str, Any]) -> list[str]:
        limit, rows = report["overhead_limit"], report[key]
        if not rows:
            return []
        columns = {"operation": 20, "pairs": "d", "store us": ".1f", "bare us": ".1f"}
        return tabulate(
            f"{key}: the store over the bare driver call (p50 of interleaved A/B pairs):",
            columns | {"ratio": ".3f", "": "s"},
            {
                name: [row[k] for k in ("pairs", "store_p50_us", "bare_p50_us", "ratio")]
                + ["" if row["ratio"] <= limit else f"over {limit:.2f}"]
                for name, row in rows.items()
            },
        )

    def chart(axes: Any, report: dict[str, Any]) -> None:
        axes.bar(list(report[key]), [figures["ratio"] for figures in report[key].values()])
        axes.axhline(report["overhead_limit"], color="red", linestyle="--", label="limit")
        axes.axhline(1.0, color="grey", linewidth=0.8)
        axes.tick_params(axis="x", labelrotation=60)
        axes.set_ylabel("store p50 / bare driver p50")
        axes.set_title(f"Store overhead (interleaved A/B, {report.get('driver', '?')})")
        axes.legend()

    return Phase(key, measure, table, chart)
