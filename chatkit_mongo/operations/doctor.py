"""``chatkit-mongo doctor``: what the server is, and whether the store is served well.

Why explain the store's own queries (from :mod:`chatkit_mongo._queries`) rather than
hand-written look-alikes: a check of the hot queries is only worth something if it
checks the queries that actually run. Why say "unavailable" rather than guess: the
test doubles answer neither ``hello`` nor ``explain``, and a report that passed there
would claim what nobody measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import ValidationError
from pymongo.errors import PyMongoError

from .. import _queries as queries
from .._driver import AsyncDatabaseLike
from .._queries import Find
from .._readable import first_error
from .._text import plural
from ..apps.connection import one_line
from ..encryption import DEFAULT_KEY_VAULT_NAMESPACE
from ..errors import MasterKeyError
from ..schema import (
    MODEL_KINDS,
    CollectionNames,
    Field,
    Kind,
    document_kind,
    index_specs,
    utc_naive,
)
from .explain import PlanSummary, explain, hot_queries
from .indexes import plan_indexes
from .key_vault import (
    count_keys,
    count_plaintext,
    describe_key_vault_index,
    key_vault_index_state,
    owners_with_encrypted_content,
    owners_without_key,
)
from .sharding import ROUTER_MSG, sharding_report

if TYPE_CHECKING:
    from ..encryption import Encryption

Verdict = Literal["ok", "fail", "unavailable"]
_PROBE_ID: Final = "doctor-probe"
"""Stands in for an owner or id when a collection is empty: the plan is the same."""
_PROBE_PAGE: Final = 20
_SHARDING_VERDICTS: Final[dict[bool | None, Verdict]] = {
    True: "ok",
    False: "fail",
    None: "unavailable",
}


@dataclass(frozen=True)
class Finding:
    verdict: Verdict
    subject: str
    detail: str

    def describe(self) -> str:
        return f"{self.verdict:<11} {self.subject}: {self.detail}"


async def diagnose(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    *,
    retention: bool = False,
    key_vault: str | None = None,
    encryption: Encryption | None = None,
    sample: int | None = None,
) -> list[Finding]:
    """Every finding, in the order a person reads them: server, indexes, encryption,
    unreadable documents, queries.

    With ``retention``, the TTL indexes are expected too, and the hot queries are
    explained with the expiry filter a store with retention adds to every read. A
    command the server lacks is reported once, naming it and the checks skipped.

    With ``key_vault`` (a namespace), the key vault is checked too (see
    :func:`_encryption_findings`); ``encryption``: the caller's settings with the master
    key, so the store is meant to be encrypted: the master key is checked against the
    vault's keys, and content still in the clear is a migration to do.

    ``sample``: check at most this many documents of each collection for content the
    installed ChatKit cannot read (see :func:`unreadable_findings`); None checks all.
    """
    findings = await _server_findings(database)
    for ok, line in await sharding_report(database, collections):
        findings.append(Finding(_SHARDING_VERDICTS[ok], "sharding", line))
    for status in await plan_indexes(database, collections, index_specs(retention)):
        verdict: Verdict = "ok" if status.state == "present" else "fail"
        findings.append(Finding(verdict, "index", status.describe()))
    if key_vault is not None:
        findings += await _encryption_findings(database, collections, key_vault, encryption)
    findings += await unreadable_findings(database, collections, sample=sample)
    now = utc_naive(datetime.now(UTC))
    hot = await _hot_queries(database, collections)
    for number, (label, find) in enumerate(hot):
        sent = queries.visible(find, now) if retention else find
        try:
            summary = await explain(database, collections, sent)
        except (NotImplementedError, PyMongoError) as exc:
            skipped = ", ".join(name for name, _ in hot[number:])
            reason = _lacking("explain", exc, f"the query-plan checks are skipped ({skipped})")
            findings.append(Finding("unavailable", "query plans", reason))
            break
        findings.append(_plan_finding(label, summary))
    return findings


def next_steps(
    findings: list[Finding], *, retention: bool = False, key_vault: str | None = None
) -> list[str]:
    """What to do about the failures found, one line each."""
    indexes = [f.detail for f in findings if f.verdict == "fail" and f.subject == "index"]
    failed = {f.subject for f in findings if f.verdict == "fail"}
    steps = []
    if KEY_VAULT_INDEX_SUBJECT in failed:
        steps.append(
            f"run `chatkit-mongo init --key-vault {key_vault or DEFAULT_KEY_VAULT_NAMESPACE}` "
            "(same connection options) to create the key vault's unique index; if an index "
            "is in the way, drop or rename it first"
        )
    if UNREADABLE_SUBJECT in failed:
        steps.append(
            "for each owner named above, restore the data key from a backup of the key vault "
            "if it was lost by mistake; else erase what can never be read again with "
            "`chatkit-mongo purge --owner <owner>`"
        )
    if MASTER_KEY_SUBJECT in failed:
        steps.append(
            "give the master key the key vault's data keys were made with (--master-key-file "
            "or $CHATKIT_MONGO_LOCAL_MASTER_KEY), or name the key vault it belongs to "
            "(--key-vault)"
        )
    if PLAINTEXT_SUBJECT in failed:
        steps.append(
            "encrypt what is still in the clear with `chatkit-mongo migrate --to encrypted` "
            "(same connection options and master key)"
        )
    steps += unreadable_next_steps(failed)
    if any(detail.endswith(": missing") for detail in indexes):
        command = "chatkit-mongo init --retention" if retention else "chatkit-mongo init"
        steps.append(f"run `{command}` (same connection options) to create the missing indexes")
    if any(": conflict" in detail for detail in indexes):
        steps.append(
            "drop or rename the conflicting indexes named above, then run `chatkit-mongo init`"
        )
    if failed - {"index", UNREADABLE_DOCUMENTS_SUBJECT, *_ENCRYPTION_SUBJECTS} and not indexes:
        steps.append("a hot query is not served by its index; see the plans above")
    return steps


KEY_VAULT_SUBJECT: Final = "key vault"
KEY_VAULT_INDEX_SUBJECT: Final = "key vault index"
MASTER_KEY_SUBJECT: Final = "master key"
UNREADABLE_SUBJECT: Final = "owners without data key"
PLAINTEXT_SUBJECT: Final = "content in the clear"
_ENCRYPTION_SUBJECTS: Final = frozenset(
    {
        "encryption",
        KEY_VAULT_SUBJECT,
        KEY_VAULT_INDEX_SUBJECT,
        MASTER_KEY_SUBJECT,
        UNREADABLE_SUBJECT,
        PLAINTEXT_SUBJECT,
    }
)
_NAMES_SHOWN: Final = 5
"""Owners named in a finding; the rest are counted (the line stays one line)."""


async def _encryption_findings(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    namespace: str,
    encryption: Encryption | None,
) -> list[Finding]:
    """The key vault, its unique index, whether the master key opens its keys, the
    owners whose encrypted content has no key left (unreadable for good), and, with
    ``encryption`` (the master key given), how much is still in the clear.

    Why only one line when encryption is not in use (no master key, no key in the vault,
    no encrypted content): a store without encryption has nothing to fix here. Why the
    vault is read without a master key: these checks need only the key names. Why
    "unavailable" when the vault cannot be read: an operator's role may have no rights
    on the vault's database, and the other checks still stand.
    """
    try:
        keys = await count_keys(database, namespace)
        owners = await owners_with_encrypted_content(database, collections)
        encrypted = encryption is not None
        if not (encrypted or keys or owners):
            detail = (
                f"not in use (no master key given, no data key in {namespace}, "
                "no encrypted content)"
            )
            return [Finding("ok", "encryption", detail)]
        index = await key_vault_index_state(database, namespace)
        keyless = await owners_without_key(database, namespace, owners)
        plaintext = await count_plaintext(database, collections) if encrypted else None
        master_key = None
        if encryption is not None:
            master_key = await _master_key_finding(database, encryption, keys)
    except (NotImplementedError, PyMongoError) as exc:
        reason = f"cannot read {namespace} or the content's types ({one_line(exc)})"
        return [Finding("unavailable", KEY_VAULT_SUBJECT, f"{reason}; encryption not checked")]
    findings = [
        Finding("ok", KEY_VAULT_SUBJECT, f"{namespace}: {plural(keys, 'data key')}"),
        Finding(
            "ok" if index == "present" else "fail",
            KEY_VAULT_INDEX_SUBJECT,
            f"{describe_key_vault_index(namespace)}: {index}",
        ),
    ]
    if master_key is not None:
        findings.append(master_key)
    if keyless:
        shown = ", ".join(repr(owner) for owner in keyless[:_NAMES_SHOWN])
        more = len(keyless) - _NAMES_SHOWN
        names = f"{shown} and {more} more" if more > 0 else shown
        detail = (
            f"{plural(len(keyless), 'owner')} with encrypted content unreadable for good: {names}"
        )
        findings.append(Finding("fail", UNREADABLE_SUBJECT, detail))
    else:
        detail = (
            f"every owner with encrypted content has a data key ({plural(len(owners), 'owner')})"
        )
        findings.append(Finding("ok", UNREADABLE_SUBJECT, detail))
    if plaintext is not None:
        if plaintext:
            detail = (
                f"{plural(plaintext, 'document')} (files included) not encrypted yet: "
                "a migration to do (a store with strict encryption, the default, refuses them)"
            )
            findings.append(Finding("fail", PLAINTEXT_SUBJECT, detail))
        else:
            findings.append(Finding("ok", PLAINTEXT_SUBJECT, "none: all content is encrypted"))
    return findings


async def _master_key_finding(
    database: AsyncDatabaseLike, encryption: Encryption, keys: int
) -> Finding:
    """Whether the master key opens the key vault's data keys, naming where it came from.

    Why doctor checks it: with another master key every read and write of encrypted
    content fails, and nothing else here would show it (the key names all match).
    """
    from .._encryption import OwnerEncryption  # noqa: PLC0415  (libmongocrypt only here)

    handle: Any = database  # PyMongo's and Motor's databases have codec_options
    engine = OwnerEncryption(encryption, database.client, codec_options=handle.codec_options)
    async with engine:
        try:
            await engine.check_master_key()
        except MasterKeyError as exc:
            return Finding("fail", MASTER_KEY_SUBJECT, str(exc))
    source = encryption.master_key_source
    if not keys:
        return Finding("ok", MASTER_KEY_SUBJECT, f"{source}: no data key yet to check it against")
    return Finding("ok", MASTER_KEY_SUBJECT, f"{source} opens the key vault's data keys")


def _lacking(command: str, exc: BaseException, skipped: str) -> str:
    """One line for a command the server does not run: which, why in brief, what is skipped."""
    return f"the server does not run '{command}' ({one_line(exc)}); {skipped}"


async def _server_findings(database: AsyncDatabaseLike) -> list[Finding]:
    try:
        build = await database.command("buildInfo")
    except (NotImplementedError, PyMongoError) as exc:
        findings = [
            Finding("unavailable", "server version", _lacking("buildInfo", exc, "version unknown"))
        ]
    else:
        findings = [Finding("ok", "server version", str(build.get("version", "unknown")))]
    try:
        hello = await database.command("hello")
    except (NotImplementedError, PyMongoError) as exc:
        reason = _lacking("hello", exc, "topology and transactions are not checked")
        findings.append(Finding("unavailable", "topology", reason))
        return findings
    if hello.get("msg") == ROUTER_MSG:
        topology = "sharded cluster"
    elif hello.get("setName"):
        topology = f"replica set {hello['setName']}"
    else:
        topology = "standalone"
    findings.append(Finding("ok", "topology", topology))
    # Why not a failure: the store needs no transactions; this only tells the operator.
    transactions = "available" if topology != "standalone" else "not available on a standalone"
    findings.append(Finding("ok", "transactions", transactions))
    return findings


async def _hot_queries(
    database: AsyncDatabaseLike, collections: CollectionNames
) -> list[tuple[str, Find]]:
    """The queries of every ChatKit turn, with ids taken from stored data when there is any."""
    item = await database[collections.items].find_one({}, {"_id": 0, Field.DATA: 0}) or {}
    return hot_queries(
        item.get(Field.OWNER, _PROBE_ID),
        item.get(Field.THREAD_ID, _PROBE_ID),
        item.get(Field.ITEM_ID, _PROBE_ID),
        item.get(Field.SORT_KEY),
        _PROBE_PAGE,
    )


def _plan_finding(label: str, summary: PlanSummary) -> Finding:
    problems = summary.problems()
    detail = summary.describe()
    if problems:
        return Finding("fail", label, f"{', '.join(problems)}: {detail}")
    return Finding("ok", label, detail)


UNREADABLE_DOCUMENTS_SUBJECT: Final = "unreadable documents"
_IDS_SHOWN: Final = 5
"""Ids named per collection; the rest are counted (the line stays one line)."""


async def unreadable_findings(
    database: AsyncDatabaseLike, collections: CollectionNames, *, sample: int | None = None
) -> list[Finding]:
    """One finding per collection of threads, items and attachments: how many of its
    documents the installed ChatKit release cannot read (the ones pages skip and loads
    refuse, see :mod:`chatkit_mongo._readable`), with a few of their ids.

    ``sample`` bounds the cost on large collections: only that many documents of each,
    the most recently created first (``_id`` descending: what a newer release or a
    recent hand edit wrote), are read. Why the content is validated here with the same
    models the store reads with: a check that passed where the store skips would be
    worthless. Encrypted content is counted, not read: its validation needs each
    owner's key, and the store reports it when it reads it.
    """
    findings = []
    release = version("openai-chatkit")
    for kind in MODEL_KINDS:
        collection = collections.name_of(kind)
        try:
            checked, encrypted, unreadable = await _unreadable_in(
                database[collection], kind, sample
            )
        except (NotImplementedError, PyMongoError) as exc:
            reason = f"cannot read {collection} ({one_line(exc)}); not checked"
            findings.append(Finding("unavailable", UNREADABLE_DOCUMENTS_SUBJECT, reason))
            continue
        scope = f"{plural(checked, 'document')} checked"
        if sample is not None:
            scope += f" (the {sample} newest at most)"
        if encrypted:
            scope += f", {plural(encrypted, 'encrypted document')} not read"
        if not unreadable:
            detail = f"{collection}: {scope}, all readable by ChatKit {release}"
            findings.append(Finding("ok", UNREADABLE_DOCUMENTS_SUBJECT, detail))
            continue
        shown = ", ".join(
            f"{document_id!r} ({reason})" for document_id, reason in unreadable[:_IDS_SHOWN]
        )
        more = len(unreadable) - _IDS_SHOWN
        detail = (
            f"{collection}: {plural(len(unreadable), 'document')} of {scope} cannot be read "
            f"by ChatKit {release}: {shown}{f' and {more} more' if more > 0 else ''}"
        )
        findings.append(Finding("fail", UNREADABLE_DOCUMENTS_SUBJECT, detail))
    return findings


async def _unreadable_in(
    collection: Any, kind: Kind, sample: int | None
) -> tuple[int, int, list[tuple[str, str]]]:
    """(documents checked, encrypted ones among them, (id, first error) of each that the
    installed release cannot read)."""
    entry = document_kind(kind)
    adapter, id_field = entry.adapter, entry.id_field
    assert adapter is not None  # a model's kind
    assert id_field is not None
    cursor = collection.find({}, {id_field: 1, Field.DATA: 1}).sort("_id", -1)
    if sample is not None:
        cursor = cursor.limit(sample)
    checked = encrypted = 0
    unreadable: list[tuple[str, str]] = []
    async for document in cursor:
        checked += 1
        data = document.get(Field.DATA)
        if data is not None and not isinstance(data, dict):
            encrypted += 1
            continue
        try:
            adapter.validate_python(data)
        except ValidationError as exc:
            unreadable.append((str(document.get(id_field)), first_error(exc)))
    return checked, encrypted, unreadable


def unreadable_next_steps(failed: set[str]) -> list[str]:
    """What to do about unreadable documents, when some were found."""
    if UNREADABLE_DOCUMENTS_SUBJECT not in failed:
        return []
    return [
        "documents named above cannot be read by the installed ChatKit: written by a newer "
        "release (upgrade this one, and they read again) or edited by hand (repair or "
        "delete them); pages skip them meanwhile, and `chatkit-mongo export` keeps them "
        "as stored"
    ]
