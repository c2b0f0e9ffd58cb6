"""The ``chatkit-mongo`` command: set up, check, export, import and erase stored data;
serve the demo; run the benchmark.

Every command that connects takes the same connection options (``--uri``,
``--database``, ``--timeout`` in seconds, the collection names), before or after its
name: see :mod:`chatkit_mongo.apps.connection`. The operator commands need a URI: an
in-memory database would start empty, so there would be nothing to check, export or
erase. ``serve`` and ``bench`` use the embedded in-memory backend only when no URI was
given anywhere (nor ``MONGODB_URI``), and say so.

Why each command imports its work inside its body: ``--help`` must answer at once, and
a plain install must run ``init`` without the demo's or the benchmark's extras.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO, TypeVar

import click

from .._text import plural, shown
from ..errors import ChatKitMongoError

# Why the migration's names at the top when every command imports its work in its body:
# click needs the choices when the command is declared, and the package root has loaded
# the store already, so this costs nothing at --help.
from ..operations.migrate import DEFAULT_BATCH_SIZE, TARGETS
from ..schema import CollectionNames
from ._extras import install_hint
from ._params import Seconds, WholeNumber
from .connection import Connection, connection_options, one_line, open_uri, resolve

if TYPE_CHECKING:
    from .._driver import AsyncDatabaseLike
    from ..operations.doctor import Finding
    from ..operations.erase import Progress
    from ..operations.migrate import MigrationReport, Target

__all__ = ["Connection", "cli", "main"]

_T = TypeVar("_T")

_DURATION: Final = re.compile(r"^\s*([0-9]+)\s*([smhdw])\s*$")
r"""ASCII digits only: ``\d`` would also read Arabic-Indic or full-width digits."""
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_DURATION_EXAMPLES: Final = "30d, 12h, 90m, 3600s or 2w"
_MAX_DURATION_DIGITS: Final = 12
"""More digits than any duration a date can reach back (year 1 is ~6e10 seconds ago):
refused before ``int()``, whose digit limit would otherwise end in a traceback."""


class _Duration(click.ParamType):  # type: ignore[type-arg]  # generic in stubs only
    """``30d``, ``12h``, ``90m``, ``3600s`` or ``2w``: a positive whole number and a unit."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        match = _DURATION.match(str(value))
        if match is None:
            self.fail(f"{shown(value)} is not a duration like {_DURATION_EXAMPLES}", param, ctx)
        digits = match[1].lstrip("0")
        if not digits:
            self.fail(
                f"{shown(value)} is no time at all; give a duration longer than zero", param, ctx
            )
        if len(digits) > _MAX_DURATION_DIGITS:
            self.fail(f"{shown(value)} is longer than a duration can be", param, ctx)
        try:
            return timedelta(**{_UNITS[match[2]]: int(digits)})
        except OverflowError:
            self.fail(f"{shown(value)} is longer than a duration can be", param, ctx)


class _Group(click.Group):
    """The command group, with ``bench`` loaded only when it runs or shows its help.

    Why lazily: it is the one command with phases, charts and test doubles of its own
    (the ``bench`` extra, loaded only when a run uses them); listing the commands, or
    running ``init`` or ``purge``, need none of it. Its one-line help is kept here so
    that listing the commands imports nothing.
    """

    _LAZY: Final = {
        "bench": (
            "chatkit_mongo.apps.bench",
            "bench_command",
            "bench",
            "Measure MongoStore under a ChatKit workload: latency, round trips, index use.",
        ),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._LAZY:
            return super().get_command(ctx, cmd_name)
        module_name, attribute, extra, _ = self._LAZY[cmd_name]
        try:
            module = __import__(module_name, fromlist=[attribute])
        except ImportError as exc:
            raise click.ClickException(
                f"'{cmd_name}' needs the {extra} extra: {install_hint(extra)} ({exc})"
            ) from exc
        command: click.Command = getattr(module, attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in self._LAZY:
                rows.append((name, self._LAZY[name][3]))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@connection_options
def cli() -> None:
    """Set up, check, export, import and erase chatkit-mongo data; serve the demo;
    run the benchmark.

    The connection options may be given before or after the command's name.
    """


def _run(
    connection: Connection, work: Callable[[AsyncDatabaseLike, CollectionNames], Awaitable[_T]]
) -> _T:
    """Run ``work`` on the database; turn the errors a user can act on into one line."""
    from pymongo.errors import PyMongoError  # noqa: PLC0415  (kept out of --help)

    async def main() -> _T:
        async with connection.open() as database:
            return await work(database, connection.collections)

    try:
        return asyncio.run(main())
    except (ChatKitMongoError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    except PyMongoError as exc:
        raise click.ClickException(f"MongoDB error: {one_line(exc)}") from exc
    except BrokenPipeError:
        raise  # click ends quietly when the reader of standard output has gone
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise click.ClickException(f"cannot use{where}: {exc.strerror or exc}") from exc


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
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show what would be created; create nothing. Without a URI, list the indexes "
    "without connecting.",
)
@click.option(
    "--retention", is_flag=True, help="Also the TTL indexes of a store with retention set."
)
@connection_options
@click.pass_context
def init(ctx: click.Context, dry_run: bool, retention: bool) -> None:
    """Create the indexes the store needs (idempotent)."""
    from .create_indexes import create_indexes, planned  # noqa: PLC0415

    connection = resolve(ctx)
    # The key vault's index too when the deployment has one: a master key, or a named
    # --key-vault (see create_indexes' docstring for why not always).
    has_vault = connection.encryption is not None or connection.key_vault_named
    key_vault = connection.key_vault if has_vault else None
    if dry_run and connection.uri is None and connection.opener is open_uri:
        click.echo("no URI given: the indexes the store needs, compared with nothing", err=True)
        for line in planned(connection.collections, retention=retention, key_vault=key_vault):
            click.echo(line)
        return

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> int:
        return await create_indexes(
            database,
            collections,
            dry_run=dry_run,
            echo=click.echo,
            retention=retention,
            key_vault=key_vault,
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
@connection_options
@click.pass_context
def doctor(ctx: click.Context, retention: bool) -> None:
    """Check the server, the indexes, encryption and the plans of the hot queries.

    Encryption: the key vault (--key-vault) and its unique index, owners whose encrypted
    content has lost its key, and, with the master key, content still in the clear.

    Exits 1 when a check fails; checks the server cannot run are reported and skipped.
    """
    from ..operations.doctor import diagnose, next_steps  # noqa: PLC0415

    connection = resolve(ctx)

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> list[Finding]:
        return await diagnose(
            database,
            collections,
            retention=retention,
            key_vault=connection.key_vault,
            encrypted=connection.encryption is not None,
        )

    findings = _run(connection, work)
    for finding in findings:
        click.echo(finding.describe())
    failed = [finding for finding in findings if finding.verdict == "fail"]
    for step in next_steps(findings, retention=retention, key_vault=connection.key_vault):
        click.echo(f"next: {step}")
    if failed:
        raise click.ClickException(f"{plural(len(failed), 'check')} failed")


@contextmanager
def _output_file(out: Path | None) -> Iterator[TextIO]:
    """Standard output, or ``out`` written whole or not at all.

    Why a temporary file renamed at the end: an export that fails half way must not
    leave a truncated file that looks like a complete export. Opened before the
    server is contacted, so a directory that does not exist is reported first.
    """
    if out is None:
        yield sys.stdout
        return
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{out.name}.", suffix=".partial", dir=out.parent
        )
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            yield stream
        os.replace(temporary, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@cli.command("export")
@click.option("--owner", help="Only this owner's data (default: everyone's).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write, whole or not at all (default: standard output).",
)
@click.option(
    "--decrypt",
    is_flag=True,
    help="Write the owner's encrypted content in the clear (needs --owner and the master "
    "key); what cannot be decrypted is left out and counted. Default: as stored.",
)
@connection_options
@click.pass_context
def export_command(ctx: click.Context, owner: str | None, out: Path | None, decrypt: bool) -> None:
    """Write threads, items, attachments and their bytes as JSON Lines.

    Encrypted content is written as it is stored (an export is then as safe as the
    database), unless --decrypt is given.
    """
    from ..operations.transfer import ExportCounts, count_export, export_data  # noqa: PLC0415

    connection = resolve(ctx)
    encryption = connection.encryption
    if decrypt and owner is None:
        raise click.UsageError("--decrypt exports one owner's content: give --owner")
    if decrypt and encryption is None:
        raise click.UsageError(
            "--decrypt needs the master key: --master-key-file, or $CHATKIT_MONGO_LOCAL_MASTER_KEY"
        )
    with _output_file(out) as stream:

        async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> ExportCounts:
            total = await count_export(database, collections, owner)
            with _progress(total, "exporting") as on_progress:
                if not decrypt or encryption is None:
                    return await export_data(
                        database, collections, stream, owner=owner, on_progress=on_progress
                    )
                from .._encryption import OwnerEncryption  # noqa: PLC0415  (only then)

                engine = OwnerEncryption(
                    encryption, database.client, codec_options=_codec_options(database)
                )
                async with engine:
                    return await export_data(
                        database,
                        collections,
                        stream,
                        owner=owner,
                        on_progress=on_progress,
                        decrypt=engine,
                    )

        counts = _run(connection, work)
        stream.flush()
    click.echo(f"exported {counts.describe()}", err=True)


def _codec_options(database: AsyncDatabaseLike) -> Any:
    """The database's codec options, so decrypted content decodes as stored content does
    (PyMongo's and Motor's databases have them; the engine refuses any other client)."""
    handle: Any = database
    return handle.codec_options


@contextmanager
def _input_file(file: Path) -> Iterator[Path]:
    """``file``, or standard input (``-``) spooled to a temporary file.

    Why spool: an import checks the whole file before its first write, then reads it
    again to write; a pipe can be read only once.
    """
    if str(file) != "-":
        yield file
        return
    with tempfile.TemporaryDirectory(prefix="chatkit-mongo-import-") as directory:
        spooled = Path(directory) / "stdin.jsonl"
        with spooled.open("wb") as stream:
            shutil.copyfileobj(sys.stdin.buffer, stream)
        yield spooled


@cli.command("import")
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path)
)
@connection_options
@click.pass_context
def import_command(ctx: click.Context, file: Path) -> None:
    """Upsert an export file (- for standard input); importing it twice changes nothing."""
    from ..operations.transfer import count_lines, import_data  # noqa: PLC0415

    connection = resolve(ctx)
    with _input_file(file) as path:

        async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> str:
            with _progress(count_lines(path), "importing") as on_progress:
                counts = await import_data(database, collections, path, on_progress=on_progress)
            return counts.describe()

        click.echo(f"imported {_run(connection, work)}")


@cli.command()
@click.option("--owner", help="Erase everything of this owner, attachment bytes included.")
@click.option(
    "--older-than",
    type=_Duration(),
    help=f"Erase threads whose last activity is older than this ({_DURATION_EXAMPLES}).",
)
@click.option("--dry-run", is_flag=True, help="Count what would be erased; erase nothing.")
@connection_options
@click.pass_context
def purge(
    ctx: click.Context, owner: str | None, older_than: timedelta | None, dry_run: bool
) -> None:
    """Erase one owner's data, or threads inactive for longer than a duration.

    An owner's purge also shreds the owner's data keys in the key vault (--key-vault;
    no master key needed), so that the owner's encrypted content is unreadable in every
    copy, backups and exports included; it says whether a key was shredded.
    """
    from ..operations.erase import purge_inactive, purge_owner  # noqa: PLC0415

    if (owner is None) == (older_than is None):
        raise click.UsageError("give exactly one of --owner and --older-than")
    connection = resolve(ctx)

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> str:
        if owner is not None:
            erased = await purge_owner(
                database, collections, owner, dry_run=dry_run, key_vault=connection.key_vault
            )
            return f"{erased.describe()}; {erased.describe_keys(dry_run=dry_run)}"
        assert older_than is not None
        total = await database[collections.threads].count_documents({})
        with _progress(total, "checking threads") as on_progress:
            counts = await purge_inactive(
                database, collections, older_than, dry_run=dry_run, on_progress=on_progress
            )
        return counts.describe()

    verb = "would erase" if dry_run else "erased"
    click.echo(f"{verb} {_run(connection, work)}")


@cli.command("migrate")
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Choice(TARGETS),
    help="encrypted: encrypt what is stored in the clear; plain: decrypt what is encrypted.",
)
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=WholeNumber(1, 10_000),
    help="Documents read and written per round trip.",
)
@connection_options
@click.pass_context
def migrate_command(ctx: click.Context, target: Target, batch_size: int) -> None:
    """Convert stored content to encrypted or plain form, while the application serves.

    Resumable: run it again after an interruption and it carries on with what is left;
    stopped at any point, every document is in its old or its new form, both readable
    with encryption on. A document the application changes meanwhile is never
    overwritten. --to encrypted: switch encryption on in the application first. --to
    plain: run it while the application still has encryption on, then once more after
    stopping its writes, then start it without encryption. Both directions need the
    master key (--master-key-file or $CHATKIT_MONGO_LOCAL_MASTER_KEY). Exits 1 when
    documents are left unconverted (their key is gone, or they were written meanwhile).
    """
    from ..operations.migrate import count_pending, migrate  # noqa: PLC0415

    # Why one command with a required direction rather than "encrypt" and "decrypt":
    # both directions share every option and guarantee, the direction is never implied,
    # and "decrypt" would read like export --decrypt, which hands data to a person.
    connection = resolve(ctx)
    encryption = connection.encryption
    if encryption is None:
        raise click.UsageError(
            "migrate needs the master key of the key vault, in either direction: pass "
            "--master-key-file PATH or set $CHATKIT_MONGO_LOCAL_MASTER_KEY"
        )

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> MigrationReport:
        total = await count_pending(database, collections, target)
        label = "encrypting" if target == "encrypted" else "decrypting"
        with _progress(total, label) as on_progress:
            return await migrate(
                database,
                collections,
                encryption,
                target,
                batch_size=batch_size,
                on_progress=on_progress,
            )

    report = _run(connection, work)
    click.echo(report.describe())
    if report.skipped or report.left:
        unconverted = report.skipped + report.left
        raise click.ClickException(f"{plural(unconverted, 'document')} not converted; see above")


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=WholeNumber(0, 65535), help="TCP port."
)
@click.option(
    "--word-delay",
    default=0.05,
    show_default=True,
    type=Seconds(minimum=0),
    help="Seconds between streamed words.",
)
@connection_options
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int, word_delay: float) -> None:
    """Run the demo ChatKit server: POST /chatkit, replies streamed word by word.

    With a URI (--uri or MONGODB_URI) it serves from that MongoDB database, creating
    its indexes on start; without one, from an embedded in-memory database that is
    gone when the server stops. The X-User-Id header names the user each request acts
    for.
    """
    try:
        from .demo import serve  # noqa: PLC0415
    except ImportError as exc:
        raise click.ClickException(
            f"'serve' needs the demo extra: pip install 'chatkit-mongo[demo]' ({exc})"
        ) from exc
    connection = resolve(ctx)
    embedded = connection.uri is None and connection.opener is open_uri
    serve(connection, embedded=embedded, host=host, port=port, word_delay=word_delay)


@cli.command("shard")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the commands, and the index each key needs, without connecting.",
)
@connection_options
@click.pass_context
def shard_command(ctx: click.Context, dry_run: bool) -> None:
    """Shard the collections with the chosen keys (on a mongos), and report each."""
    from ..operations.sharding import planned_commands, shard  # noqa: PLC0415

    connection = resolve(ctx)
    if dry_run:  # nothing to read from the server: the commands follow from the names
        for line in planned_commands(connection.database, connection.collections):
            click.echo(line)
        return

    async def work(database: AsyncDatabaseLike, collections: CollectionNames) -> int:
        return await shard(database, collections, click.echo)

    if _run(connection, work) != 0:
        raise click.ClickException("the collections are not all sharded with the expected keys")


def main(argv: list[str] | None = None) -> None:
    """Console script entry point."""
    cli.main(args=argv, prog_name="chatkit-mongo")


def create_indexes_main(argv: list[str] | None = None) -> None:
    """``chatkit-mongo-create-indexes``: an alias of ``chatkit-mongo init``, same options."""
    arguments = sys.argv[1:] if argv is None else argv
    cli.main(args=["init", *arguments], prog_name="chatkit-mongo")
