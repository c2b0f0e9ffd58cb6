"""``chatkit-mongo bench``: MongoStore measured under a ChatKit workload, phase by phase.

The phases, in the order they run, one module each over :mod:`.harness` (timing,
interleaving, round trips, loop lag, progress, report):

1. :mod:`.cold`: a fresh store's first write of each model, and how long it held the
   event loop;
2. :mod:`.overhead`: every Store operation against the bare driver call it makes, in
   interleaved A/B pairs;
3. :mod:`.workload`: many users take turns in many threads, one call at a time;
4. :mod:`.growth` (``--growth``, long): one thread grown to each size, a turn timed there;
5. :mod:`.explain`: what the server's plans of a turn's queries examine;
6. :mod:`.concurrency`: many users on one event loop.

With ``--encryption``, instead, :mod:`.encryption`: an encrypted store against a plain
one. Every phase's figures go into one JSON report, with the loop's lag per phase.

Light on purpose: ``--help`` and a run on a server need only the base install; the
embedded backend (mongomock-motor) and the chart (matplotlib) are loaded when used.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from pymongo.errors import OperationFailure, PyMongoError

from ..._driver import AsyncDatabaseLike
from ..._text import shown
from ...schema import CollectionNames
from ...store import MongoStore
from .._extras import install_hint
from .._params import Seconds, WholeNumber
from ..connection import Connection, connection_options, one_line, open_database, open_uri
from ..connection import resolve as resolve_connection
from . import cold, concurrency, encryption, explain, growth, overhead, workload
from .harness import (
    DRIVERS,
    BenchSettings,
    Phase,
    Progress,
    RoundTrips,
    TerminalProgress,
    format_report,
    pyplot,
    run_phases,
    write_chart,
)

__all__ = ["ENCRYPTION_PHASES", "PHASES", "BenchSettings", "bench_command", "run_benchmark"]

PHASES: Final = (
    *(cold.PHASE, overhead.phase(), workload.PHASE, growth.PHASE, explain.PHASE),
    concurrency.PHASE,
)
ENCRYPTION_PHASES: Final = (encryption.PHASE,)


async def run_benchmark(
    store: MongoStore[Any], settings: BenchSettings, *, phases: Sequence[Phase] = PHASES, **run: Any
) -> dict[str, Any]:
    """Run ``phases`` (all of them by default) on ``store``: :func:`.harness.run_phases`."""
    return await run_phases(store, settings, phases, **run)


def written(settings: BenchSettings, base: CollectionNames, phases: Sequence[Phase]) -> list[str]:
    """Every collection the run writes: the store's, and those phases write beside it."""
    return [*base.by_kind().values(), *(n for p in phases for n in p.writes(base, settings))]


@asynccontextmanager
async def _target(
    connection: Connection, driver: str, settings: BenchSettings, phases: Sequence[Phase]
) -> AsyncIterator[tuple[MongoStore[Any], RoundTrips | None, dict[str, Any]]]:
    """The store to measure, its round-trip counter, and what the report says of it.

    Without a URI: the embedded backend (no counter: the harness counts collection
    calls). On a server: a database of its own, opened as every command opens it (with
    a command counter on PyMongo's or, with ``--driver motor``, Motor's client), whose
    collections the run writes must be empty; dropped afterwards or, where the server
    cannot drop databases, emptied. An opener handed in by a test is used as it is.
    """
    if connection.uri is None and connection.opener is open_uri:
        if driver == "pymongo":
            raise click.UsageError(
                "the embedded backend is Motor-shaped (mongomock-motor); "
                "--driver pymongo needs a server (--uri)"
            )
        try:
            from ..embedded import embedded_database  # noqa: PLC0415  (only without a URI)
        except ImportError as exc:
            raise click.ClickException(
                f"without --uri the benchmark runs on the embedded backend, which needs the "
                f"bench extra: {install_hint('bench')} ({exc})"
            ) from exc
        with embedded_database(connection.database) as database:
            store = MongoStore(database, collections=connection.collections)
            backend = "embedded in-memory (mongomock-motor)"
            yield store, None, {"backend": backend, "driver": "motor-shaped", "notes": []}
        return
    round_trips: RoundTrips | None = None
    opened: AbstractAsyncContextManager[AsyncDatabaseLike] = connection.open()
    if connection.opener is open_uri and connection.uri:
        round_trips = RoundTrips()
        opened = open_database(
            connection.uri,
            connection.database,
            connection.timeout,
            make_client=_motor_client() if driver == "motor" else None,
            event_listeners=[round_trips],
        )
    async with opened as database:
        names = written(settings, connection.collections, phases)
        for name in names:
            if await database[name].find_one({}, {"_id": 1}) is not None:
                raise click.ClickException(
                    f"collection {database.name}.{name} is not empty; the benchmark needs a "
                    "database of its own (--database)"
                )
        info = await database.command("buildInfo")
        about: dict[str, Any] = {
            "backend": f"MongoDB {info.get('version', '?')}",
            "driver": driver,
            "notes": [],
        }
        try:
            yield MongoStore(database, collections=connection.collections), round_trips, about
        finally:
            try:
                await database.client.drop_database(database.name)
            except OperationFailure as exc:
                for name in names:
                    await database[name].delete_many({})
                about["notes"].append(
                    f"the server cannot drop databases ({one_line(exc)}): the benchmark's "
                    f"documents were deleted, but database {database.name!r} and its empty "
                    "collections remain"
                )


def _motor_client() -> Any:
    """Motor's client, imported only when asked for (the store names the library in
    Motor's handshake, which refuses a ``driver=`` of ours beside its own)."""
    from motor.motor_asyncio import AsyncIOMotorClient  # noqa: PLC0415

    return AsyncIOMotorClient


async def _bench(
    connection: Connection,
    driver: str,
    settings: BenchSettings,
    phases: Sequence[Phase],
    progress: Progress,
) -> dict[str, Any]:
    """One run on one driver; a server's refusal ends it with one line quoting it."""
    try:
        async with _target(connection, driver, settings, phases) as (store, round_trips, about):
            started = time.perf_counter()
            figures = await run_benchmark(
                store, settings, phases=phases, round_trips=round_trips, progress=progress
            )
            seconds = round(time.perf_counter() - started, 3)
    except PyMongoError as exc:
        raise click.ClickException(f"the server refused the benchmark: {one_line(exc)}") from exc
    for note in about["notes"]:
        progress.note(note)
    return {**about, "seconds": seconds, **figures, "notes": about["notes"]}


_F = TypeVar("_F", bound=Callable[..., Any])
_COUNT: Final = WholeNumber(1, 10**9)
"""Users, threads, turns, sizes, samples, page size: at least one, at most a billion."""


def _counts(example: str, none: bool = False) -> Any:
    """A click callback reading ``1,8,32``-style counts (``0``: none, where allowed)."""

    def parse(context: click.Context, parameter: click.Parameter, value: str) -> tuple[int, ...]:
        if none and value.strip() == "0":
            return ()
        try:
            return tuple(_COUNT.convert(part, None, None) for part in value.split(","))
        except click.BadParameter:
            raise click.BadParameter(f"expected {example}, got {shown(value)}") from None

    return parse


def _setting(name: str, flag: str | None = None, **options: Any) -> Callable[[_F], _F]:
    """The option of the :class:`BenchSettings` field ``name``, its default shown."""
    value = getattr(BenchSettings, name)
    default = ",".join(map(str, value)) if isinstance(value, tuple) else value
    flag = flag or f"--{name.replace('_', '-')}"
    return click.option(flag, name, default=default, show_default=True, **options)


@click.command("bench")
@click.option(
    "--driver",
    type=click.Choice(DRIVERS),
    help="The driver on a server: PyMongo's native async API or Motor "
    "[default: pymongo; with --encryption, both, one after the other].",
)
@_setting("users", type=_COUNT)
@_setting("threads_per_user", type=_COUNT)
@_setting("turns_per_thread", "--turns", type=_COUNT)
@_setting(
    "pairs",
    type=WholeNumber(0, 10**9),
    help="A/B pairs per operation: store vs bare driver, or with --encryption, encrypted "
    "vs plain store (0: skip them).",
)
@_setting(
    "concurrency",
    callback=_counts("user counts like 1,8,32,128", none=True),
    help="Simulated users at each concurrency level (0: skip the phase).",
)
@_setting("seconds_per_level", type=Seconds(), help="How long each concurrency level runs.")
@_setting(
    "growth",
    "--growth/--no-growth",
    help="Also grow one thread through --sizes, timing a turn at each (minutes on a server, "
    "far longer on the embedded backend).",
)
@_setting(
    "sizes",
    callback=_counts("sizes like 100,1000,10000"),
    help="Thread sizes (items) at which the growing thread is measured (with --growth).",
)
@_setting(
    "samples_per_size",
    "--samples",
    type=_COUNT,
    help="Turns measured at each size (with --growth).",
)
@_setting("page_size", type=_COUNT)
@_setting(
    "mib",
    type=WholeNumber(1, 1024),
    help="MiB per attachment uploaded and downloaded (with --encryption).",
)
@click.option(
    "--out",
    default="bench.json",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the figures as JSON.",
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw the figures as a PNG chart here (needs matplotlib).",
)
@click.option(
    "--encryption",
    is_flag=True,
    help="Measure instead what client-side encryption costs: per Store operation and per "
    "turn (an encrypted store against a plain one) and per MiB of attachment (needs a "
    "server, for the key vault).",
)
@connection_options
@click.pass_context
def bench_command(
    ctx: click.Context,
    /,
    *,
    encryption: bool,
    driver: str | None,
    out: Path,
    chart: Path | None,
    **settings: Any,
) -> None:
    """Measure MongoStore under a ChatKit workload: a cold store's first writes, its
    overhead over the bare driver, latency, round trips, index use, many users on one
    event loop, and the event loop's lag throughout.

    On the server named by --uri (or MONGODB_URI), in a database of its own (--database,
    by default a new one), dropped afterwards; without a URI, on the embedded in-memory
    backend. The default run takes under a minute; --growth adds the long phase.
    """
    try:
        sizes = BenchSettings(**settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    connection = resolve_connection(ctx, default_database=f"chatkit_bench_{secrets.token_hex(4)}")
    embedded = connection.uri is None and connection.opener is open_uri
    if encryption and embedded:
        raise click.UsageError("--encryption needs a server for the key vault: pass --uri")
    if chart is not None:
        pyplot()  # a missing matplotlib is said before the run, not after it
    phases = ENCRYPTION_PHASES if encryption else PHASES
    default = ("motor",) if embedded else DRIVERS if encryption else ("pymongo",)
    drivers = (driver,) if driver else default  # the embedded backend is Motor-shaped
    progress = TerminalProgress()
    reports = []
    try:
        for name in drivers:
            progress.prefix = f"{name}: " if len(drivers) > 1 else ""
            reports.append(asyncio.run(_bench(connection, name, sizes, phases, progress)))
    finally:
        progress.finish()
    result = reports[0] if len(reports) == 1 else {"runs": reports}
    out.write_text(json.dumps(result, indent=2) + "\n")
    click.echo("\n\n".join(format_report(report, phases) for report in reports))
    click.echo(f"\nfigures written to {out}")
    if chart is not None:
        write_chart(reports, phases, chart)
        click.echo(f"chart written to {chart}")
