"""The one persistence object: the collections, and every operation that spans documents.

Both stores (``MongoStore`` and ``GridFSAttachmentStore``), the purges and the orphan sweep
reach MongoDB through a :class:`Persistence` and its public methods, so each rule lives here
once:

- owner scoping: :meth:`Persistence.begin` turns a request context into the owner every
  filter starts with, after refusing a closed store and making sure the indexes exist;
- visibility: with retention on, :meth:`Persistence.visible` and :meth:`Persistence.alive`
  hide documents whose thread has expired before the server's TTL pass deletes them;
- expiry stamping: :meth:`Persistence.expiry` and :meth:`Persistence.save_thread` carry a
  thread's one expiry date to each of its documents (the dates come from the pure
  :class:`~chatkit_mongo.retention.Retention` policy);
- the erase cascade: :meth:`Persistence.erase`, the only code that deletes a thread's or an
  owner's documents (``delete_thread``, ``purge_owner`` and ``purge_inactive`` all call it);
- GridFS bytes: :meth:`Persistence.delete_owned_files`, the only way an owner's bytes are
  deleted (the ownership proof of :mod:`chatkit_mongo._gridfs`, then chunks before the
  ``files`` document); :meth:`Persistence.delete_unreferenced_files` for the sweep's orphans,
  in the same order;
- uploads: :meth:`Persistence.insert_pending`, :meth:`Persistence.claim_upload`,
  :meth:`Persistence.renew_upload`, :meth:`Persistence.complete_upload` and
  :meth:`Persistence.release_upload`;
- content: :meth:`Persistence.seal` and :meth:`Persistence.unseal`, the one place the
  ``data`` sub-document is turned into what is stored and back (with encryption on, a
  ciphertext under the owner's data key; see :mod:`chatkit_mongo._encryption`).

Why one object rather than helpers on each store: the attachment store, the purges and the
sweep would otherwise reach into the metadata store's private state (they used to), and the
cascade and the GridFS delete order existed twice and disagreed.

The public seam for instrumentation and fault injection is ``wrap_collection``: a callable
``(kind, collection) -> collection`` applied once to each collection handle when it is made.
It costs nothing per call (no extra await, no indirection unless the wrapper adds one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final

from chatkit.store import NotFoundError
from chatkit.types import Attachment
from pymongo import ReturnDocument
from pymongo.errors import ConnectionFailure

from . import _queries as queries
from ._checks import check_id, check_optional_id
from ._codec import ATTACHMENT_ADAPTER, check_document, dump, parse_attachment
from ._driver import AsyncDatabaseLike, shielded
from ._gridfs import erasable_file_ids
from ._queries import Find
from ._readable import read
from ._retry import retried
from ._single_flight import OncePerClient
from ._telemetry import note
from ._text import plural
from .errors import CiphertextError, EncryptionConfigError, StoreClosedError, UploadConflictError
from .operations.indexes import IndexStatus, ensure_indexes
from .owner import OwnerResolver, default_owner, resolve_owner
from .retention import Retention
from .schema import (
    DOCUMENT_KINDS,
    MODEL_KINDS,
    CollectionNames,
    Field,
    GridFSField,
    Kind,
    UploadField,
    bucket_collections,
    document_kind,
    index_specs,
    sort_key_id,
    utc_naive,
)

if TYPE_CHECKING:  # Why only then: the engine imports libmongocrypt's bindings, which a
    # store without encryption (and the CLI's --help) should not pay for.
    from ._encryption import OwnerEncryption

Parse = Callable[[Any], Any]
"""A stored ``data``'s parse into its ChatKit model (see :mod:`chatkit_mongo._codec`)."""
CollectionWrapper = Callable[[Kind, Any], Any]
"""``(kind, collection) -> collection``: applied once to each collection handle; the public
place for instrumentation (counting calls) and for tests that inject driver faults."""

_EXPIRY_ONLY: Final[dict[str, Any]] = {Field.EXPIRES_AT: 1, "_id": 0}
_THREAD_MEMBERS: Final[tuple[Kind, ...]] = ("item", "attachment")


@dataclass
class PurgeCounts:
    """How many documents an erase removed (or, for a dry run, would remove): one field
    per kind of document, named as its registry entry's collection."""

    threads: int = 0
    items: int = 0
    attachments: int = 0
    files: int = 0
    chunks: int = 0

    def add(self, other: PurgeCounts) -> None:
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def record(self, kind: Kind, count: int) -> None:
        setattr(self, document_kind(kind).collection, count)

    def describe(self) -> str:
        return ", ".join(
            plural(getattr(self, kind.collection), kind.name) for kind in DOCUMENT_KINDS
        )


def _unwrapped(kind: Kind, collection: Any) -> Any:
    return collection


class Persistence:
    """The collections of one store (and its GridFS bucket) and the operations on them."""

    # Why a class-level registry: applications often build a store per request or per
    # tenant over one shared client. Indexes then need checking once per client and
    # collection set, not once per store, and the first calls after a start-up share one
    # check however many arrive at once (see _single_flight).
    _index_checks: ClassVar[OncePerClient] = OncePerClient()

    def __init__(
        self,
        database: AsyncDatabaseLike,
        collections: CollectionNames,
        *,
        owner: OwnerResolver | None = None,
        retention: Retention | None = None,
        auto_create_indexes: bool = True,
        wrap_collection: CollectionWrapper | None = None,
        encryption: OwnerEncryption | None = None,
    ) -> None:
        self.database: Final = database
        self.collections: Final = collections
        self.retention: Final = retention
        self.encryption: Final = encryption
        """The engine that seals content, or None: content is stored as it is."""
        self._owner_of: OwnerResolver = owner or default_owner
        self._wrap: CollectionWrapper = wrap_collection or _unwrapped
        names = collections.by_kind(MODEL_KINDS)
        self._handles: dict[Kind, Any] = {
            kind: self._wrap(kind, database[name]) for kind, name in names.items()
        }
        # Why the key vault is part of the key: a store without encryption (or with
        # another vault) that checked these collections first must not make this one
        # skip its vault's index, without which every owner's first write is refused.
        vault = "" if encryption is None else encryption.config.key_vault_namespace
        self._index_key = (database.name, *names.values(), str(retention is not None), vault)
        self._indexes_checked = not auto_create_indexes
        self._auto_create_indexes = auto_create_indexes
        self._closed = False
        # Why the bucket is opt-in: a store without attachment bytes pays nothing for
        # them in delete_thread; the attachment store (or a purge) names its bucket.
        self._bucket: str | None = None

    # ------------------------------------------------------------------ handles

    def collection(self, kind: Kind) -> Any:
        """The (wrapped) handle of a collection; ``file``/``chunk`` need :meth:`use_bucket`."""
        return self._handles[kind]

    def use_bucket(self, bucket: str) -> None:
        """Include the GridFS bucket ``bucket`` in the erase cascade and the byte deletes."""
        if self._bucket == bucket:
            return
        if self._bucket is not None:
            raise ValueError(
                f"this store's bytes live in bucket {self._bucket!r}; one store, one bucket"
            )
        files, chunks = bucket_collections(bucket)
        self._handles["file"] = self._wrap("file", self.database[files])
        self._handles["chunk"] = self._wrap("chunk", self.database[chunks])
        self._bucket = bucket
        if bucket != self.collections.bucket:
            # Why: this library writes the bytes itself (``_gridfs.write_file``), not
            # through the driver's upload stream, which made the GridFS specification's
            # indexes on a first upload; another bucket's join the store's index check.
            self._index_key = (*self._index_key, bucket)
            self._indexes_checked = not self._auto_create_indexes

    # ------------------------------------------------------------------ lifecycle

    async def begin(self, context: Any) -> str:
        """Every call starts here: refuse a closed store or an owner-less context, and
        make sure the indexes exist (once per client) before anything is written."""
        if self._closed:  # check_open, inline: every call pays this
            self.check_open()
        owner = resolve_owner(self._owner_of, context)
        if not self._indexes_checked:
            # Why a flag of its own on top of the registry: after the first call the hot
            # path costs one attribute read, no lock.
            note("index_check", True)
            await self._index_checks.run(self.database.client, self._index_key, self.ensure_indexes)
            self._indexes_checked = True
        return owner

    def check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("MongoStore is closed")

    def close(self) -> None:
        self._closed = True

    async def ensure_indexes(self) -> list[IndexStatus]:
        """The store's indexes, and with encryption on the key vault's unique index too:
        without it an owner's first write would be refused (see ``OwnerEncryption``)."""
        self.check_open()
        # The bucket's indexes where its bytes are: the one use_bucket named, if any.
        bucket = self._bucket or self.collections.bucket
        report = await ensure_indexes(
            self.database,
            replace(self.collections, bucket=bucket),
            index_specs(self.retention is not None),
        )
        if self.encryption is not None:
            await self.encryption.ensure_key_vault_index()
        self._index_checks.mark_done(self.database.client, self._index_key)
        return report

    # ------------------------------------------------------------------ content

    async def seal(self, owner: str, data: dict[str, Any]) -> Any:
        """The ``data`` field as it is stored: ``data`` itself, or with encryption on
        one ciphertext of it under ``owner``'s data key (made at the owner's first write).

        Why only ``data``: the owner, ids, sort key and dates stay in the clear, so every
        filter, index, page and shard key works on encrypted documents unchanged. Callers
        check sizes on the plaintext: a ciphertext is at most
        ``_encryption.DOCUMENT_OVERHEAD_MAX`` (82) bytes larger, well inside the
        headroom ``_codec`` keeps under MongoDB's limit.
        """
        if self.encryption is None:
            return data
        return await self.encryption.encrypt(owner, data)

    @property
    def strict(self) -> bool:
        """Whether content in the clear is refused (encryption on and strict)."""
        return self.encryption is not None and self.encryption.config.strict

    async def unseal(
        self, owner: str, stored: Any, element_id: str | None = None
    ) -> dict[str, Any] | None:
        """The ``data`` sub-document a stored ``data`` field holds, for ``owner``; None
        when it cannot be read for ``owner`` (its key is shredded, or it was made with
        another owner's key: copied or imported under this owner), which every reader
        reports as not found.

        ``element_id``, the id the document is stored under, binds a ciphertext to its
        place: one whose content names another id (an owner's ciphertext copied over
        another document of the same owner) reads as not found too. Why the check is
        needed: the ciphertext format has no associated data, so the key alone proves
        only the owner, not which of the owner's documents it was written for.

        A plaintext document reads as it is without encryption, and with encryption
        that is not strict (``Encryption(strict=False)``): a store that ran without
        encryption keeps working while ``chatkit-mongo migrate --to encrypted`` converts
        it. With strict encryption (the default) it is a ``CiphertextError`` naming it:
        anyone who can write to the database can write a plaintext, so it proves nothing.
        A ciphertext with encryption off is a configuration error, said as such, never
        a crash in the model's validation.
        """
        if self.encryption is None and isinstance(stored, dict):  # every read without
            return stored  # encryption: no list, no loop
        return (await self.unseal_many(owner, [(stored, element_id)]))[0]

    async def unseal_page(
        self, owner: str, documents: list[dict[str, Any]]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The id and ``data`` of each of a page's ``documents`` that ``owner`` can read,
        in order (see :meth:`unseal`; each is bound to the id its sort key ends with).

        Why one call per page: a page of plaintext documents without encryption, the
        common case, then costs no coroutine per document, and an encrypted page is
        decrypted in one call of the engine (``OwnerEncryption.decrypt_many``). Why the
        id comes with it: a document the running release cannot read is reported by the
        id it is stored under, which its content may lack (cut short).
        """
        ids = [sort_key_id(document[Field.SORT_KEY]) for document in documents]
        if self.encryption is None and all(isinstance(d[Field.DATA], dict) for d in documents):
            return [(i, d[Field.DATA]) for i, d in zip(ids, documents, strict=True)]
        stored = [(d[Field.DATA], i) for d, i in zip(documents, ids, strict=True)]
        opened = await self.unseal_many(owner, stored)
        return [(i, data) for i, data in zip(ids, opened, strict=True) if data is not None]

    async def unseal_many(
        self, owner: str, stored: Sequence[tuple[Any, str | None]]
    ) -> list[dict[str, Any] | None]:
        """:meth:`unseal` of each ``(stored data, element id)``, in order, the
        ciphertexts decrypted in one call of the engine."""
        engine = self.encryption
        for data, element_id in stored:
            if isinstance(data, dict):
                if self.strict:
                    raise CiphertextError(
                        f"the document {element_id or '(no id)'} of owner {owner!r} is stored "
                        "in the clear, and this store's encryption is strict: refused, as "
                        "nothing proves it is the owner's content (encrypt what is left in "
                        "the clear with `chatkit-mongo migrate --to encrypted`)"
                    )
            elif engine is None:
                raise EncryptionConfigError(
                    "a stored document is encrypted, and this store has no encryption "
                    "settings; pass the same encryption= the documents were written with"
                )
        sealed = [data for data, _ in stored if not isinstance(data, dict)]
        opened = iter(await engine.decrypt_many(owner, sealed) if engine and sealed else [])
        readable: list[dict[str, Any] | None] = []
        for data, element_id in stored:
            if isinstance(data, dict):
                readable.append(data)
                continue
            content = next(opened)
            bound = content is None or element_id is None or content.get("id") == element_id
            readable.append(content if bound else None)
        return readable

    async def replacement_guard(
        self, kind: Kind, key: dict[str, Any], owner: str, element_id: str, parse: Parse
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """What a write replacing the ``data`` of the document at ``key`` must also
        match, and the content stored there now (None when there is none to keep).

        :class:`~chatkit_mongo.UnreadableDocumentError` when the stored document is
        one the running ChatKit release cannot read: a write never replaces what it
        could not have read (a newer release's item under a colliding id, a document
        being repaired by hand). The condition is the stored ``data`` exactly (none
        stored: that there still is none), so a document changed between this read and
        the write is never overwritten: the write matches nothing, its upsert meets the
        unique key index, and the caller reads again.

        Why a read before the write: the caller keeps the stored fields its release does
        not know (see :func:`~chatkit_mongo._readable.unknown_fields`), which neither a
        ``$set`` of ``data`` nor, with encryption, the server can merge. A document no
        key can read for ``owner`` (see :meth:`unseal`) holds nothing to keep, and is
        replaced as it always was.
        """
        stored = await self._handles[kind].find_one(key, {Field.DATA: 1, "_id": 0})
        if stored is None:
            return {Field.DATA: {"$exists": False}}, None
        sealed = stored[Field.DATA]
        match = {Field.DATA: {"$eq": sealed}}
        content = await self.unseal(owner, sealed, element_id)
        if content is None:
            return match, None
        read(parse, content, self.collections.name_of(kind), element_id)
        return match, content

    # ------------------------------------------------------------------ visibility, expiry

    def alive(self) -> dict[str, Any]:
        """The filter every read adds so expired documents are gone: none without retention."""
        return {} if self.retention is None else queries.alive(self.retention.now())

    def visible(self, find: Find) -> Find:
        """``find`` exactly as the store sends it: restricted to living documents."""
        return find if self.retention is None else queries.visible(find, self.retention.now())

    async def find_one(self, find: Find) -> dict[str, Any] | None:
        find = self.visible(find)
        document: dict[str, Any] | None = await self._handles[find.kind].find_one(
            find.filter, find.projection
        )
        return document

    async def find_page(self, find: Find) -> list[dict[str, Any]]:
        find = self.visible(find)
        cursor = self._handles[find.kind].find(find.filter, find.projection)
        documents: list[dict[str, Any]] = (
            await cursor.sort(list(find.sort)).limit(find.limit).to_list(None)
        )
        return documents

    async def expiry(self, owner: str, thread_id: str | None) -> dict[str, Any]:
        """With retention on, the expiry field a document of ``thread_id`` is written with
        (its thread's, extended if due); a document of no thread lives ``retention`` from
        now. With retention off, nothing: no field, no round trip.

        One read when the thread's expiry is fresh. A thread that does not exist or has
        expired is left alone (touching it would bring it back): the document then
        expires on its own, ``N`` after ``now``, and is re-stamped if the thread is saved.
        """
        retention = self.retention
        if retention is None:
            return {}
        now = retention.now()
        if thread_id is None:
            return {Field.EXPIRES_AT: retention.deadline(now)}
        scope = queries.thread_filter(owner, thread_id)
        thread = await self._handles["thread"].find_one(
            {**scope, **queries.alive(now)}, _EXPIRY_ONLY
        )
        if thread is None:
            return {Field.EXPIRES_AT: retention.deadline(now)}
        previous = thread.get(Field.EXPIRES_AT)
        if previous is not None and retention.is_fresh(previous, now):
            return {Field.EXPIRES_AT: utc_naive(previous)}
        return {Field.EXPIRES_AT: await self._extend(retention, scope, previous, now)}

    async def save_thread(
        self, scope: dict[str, Any], fields: dict[str, Any], match: dict[str, Any]
    ) -> None:
        """Upsert the thread's fields where the stored thread still matches ``match``
        (see :meth:`replacement_guard`). With retention on, extend its expiry if due (one
        round trip when it is fresh), and a new thread adopts any of its documents written
        before it (ChatKit never does that, the Store API allows it)."""
        threads = self._handles["thread"]
        retention = self.retention
        if retention is None:
            await shielded(threads.update_one({**scope, **match}, {"$set": fields}, upsert=True))
            return
        now = retention.now()
        deadline = retention.deadline(now)
        before = await shielded(
            threads.find_one_and_update(
                {**scope, **match},
                {"$set": fields, "$setOnInsert": {Field.EXPIRES_AT: deadline}},
                projection=_EXPIRY_ONLY,
                upsert=True,
            )
        )
        if before is None:
            await shielded(self._restamp(scope, deadline, now))
            return
        previous = before.get(Field.EXPIRES_AT)
        if previous is None or not retention.is_fresh(previous, now):
            await self._extend(retention, scope, previous, now)

    async def _extend(
        self, retention: Retention, scope: dict[str, Any], previous: datetime | None, now: datetime
    ) -> datetime:
        """Move the thread's expiry from ``previous`` to ``now + N``, with its documents.

        Why the documents first, the thread last: should the process die in between,
        the thread keeps its earlier expiry, so it goes no later than its items, and the
        next activity finds it due and does the whole move again. Why the thread's move
        is conditional on ``previous``: of two writers refreshing at once, one moves it;
        the other reads the winner's date back instead of overwriting it.
        """
        deadline = retention.deadline(now)
        threads = self._handles["thread"]

        async def restamp_then_move() -> bool:
            await self._restamp(scope, deadline, now)
            moved = await threads.update_one(
                {**scope, Field.EXPIRES_AT: previous}, {"$set": {Field.EXPIRES_AT: deadline}}
            )
            return bool(moved.matched_count)

        if await shielded(restamp_then_move()):
            return deadline
        current = await threads.find_one(scope, _EXPIRY_ONLY)
        stored = None if current is None else current.get(Field.EXPIRES_AT)
        return deadline if stored is None else utc_naive(stored)

    async def _restamp(self, scope: dict[str, Any], deadline: datetime, now: datetime) -> None:
        """Give the thread's living items and attachments the new expiry.

        Why ``$max``: a concurrent refresh with a later date is never undone. Why only
        living documents: an expired item must not come back because its thread is saved
        again before the TTL pass has deleted it.
        """
        for kind in _THREAD_MEMBERS:
            await self._handles[kind].update_many(
                {**scope, **queries.alive(now)}, {"$max": {Field.EXPIRES_AT: deadline}}
            )

    # ------------------------------------------------------------------ attachments

    def attachment_document(
        self, owner: str, attachment: Attachment
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The attachment's key and the fields its metadata is stored with, checked.

        ``thread_id`` is copied to the top level so that the erase cascade finds the
        thread's attachments through an index.
        """
        attachment_id = check_id(attachment.id, "attachment.id")
        what = f"attachment {attachment_id}"
        key = queries.attachment_filter(owner, attachment_id)
        thread_id = check_optional_id(attachment.thread_id, "attachment.thread_id")
        fields = {
            **key,
            Field.THREAD_ID: thread_id,
            Field.DATA: dump(attachment, ATTACHMENT_ADAPTER, what),
        }
        check_document(fields, what)
        return key, fields

    async def sealed_attachment_document(
        self, owner: str, attachment: Attachment
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """:meth:`attachment_document` with its ``data`` as stored (:meth:`seal`)."""
        key, fields = self.attachment_document(owner, attachment)
        fields[Field.DATA] = await self.seal(owner, fields[Field.DATA])
        return key, fields

    def read_attachment(self, data: dict[str, Any], attachment_id: str) -> Attachment:
        """The attachment ``data`` holds, or :class:`~chatkit_mongo.UnreadableDocumentError`
        when the running ChatKit release cannot read it."""
        return read(parse_attachment, data, self.collections.name_of("attachment"), attachment_id)

    async def insert_pending(
        self, owner: str, attachment: Attachment, declared_size: int | None
    ) -> None:
        """Metadata and the awaiting marker in one insert: never a half-made attachment.

        Insert, not upsert: a fresh 96-bit id, so nothing stored can be overwritten.
        """
        _, fields = await self.sealed_attachment_document(owner, attachment)
        fields |= await self.expiry(owner, attachment.thread_id)
        pending = {
            UploadField.STATE: UploadField.AWAITING,
            UploadField.DECLARED_SIZE: declared_size,
            UploadField.PENDING_SINCE: datetime.now(UTC),
        }
        await shielded(self._handles["attachment"].insert_one({**fields, **pending}))

    async def claim_upload(
        self, key: dict[str, Any], attachment_id: str, file_id: str, lease: timedelta
    ) -> dict[str, Any]:
        """Awaiting -> receiving, with a fresh file id, in one atomic update; or a
        receiving attachment whose upload has not renewed its ``lease`` taken over.

        Why: two uploads to one attachment can then never both write, and the file id is
        on record before any chunk exists, so nothing written can go unaccounted for.
        Why a lease: an upload whose hand-back failed (the network down, PyMongo's pool
        paused) would otherwise leave the attachment receiving, and every retry refused,
        until the sweep. A live upload renews it (:meth:`renew_upload`); the one taken
        over can no longer complete (its completion names its own file id) and its bytes
        are left to the orphan sweep.
        Why shielded: a claim the caller stopped waiting for may still land (Motor runs
        it in a thread; PyMongo Async may have sent it). Unshielded, the release would
        run first, find nothing to hand back, and the claim would then leave the
        attachment receiving for an upload that is gone: every retry refused.
        Waiting for the claim's end orders the release after it.
        """
        attachments = self._handles["attachment"]
        alive = self.alive()
        now = datetime.now(UTC)
        claimable = [
            {UploadField.STATE: UploadField.AWAITING},
            {
                UploadField.STATE: UploadField.RECEIVING,
                UploadField.PENDING_SINCE: {"$lt": now - lease},
            },
        ]
        claimed: dict[str, Any] | None = await shielded(
            attachments.find_one_and_update(
                {**key, "$or": claimable, **alive},
                {
                    "$set": {
                        UploadField.STATE: UploadField.RECEIVING,
                        UploadField.FILE_ID: file_id,
                        UploadField.PENDING_SINCE: now,
                    }
                },
                return_document=ReturnDocument.AFTER,
            )
        )
        if claimed is not None:
            return claimed
        current = await attachments.find_one({**key, **alive}, {UploadField.STATE: 1})
        if current is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        if current.get(UploadField.STATE) == UploadField.RECEIVING:
            raise UploadConflictError(f"an upload to attachment {attachment_id} is under way")
        raise UploadConflictError(f"attachment {attachment_id} already has its bytes")

    async def renew_upload(self, key: dict[str, Any], attachment_id: str, file_id: str) -> None:
        """Renew the lease of the upload of ``file_id``: ``UploadConflictError`` if
        another upload took the attachment over meanwhile (or it is gone)."""
        renewed = await shielded(
            self._handles["attachment"].update_one(
                {**key, UploadField.STATE: UploadField.RECEIVING, UploadField.FILE_ID: file_id},
                {"$set": {UploadField.PENDING_SINCE: datetime.now(UTC)}},
            )
        )
        if not renewed.matched_count:
            raise UploadConflictError(
                f"the upload to attachment {attachment_id} lost its claim: it renewed its "
                "lease too late, and another upload took it over (or it was deleted)"
            )

    async def complete_upload(
        self, key: dict[str, Any], attachment_id: str, file_id: str, claimed_data: Any
    ) -> Attachment:
        """Receiving -> complete, only if this upload still holds the claim; clears the
        upload descriptor inside the metadata and nothing else there.

        ``claimed_data`` is the ``data`` field as :meth:`claim_upload` returned it. A
        plaintext document is cleared in place by path, as always. A ciphertext cannot
        be changed by path: it is decrypted, cleared and sealed again, and replaced only
        if it is still the one read (compare-and-swap on the ciphertext), so a
        ``save_attachment`` landing meanwhile is never undone: its metadata is read back
        and cleared in turn. Each round is one conditional update, as without encryption.
        """
        owner = key[Field.OWNER]
        claim = {**key, UploadField.STATE: UploadField.RECEIVING, UploadField.FILE_ID: file_id}
        finish = {"$unset": {UploadField.STATE: "", UploadField.PENDING_SINCE: ""}}
        attachments = self._handles["attachment"]
        not_found = NotFoundError(f"Attachment {attachment_id} not found")
        if isinstance(claimed_data, dict) and not self.strict:
            completed: dict[str, Any] | None = await shielded(
                attachments.find_one_and_update(
                    claim,
                    {"$set": {f"{Field.DATA}.upload_descriptor": None}, **finish},
                    return_document=ReturnDocument.AFTER,
                )
            )
            if completed is None:  # deleted, or swept as abandoned, while the bytes arrived
                raise not_found
            return self.read_attachment(completed[Field.DATA], attachment_id)
        stored = claimed_data
        while True:
            content = await self.unseal(owner, stored, attachment_id)
            if content is None:  # the owner's key was shredded while the bytes arrived
                raise not_found
            content = {**content, "upload_descriptor": None}
            sealed = await self.seal(owner, content)
            swapped = await shielded(
                attachments.update_one(
                    {**claim, Field.DATA: stored}, {"$set": {Field.DATA: sealed}, **finish}
                )
            )
            if swapped.matched_count:
                return self.read_attachment(content, attachment_id)
            current = await attachments.find_one(claim, {Field.DATA: 1})
            if current is None:  # deleted, or swept as abandoned, while the bytes arrived
                raise not_found
            stored = current[Field.DATA]
            if isinstance(stored, dict):  # saved in the clear meanwhile (encryption off)
                return await self.complete_upload(key, attachment_id, file_id, stored)

    async def release_upload(self, key: dict[str, Any], file_id: str) -> dict[str, Any] | None:
        """After a failed upload: let the attachment await again and delete what it wrote;
        or, if this upload completed it after all (a completion whose reply was lost, or
        that a cancellation reached once it was written), keep the bytes and return the
        completed document.

        Why the hand-back first: a process dying in between leaves bytes nothing refers
        to, which the orphan sweep removes. Each step is safe to repeat and retried
        across network faults (:func:`~chatkit_mongo._retry.retried`); should the
        network stay down, the attachment stays receiving until the claim's lease runs
        out, when the next upload takes it over, and the bytes go at the next sweep.
        """
        attachments = self._handles["attachment"]
        claim = {**key, UploadField.FILE_ID: file_id}
        try:
            await retried(
                lambda: attachments.update_one(
                    {**claim, UploadField.STATE: UploadField.RECEIVING},
                    {
                        "$set": {
                            UploadField.STATE: UploadField.AWAITING,
                            UploadField.PENDING_SINCE: datetime.now(UTC),
                        },
                        "$unset": {UploadField.FILE_ID: ""},
                    },
                )
            )
            kept: dict[str, Any] | None = await retried(lambda: attachments.find_one(claim))
            if kept is None:
                await retried(lambda: self.delete_owned_files(key[Field.OWNER], [file_id]))
        except ConnectionFailure:  # left to the lease and the sweep (see above)
            return None
        return kept if kept is not None and UploadField.STATE not in kept else None

    # ------------------------------------------------------------------ bytes

    async def owned_file_ids(self, owner: str, file_ids: list[Any]) -> list[Any]:
        """Those of ``file_ids`` whose bytes ``owner`` may delete (see :mod:`._gridfs`)."""
        return await erasable_file_ids(
            self._handles["file"], self._handles["attachment"], owner, file_ids
        )

    async def delete_owned_files(self, owner: str, file_ids: list[Any]) -> None:
        """The bytes of ``file_ids`` that are ``owner``'s; any other id is left alone.

        Why the check, when the ids come from ``owner``'s own attachments: a reference
        can be wrong (an imported or hand-edited document); another owner's bytes must
        not go because of it. Every delete of an owner's bytes comes through here.
        """
        await self._delete_files(await self.owned_file_ids(owner, file_ids))

    async def delete_unreferenced_files(self, file_ids: list[Any]) -> None:
        """GridFS files no attachment refers to (the sweep's orphans), in the one order."""
        await self._delete_files(file_ids)

    async def _delete_files(self, file_ids: list[Any]) -> None:
        """GridFS files by id, in the one order of :meth:`_byte_deletes`."""
        if not file_ids:
            return
        for _, collection, filter_ in self._byte_deletes(file_ids):
            await collection.delete_many(filter_)

    def _byte_deletes(self, file_ids: list[Any]) -> list[tuple[Kind, Any, dict[str, Any]]]:
        """The deletes of GridFS files by id: the chunks, then the ``files`` documents.

        Why plain deletes and not ``bucket.delete``: they take many ids in one round trip,
        never raise for a file already gone, and also remove chunks of a write that never
        reached its ``files`` document. Why the chunks first (the GridFS spec deletes the
        ``files`` document first): the ``files`` document, with its owner, is how purge
        finds an owner's bytes, so a delete cut short leaves it to find; no download
        reaches the file meanwhile, as every caller has unlinked it or is deleting its
        attachment.
        """
        return [
            ("chunk", self._handles["chunk"], {GridFSField.FILES_ID: {"$in": file_ids}}),
            ("file", self._handles["file"], {GridFSField.ID: {"$in": file_ids}}),
        ]

    # ------------------------------------------------------------------ the erase cascade

    async def erase(
        self,
        owner: str,
        scope: dict[str, Any],
        *,
        files_filter: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> PurgeCounts:
        """Delete (or count) the documents of ``scope`` and ``owner``'s bytes: the files
        the attachments of ``scope`` refer to (each through the ownership proof), and the
        GridFS files of ``files_filter`` (files documents naming ``owner``).

        The one cascade, used by ``delete_thread`` and both purges. Why the children go
        first and the thread last: should the process stop halfway, a second run still
        finds the thread, and through it what is left of it. Deleting the thread first
        would hide it, but leave items and bytes that nothing points to any more, which a
        data-protection erasure must never do. Why the bytes before the attachments: the
        attachments find the bytes. Why the bytes are also found through each erased
        attachment's ``file_id``: an upload killed mid-stream has written chunks but not
        yet its files document (the driver writes it last), so its ``file_id`` is then
        the only way to those chunks. Without a bucket (:meth:`use_bucket`) no byte is
        looked for and the cascade costs three deletes.
        """
        file_ids: list[Any] = []
        if self._bucket is not None:
            file_ids = await self._erasable_files(owner, scope, files_filter)
        ordered = self._byte_deletes(file_ids) if file_ids else []
        ordered += [(kind, self._handles[kind], scope) for kind in ("attachment", "item")]
        ordered.append(("thread", self._handles["thread"], scope))
        counts = PurgeCounts()
        if dry_run:
            for kind, collection, filter_ in ordered:
                counts.record(kind, await collection.count_documents(filter_))
            return counts

        async def delete_in_order() -> None:
            for kind, collection, filter_ in ordered:
                result = await collection.delete_many(filter_)
                counts.record(kind, result.deleted_count)

        await shielded(delete_in_order())
        return counts

    async def _erasable_files(
        self, owner: str, scope: dict[str, Any], files_filter: dict[str, Any] | None
    ) -> list[Any]:
        file_ids: list[Any] = []
        if files_filter is not None:
            found = self._handles["file"].find(files_filter, {GridFSField.ID: 1})
            file_ids = [document[GridFSField.ID] async for document in found]
        known = set(file_ids)
        referrers = self._handles["attachment"].find(
            {**scope, UploadField.FILE_ID: {"$ne": None}}, {UploadField.FILE_ID: 1, "_id": 0}
        )
        referenced = [
            document[UploadField.FILE_ID]
            async for document in referrers
            if document[UploadField.FILE_ID] not in known
        ]
        if referenced:
            file_ids += await self.owned_file_ids(owner, referenced)
        return file_ids
