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

from collections.abc import Callable
from typing import Any, Final

from ... import _queries as queries
from ..._queries import Find
from ...schema import Field, Kind
from ...store import MongoStore, new_id
from .calls import StoreCalls
from .harness import Phase, Run, Side, ratio_chart, ratio_table

OWNER: Final = "bench-overhead"
KINDS: Final[tuple[Kind, ...]] = ("thread", "item", "attachment")
OVERHEAD_LIMIT: Final = 1.10
"""The store may cost at most 10% more than the bare driver call it makes."""


async def bare_sides(run: Run, calls: StoreCalls) -> dict[str, Side]:
    """The bare driver call of every Store operation, on the thread ``calls`` seeded,
    in the collections of ``calls``'s store; the documents it wrote are the templates."""
    thread_id, page = calls.thread_id, run.settings.page_size
    threads, items, attachments = (run.collection(k, calls.store) for k in KINDS)
    keys: dict[Kind, dict[str, Any]] = {
        "thread": queries.thread_filter(OWNER, thread_id),
        "item": queries.item_filter(OWNER, thread_id, calls.item.id),
        "attachment": queries.attachment_filter(OWNER, calls.attachment.id),
    }
    templates = {
        kind: await run.collection(kind, calls.store).find_one(keys[kind]) for kind in KINDS
    }
    for template in templates.values():
        del template["_id"]  # each copy gets its own, as a driver insert gives it
    ready: list[dict[str, Any]] = []
    doomed: list[str] = []

    def copy(kind: Kind, new: str, thread: str = thread_id) -> dict[str, Any]:
        """The stored document of ``kind`` under the id ``new``, as an insert sends it."""
        template = templates[kind]
        data = {**template[Field.DATA], "id": new}
        if kind == "attachment":
            return {**template, Field.ATTACHMENT_ID: new, Field.DATA: data}
        if kind == "thread":
            return {**template, **queries.thread_filter(OWNER, new), Field.DATA: data}
        sort_key = template[Field.SORT_KEY].split(" ")[0] + " " + new
        data["thread_id"] = thread
        return {
            **template,
            **queries.item_filter(OWNER, thread, new),
            Field.SORT_KEY: sort_key,
            Field.DATA: data,
        }

    def find(find: Find) -> Side:
        handle = run.collection(find.kind, calls.store)
        if find.limit == 1:
            return Side(lambda: handle.find_one(find.filter, find.projection))
        sort = list(find.sort)
        return Side(
            lambda: (
                handle.find(find.filter, find.projection).sort(sort).limit(find.limit).to_list(None)
            )
        )

    def upsert(handle: Any, kind: Kind) -> Side:
        """A save's commands: the read of what it replaces, then the upsert conditional on
        it (see ``MongoStore._replace``)."""

        async def save() -> object:
            stored = await handle.find_one(keys[kind], {Field.DATA: 1, "_id": 0})
            match = (
                {Field.DATA: {"$exists": False}}
                if stored is None
                else {Field.DATA: {"$eq": stored[Field.DATA]}}
            )
            return await handle.update_one(
                {**keys[kind], **match}, {"$set": templates[kind]}, upsert=True
            )

        return Side(save)

    async def new_item() -> None:
        doomed.append(new_id("message"))
        ready.append(copy("item", doomed[-1]))

    async def stored(kind: Kind) -> None:
        doomed.append(new_id(kind))
        await run.collection(kind, calls.store).insert_one(copy(kind, doomed[-1]))
        if kind == "thread":
            for _ in range(2):
                await items.insert_one(copy("item", new_id("message"), doomed[-1]))

    async def remove_item() -> None:
        await items.delete_one(queries.item_filter(OWNER, thread_id, doomed.pop()))

    async def delete_thread() -> None:
        scope = queries.thread_filter(OWNER, doomed.pop())
        for handle in (attachments, items, threads):  # the store's cascade, in its order
            await handle.delete_many(scope)

    return {
        "load_thread": find(Find("thread", keys["thread"])),
        "load_item": find(Find("item", keys["item"])),
        "load_attachment": find(Find("attachment", keys["attachment"])),
        "load_thread_items": find(queries.items_page(OWNER, thread_id, None, "desc", page)),
        "load_threads": find(queries.threads_page(OWNER, None, "desc", page)),
        "save_thread": upsert(threads, "thread"),
        "save_item": upsert(items, "item"),
        "save_attachment": upsert(attachments, "attachment"),
        "add_thread_item": Side(lambda: items.insert_one(ready.pop()), new_item, remove_item),
        "delete_thread_item": Side(remove_item, lambda: stored("item")),
        "delete_attachment": Side(
            lambda: attachments.delete_one(queries.attachment_filter(OWNER, doomed.pop())),
            lambda: stored("attachment"),
        ),
        "delete_thread": Side(delete_thread, lambda: stored("thread")),
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
        bare = await bare_sides(run, calls)
        label = f"{key}: store vs bare driver, interleaved A/B pairs"
        figures = await run.ab(label, calls.sides(), bare, ("store", "bare"))
        return {key: figures, "overhead_limit": OVERHEAD_LIMIT}

    def table(report: dict[str, Any]) -> list[str]:
        if not report[key]:
            return []
        title = f"{key}: the store over the bare driver call (p50 of interleaved A/B pairs):"
        return ratio_table(title, report[key], ("store", "bare"), report["overhead_limit"])

    def chart(axes: Any, report: dict[str, Any]) -> None:
        title = f"Store overhead (interleaved A/B, {report.get('driver', '?')})"
        limit = report["overhead_limit"]
        ratio_chart(axes, report[key], limit, "store p50 / bare driver p50", title)

    return Phase(key, measure, table, chart)
