"""The benchmark: a ChatKit workload on MongoStore, measured per Store operation.

A turn is what ChatKit does for one user message: load the thread, add the user's
message, load the recent items for the model, add the assistant's reply once it has
streamed (streaming itself touches no store), and list the user's threads for the
sidebar. Many users take turns in many threads; then one thread grows from the first
to the last size and the same turn is timed at each size. On a real server a turn
must cost the same at 10,000 items as at 100: every query is an index range.

Figures per operation: p50 and p99 latency, round trips per call (commands seen by a
PyMongo ``CommandListener``, or, on a backend without command events, calls on the
store's collections), and, where the server can ``explain()``, documents and keys
examined per document returned by the queries the store sends.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    InferenceOptions,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)
from pymongo import monitoring
from pymongo.errors import PyMongoError

from . import queries
from ._driver import AsyncDatabaseLike
from ._params import WholeNumber
from ._text import shown
from .connection import Connection, connection_options, open_database, open_uri, resolve
from .embedded import embedded_database
from .explain import PlanSummary, explain, hot_queries
from .schema import Field
from .store import MongoStore

_T = TypeVar("_T")

OPERATIONS: Final = (
    "save_thread",
    "load_thread",
    "add_thread_item",
    "load_thread_items",
    "load_threads",
)
"""The Store operations a ChatKit turn makes, in the order it makes them."""
_ROUND_TRIP_METHODS: Final = frozenset(
    {"find", "find_one", "insert_one", "update_one", "delete_one", "delete_many"}
)
"""Collection methods that each send one command (a page fits in one batch)."""
_GROWER: Final = "bench-grower"
_WORDS: Final = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while")


@dataclass(frozen=True)
class BenchSettings:
    """How big the workload is. The defaults are the published run; tests shrink them."""

    users: int = 20
    threads_per_user: int = 5
    turns_per_thread: int = 10
    sizes: tuple[int, ...] = (100, 1_000, 10_000)
    samples_per_size: int = 20
    page_size: int = 20
    reply_words: int = 40

    def __post_init__(self) -> None:
        for name in ("users", "threads_per_user", "turns_per_thread", "samples_per_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.page_size <= 1000:
            raise ValueError(f"page_size must be between 1 and 1000, got {self.page_size}")
        if self.reply_words < 1:
            raise ValueError(f"reply_words must be at least 1, got {self.reply_words}")
        if not self.sizes or list(self.sizes) != sorted(set(self.sizes)) or self.sizes[0] < 1:
            raise ValueError(f"sizes must be positive and increasing, got {list(self.sizes)}")


class RoundTrips:
    """Round trips to the database, each counted against the Store operation running.

    Why a "current operation" and not per-task context: the benchmark runs one Store
    call at a time, so whatever is sent meanwhile belongs to that call.
    """

    def __init__(self) -> None:
        self.operation: str | None = None
        self.counts: Counter[str] = Counter()

    def record(self) -> None:
        if self.operation is not None:
            self.counts[self.operation] += 1


class CommandCounter(monitoring.CommandListener):
    """Counts every command a real PyMongo client sends: the exact round-trip figure."""

    def __init__(self, round_trips: RoundTrips) -> None:
        self.round_trips = round_trips

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.round_trips.record()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Only starts are counted."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Only starts are counted."""


class _CountingCollection:
    """A collection whose command-sending methods count a round trip each.

    For backends without command events (the embedded one): one call is one command
    there, since a page of ChatKit items always fits in the first batch.
    """

    def __init__(self, collection: Any, round_trips: RoundTrips) -> None:
        self._collection = collection
        self._round_trips = round_trips

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if name not in _ROUND_TRIP_METHODS:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._round_trips.record()
            return attribute(*args, **kwargs)

        return counted


def count_collection_calls(store: MongoStore[Any], round_trips: RoundTrips) -> None:
    """Count round trips by the store's collection calls, where no listener can see them."""
    for role, collection in list(store._collections.items()):
        store._collections[role] = _CountingCollection(collection, round_trips)


class _Timings:
    """Latency samples per operation, with round trips counted alongside."""

    def __init__(self, round_trips: RoundTrips) -> None:
        self.round_trips = round_trips
        self.samples: defaultdict[str, list[float]] = defaultdict(list)

    async def time(self, operation: str, call: Awaitable[_T]) -> _T:
        self.round_trips.operation = operation
        start = time.perf_counter()
        try:
            return await call
        finally:
            self.samples[operation].append(time.perf_counter() - start)
            self.round_trips.operation = None


class _Workload:
    """ChatKit's turns against one store, timed."""

    def __init__(self, store: MongoStore[Any], settings: BenchSettings, timings: _Timings) -> None:
        self.store = store
        self.settings = settings
        self.timings = timings
        self.counter = 0

    async def new_thread(self, user: str, timed: bool = True) -> ThreadMetadata:
        context = {"user_id": user}
        thread = ThreadMetadata(
            id=self.store.generate_thread_id(context), created_at=datetime.now()
        )
        await self._maybe_time(timed, "save_thread", self.store.save_thread(thread, context))
        return thread

    async def turn(self, user: str, thread: ThreadMetadata) -> None:
        context = {"user_id": user}
        store, page, time_ = self.store, self.settings.page_size, self.timings.time
        loaded = await time_("load_thread", store.load_thread(thread.id, context))
        question = self._user_message(loaded, context)
        await time_("add_thread_item", store.add_thread_item(thread.id, question, context))
        await time_(
            "load_thread_items", store.load_thread_items(thread.id, None, page, "desc", context)
        )
        reply = self._reply(loaded, context)
        await time_("add_thread_item", store.add_thread_item(thread.id, reply, context))
        await time_("load_threads", store.load_threads(page, None, "desc", context))

    async def exchange(self, user: str, thread: ThreadMetadata) -> None:
        """A question and its reply added, untimed and without the reads: growing a
        thread to the next size should cost only what the measurement needs."""
        context = {"user_id": user}
        await self.store.add_thread_item(thread.id, self._user_message(thread, context), context)
        await self.store.add_thread_item(thread.id, self._reply(thread, context), context)

    async def _maybe_time(self, timed: bool, operation: str, call: Awaitable[_T]) -> _T:
        return await (self.timings.time(operation, call) if timed else call)

    def _words(self, count: int) -> str:
        self.counter += 1
        return " ".join(_WORDS[(self.counter + i) % len(_WORDS)] for i in range(count))

    def _user_message(self, thread: ThreadMetadata, context: Any) -> UserMessageItem:
        return UserMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=[UserMessageTextContent(text=self._words(20))],
            inference_options=InferenceOptions(),
        )

    def _reply(self, thread: ThreadMetadata, context: Any) -> AssistantMessageItem:
        return AssistantMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=[AssistantMessageContent(text=self._words(self.settings.reply_words))],
        )


async def run_benchmark(
    store: MongoStore[Any],
    settings: BenchSettings,
    *,
    round_trips: RoundTrips | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run the workload on ``store`` (an empty database) and return the figures.

    ``round_trips`` is the counter a :class:`CommandCounter` on the store's client feeds;
    without one, the store's collection calls are counted instead.
    """
    await store.ensure_indexes()  # set-up, not part of any operation's figures
    if round_trips is None:
        round_trips = RoundTrips()
        count_collection_calls(store, round_trips)
    timings = _Timings(round_trips)
    workload = _Workload(store, settings, timings)

    progress(f"{settings.users} users take turns in {settings.threads_per_user} threads each")
    users = [f"bench-user-{index}" for index in range(settings.users)]
    threads = {
        user: [await workload.new_thread(user) for _ in range(settings.threads_per_user)]
        for user in users
    }
    for _ in range(settings.turns_per_thread):
        for user in users:
            for thread in threads[user]:
                await workload.turn(user, thread)
    operations = _summarise(timings.samples, round_trips.counts)

    growth = []
    grower = await workload.new_thread(_GROWER, timed=False)
    items = 0
    for size in settings.sizes:
        progress(f"growing one thread to {size} items")
        while items < size:
            await workload.exchange(_GROWER, grower)
            items += 2
        sizing = _Timings(RoundTrips())
        workload.timings = sizing
        for _ in range(settings.samples_per_size):
            await workload.turn(_GROWER, grower)
        workload.timings = timings
        growth.append({"items": items, "operations": _summarise(sizing.samples, None)})
        items += 2 * settings.samples_per_size

    explain, explain_note = await _explain_hot_queries(store, grower.id, settings.page_size)
    return {
        "settings": {**asdict(settings), "sizes": list(settings.sizes)},
        "operations": operations,
        "explain": explain,
        "explain_note": explain_note,
        "growth": growth,
        "growth_p50_ratio": _growth_ratio(growth),
    }


def _summarise(
    samples: dict[str, list[float]], round_trips: Counter[str] | None
) -> dict[str, dict[str, float]]:
    summary = {}
    for operation in OPERATIONS:
        values = sorted(samples.get(operation, []))
        if not values:
            continue
        figures = {
            "calls": len(values),
            "p50_ms": round(_percentile(values, 0.50) * 1000, 3),
            "p99_ms": round(_percentile(values, 0.99) * 1000, 3),
        }
        if round_trips is not None:
            figures["round_trips_per_call"] = round(round_trips[operation] / len(values), 3)
        summary[operation] = figures
    return summary


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest rank: a value that was measured, never an interpolation between two."""
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def _growth_ratio(growth: list[dict[str, Any]]) -> dict[str, float]:
    """p50 at the largest size over p50 at the smallest: about 1 when latency stays flat."""
    first, last = growth[0]["operations"], growth[-1]["operations"]
    return {
        operation: round(last[operation]["p50_ms"] / first[operation]["p50_ms"], 2)
        for operation in first
        if first[operation]["p50_ms"] > 0
    }


async def _explain_hot_queries(
    store: MongoStore[Any], thread_id: str, page_size: int
) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """The explain figures of a turn's queries on the grown thread, or why there are none."""
    items = store.database[store.collections.items]
    item = await items.find_one(queries.thread(_GROWER, thread_id), {Field.DATA: 0}) or {}
    explained = {}
    for operation, find in hot_queries(
        _GROWER, thread_id, item.get(Field.ITEM_ID, ""), item.get(Field.SORT_KEY), page_size
    ):
        try:
            summary = await explain(store.database, store.collections, find)
        except (NotImplementedError, PyMongoError):
            return None, "this backend cannot explain() queries (the embedded in-memory one)"
        explained[operation] = explain_figures(summary)
    return explained, None


def explain_figures(summary: PlanSummary) -> dict[str, Any]:
    """What an explain says about a query's cost, as the report's JSON gives it."""
    returned = summary.returned or 0
    examined = summary.documents_examined or 0
    return {
        "returned": returned,
        "keys_examined": summary.keys_examined,
        "docs_examined": examined,
        "docs_examined_per_returned": round(examined / max(returned, 1), 3),
        "index_scan": summary.uses_index,
        "in_memory_sort": summary.sorts_in_memory,
    }


def format_report(report: dict[str, Any]) -> str:
    """The figures as a plain-text table."""
    lines = [f"backend: {report['backend']}", ""]
    lines.append(f"{'operation':<18} {'calls':>6} {'p50 ms':>9} {'p99 ms':>9} {'trips':>6}")
    for operation, figures in report["operations"].items():
        lines.append(
            f"{operation:<18} {figures['calls']:>6} {figures['p50_ms']:>9.3f} "
            f"{figures['p99_ms']:>9.3f} {figures['round_trips_per_call']:>6.2f}"
        )
    lines.append("")
    if report["explain"] is None:
        lines.append(f"docs examined per doc returned: unknown; {report['explain_note']}")
    else:
        for operation, figures in report["explain"].items():
            lines.append(
                f"explain {operation}: {figures['docs_examined_per_returned']} docs and "
                f"{figures['keys_examined']} keys examined for {figures['returned']} returned; "
                f"index scan {figures['index_scan']}, in-memory sort {figures['in_memory_sort']}"
            )
    lines.append("")
    lines.append("p50 ms as one thread grows:")
    lines.append(f"{'items':>8} " + " ".join(f"{operation:>18}" for operation in OPERATIONS[1:]))
    for point in report["growth"]:
        cells = " ".join(
            f"{point['operations'][operation]['p50_ms']:>18.3f}" for operation in OPERATIONS[1:]
        )
        lines.append(f"{point['items']:>8} {cells}")
    ratios = ", ".join(f"{op} x{ratio}" for op, ratio in report["growth_p50_ratio"].items())
    lines.append(f"largest/smallest p50: {ratios}")
    return "\n".join(lines)


def write_chart(report: dict[str, Any], path: Path) -> None:
    """A PNG: p50/p99 per operation, and p50 against thread size."""
    try:
        import matplotlib  # noqa: PLC0415  (optional extra, loaded only for --chart)

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as exc:
        raise click.ClickException(
            "--chart needs matplotlib: pip install 'chatkit-mongo[bench]'"
        ) from exc
    figure, (bars, lines) = pyplot.subplots(1, 2, figsize=(12, 4.5))
    names = list(report["operations"])
    positions = range(len(names))
    for offset, key in ((-0.2, "p50_ms"), (0.2, "p99_ms")):
        values = [report["operations"][name][key] for name in names]
        bars.bar([p + offset for p in positions], values, width=0.4, label=key.split("_")[0])
    bars.set_xticks(list(positions), names, rotation=20)
    bars.set_ylabel("latency (ms)")
    bars.set_title(f"Store operations ({report['backend']})")
    bars.legend()
    sizes = [point["items"] for point in report["growth"]]
    for operation in OPERATIONS[1:]:
        p50 = [point["operations"][operation]["p50_ms"] for point in report["growth"]]
        lines.plot(sizes, p50, marker="o", label=operation)
    lines.set_xscale("log")
    lines.set_xlabel("items in the thread")
    lines.set_ylabel("p50 latency (ms)")
    lines.set_title("Latency as a thread grows")
    lines.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)


@asynccontextmanager
async def _target(
    connection: Connection, embedded: bool
) -> AsyncIterator[tuple[MongoStore[Any], RoundTrips | None, str]]:
    """The store to measure: a fresh database on the server, or the embedded backend.

    On a server the database must be empty (the benchmark writes into it) and is
    dropped afterwards. The server is opened as every command opens it
    (:mod:`chatkit_mongo.connection`), with a command counter on the client; an opener
    handed in by a test is used as it is.
    """
    if embedded:
        with embedded_database(connection.database) as database:
            yield MongoStore(database), None, "embedded in-memory (mongomock-motor)"
        return
    round_trips: RoundTrips | None = None
    opened: AbstractAsyncContextManager[AsyncDatabaseLike]
    if connection.opener is open_uri and connection.uri:
        round_trips = RoundTrips()
        opened = open_database(
            connection.uri,
            connection.database,
            connection.timeout,
            event_listeners=[CommandCounter(round_trips)],
        )
    else:
        opened = connection.open()
    async with opened as database:
        client = database.client
        if await client[database.name].list_collection_names():
            raise click.ClickException(
                f"database {database.name!r} is not empty; the benchmark needs a database "
                "of its own"
            )
        info = await database.command("buildInfo")
        try:
            yield MongoStore(database), round_trips, f"MongoDB {info.get('version', '?')}"
        finally:
            await client.drop_database(database.name)


def _parse_sizes(context: click.Context, parameter: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        return tuple(_COUNT.convert(part, None, None) for part in value.split(","))
    except click.BadParameter:
        raise click.BadParameter(
            f"expected sizes like 100,1000,10000, got {shown(value)}"
        ) from None


_COUNT: Final = WholeNumber(1, 10**9)
"""Users, threads, turns, sizes, samples, page size: at least one, at most a billion."""


@click.command("bench")
@click.option("--users", default=BenchSettings.users, show_default=True, type=_COUNT)
@click.option(
    "--threads-per-user", default=BenchSettings.threads_per_user, show_default=True, type=_COUNT
)
@click.option("--turns", default=BenchSettings.turns_per_thread, show_default=True, type=_COUNT)
@click.option(
    "--sizes",
    default=",".join(str(size) for size in BenchSettings.sizes),
    show_default=True,
    callback=_parse_sizes,
    help="Thread sizes (items) at which the growing thread is measured.",
)
@click.option(
    "--samples",
    default=BenchSettings.samples_per_size,
    show_default=True,
    type=_COUNT,
    help="Turns measured at each size.",
)
@click.option("--page-size", default=BenchSettings.page_size, show_default=True, type=_COUNT)
@click.option(
    "--out",
    default="bench.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the figures as JSON.",
)
@click.option(
    "--chart",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw the figures as a PNG chart here (needs matplotlib).",
)
@connection_options
@click.pass_context
def bench_command(
    ctx: click.Context,
    *,
    users: int,
    threads_per_user: int,
    turns: int,
    sizes: tuple[int, ...],
    samples: int,
    page_size: int,
    out: Path,
    chart: Path | None,
) -> None:
    """Measure MongoStore under a ChatKit workload: latency, round trips, index use.

    On the server named by --uri (or MONGODB_URI), in an empty database (--database,
    by default a new one), dropped afterwards; without a URI, on the embedded
    in-memory backend.
    """
    try:
        settings = BenchSettings(
            users=users,
            threads_per_user=threads_per_user,
            turns_per_thread=turns,
            sizes=sizes,
            samples_per_size=samples,
            page_size=page_size,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    connection = resolve(ctx, default_database=f"chatkit_bench_{secrets.token_hex(4)}")
    embedded = connection.uri is None and connection.opener is open_uri
    report = asyncio.run(_bench(connection, embedded, settings))
    out.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(format_report(report))
    click.echo(f"\nfigures written to {out}")
    if chart is not None:
        write_chart(report, chart)
        click.echo(f"chart written to {chart}")


async def _bench(connection: Connection, embedded: bool, settings: BenchSettings) -> dict[str, Any]:
    async with _target(connection, embedded) as (store, round_trips, backend):
        started = time.perf_counter()
        figures = await run_benchmark(
            store,
            settings,
            round_trips=round_trips,
            progress=lambda message: click.echo(message, err=True),
        )
        seconds = round(time.perf_counter() - started, 3)
    return {"backend": backend, "seconds": seconds, **figures}
