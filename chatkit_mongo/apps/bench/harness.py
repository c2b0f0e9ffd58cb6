"""What every phase of the benchmark shares: settings, timing, round trips, loop lag,
progress, and the report.

A run is a list of phases (one module each) over one store. The harness starts one
loop-lag ticker for the whole run, gives each phase a :class:`Run` (the store, the
settings, the timers, the progress line), records each phase's loop lag, and turns the
phases' figures into one report: JSON, text tables and a chart, each phase drawing its
own part. A phase says only what it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Final, TypeVar

import click
from pymongo import monitoring

from ..._telemetry import Telemetry
from ...encryption import Encryption
from ...schema import CollectionNames, Kind, collection_settings
from ...store import MongoStore
from .._extras import install_hint

_T = TypeVar("_T")

OPERATIONS: Final = (
    "save_thread",
    "load_thread",
    "add_thread_item",
    "load_thread_items",
    "load_threads",
)
"""The Store operations a ChatKit turn makes (see :func:`.calls.turn`), thread first."""
STORE_OPERATIONS: Final = (
    *("load_thread", "load_item", "load_attachment", "load_thread_items", "load_threads"),
    *("save_thread", "save_item", "save_attachment", "add_thread_item"),
    *("delete_thread_item", "delete_attachment", "delete_thread"),
)
"""Every Store operation that talks to the database: what the A/B phases compare."""
TICK: Final = 0.001
"""The loop-lag ticker's period (1 ms): a stall is measured to within it."""
STALL_LIMIT_MS: Final = 5.0
"""The goal: nothing on a request's path blocks the loop longer, first call included."""
DRIVERS: Final = ("pymongo", "motor")


@dataclass(frozen=True)
class BenchSettings:
    """How big the run is. The defaults are the published run; tests shrink them."""

    users: int = 10
    threads_per_user: int = 2
    turns_per_thread: int = 5
    sizes: tuple[int, ...] = (100, 1_000, 10_000)
    samples_per_size: int = 20
    page_size: int = 20
    reply_words: int = 40
    pairs: int = 1000
    """A/B pairs per operation (overhead; with --encryption, encrypted vs plain)."""
    concurrency: tuple[int, ...] = (1, 8, 32, 128)
    """Simulated users at each concurrency level; empty: no concurrency phase."""
    seconds_per_level: float = 4.0
    growth: bool = False
    """The long phase: one thread grown through ``sizes``."""
    mib: int = 4
    """MiB per attachment uploaded and downloaded, with --encryption."""

    def __post_init__(self) -> None:
        for name in ("users", "threads_per_user", "turns_per_thread", "samples_per_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.reply_words < 1 or self.mib < 1:
            raise ValueError(f"reply_words and mib must be at least 1, got {self}")
        if self.pairs < 0:
            raise ValueError(f"pairs must be at least 0, got {self.pairs}")
        if any(users < 1 for users in self.concurrency):
            raise ValueError(f"concurrency levels must be at least 1, got {self.concurrency}")
        if self.seconds_per_level <= 0:
            raise ValueError(f"seconds_per_level must be positive, got {self.seconds_per_level}")
        if not 1 <= self.page_size <= 1000:
            raise ValueError(f"page_size must be between 1 and 1000, got {self.page_size}")
        if not self.sizes or list(self.sizes) != sorted(set(self.sizes)) or self.sizes[0] < 1:
            raise ValueError(f"sizes must be positive and increasing, got {list(self.sizes)}")

    def as_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def beside(base: CollectionNames, suffix: str) -> CollectionNames:
    """Collections of a store of the run's own, named after the store's (``_suffix``)."""
    return CollectionNames(
        **{name: f"{getattr(base, name)}_{suffix}" for name in collection_settings()}
    )


class RoundTrips(monitoring.CommandListener):
    """Round trips to the database, each counted against the labelled call running: as
    a real client's command listener (the exact figure), or by :class:`CountingCollection`.

    Why a "current label" and not per-task context: the phases that count run one call
    at a time, so whatever is sent meanwhile belongs to that call.
    """

    def __init__(self) -> None:
        self.label: str | None = None
        self.counts: Counter[str] = Counter()

    def record(self) -> None:
        if self.label is not None:
            self.counts[self.label] += 1

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.record()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        """Only starts are counted."""

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        """Only starts are counted."""


_SENDING: Final = {"find", "find_one", "insert_one", "update_one", "delete_one", "delete_many"}
"""Collection methods that send one command each (a page fits in one batch)."""


class CountingCollection:
    """A collection whose command-sending methods count a round trip each: the count on
    a backend without command events (the embedded one), given to the store through its
    public ``wrap_collection`` seam and to the bare driver calls alike."""

    def __init__(self, collection: Any, round_trips: RoundTrips) -> None:
        self.collection, self.round_trips = collection, round_trips

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.collection, name)
        if name not in _SENDING:
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.round_trips.record()
            return attribute(*args, **kwargs)

        return counted


class Progress:
    """Where the run is: a phase and its steps. This one says nothing (tests)."""

    def phase(self, label: str, total: int) -> None:
        """A phase (or part of one) of ``total`` steps begins."""

    def step(self) -> None:
        """One step is done."""

    def note(self, message: str) -> None:
        """Something the reader should know (what the server lacks)."""


class TerminalProgress(Progress):
    """Progress on stderr, as click's progress bar shows it: counted in place on a
    terminal; elsewhere, a line naming each phase."""

    def __init__(self) -> None:
        self._bar: Any = None
        self.prefix = ""
        """Put before every line: which run it is, when there are several."""

    def phase(self, label: str, total: int) -> None:
        self.finish()
        self._bar = click.progressbar(length=total, label=self.prefix + label, file=sys.stderr)
        self._bar.render_progress()

    def step(self) -> None:
        self._bar.update(1)

    def note(self, message: str) -> None:
        self.finish()
        click.echo(f"{self.prefix}note: {message}", err=True)

    def finish(self) -> None:
        """End the phase's line, if one is shown."""
        if self._bar is not None:
            self._bar.render_finish()
            self._bar = None


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest rank: a value that was measured, never an interpolation between two."""
    if not ordered:
        return 0.0
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


class LoopLag:
    """One ticker for the whole run: it asks to wake every :data:`TICK` and records by
    how much it woke late, which is how long something held the event loop.

    Why the loop's lag: a ChatKit server serves every request on one event loop, so CPU
    spent there (by the store or a driver) delays every other request; the lag is what
    a streaming reply would stutter by.
    """

    def __init__(self) -> None:
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _tick(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            self.lags.append(max(time.perf_counter() - start - TICK, 0.0))

    async def mark(self) -> int:
        """Where the ticks of what follows begin (see :meth:`figures`). The ticker is
        first given two ticks, to report what came before: nothing is misattributed."""
        await asyncio.sleep(2 * TICK)
        return len(self.lags)

    async def figures(self, mark: int) -> dict[str, float]:
        """The p99 and the maximum lag, in ms, of the ticks since ``mark``, once the
        ticker has had two ticks to report the last stretch."""
        await asyncio.sleep(2 * TICK)
        lags = sorted(self.lags[mark:])
        return {
            "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 2),
            "lag_max_ms": round(lags[-1] * 1000, 2) if lags else 0.0,
        }

    async def stall(self, call: Awaitable[object]) -> float:
        """The longest the loop was held while ``call`` ran, in ms."""
        mark = await self.mark()
        await call
        return (await self.figures(mark))["lag_max_ms"]


class Timings:
    """Latency per Store operation, one call at a time, round trips counted alongside."""

    def __init__(self, round_trips: RoundTrips | None = None) -> None:
        self.round_trips = round_trips
        self.samples: defaultdict[str, list[float]] = defaultdict(list)

    async def time(self, operation: str, call: Awaitable[_T]) -> _T:
        if self.round_trips is not None:
            self.round_trips.label = operation
        start = time.perf_counter()
        try:
            return await call
        finally:
            self.samples[operation].append(time.perf_counter() - start)
            if self.round_trips is not None:
                self.round_trips.label = None

    def summary(self) -> dict[str, dict[str, float]]:
        """Per operation that ran, in :data:`OPERATIONS` order: calls, p50, p99 (ms)."""
        summary = {}
        for operation in OPERATIONS:
            values = sorted(self.samples.get(operation, []))
            if values:
                figures = {
                    "calls": len(values),
                    "p50_ms": round(percentile(values, 0.50) * 1000, 3),
                    "p99_ms": round(percentile(values, 0.99) * 1000, 3),
                }
                if self.round_trips is not None:
                    trips = self.round_trips.counts.pop(operation, 0)
                    figures["round_trips_per_call"] = round(trips / len(values), 3)
                summary[operation] = figures
        return summary


Chore = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Side:
    """One side of an A/B pair: a fresh awaitable per call, and its untimed chores."""

    call: Callable[[], Awaitable[object]]
    before: Chore | None = None
    after: Chore | None = None


@dataclass
class Run:
    """What a phase is given: the store measured, and the harness's tools."""

    store: MongoStore[Any]
    settings: BenchSettings
    round_trips: RoundTrips
    progress: Progress
    lag: LoopLag
    wrap: Callable[[Kind, Any], Any] | None = None
    """The embedded backend's round-trip counter, on every collection handle."""
    stores: list[MongoStore[Any]] = field(default_factory=list)

    def new_store(
        self,
        collections: CollectionNames,
        encryption: Encryption | None = None,
        telemetry: Telemetry | None = None,
    ) -> MongoStore[Any]:
        """Another store on the same database (closed at the end of the run)."""
        store: MongoStore[Any] = MongoStore(
            self.store.database,
            collections=collections,
            wrap_collection=self.wrap,
            encryption=encryption,
            telemetry=telemetry,
        )
        self.stores.append(store)
        return store

    def collection(self, kind: Kind, store: MongoStore[Any] | None = None) -> Any:
        """The collection of ``kind`` of ``store`` (the run's), for driver calls beside it."""
        store = store or self.store
        handle = store.database[store.collections.name_of(kind)]
        return handle if self.wrap is None else self.wrap(kind, handle)

    async def ab(
        self,
        label: str,
        subject: dict[str, Side],
        baseline: dict[str, Side],
        names: Sequence[str],
        pairs: int | None = None,
    ) -> dict[str, dict[str, float]]:
        """``pairs`` (:attr:`BenchSettings.pairs`) interleaved A/B pairs of every operation both
        sides have; per operation, each side's p50 in microseconds and round trips per
        call, and ``ratio``: subject over baseline (``names`` names the two).

        Why interleaved, in one run: on a shared machine the server's and the machine's
        speed drift by more than is measured here; taken in turn, both sides meet the
        same drift, collection sizes and caches, so their ratio is the difference. The
        side that goes first alternates from pair to pair. Chores run untimed.
        """
        pairs = self.settings.pairs if pairs is None else pairs
        operations = [name for name in subject if name in baseline]
        self.progress.phase(label, pairs * len(operations))
        figures: dict[str, dict[str, float]] = {}
        for operation in operations:
            sides = dict(zip(names, (subject[operation], baseline[operation]), strict=True))
            seconds: dict[str, list[float]] = {name: [] for name in names}
            for index in range(pairs):
                for side in sides.values():
                    await (side.before or _nothing)()
                for name in names if index % 2 == 0 else reversed(names):
                    self.round_trips.label = f"{operation}/{name}"
                    start = time.perf_counter()
                    await sides[name].call()
                    seconds[name].append(time.perf_counter() - start)
                    self.round_trips.label = None
                for side in sides.values():
                    await (side.after or _nothing)()
                self.progress.step()
                await asyncio.sleep(0)
            p50 = {name: median(seconds[name]) for name in names}
            row: dict[str, float] = {"pairs": pairs}
            for name in names:
                trips = self.round_trips.counts.pop(f"{operation}/{name}", 0)
                row[f"{name}_p50_us"] = round(p50[name] * 1e6, 1)
                row[f"{name}_round_trips"] = round(trips / pairs, 3)
            figures[operation] = {**row, "ratio": round(p50[names[0]] / p50[names[1]], 3)}
        return figures


async def _nothing() -> None:
    """No chore."""


@dataclass(frozen=True)
class Phase:
    """One phase: what it measures (entries of the report), and how it shows them."""

    name: str
    measure: Callable[[Run], Awaitable[dict[str, Any]]]
    table: Callable[[dict[str, Any]], list[str]]
    """The report's lines for this phase (empty when it did not run)."""
    chart: Callable[[Any, dict[str, Any]], None] | None = None
    """Draws this phase's panel on a matplotlib ``Axes``."""
    writes: Callable[[CollectionNames, BenchSettings], list[str]] = lambda base, settings: []
    """The collections it writes beside the store's own: checked empty, cleaned up."""


async def run_phases(
    store: MongoStore[Any],
    settings: BenchSettings,
    phases: Sequence[Phase],
    *,
    round_trips: RoundTrips | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run ``phases`` on ``store``'s database (its collections empty); the report.

    ``round_trips`` is the listener on the commands of the store's client; without
    one, every collection handle counts its own calls.
    """
    wrap = None
    if round_trips is None:
        counter = round_trips = RoundTrips()

        def wrap(kind: Kind, collection: Any) -> Any:
            return CountingCollection(collection, counter)

        store = MongoStore(store.database, collections=store.collections, wrap_collection=wrap)
    await store.ensure_indexes()  # set-up, not part of any figure
    report: dict[str, Any] = {"settings": settings.as_json()}
    lags: dict[str, dict[str, float]] = {}
    async with LoopLag() as lag:
        run = Run(store, settings, round_trips, progress or Progress(), lag, wrap)
        try:
            for phase in phases:
                mark = await lag.mark()
                report.update(await phase.measure(run))
                lags[phase.name] = await lag.figures(mark)
        finally:
            for opened in run.stores:
                await opened.close()
    return {**report, "loop_lag": lags}


def tabulate(title: str, columns: dict[str, Any], rows: dict[Any, Sequence[Any]]) -> list[str]:
    """``rows`` under a header: ``columns`` maps the first column's heading to its width
    (an int), then each other heading to the format of its values (``".3f"``, ``"d"``).
    """
    (first, width), *others = columns.items()
    specs = [(heading, spec, max(len(heading), 8)) for heading, spec in others]
    lines = [title, f"{first:<{width}}" + "".join(f" {h:>{w}}" for h, _, w in specs)]
    for label, values in rows.items():
        cells = (f" {v:>{w}{spec}}" for v, (_, spec, w) in zip(values, specs, strict=True))
        lines.append((f"{label:<{width}}" + "".join(cells)).rstrip())
    return lines


def ratio_table(
    title: str, rows: dict[str, dict[str, float]], names: tuple[str, str], limit: float
) -> list[str]:
    """The table of :meth:`Run.ab`'s figures, sides ``names``: pairs, each side's p50 and
    the ratio, flagged past ``limit``."""
    first, second = names
    columns = {"operation": 20, "pairs": "d", f"{first} us": ".1f", f"{second} us": ".1f"}
    keys = ("pairs", f"{first}_p50_us", f"{second}_p50_us", "ratio")
    return tabulate(
        title,
        columns | {"ratio": ".3f", "": "s"},
        {
            name: [row[k] for k in keys] + ["" if row["ratio"] <= limit else f"over {limit:.2f}"]
            for name, row in rows.items()
        },
    )


def ratio_chart(
    axes: Any, rows: dict[str, dict[str, float]], limit: float, ylabel: str, title: str
) -> None:
    """:meth:`Run.ab`'s ratios as bars, with the limit and 1.0 drawn across."""
    axes.bar(list(rows), [figures["ratio"] for figures in rows.values()])
    axes.axhline(limit, color="red", linestyle="--", label="limit")
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.tick_params(axis="x", labelrotation=60)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend()


def format_report(report: dict[str, Any], phases: Sequence[Phase]) -> str:
    """The figures as plain-text tables, phase by phase."""
    lines = [f"backend: {report.get('backend', '?')}; driver: {report.get('driver', '?')}"]
    for phase in phases:
        part = phase.table(report)
        if part:
            lines += ["", *part]
    lags = ", ".join(
        f"{name} {figures['lag_p99_ms']:.2f}/{figures['lag_max_ms']:.2f}"
        for name, figures in report["loop_lag"].items()
    )
    lines += ["", f"event loop lag per phase, p99/max ms: {lags}"]
    lines += [f"note: {note}" for note in report.get("notes", [])]
    return "\n".join(lines)


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only; a one-line error naming the extra."""
    try:
        import matplotlib  # noqa: PLC0415  (optional extra, loaded only for --chart)

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as exc:
        raise click.ClickException(f"--chart needs matplotlib: {install_hint('bench')}") from exc
    return pyplot


def write_chart(reports: Sequence[dict[str, Any]], phases: Sequence[Phase], path: Path) -> None:
    """A PNG: one panel per phase that draws one, for each report, two per row."""
    plt = pyplot()
    panels = [(phase.chart, report) for report in reports for phase in phases if phase.chart]
    rows = max(1, math.ceil(len(panels) / 2))
    figure, axes = plt.subplots(rows, 2, figsize=(13, 4.5 * rows), squeeze=False)
    for position, (draw, report) in zip(axes.flat, panels, strict=False):
        draw(position, report)
    for unused in list(axes.flat)[len(panels) :]:
        unused.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
