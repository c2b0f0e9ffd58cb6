"""How every command names and opens its database: one set of options, one opener.

Why one place: each command that connects (``init``, ``doctor``, ``export``, ``import``,
``purge``, ``serve``, ``bench``, and the index script, an alias of ``init``) takes the
same ``--uri``, ``--database``, ``--timeout`` (seconds) and collection-name options,
before or after the command's name, and opens the server the same way, so an option
put where another command wants it is never silently ignored.

Why the options are stored on the root context rather than passed as arguments: click
gives the group's options to the group and a command's to the command; recording both
in one place lets ``chatkit-mongo --uri X init`` and ``chatkit-mongo init --uri X`` mean
the same, and refuses the two given with different values.

The encryption options belong here too: ``--master-key-file`` (or the environment
variable ``CHATKIT_MONGO_LOCAL_MASTER_KEY``) and ``--key-vault`` tell every command how
content is encrypted, so ``export --decrypt``, ``purge`` (which shreds the owner's key),
``doctor``, ``init`` and the migration all read one setting the same way.

Light on purpose: the driver's client is imported only when a server is opened, so
``--help`` stays fast.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import click
from click.core import ParameterSource

from .._driver import AsyncDatabaseLike, maybe_await
from .._text import shown
from ..encryption import (
    DEFAULT_KEY_VAULT_NAMESPACE,
    DEFAULT_LOCAL_KEY_VARIABLE,
    Encryption,
    split_key_vault_namespace,
)
from ..errors import EncryptionConfigError
from ..schema import BUCKET, CollectionNames, collection_settings
from ._params import Seconds

_F = TypeVar("_F", bound=Callable[..., Any])

DEFAULT_DATABASE: Final = "chatkit"
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
_META: Final = "chatkit_mongo.apps.connection"
_COLLECTION_OPTIONS: Final = {
    (setting if setting == BUCKET else f"{setting}_collection"): setting
    for setting in collection_settings()
}
"""Option name -> the CollectionNames field it sets: one per collection the registry of
document kinds names (``--threads-collection``, ...), and ``--bucket``."""
_SOURCE_RANK: Final = {
    ParameterSource.DEFAULT: 0,
    ParameterSource.DEFAULT_MAP: 0,
    ParameterSource.ENVIRONMENT: 1,
    ParameterSource.PROMPT: 2,
    ParameterSource.COMMANDLINE: 2,
}


@dataclass(frozen=True)
class ConnectionOptions:
    """The connection options as given, wherever on the command line they were."""

    uri: str | None
    database: str | None
    """None when not given: each command has its own default."""
    timeout: float
    collections: CollectionNames
    master_key_file: str | None
    key_vault: str
    key_vault_named: bool
    """Whether ``--key-vault`` was given (not its default): the deployment says it has one."""


def _record(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep the value of a connection option on the root context, the strongest source
    winning; the same option given twice on the command line must agree."""
    assert param.name is not None
    source = ctx.get_parameter_source(param.name) or ParameterSource.DEFAULT
    seen: dict[str, tuple[Any, ParameterSource]] = ctx.find_root().meta.setdefault(_META, {})
    earlier = seen.get(param.name)
    if earlier is not None:
        earlier_value, earlier_source = earlier
        both_given = earlier_source == source == ParameterSource.COMMANDLINE
        if both_given and earlier_value != value:
            raise click.ClickException(
                f"{param.opts[0]} given twice with different values "
                f"({shown(earlier_value)} and {shown(value)})"
            )
        if _SOURCE_RANK[earlier_source] >= _SOURCE_RANK[source]:
            return value
    seen[param.name] = (value, source)
    return value


def connection_options(function: _F) -> _F:
    """Add the connection options to a command or the group (values go to the root context)."""
    options = [
        click.option(
            "--uri",
            envvar="MONGODB_URI",
            show_envvar=True,
            help="MongoDB connection string.",
        ),
        click.option(
            "--database",
            "-d",
            help=f"Database name [default: {DEFAULT_DATABASE}; bench: a new one of its own].",
        ),
        click.option(
            "--timeout",
            type=Seconds(),
            default=DEFAULT_TIMEOUT_SECONDS,
            show_default=True,
            help="Seconds to wait for the server before giving up.",
        ),
        *(
            click.option(
                f"--{name.replace('_', '-')}",
                default=getattr(CollectionNames(), field),
                show_default=True,
                help=f"Name of the {field} collection."
                if field != BUCKET
                else "Name of the GridFS bucket of attachment bytes.",
            )
            for name, field in _COLLECTION_OPTIONS.items()
        ),
        click.option(
            "--master-key-file",
            type=click.Path(dir_okay=False),
            help="Local master key of client-side encryption (96 bytes, raw or base64); "
            f"else ${DEFAULT_LOCAL_KEY_VARIABLE} (base64). With it, content is read and "
            "written encrypted.",
        ),
        click.option(
            "--key-vault",
            default=DEFAULT_KEY_VAULT_NAMESPACE,
            show_default=True,
            help="Key vault of client-side encryption, as database.collection.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    for param in function.__click_params__:  # type: ignore[attr-defined]
        param.callback = _record
        param.expose_value = False
    return function


def given_options(ctx: click.Context) -> ConnectionOptions:
    """The connection options of this command line, with their defaults."""
    seen: dict[str, tuple[Any, ParameterSource]] = ctx.find_root().meta.get(_META, {})

    def value(name: str, default: Any) -> Any:
        found = seen.get(name)
        return default if found is None else found[0]

    try:
        collections = CollectionNames(
            **{
                field: value(name, getattr(CollectionNames(), field))
                for name, field in _COLLECTION_OPTIONS.items()
            }
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    key_vault = value("key_vault", DEFAULT_KEY_VAULT_NAMESPACE)
    try:  # checked here, as purge, doctor and init use it without a master key
        split_key_vault_namespace(key_vault)
    except EncryptionConfigError as exc:
        raise click.ClickException(f"--key-vault: {exc}") from exc
    return ConnectionOptions(
        uri=value("uri", None) or None,
        database=value("database", None),
        timeout=value("timeout", DEFAULT_TIMEOUT_SECONDS),
        collections=collections,
        master_key_file=value("master_key_file", None) or None,
        key_vault=key_vault,
        key_vault_named=_SOURCE_RANK[seen.get("key_vault", (None, ParameterSource.DEFAULT))[1]] > 0,
    )


def encryption_settings(options: ConnectionOptions) -> Encryption | None:
    """The encryption settings the command line gives: the ``local`` master key from
    ``--master-key-file``, else from ``$CHATKIT_MONGO_LOCAL_MASTER_KEY``; None when
    neither is given (content is then read and written as it is).

    Why only the ``local`` provider here: a cloud KMS needs credentials and a master key
    description that an application passes to :class:`~chatkit_mongo.encryption.Encryption`
    itself; the CLI's key-vault-only work (``purge`` shredding a key, ``doctor``) needs
    no master key at all.
    """
    try:
        if options.master_key_file is not None:
            return Encryption.local_from_file(
                options.master_key_file, key_vault_namespace=options.key_vault
            )
        if os.environ.get(DEFAULT_LOCAL_KEY_VARIABLE):
            return Encryption.local_from_env(key_vault_namespace=options.key_vault)
    except EncryptionConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    return None


@asynccontextmanager
async def open_database(
    uri: str,
    database: str,
    wait_seconds: float,
    *,
    make_client: Callable[..., Any] | None = None,
    **client_options: Any,
) -> AsyncIterator[AsyncDatabaseLike]:
    """A client for ``uri``, checked with a ``ping``, closed on exit: PyMongo's async
    client (the library's :func:`~chatkit_mongo._driver.open_client`), or the one
    ``make_client`` builds (the benchmark's Motor client).

    A URI that does not parse, an unreachable server or refused credentials end in a
    one-line :class:`click.ClickException` naming the host and the cause.
    """
    from pymongo.errors import (  # noqa: PLC0415  (kept out of --help)
        ConfigurationError,
        PyMongoError,
        ServerSelectionTimeoutError,
    )

    from .._driver import open_client  # noqa: PLC0415

    milliseconds = max(1, round(wait_seconds * 1000))
    try:
        client = (make_client or open_client)(
            uri,
            serverSelectionTimeoutMS=milliseconds,
            connectTimeoutMS=milliseconds,
            **client_options,
        )
    except (ConfigurationError, ValueError, TypeError) as exc:
        raise click.ClickException(f"bad MongoDB URI: {one_line(exc)}") from exc
    try:
        try:
            await client.admin.command("ping")
        except ServerSelectionTimeoutError as exc:
            raise click.ClickException(
                f"cannot reach MongoDB within {wait_seconds:g}s: {one_line(exc)}"
            ) from exc
        except PyMongoError as exc:
            raise click.ClickException(f"MongoDB refused the connection: {one_line(exc)}") from exc
        yield client[database]
    finally:
        await maybe_await(client.close())  # a coroutine in PyMongo Async, a plain call in Motor


_TOPOLOGY_NOISE: Final = re.compile(
    r"\s*(\(configured timeouts:[^)]*\))?(, Timeout: .*|, full error: .*)?$", re.DOTALL
)


def one_line(exc: BaseException) -> str:
    """A driver error as one line: the host and the cause, without the topology description
    or the raw server reply the driver appends."""
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return _TOPOLOGY_NOISE.sub("", first) or first


Opener = Callable[["Connection"], AbstractAsyncContextManager[AsyncDatabaseLike]]


@dataclass(frozen=True)
class Connection:
    """A command's database, resolved: where it is, and how it is opened.

    ``opener`` is :func:`open_uri` unless a test hands its own through click's ``obj``,
    to run the very same commands on a test double.
    """

    uri: str | None
    database: str
    timeout: float
    collections: CollectionNames
    opener: Opener
    encryption: Encryption | None
    """The ``local`` encryption settings given, or None (see :func:`encryption_settings`)."""
    key_vault: str
    """The key vault namespace (``--key-vault``), given or default, with or without a key."""
    key_vault_named: bool = False
    """``--key-vault`` was given: ``init`` then creates the key vault's index even without
    a master key (an operator of a cloud-KMS deployment holds none the CLI can take)."""

    def open(self) -> AbstractAsyncContextManager[AsyncDatabaseLike]:
        return self.opener(self)


def open_uri(connection: Connection) -> AbstractAsyncContextManager[AsyncDatabaseLike]:
    """The default opener: the server named by the URI; none given is an error."""
    if not connection.uri:
        raise click.ClickException("no MongoDB URI: pass --uri or set MONGODB_URI")
    return open_database(connection.uri, connection.database, connection.timeout)


def resolve(ctx: click.Context, *, default_database: str = DEFAULT_DATABASE) -> Connection:
    """This command's :class:`Connection`, from the options given anywhere on the line."""
    given = given_options(ctx)
    injected = ctx.find_root().obj
    opener: Opener = injected if callable(injected) else open_uri
    return Connection(
        given.uri,
        given.database or default_database,
        given.timeout,
        given.collections,
        opener,
        encryption_settings(given),
        given.key_vault,
        given.key_vault_named,
    )
