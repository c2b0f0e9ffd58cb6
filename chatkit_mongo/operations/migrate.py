"""Converting a store's content to ciphertext, or back to plaintext: ``chatkit-mongo migrate``.

A store that ran without encryption holds the ``data`` sub-document of each thread, item
and attachment as a BSON document (plaintext). With encryption on, the store writes a
ciphertext (BSON binary subtype 6) and still reads a plaintext as it is
(:meth:`Persistence.unseal <chatkit_mongo._persistence.Persistence.unseal>`), so the
order is: switch encryption on in the application, then run ``migrate --to encrypted``
while it serves; what it writes from then on is already encrypted, the migration
converts the rest. The reverse, ``--to plain``, runs while the application still has
encryption on (it can read both forms); what it writes meanwhile stays encrypted, so
stop its writes, run the migration once more (it only finds those), then start it
without encryption.

Why it is safe to interrupt and to re-run:

- The documents are found by what they hold, never by a record of progress: a pass is
  a keyset range, in the order of the kind's unique key, over the documents whose
  ``data`` is not yet in the target form (:func:`pending_filter`). Re-running after an
  interruption simply finds what is left.
- Each document is replaced by its conversion with a conditional update: its ``_id``
  AND the exact ``data`` read. A document the application changed meanwhile is left as
  the application wrote it (never overwritten with a conversion of older content); if
  it is still in the old form, the next pass picks it up. So at any point every
  document is either in its old or its new form, and both are readable by a store
  with encryption on.
- A document that cannot be decrypted (its owner's key is shredded, or it was made with
  another owner's key or for another document: copied or imported there) or that fails
  its integrity check is counted and passed over: the range moves past it, so no pass
  loops on it, and a decryption never makes readable what the store would not read.

One round trip per batch for the reads and one for the writes (an unordered bulk of
conditional updates).

The attachments' bytes in GridFS follow the documents: each complete attachment whose
file is not in the target form (``metadata.encrypted``, :func:`file_pending_filter`)
is rewritten by :meth:`GridFSAttachmentStore.reseal_bytes
<chatkit_mongo.attachments.GridFSAttachmentStore.reseal_bytes>`, which streams the bytes
into a new file and switches the attachment to it only if it still names the old one:
stopped anywhere, the attachment has its old bytes or its new ones, and a leftover file
is an orphan the sweep removes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from chatkit.store import NotFoundError
from pymongo import UpdateOne

from .._checks import check_positive_int
from .._driver import AsyncDatabaseLike
from .._persistence import Persistence
from .._text import plural
from ..attachments import GridFSAttachmentStore
from ..errors import CiphertextError
from ..schema import (
    MODEL_KINDS,
    CollectionNames,
    Field,
    GridFSField,
    Kind,
    UploadField,
    document_kind,
)
from ..store import MongoStore
from .erase import Progress

if TYPE_CHECKING:
    from .._persistence import CollectionWrapper
    from ..encryption import Encryption

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "TARGETS",
    "MigrationReport",
    "Target",
    "count_pending",
    "file_pending_filter",
    "migrate",
    "pending_filter",
]

Target = Literal["encrypted", "plain"]
TARGETS: Final[tuple[Target, ...]] = ("encrypted", "plain")
DEFAULT_BATCH_SIZE: Final = 100
"""Documents per read and per bulk write: few round trips, a small bulk to redo."""
MAX_PASSES: Final = 5
"""Passes after the first run only while the application keeps changing documents under
the migration; beyond this many the report says how many are left, for another run."""
_PLAINTEXT: Final[dict[str, Any]] = {Field.DATA: {"$type": "object"}}


def pending_filter(target: Target) -> dict[str, Any]:
    """The documents whose ``data`` is not yet in ``target`` form.

    A plaintext is a BSON document, a ciphertext is BSON binary (subtype 6, the only
    binary ``data`` the store writes). Why "not a document" for ``plain`` rather than
    "binary": it names exactly what a store without encryption cannot read.
    """
    if target == "encrypted":
        return dict(_PLAINTEXT)
    if target == "plain":
        return {Field.DATA: {"$not": _PLAINTEXT[Field.DATA]}}
    raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")


def file_pending_filter(target: Target) -> dict[str, Any]:
    """The GridFS files whose bytes are not yet in ``target`` form: the flag the
    attachment store sets on an encrypted stream, which plain files lack."""
    if target == "encrypted":
        return {GridFSField.METADATA_ENCRYPTED: {"$ne": True}}
    if target == "plain":
        return {GridFSField.METADATA_ENCRYPTED: True}
    raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")


_COMPLETE: Final[dict[str, Any]] = {
    UploadField.FILE_ID: {"$ne": None},
    UploadField.STATE: {"$exists": False},
}
"""Attachments whose bytes are stored: an upload under way is left to finish (it writes
in the store's form of the moment; a later run converts it if need be)."""
_KINDS: Final[tuple[Kind, ...]] = (*MODEL_KINDS, "file")
"""What a migration converts, in its order: the documents, then the bytes."""


@dataclass
class MigrationReport:
    """What a migration did, per kind: ``thread``, ``item`` and ``attachment`` documents,
    and ``file`` for the attachments' bytes."""

    target: Target
    converted: dict[Kind, int] = field(default_factory=dict)
    """Documents written in the target form."""
    unreadable: dict[Kind, int] = field(default_factory=dict)
    """Documents that cannot be decrypted for their owner: the key is gone (shredded),
    or the ciphertext is another owner's or another document's (copied in). Left as
    they are; no store reads them."""
    damaged: dict[Kind, int] = field(default_factory=dict)
    """Ciphertexts that fail their integrity check (altered in the database). Left as
    they are."""
    unreadable_owners: set[str] = field(default_factory=set)
    """The owners of the unreadable documents (to purge, or to restore a key for)."""
    changed_meanwhile: int = 0
    """Conversions not written because the application changed the document between
    the read and the write; the next pass looked at those documents again."""
    left: int = 0
    """Documents still in the old form after the last pass, besides the unreadable and
    damaged ones: written in the old form while the migration ran. Run it again."""
    leftovers_removed: int = 0
    """Old-form files no attachment refers to any more, deleted: the old bytes of a
    rewrite stopped between its switch and its delete (or of an earlier crash)."""
    orphans: int = 0
    """Old-form files no attachment refers to that were themselves written by a rewrite:
    left to the orphan sweep (``GridFSAttachmentStore.sweep_orphans``), which tells a
    finished one from one still under way by its age."""
    passes: int = 0

    @property
    def skipped(self) -> int:
        return sum(self.unreadable.values()) + sum(self.damaged.values())

    def describe(self) -> str:
        lines = [
            f"converted to {self.target}: "
            + ", ".join(plural(self.converted.get(kind, 0), kind) for kind in _KINDS)
        ]
        if self.unreadable:
            owners = sorted(self.unreadable_owners)
            shown = ", ".join(owners[:_SHOWN_OWNERS]) + (
                f" and {len(owners) - _SHOWN_OWNERS} more" if len(owners) > _SHOWN_OWNERS else ""
            )
            lines.append(
                f"cannot decrypt {_counts(self.unreadable)}: the key is gone, or the "
                f"ciphertext is another owner's or document's (owners: {shown}); left encrypted"
            )
        if self.damaged:
            lines.append(f"failed their integrity check: {_counts(self.damaged)}; left as they are")
        if self.changed_meanwhile:
            lines.append(
                f"changed by the application while being converted: "
                f"{plural(self.changed_meanwhile, 'document')}, looked at again"
            )
        if self.leftovers_removed:
            lines.append(
                f"removed {plural(self.leftovers_removed, 'file')} in the old form that no "
                "attachment refers to (left by an interrupted rewrite)"
            )
        if self.orphans:
            lines.append(
                f"{plural(self.orphans, 'rewritten file')} in the old form that no attachment "
                "refers to: the orphan sweep removes them"
            )
        if self.left:
            lines.append(
                f"still in the old form: {plural(self.left, 'document')} written meanwhile; "
                "run the migration again"
            )
        return "\n".join(lines)


_SHOWN_OWNERS: Final = 20


def _counts(counts: dict[Kind, int]) -> str:
    return ", ".join(plural(count, kind) for kind, count in counts.items() if count)


async def count_pending(
    database: AsyncDatabaseLike, collections: CollectionNames, target: Target
) -> int:
    """How many documents and attachment files are not yet in ``target`` form (the
    progress bar's length)."""
    persistence = Persistence(database, collections, auto_create_indexes=False)
    persistence.use_bucket(collections.bucket)
    return await _count_pending(persistence, target, DEFAULT_BATCH_SIZE)


async def _count_pending(persistence: Persistence, target: Target, batch_size: int) -> int:
    pending = pending_filter(target)
    total = 0
    for kind in MODEL_KINDS:
        total += int(await persistence.collection(kind).count_documents(pending))
    async for batch in _files_to_convert(persistence, target, batch_size):
        total += len(batch)
    return total


async def migrate(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    encryption: Encryption,
    target: Target,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: Progress | None = None,
    wrap_collection: CollectionWrapper | None = None,
) -> MigrationReport:
    """Convert every thread, item and attachment of ``collections``, and the bytes of
    every complete attachment in its bucket, to ``target`` form.

    ``encryption`` names the key vault and master key (decrypting needs them as much as
    encrypting); a master key that does not open the vault's keys raises
    :class:`~chatkit_mongo.errors.MasterKeyError` before anything is changed.
    ``on_progress`` is told how many documents each batch handled; ``wrap_collection``
    is the store's seam (``(kind, collection) -> collection``), for instrumentation
    and fault injection. See the module's docstring for why an
    interrupted run leaves every document readable and a re-run finishes the work.
    """
    pending = pending_filter(target)
    check_positive_int(batch_size, "batch_size")
    # Why never strict: a migration reads both forms by its nature. ``--to encrypted``
    # takes what is in the clear as the owners' content, so it runs before the
    # application turns strict, never on a store whose plaintext nobody vouches for.
    store: MongoStore[Any] = MongoStore(
        database,
        collections=collections,
        encryption=replace(encryption, strict=False),
        auto_create_indexes=False,
        wrap_collection=wrap_collection,
    )
    try:
        # Why an attachment store: it alone writes GridFS bytes (streamed, encrypted
        # piece by piece). The migration makes no upload, so it never asks for a URL.
        attachments = GridFSAttachmentStore(store, upload_url=_no_upload_url)
        persistence = store.persistence
        if persistence.encryption is not None:
            # Why before anything: with a master key that opens none of the keys, every
            # document would count as damaged or unreadable; nothing is changed then.
            await persistence.encryption.check_master_key()
        if target == "encrypted" and persistence.encryption is not None:
            # Why here: encrypting creates each owner's key on its first document, which
            # the engine refuses in a key vault without its unique index.
            await persistence.encryption.ensure_key_vault_index()
        report = MigrationReport(target)
        for _ in range(MAX_PASSES):
            report.passes += 1
            this_pass = _Pass(
                persistence,
                attachments,
                target=target,
                pending=pending,
                batch_size=batch_size,
                on_progress=on_progress,
            )
            for kind in MODEL_KINDS:
                await this_pass.run(kind)
            await this_pass.run_files()
            this_pass.add_to(report)
            if not this_pass.changed_meanwhile:
                break
        await this_pass.remove_leftovers(report)
        left = await _count_pending(persistence, target, batch_size)
        report.left = max(left - this_pass.skipped, 0)
        return report
    finally:
        await store.close()


def _no_upload_url(attachment_id: str, context: Any) -> str:
    raise AssertionError("the migration makes no two-phase upload")


async def _batches(
    collection: Any, kind: Kind, filter_: dict[str, Any], batch_size: int
) -> AsyncIterator[list[dict[str, Any]]]:
    """The documents of ``kind`` matching ``filter_``, in batches, as one keyset range
    over the kind's unique key: each document at most once, whatever is skipped."""
    key = document_kind(kind).key
    sort = [(name, 1) for name in key]
    projection = dict.fromkeys((*key, "_id", Field.DATA, UploadField.FILE_ID), 1)
    after: dict[str, Any] = {}
    while True:
        cursor = collection.find({**filter_, **after}, projection)
        documents: list[dict[str, Any]] = await cursor.sort(sort).limit(batch_size).to_list(None)
        if not documents:
            return
        yield documents
        if len(documents) < batch_size:
            return
        after = _after(key, documents[-1])


async def _files_to_convert(
    persistence: Persistence, target: Target, batch_size: int
) -> AsyncIterator[list[dict[str, Any]]]:
    """In batches, the complete attachments whose file is not yet in ``target`` form:
    one read of the attachments and one of their files per batch."""
    files = persistence.collection("file")
    pending = file_pending_filter(target)
    complete = _batches(persistence.collection("attachment"), "attachment", _COMPLETE, batch_size)
    async for batch in complete:
        file_ids = [document[UploadField.FILE_ID] for document in batch]
        found = files.find({GridFSField.ID: {"$in": file_ids}, **pending}, {GridFSField.ID: 1})
        due = {document[GridFSField.ID] async for document in found}
        converting = [document for document in batch if document[UploadField.FILE_ID] in due]
        if converting:
            yield converting


class _Pass:
    """One keyset pass over each kind: what it converted and what it passed over."""

    def __init__(
        self,
        persistence: Persistence,
        attachments: GridFSAttachmentStore[Any],
        *,
        target: Target,
        pending: dict[str, Any],
        batch_size: int,
        on_progress: Progress | None,
    ) -> None:
        self._persistence = persistence
        self._attachments = attachments
        self._target = target
        self._pending = pending
        self._batch_size = batch_size
        self._on_progress = on_progress
        self.converted: dict[Kind, int] = {}
        self.unreadable: dict[Kind, int] = {}
        self.damaged: dict[Kind, int] = {}
        self.unreadable_owners: set[str] = set()
        self.changed_meanwhile = 0

    @property
    def skipped(self) -> int:
        return sum(self.unreadable.values()) + sum(self.damaged.values())

    def add_to(self, report: MigrationReport) -> None:
        """Conversions add up over passes; what cannot be converted is what the last
        pass found (each pass meets those documents again)."""
        for kind, count in self.converted.items():
            report.converted[kind] = report.converted.get(kind, 0) + count
        report.unreadable = dict(self.unreadable)
        report.damaged = dict(self.damaged)
        report.unreadable_owners = set(self.unreadable_owners)
        report.changed_meanwhile += self.changed_meanwhile

    def _count(self, counts: dict[Kind, int], kind: Kind, count: int = 1) -> None:
        counts[kind] = counts.get(kind, 0) + count

    def _progress(self, done: int) -> None:
        if self._on_progress is not None:
            self._on_progress(done)

    async def run(self, kind: Kind) -> None:
        collection = self._persistence.collection(kind)
        async for documents in _batches(collection, kind, self._pending, self._batch_size):
            updates = [
                update
                for document in documents
                if (update := await self._conversion(kind, document)) is not None
            ]
            if updates:
                result = await collection.bulk_write(updates, ordered=False)
                self._count(self.converted, kind, result.matched_count)
                self.changed_meanwhile += len(updates) - result.matched_count
            self._progress(len(documents))

    async def _conversion(self, kind: Kind, document: dict[str, Any]) -> UpdateOne | None:
        """The conditional update that puts ``document`` in target form; None (and
        counted) when it cannot be read for its owner."""
        owner: str = document[Field.OWNER]
        stored = document[Field.DATA]
        # Why the id too: a ciphertext copied over another document of its owner reads
        # as not found there, and must not come out of a decryption readable.
        element_id = document[str(document_kind(kind).id_field)]
        try:
            content = await self._persistence.unseal(owner, stored, element_id)
        except CiphertextError:
            self._count(self.damaged, kind)
            return None
        if content is None:
            self._unreadable(kind, owner)
            return None
        converted = (
            content if self._target == "plain" else await self._persistence.seal(owner, content)
        )
        # Why ``$eq``: the stored value is matched as a value, whatever its first key.
        return UpdateOne(
            {"_id": document["_id"], Field.DATA: {"$eq": stored}},
            {"$set": {Field.DATA: converted}},
        )

    def _unreadable(self, kind: Kind, owner: str) -> None:
        self._count(self.unreadable, kind)
        self.unreadable_owners.add(owner)

    async def run_files(self) -> None:
        """Each attachment's bytes not in target form, rewritten one by one (each
        rewrite streams the whole file, so a batch is only the unit of the reads)."""
        encrypted = self._target == "encrypted"
        async for batch in _files_to_convert(self._persistence, self._target, self._batch_size):
            for document in batch:
                owner: str = document[Field.OWNER]
                try:
                    rewritten = await self._attachments.reseal_bytes(
                        owner, document[Field.ATTACHMENT_ID], encrypted=encrypted
                    )
                except NotFoundError:  # the key is gone, or the bytes went meanwhile
                    self._unreadable("file", owner)
                    continue
                except CiphertextError:
                    self._count(self.damaged, "file")
                    continue
                if rewritten:
                    self._count(self.converted, "file")
                else:  # rewritten or deleted by someone else meanwhile: look again
                    self.changed_meanwhile += 1
            self._progress(len(batch))

    async def remove_leftovers(self, report: MigrationReport) -> None:
        """Delete the old-form files no attachment refers to, through the ownership
        proof: a rewrite stopped after its switch leaves the old bytes (for an
        encryption, a plaintext copy), which this run's rewrites never meet again.

        Why only files not written by a rewrite: any other file is referred to from
        before its first byte (an upload's claim) until after its last (a delete
        unlinks first), so an unreferenced one is finished garbage. A rewrite's file is
        unreferenced while it is being written; only the sweep, by its age, can tell
        it from a leftover, so those are counted and left to it.
        """
        files = self._persistence.collection("file")
        found = files.find(
            file_pending_filter(self._target), {GridFSField.ID: 1, GridFSField.METADATA: 1}
        )
        batch: list[dict[str, Any]] = []
        async for file in found:
            batch.append(file)
            if len(batch) == self._batch_size:
                await self._remove_unreferenced(batch, report)
                batch = []
        if batch:
            await self._remove_unreferenced(batch, report)

    async def _remove_unreferenced(
        self, files: list[dict[str, Any]], report: MigrationReport
    ) -> None:
        file_ids = [file[GridFSField.ID] for file in files]
        referring = self._persistence.collection("attachment").find(
            {UploadField.FILE_ID: {"$in": file_ids}}, {UploadField.FILE_ID: 1, "_id": 0}
        )
        referenced = {document[UploadField.FILE_ID] async for document in referring}
        for file in files:
            if file[GridFSField.ID] in referenced:
                continue
            metadata = file.get(GridFSField.METADATA) or {}
            owner = metadata.get(Field.OWNER)
            if metadata.get(GridFSField.REWRITE) is True or not isinstance(owner, str):
                report.orphans += 1
                continue
            await self._persistence.delete_owned_files(owner, [file[GridFSField.ID]])
            report.leftovers_removed += 1


def _after(key: tuple[str, ...], last: dict[str, Any]) -> dict[str, Any]:
    """The keyset condition "after ``last``" on the unique ``key`` (compared field by
    field, as the unique index orders them), so a pass never meets a document twice."""
    clauses = []
    for depth, name in enumerate(key):
        clause = {earlier: last[earlier] for earlier in key[:depth]}
        clause[name] = {"$gt": last[name]}
        clauses.append(clause)
    return {"$or": clauses}
