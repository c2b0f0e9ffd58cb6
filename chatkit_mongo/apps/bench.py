"""The benchmark: a ChatKit workload on MongoStore, measured per Store operation.

A turn is what ChatKit does for one user message: load the thread, add the user's
message, load the recent items for the model, add the assistant's reply once it has
streamed (streaming itself touches no store), and list the user's threads for the
sidebar. The run, in phases:

1. **overhead**: every Store operation against the bare driver call it makes, in
   interleaved A/B pairs (:mod:`chatkit_mongo.apps.bench_overhead`); the ratio store/bare;
2. **workload**: many users take turns in many threads, one call at a time: p50/p99
   latency and round trips per call (commands seen by a PyMongo ``CommandListener``,
   or, on the embedded backend, calls on the collections);
3. **explain**: documents and keys examined per document returned by the queries the
   store sends, where the server can ``explain()``;
4. **concurrency**: N simulated users on one event loop
   (:mod:`chatkit_mongo.apps.bench_concurrency`);
5. **growth** (``--growth``, long): one thread grows to each size and the same turn is
   timed there. On a real server a turn must cost the same at 10,000 items as at 100.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

import click
from chatkit.types import (
    AssistantMessageItem,
    ThreadMetadata,
    UserMessageItem,
)
from pymongo import monitoring
from pymongo.errors import OperationFailure, PyMongoError

from .. import _queries as queries
from .._driver import AsyncDatabaseLike
from .._text import shown
from ..operations.explain import PlanSummary, explain, hot_queries
from ..schema import MODEL_KINDS, CollectionNames, Field
from ..store import MongoStore
from ._params import Seconds, WholeNumber
from .bench_concurrency import (
    assistant_message,
    level_collections,
    measure_concurrency,
    percentile,
    user_message,
)
from .bench_overhead import OVERHEAD_OPERATIONS, measure_overhead
from .connection import (
    Connection,
    connection_options,
    open_database,
    open_uri,
)
from .connection import resolve as resolve_connection
from .embedded import embedded_database

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
OVERHEAD_LIMIT: Final = 1.10
"""The store may cost at most 10% more than the bare driver call it makes."""
DRIVERS: Final = ("pymongo", "motor")
_WORDS: Final = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while")


@dataclass(frozen=True)
class BenchSettings:
    """How big the workload is. The defaults are the published run; tests shrink them."""

    users: int = 10
    threads_per_user: int = 2
    turns_per_thread: int = 5
    sizes: tuple[int, ...] = (100, 1_000, 10_000)
    samples_per_size: int = 20
    page_size: int = 20
    reply_words: int = 40
    pairs: int = 1000
    """A/B pairs per operation in the overhead phase."""
    concurrency: tuple[int, ...] = (1, 8, 32, 128)
    """Simulated users at each concurrency level; empty: no concurrency phase."""
    seconds_per_level: float = 4.0
    growth: bool = False
    """The long phase: one thread grown through ``sizes``."""

    def __post_init__(self) -> None:
        for name in ("users", "threads_per_user", "turns_per_thread", "samples_per_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.pairs < 0:
            raise ValueError(f"pairs must be at least 0, got {self.pairs}")
        if any(users < 1 for users in self.concurrency):
            raise ValueError(f"concurrency levels must be at least 1, got {self.concurrency}")
        if self.seconds_per_level <= 0:
            raise ValueError(f"seconds_per_level must be positive, got {self.seconds_per_level}")
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

    def label(self, operation: str | None) -> None:
        """Count what is sent from now on against ``operation`` (None: against nothing)."""
        self.operation = operation


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


class CountingDatabase:
    """A database handle whose collections count their calls; a store is built on it
    where no listener can see the commands."""

    def __init__(self, database: Any, round_trips: RoundTrips) -> None:
        self._database = database
        self._round_trips = round_trips

    @property
    def name(self) -> str:
        name: str = self._database.name
        return name

    @property
    def client(self) -> Any:
        return self._database.client

    def __getitem__(self, name: str) -> _CountingCollection:
        return _CountingCollection(self._database[name], self._round_trips)

    def command(self, command: Any, /) -> Any:
        return self._database.command(command)


class Progress:
    """Where the run is: a phase and its steps. This one says nothing (tests, scripts)."""

    def phase(self, label: str, total: int) -> None:
        """A phase of ``total`` steps begins."""

    def step(self) -> None:
        """One step of the phase is done."""

    def note(self, message: str) -> None:
        """Something the reader should know (what the server lacks)."""


class TerminalProgress(Progress):
    """Progress on stderr: a line per phase, counted in place on a terminal."""

    def __init__(self) -> None:
        self._stream: TextIO = sys.stderr
        self._live = self._stream.isatty()
        self._label, self._total, self._done, self._shown = "", 0, 0, 0.0
        self._started = time.perf_counter()

    def phase(self, label: str, total: int) -> None:
        self._end_line()
        self._label, self._total, self._done = label, total, 0
        if self._live:
            self._show()
        else:
            click.echo(f"[{self._elapsed()}] {label}", err=True)

    def step(self) -> None:
        self._done += 1
        now = time.perf_counter()
        if self._live and (now - self._shown > 0.1 or self._done == self._total):
            self._show()

    def note(self, message: str) -> None:
        self._end_line()
        click.echo(f"note: {message}", err=True)

    def finish(self) -> None:
        self._end_line()

    def _show(self) -> None:
        self._shown = time.perf_counter()
        share = f" {self._done}/{self._total}" if self._total else ""
        self._stream.write(f"\r\033[K[{self._elapsed()}] {self._label}{share}")
        self._stream.flush()

    def _end_line(self) -> None:
        if self._live and self._label:
            self._show()
            self._stream.write("\n")
            self._stream.flush()
        self._label = ""

    def _elapsed(self) -> str:
        return f"{time.perf_counter() - self._started:5.1f}s"


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
        return user_message(self.store, thread, context, self._words(20))

    def _reply(self, thread: ThreadMetadata, context: Any) -> AssistantMessageItem:
        return assistant_message(
            self.store, thread, context, self._words(self.settings.reply_words)
        )


async def run_benchmark(
    store: MongoStore[Any],
    settings: BenchSettings,
    *,
    round_trips: RoundTrips | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every phase on ``store``'s database (its collections empty) and return the
    figures.

    ``round_trips`` is the counter a :class:`CommandCounter` on the store's client feeds;
    without one, a store over a :class:`CountingDatabase` counts collection calls instead.
    """
    progress = progress or Progress()
    if round_trips is None:
        round_trips = RoundTrips()
        store = MongoStore(
            CountingDatabase(store.database, round_trips), collections=store.collections
        )
    await store.ensure_indexes()  # set-up, not part of any operation's figures

    overhead: dict[str, dict[str, float]] = {}
    if settings.pairs:
        progress.phase(
            "overhead: store vs bare driver, interleaved A/B pairs",
            settings.pairs * len(OVERHEAD_OPERATIONS),
        )
        overhead = await measure_overhead(
            store,
            settings.pairs,
            label=round_trips.label,
            step=progress.step,
            reply_words=settings.reply_words,
        )
        for operation, figures in overhead.items():
            for side in ("store", "bare"):
                trips = round_trips.counts.pop(f"{operation}/{side}", 0)
                figures[f"{side}_round_trips"] = round(trips / settings.pairs, 3)

    timings = _Timings(round_trips)
    workload = _Workload(store, settings, timings)
    users = [f"bench-user-{index}" for index in range(settings.users)]
    progress.phase(
        f"workload: {settings.users} users take turns in {settings.threads_per_user} threads each",
        settings.users * settings.threads_per_user * settings.turns_per_thread,
    )
    threads = {
        user: [await workload.new_thread(user) for _ in range(settings.threads_per_user)]
        for user in users
    }
    for _ in range(settings.turns_per_thread):
        for user in users:
            for thread in threads[user]:
                await workload.turn(user, thread)
                progress.step()
    operations = _summarise(timings.samples, round_trips.counts)

    explained_thread = threads[users[0]][0]
    explained_owner = users[0]
    growth: list[dict[str, Any]] = []
    if settings.growth:
        explained_owner = _GROWER
        explained_thread = await _grow(workload, settings, growth, progress)

    progress.phase("explain: the plans of a turn's queries", 0)
    explain, explain_note = await _explain_hot_queries(
        store, explained_owner, explained_thread.id, settings.page_size
    )
    if explain_note is not None:
        progress.note(explain_note)

    concurrency: list[dict[str, float]] = []
    if settings.concurrency:
        progress.phase(
            "concurrency: simulated users on one event loop, "
            f"{settings.seconds_per_level:g} s per level",
            len(settings.concurrency),
        )
        concurrency = await measure_concurrency(
            store,
            settings.concurrency,
            settings.seconds_per_level,
            reply_words=settings.reply_words,
            step=progress.step,
        )
    return {
        "settings": {
            **asdict(settings),
            "sizes": list(settings.sizes),
            "concurrency": list(settings.concurrency),
        },
        "overhead": overhead,
        "overhead_limit": OVERHEAD_LIMIT,
        "operations": operations,
        "explain": explain,
        "explain_note": explain_note,
        "concurrency": concurrency,
        "growth": growth,
        "growth_p50_ratio": _growth_ratio(growth) if growth else {},
    }


async def _grow(
    workload: _Workload,
    settings: BenchSettings,
    growth: list[dict[str, Any]],
    progress: Progress,
) -> ThreadMetadata:
    """One thread grown through ``settings.sizes``, the turn timed at each size."""
    timings = workload.timings
    grower = await workload.new_thread(_GROWER, timed=False)
    items = 0
    for size in settings.sizes:
        progress.phase(f"growth: one thread grows to {size} items", (size - items + 1) // 2)
        while items < size:
            await workload.exchange(_GROWER, grower)
            items += 2
            progress.step()
        sizing = _Timings(RoundTrips())
        workload.timings = sizing
        for _ in range(settings.samples_per_size):
            await workload.turn(_GROWER, grower)
        workload.timings = timings
        growth.append({"items": items, "operations": _summarise(sizing.samples, None)})
        items += 2 * settings.samples_per_size
    return grower


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
            "p50_ms": round(percentile(values, 0.50) * 1000, 3),
            "p99_ms": round(percentile(values, 0.99) * 1000, 3),
        }
        if round_trips is not None:
            figures["round_trips_per_call"] = round(round_trips[operation] / len(values), 3)
        summary[operation] = figures
    return summary


def _growth_ratio(growth: list[dict[str, Any]]) -> dict[str, float]:
    """p50 at the largest size over p50 at the smallest: about 1 when latency stays flat."""
    first, last = growth[0]["operations"], growth[-1]["operations"]
    return {
        operation: round(last[operation]["p50_ms"] / first[operation]["p50_ms"], 2)
        for operation in first
        if first[operation]["p50_ms"] > 0
    }


async def _explain_hot_queries(
    store: MongoStore[Any], owner: str, thread_id: str, page_size: int
) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """The explain figures of a turn's queries on one thread, or why there are none:
    the server's own error, or that the backend has no query planner at all."""
    items = store.database[store.collections.items]
    item = await items.find_one(queries.thread_filter(owner, thread_id), {Field.DATA: 0}) or {}
    explained = {}
    for operation, find in hot_queries(
        owner, thread_id, item.get(Field.ITEM_ID, ""), item.get(Field.SORT_KEY), page_size
    ):
        try:
            summary = await explain(store.database, store.collections, find)
        except NotImplementedError:
            return None, "cannot explain queries: this backend has no query planner"
        except PyMongoError as exc:
            return None, f"cannot explain queries: the server refused explain ({_said(exc)})"
        explained[operation] = explain_figures(summary)
    return explained, None


def _said(exc: PyMongoError) -> str:
    """What the server said, on one line: its errmsg and code where it sent them."""
    if isinstance(exc, OperationFailure) and exc.details:
        message = exc.details.get("errmsg") or str(exc)
        return f"{message}, code {exc.code}" if exc.code is not None else str(message)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


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
    """The figures as plain-text tables."""
    lines = [f"backend: {report['backend']}; driver: {report['driver']}", ""]
    if report["overhead"]:
        limit = report["overhead_limit"]
        lines.append("store overhead over the bare driver call (p50 of interleaved A/B pairs):")
        lines.append(f"{'operation':<20} {'pairs':>6} {'store us':>9} {'bare us':>9} {'ratio':>6}")
        for operation, figures in report["overhead"].items():
            flag = "" if figures["ratio"] <= limit else f"  over {limit:.2f}"
            lines.append(
                f"{operation:<20} {figures['pairs']:>6} {figures['store_p50_us']:>9.1f} "
                f"{figures['bare_p50_us']:>9.1f} {figures['ratio']:>6.3f}{flag}"
            )
        lines.append("")
    lines.append("one call at a time, in ChatKit turns:")
    lines.append(f"{'operation':<20} {'calls':>6} {'p50 ms':>9} {'p99 ms':>9} {'trips':>6}")
    for operation, figures in report["operations"].items():
        lines.append(
            f"{operation:<20} {figures['calls']:>6} {figures['p50_ms']:>9.3f} "
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
    if report["concurrency"]:
        lines.append("")
        lines.append("concurrent users on one event loop (turns back to back):")
        lines.append(
            f"{'users':>6} {'turns':>7} {'turns/s':>9} {'turn p50 ms':>12} {'turn p99 ms':>12} "
            f"{'lag p99 ms':>11} {'lag max ms':>11}"
        )
        for level in report["concurrency"]:
            lines.append(
                f"{level['users']:>6} {level['turns']:>7} {level['turns_per_s']:>9.1f} "
                f"{level['turn_p50_ms']:>12.2f} {level['turn_p99_ms']:>12.2f} "
                f"{level['lag_p99_ms']:>11.2f} {level['lag_max_ms']:>11.2f}"
            )
    if report["growth"]:
        lines.append("")
        lines.append("p50 ms as one thread grows:")
        lines.append(
            f"{'items':>8} " + " ".join(f"{operation:>18}" for operation in OPERATIONS[1:])
        )
        for point in report["growth"]:
            cells = " ".join(
                f"{point['operations'][operation]['p50_ms']:>18.3f}" for operation in OPERATIONS[1:]
            )
            lines.append(f"{point['items']:>8} {cells}")
        ratios = ", ".join(f"{op} x{ratio}" for op, ratio in report["growth_p50_ratio"].items())
        lines.append(f"largest/smallest p50: {ratios}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


def write_chart(report: dict[str, Any], path: Path) -> None:
    """A PNG: latency per operation, the overhead ratios, the concurrency levels, and
    latency against thread size when the growth phase ran."""
    try:
        import matplotlib  # noqa: PLC0415  (optional extra, loaded only for --chart)

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as exc:
        raise click.ClickException(
            "--chart needs matplotlib: pip install 'chatkit-mongo[bench]'"
        ) from exc
    figure, axes = pyplot.subplots(2, 2, figsize=(13, 9))
    (bars, ratios), (load, lines) = axes
    names = list(report["operations"])
    positions = range(len(names))
    for offset, key in ((-0.2, "p50_ms"), (0.2, "p99_ms")):
        values = [report["operations"][name][key] for name in names]
        bars.bar([p + offset for p in positions], values, width=0.4, label=key.split("_")[0])
    bars.set_xticks(list(positions), names, rotation=20)
    bars.set_ylabel("latency (ms)")
    bars.set_title(f"Store operations ({report['backend']}, {report['driver']})")
    bars.legend()
    _chart_overhead(ratios, report)
    _chart_concurrency(load, report)
    _chart_growth(lines, report)
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)


def _chart_overhead(ratios: Any, report: dict[str, Any]) -> None:
    overhead = report["overhead"]
    ratios.bar(list(overhead), [figures["ratio"] for figures in overhead.values()])
    ratios.axhline(report["overhead_limit"], color="red", linestyle="--", label="limit")
    ratios.axhline(1.0, color="grey", linewidth=0.8)
    ratios.tick_params(axis="x", labelrotation=60)
    ratios.set_ylabel("store p50 / bare driver p50")
    ratios.set_title("Store overhead (interleaved A/B)")
    ratios.legend()


def _chart_concurrency(load: Any, report: dict[str, Any]) -> None:
    levels = report["concurrency"]
    users = [level["users"] for level in levels]
    load.plot(users, [level["turns_per_s"] for level in levels], marker="o", label="turns/s")
    load.set_xscale("log", base=2)
    load.set_xlabel("concurrent users on one event loop")
    load.set_ylabel("turns per second")
    lag = load.twinx()
    lag.plot(users, [level["lag_p99_ms"] for level in levels], "r--", marker="s", label="lag p99")
    lag.set_ylabel("event loop lag p99 (ms)")
    load.set_title("Concurrency")
    load.legend(loc="upper left")
    lag.legend(loc="upper right")


def _chart_growth(lines: Any, report: dict[str, Any]) -> None:
    if report["growth"]:
        sizes = [point["items"] for point in report["growth"]]
        for operation in OPERATIONS[1:]:
            p50 = [point["operations"][operation]["p50_ms"] for point in report["growth"]]
            lines.plot(sizes, p50, marker="o", label=operation)
        lines.set_xscale("log")
        lines.legend()
    else:
        lines.text(0.5, 0.5, "growth phase not run (--growth)", ha="center", va="center")
    lines.set_xlabel("items in the thread")
    lines.set_ylabel("p50 latency (ms)")
    lines.set_title("Latency as a thread grows")


class _Target:
    """Where the run writes, and what the reader should know about cleaning up."""

    def __init__(
        self, store: MongoStore[Any], round_trips: RoundTrips | None, backend: str, driver: str
    ) -> None:
        self.store = store
        self.round_trips = round_trips
        self.backend = backend
        self.driver = driver
        self.notes: list[str] = []


def bench_collections(settings: BenchSettings, collections: CollectionNames) -> list[str]:
    """Every collection the run writes: the store's, and each concurrency level's."""
    sets = [collections] + [level_collections(collections, users) for users in settings.concurrency]
    return [name for names in sets for name in names.by_kind(MODEL_KINDS).values()]


def _motor_client() -> Callable[..., Any]:
    from motor.motor_asyncio import AsyncIOMotorClient  # noqa: PLC0415  (only when asked)

    return AsyncIOMotorClient


@asynccontextmanager
async def _target(
    connection: Connection, embedded: bool, driver: str | None, settings: BenchSettings
) -> AsyncIterator[_Target]:
    """The store to measure: a fresh database on the server, or the embedded backend.

    On a server the collections the run writes must be empty; the database is dropped
    afterwards or, where the server cannot drop databases, emptied. The server is opened
    as every command opens it (:mod:`chatkit_mongo.apps.connection`), with a command counter
    on the client (PyMongo's, or Motor's with ``--driver motor``); an opener handed in
    by a test is used as it is.
    """
    collections = connection.collections
    if embedded:
        if driver == "pymongo":
            raise click.UsageError(
                "the embedded backend is Motor-shaped (mongomock-motor); "
                "--driver pymongo needs a server (--uri)"
            )
        with embedded_database(connection.database) as database:
            store = MongoStore(database, collections=collections)
            yield _Target(store, None, "embedded in-memory (mongomock-motor)", "motor-shaped")
        return
    round_trips: RoundTrips | None = None
    opened: AbstractAsyncContextManager[AsyncDatabaseLike]
    if connection.opener is open_uri and connection.uri:
        round_trips = RoundTrips()
        # Motor: only when asked. The store names the library in Motor's handshake
        # (Motor refuses a driver= of ours beside its own).
        make_client = _motor_client() if driver == "motor" else None
        opened = open_database(
            connection.uri,
            connection.database,
            connection.timeout,
            make_client=make_client,
            event_listeners=[CommandCounter(round_trips)],
        )
    else:
        opened = connection.open()
    async with opened as database:
        for name in bench_collections(settings, collections):
            if await database[name].find_one({}, {"_id": 1}) is not None:
                raise click.ClickException(
                    f"collection {database.name}.{name} is not empty; the benchmark needs a "
                    "database of its own (--database)"
                )
        info = await database.command("buildInfo")
        target = _Target(
            MongoStore(database, collections=collections),
            round_trips,
            f"MongoDB {info.get('version', '?')}",
            driver or "pymongo",
        )
        try:
            yield target
        finally:
            await _clean_up(database, settings, target)


async def _clean_up(database: AsyncDatabaseLike, settings: BenchSettings, target: _Target) -> None:
    """Drop the database; where the server cannot, empty what the run wrote."""
    try:
        await database.client.drop_database(database.name)
    except OperationFailure as exc:
        for name in bench_collections(settings, target.store.collections):
            await database[name].delete_many({})
        target.notes.append(
            f"the server cannot drop databases ({_said(exc)}): the benchmark's documents were "
            f"deleted, but database {database.name!r} and its empty collections remain"
        )


def _parse_counts(value: str, example: str) -> tuple[int, ...]:
    try:
        return tuple(_COUNT.convert(part, None, None) for part in value.split(","))
    except click.BadParameter:
        raise click.BadParameter(f"expected {example}, got {shown(value)}") from None


def _parse_sizes(context: click.Context, parameter: click.Parameter, value: str) -> tuple[int, ...]:
    return _parse_counts(value, "sizes like 100,1000,10000")


def _parse_levels(
    context: click.Context, parameter: click.Parameter, value: str
) -> tuple[int, ...]:
    if value.strip() == "0":
        return ()
    return _parse_counts(value, "user counts like 1,8,32,128")


_COUNT: Final = WholeNumber(1, 10**9)
"""Users, threads, turns, sizes, samples, page size: at least one, at most a billion."""


@click.command("bench")
@click.option(
    "--driver",
    type=click.Choice(DRIVERS),
    default=None,
    help="The driver on a server: PyMongo's native async API or Motor [default: pymongo].",
)
@click.option("--users", default=BenchSettings.users, show_default=True, type=_COUNT)
@click.option(
    "--threads-per-user", default=BenchSettings.threads_per_user, show_default=True, type=_COUNT
)
@click.option("--turns", default=BenchSettings.turns_per_thread, show_default=True, type=_COUNT)
@click.option(
    "--pairs",
    default=BenchSettings.pairs,
    show_default=True,
    type=WholeNumber(0, 10**9),
    help="A/B pairs per operation in the overhead phase (0: skip it).",
)
@click.option(
    "--concurrency",
    default=",".join(str(users) for users in BenchSettings.concurrency),
    show_default=True,
    callback=_parse_levels,
    help="Simulated users at each concurrency level (0: skip the phase).",
)
@click.option(
    "--seconds-per-level",
    default=BenchSettings.seconds_per_level,
    show_default=True,
    type=Seconds(),
    help="How long each concurrency level runs.",
)
@click.option(
    "--growth/--no-growth",
    default=False,
    show_default=True,
    help="Also grow one thread through --sizes, timing a turn at each (minutes on a server, "
    "far longer on the embedded backend).",
)
@click.option(
    "--sizes",
    default=",".join(str(size) for size in BenchSettings.sizes),
    show_default=True,
    callback=_parse_sizes,
    help="Thread sizes (items) at which the growing thread is measured (with --growth).",
)
@click.option(
    "--samples",
    default=BenchSettings.samples_per_size,
    show_default=True,
    type=_COUNT,
    help="Turns measured at each size (with --growth).",
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
@click.option(
    "--encryption",
    is_flag=True,
    help="Measure instead what client-side encryption costs: per document, per Store "
    "operation (an encrypted store against a plain one) and per MiB of attachment "
    "(needs a server, for the key vault; the drivers as --driver, else both).",
)
@connection_options
@click.pass_context
def bench_command(
    ctx: click.Context,
    *,
    encryption: bool,
    driver: str | None,
    users: int,
    threads_per_user: int,
    turns: int,
    pairs: int,
    concurrency: tuple[int, ...],
    seconds_per_level: float,
    growth: bool,
    sizes: tuple[int, ...],
    samples: int,
    page_size: int,
    out: Path,
    chart: Path | None,
) -> None:
    """Measure MongoStore under a ChatKit workload: its overhead over the bare driver,
    latency, round trips, index use, and many users on one event loop.

    On the server named by --uri (or MONGODB_URI), in a database of its own (--database,
    by default a new one), dropped afterwards; without a URI, on the embedded in-memory
    backend. The default run takes under a minute; --growth adds the long phase.
    """
    try:
        settings = BenchSettings(
            users=users,
            threads_per_user=threads_per_user,
            turns_per_thread=turns,
            sizes=sizes,
            samples_per_size=samples,
            page_size=page_size,
            pairs=pairs,
            concurrency=concurrency,
            seconds_per_level=seconds_per_level,
            growth=growth,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    connection = resolve_connection(ctx, default_database=f"chatkit_bench_{secrets.token_hex(4)}")
    embedded = connection.uri is None and connection.opener is open_uri
    if encryption:
        _bench_encryption(connection.uri, driver)
        return
    progress = TerminalProgress()
    try:
        report = asyncio.run(_bench(connection, embedded, driver, settings, progress=progress))
    finally:
        progress.finish()
    out.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(format_report(report))
    click.echo(f"\nfigures written to {out}")
    if chart is not None:
        write_chart(report, chart)
        click.echo(f"chart written to {chart}")


def _bench_encryption(uri: str | None, driver: str | None) -> None:
    """``--encryption``: the run of :mod:`chatkit_mongo.apps.bench_encryption`, printed."""
    from .bench_encryption import run  # noqa: PLC0415  (libmongocrypt only when asked)

    if uri is None:
        raise click.UsageError("--encryption needs a server for the key vault: pass --uri")
    drivers = DRIVERS if driver is None else (driver,)
    try:
        lines = asyncio.run(run(uri, drivers))
    except PyMongoError as exc:
        raise click.ClickException(f"the server refused the benchmark: {_said(exc)}") from exc
    for line in lines:
        click.echo(line)


async def _bench(
    connection: Connection,
    embedded: bool,
    driver: str | None,
    settings: BenchSettings,
    *,
    progress: Progress,
) -> dict[str, Any]:
    """The run; a server's refusal ends it with one line naming what was refused."""
    try:
        async with _target(connection, embedded, driver, settings) as target:
            started = time.perf_counter()
            figures = await run_benchmark(
                target.store, settings, round_trips=target.round_trips, progress=progress
            )
            seconds = round(time.perf_counter() - started, 3)
    except PyMongoError as exc:
        raise click.ClickException(f"the server refused the benchmark: {_said(exc)}") from exc
    for note in target.notes:
        progress.note(note)
    return {
        "backend": target.backend,
        "driver": target.driver,
        "seconds": seconds,
        **figures,
        "notes": target.notes,
    }
