"""The ``chatkit-mongo`` command: set up, check, export, import and erase stored data.

Why every command needs a URI: an in-memory database would start empty, so there would
be nothing to check, export or erase. Why the database is opened through
:class:`Connection`'s ``opener``: tests pass their own (``obj=`` of click's runner) to
run the very same commands on the test doubles; a real URI builds a PyMongo
``AsyncMongoClient`` and pings it first, so a bad URI or an unreachable server fails
at once, with a message saying which.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

import click
from pymongo import AsyncMongoClient
from pymongo.errors import ConfigurationError, PyMongoError, ServerSelectionTimeoutError

from ._driver import DRIVER_INFO, AsyncDatabaseLike
from .create_indexes import create_indexes
from .doctor import Finding, diagnose
from .errors import ChatKitMongoError
from .maintenance import Progress, purge_inactive, purge_owner
from .schema import CollectionNames
from .sharding import planned_commands, shard
from .transfer import Kind, count_export, count_lines, export_data, import_data

_T = TypeVar("_T")

DEFAULT_TIMEOUT_SECONDS: Final = 5.0
_DURATION: Final = re.compile(r"^\s*([0-9]+)\s*([smhdw])\s*$")
r"""ASCII digits only: ``\d`` would also read Arabic-Indic or full-width digits."""
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Connection:
    """Where the commands find their database, as given on the command line."""

    uri: str | None
    database: str
    timeout: float
    collections: CollectionNames
    opener: Callable[[Connection], AbstractAsyncContextManager[AsyncDatabaseLike]]


@asynccontextmanager
async def open_uri(connection: Connection) -> AsyncIterator[AsyncDatabaseLike]:
    """A PyMongo async client for ``connection.uri``, checked with a ``ping``, then closed."""
    if not connection.uri:
        raise click.ClickException("no MongoDB URI: pass --uri or set MONGODB_URI")
    timeout_ms = int(connection.timeout * 1000)
    try:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            connection.uri, serverSelectionTimeoutMS=timeout_ms, driver=DRIVER_INFO
        )
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise click.ClickException(f"bad MongoDB URI: {exc}") from exc
    try:
        try:
            await client.admin.command("ping")
        except ServerSelectionTimeoutError as exc:
            raise click.ClickException(
                f"cannot reach MongoDB within {connection.timeout:g}s: {exc}"
            ) from exc
        yield client[connection.database]
    finally:
        await client.close()


class _Duration(click.ParamType):  # type: ignore[type-arg]  # generic in stubs only
    """``30d``, ``12h``, ``90m``, ``3600s`` or ``2w``: a positive whole number and a unit."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value))
        if match is None or int(match[1]) == 0:
            self.fail(f"{value!r} is not a duration like 30d, 12h, 90m, 3600s or 2w", param, ctx)
        try:
            return timedelta(**{_UNITS[match[2]]: int(match[1])})
        except OverflowError:
            self.fail(f"{value!r} is longer than a duration can be", param, ctx)


class _Group(click.Group):
    """The command group, with ``serve`` and ``bench`` loaded only when asked for.

    Why lazily: they need the ``demo`` and ``bench`` extras (uvicorn, starlette,
    matplotlib, the embedded backend), which the operator commands do not; a plain
    install must still be able to run ``init`` or ``purge``.
    """

    _LAZY: Final = {
        "serve": ("chatkit_mongo.demo", "serve_command", "demo"),
        "bench": ("chatkit_mongo.bench", "bench_command", "bench"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._LAZY:
            return super().get_command(ctx, cmd_name)
        module_name, attribute, extra = self._LAZY[cmd_name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.ClickException(
                f"'{cmd_name}' needs the {extra} extra: pip install 'chatkit-mongo[{extra}]' "
                f"({exc})"
            ) from exc
        command: click.Command = getattr(module, attribute)
        return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--uri",
    envvar="MONGODB_URI",
    show_envvar=True,
    help="MongoDB connection string.",
)
@click.option("--database", "-d", default="chatkit", show_default=True, help="Database name.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for the server before giving up.",
)
@click.pass_context
def cli(ctx: click.Context, uri: str | None, database: str, timeout: float) -> None:
    """Set up, check, export, import and erase chatkit-mongo data."""
    opener = ctx.obj if callable(ctx.obj) else open_uri
    ctx.obj = Connection(uri, database, timeout, CollectionNames(), opener)


def _run(
    connection: Connection, work: Callable[[AsyncDatabaseLike, CollectionNames], Awaitable[_T]]
) -> _T:
    """Run ``work`` on the database; turn the errors a user can fix into clear messages."""

    async def main() -> _T:
        async with connection.opener(connection) as database:
            return await work(database, connection.collections)

    try:
        return asyncio.run(main())
    except (ChatKitMongoError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except PyMongoError as exc:
        raise click.ClickException(f"MongoDB error: {exc}") from exc


@contextmanager
def _progress(length: int, label: str, stream: TextIO | None = None) -> Iterator[Progress | None]:
    """A progress bar on a terminal; nothing when output goes to a file or a pipe."""
    stream = stream or sys.stderr
    if length == 0 or not stream.isatty():
        yield None
        return
    with click.progressbar(length=length, label=label, file=stream) as bar:
        yield bar.update


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would be created; create nothing.")
@click.option(
    "--retention", is_flag=True, help="Also the TTL indexes of a store with retention set."
)
@click.pass_obj
def init(connection: Connection, dry_run: bool, retention: bool) -> None:
    """Create the indexes the store needs (idempotent)."""

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> int:
        return await create_indexes(
            database, collections, dry_run=dry_run, echo=click.echo, retention=retention
        )

    if _run(connection, work) != 0:
        raise click.ClickException("existing indexes conflict; see above")


@cli.command()
@click.option(
    "--retention",
    is_flag=True,
    help="Check a store with retention set: its TTL indexes, and its queries with their "
    "expiry filter.",
)
@click.pass_obj
def doctor(connection: Connection, retention: bool) -> None:
    """Check the server, the indexes and the plans of the hot queries."""

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> list[Finding]:
        return await diagnose(database, collections, retention=retention)

    findings = _run(connection, work)
    for finding in findings:
        click.echo(finding.describe())
    failed = [finding for finding in findings if finding.verdict == "fail"]
    if failed:
        raise click.ClickException(f"{len(failed)} check(s) failed")


@cli.command("export")
@click.option("--owner", help="Only this owner's data (default: everyone's).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="File to write (default: standard output).",
)
@click.pass_obj
def export_command(connection: Connection, owner: str | None, out: Path | None) -> None:
    """Write threads, items, attachments and their bytes as JSON Lines."""

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> dict[Kind, int]:
        total = await count_export(database, collections, owner)
        with _progress(total, "exporting") as on_progress:
            if out is None:
                counts = await export_data(
                    database, collections, sys.stdout, owner=owner, on_progress=on_progress
                )
            else:
                with out.open("w", encoding="utf-8") as stream:
                    counts = await export_data(
                        database, collections, stream, owner=owner, on_progress=on_progress
                    )
        return counts

    counts = _run(connection, work)
    summary = ", ".join(f"{count} {kind}s" for kind, count in counts.items())
    click.echo(f"exported {summary}", err=True)


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def import_command(connection: Connection, file: Path) -> None:
    """Upsert an export file; importing it twice changes nothing."""

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> str:
        with _progress(count_lines(file), "importing") as on_progress:
            counts = await import_data(database, collections, file, on_progress=on_progress)
        return counts.describe()

    click.echo(f"imported {_run(connection, work)}")


@cli.command()
@click.option("--owner", help="Erase everything of this owner, attachment bytes included.")
@click.option(
    "--older-than",
    type=_Duration(),
    help="Erase threads whose last activity is older than this (30d, 12h, 2w...).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be erased; erase nothing.")
@click.pass_obj
def purge(
    connection: Connection, owner: str | None, older_than: timedelta | None, dry_run: bool
) -> None:
    """Erase one owner's data, or threads inactive for longer than a duration."""
    if (owner is None) == (older_than is None):
        raise click.UsageError("give exactly one of --owner and --older-than")

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> str:
        if owner is not None:
            counts = await purge_owner(database, collections, owner, dry_run=dry_run)
        else:
            assert older_than is not None
            total = await database[collections.threads].count_documents({})
            with _progress(total, "checking threads") as on_progress:
                counts = await purge_inactive(
                    database, collections, older_than, dry_run=dry_run, on_progress=on_progress
                )
        return counts.describe()

    verb = "would erase" if dry_run else "erased"
    click.echo(f"{verb} {_run(connection, work)}")


@cli.command("shard")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the commands, and the index each key needs, without connecting.",
)
@click.pass_obj
def shard_command(connection: Connection, dry_run: bool) -> None:
    """Shard the collections with the chosen keys (on a mongos), and report each."""
    if dry_run:  # nothing to read from the server: the commands follow from the names
        for line in planned_commands(connection.database, connection.collections):
            click.echo(line)
        return

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> int:
        return await shard(database, collections, click.echo)

    if _run(connection, work) != 0:
        raise click.ClickException("the collections are not all sharded with the expected keys")


def main() -> None:
    """Console script entry point."""
    cli(prog_name="chatkit-mongo")
