"""``GridFSAttachmentStore``: attachment bytes in GridFS, beside the conversation.

Why GridFS: the bytes then live in the same database, backups and access rules as the
threads that mention them, and travel in 255 KiB chunks, so neither an upload nor a
download holds a whole file in memory.

How an upload stays all-or-nothing: the attachment document is *claimed* first (its
state goes from awaiting to receiving, and it records the GridFS id of this attempt)
before a single chunk is written. The bytes are streamed under that fresh id, then the
state is cleared. Any failure or cancellation deletes the chunks of that id and hands
the attachment back to awaiting (retried across network faults), unless the completion
landed and only its reply was lost: the upload then returns the attachment. A claim is
a lease the upload renews as bytes arrive; one whose hand-back failed is taken over by
the next upload once the lease runs out. A process that dies mid-way leaves a record
the orphan sweep finds. Downloads only ever follow a completed attachment's id.

Why ownership lives in the attachment document: every lookup starts from it with the
owner in the filter (through the store's unique ``owner, attachment_id`` index), and the
GridFS file also carries its owner and attachment in ``metadata``, checked again on
download and before any delete (:mod:`chatkit_mongo._gridfs`): a ``file_id`` that
points at another owner's bytes reaches nothing.

With encryption (the MongoStore's ``encryption=``), a file holds the owner's encrypted
stream bound to the attachment id (``_encryption``), is flagged ``metadata.encrypted``,
and is named after the attachment id, the name living only in the sealed metadata.
Limits count plaintext as it arrives; downloads know the exact plaintext length from
the final record, and hand out only authenticated bytes. :meth:`reseal_bytes` rewrites
one attachment's bytes from one form to the other, for the migration.
"""

from __future__ import annotations

import re
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from contextlib import aclosing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol

from chatkit.store import AttachmentStore, NotFoundError
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ImageAttachment,
)
from gridfs import DEFAULT_CHUNK_SIZE
from pymongo.errors import ConnectionFailure

from . import _queries as queries
from ._checks import check_id, check_positive_int
from ._driver import maybe_await, shielded
from ._gridfs import StoredFile, find_file, read_file, write_file
from ._retry import retried
from ._telemetry import Target, traced
from ._text import plural
from .errors import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    CiphertextError,
    EncryptionConfigError,
    IncompleteUploadError,
    KeyUnavailableError,
)
from .schema import (
    Field,
    GridFSField,
    UploadField,
    file_id_time,
    owner_file_id,
)
from .store import MongoStore, TContext, new_id

if TYPE_CHECKING:  # the engine is imported only where bytes are encrypted (see store._engine)
    from ._encryption import OwnerEncryption

DEFAULT_MAX_BYTES: Final = 32 * 1024 * 1024
"""Large enough for documents and photos a model reads; raise it for bigger files."""
SWEEP_BATCH: Final = 1000
"""GridFS files the orphan sweep looks at (and deletes) per batch, by default: about
70 KB of ids per command."""
DEFAULT_ABANDONED_AFTER: Final = timedelta(hours=24)
"""Longer than any honest upload takes, short enough that dead uploads do not pile up."""
DEFAULT_UPLOAD_LEASE: Final = timedelta(minutes=2)
"""How long an upload's claim holds without renewal. A live upload renews it a few
times per lease as its bytes arrive, so a slow client keeps it; one whose hand-back
failed (the network down, PyMongo's pool paused) blocks retries no longer than this."""
_RENEWALS_PER_LEASE: Final = 4
"""A live upload renews its lease after a quarter of it has passed: three renewals may
be slow or lost before another upload can take it over."""
_READ_SIZE: Final = DEFAULT_CHUNK_SIZE
"""Read file-like sources one GridFS chunk at a time: files are written in whole chunks."""
_MIME_TYPE: Final = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")

UrlFor = Callable[[str, Any], str]
"""``(attachment_id, context) -> absolute URL``."""


class Readable(Protocol):
    """A file-like source: ``read(size)`` returning bytes, or awaitable bytes."""

    def read(self, size: int, /) -> bytes | Awaitable[bytes]: ...


UploadData = bytes | bytearray | memoryview | AsyncIterable[bytes] | Readable
"""What :meth:`GridFSAttachmentStore.upload` streams: bytes, chunks, or a file-like."""


@dataclass(frozen=True)
class Download:
    """An attachment's metadata, its length in bytes and its bytes as chunks."""

    attachment: Attachment
    length: int
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True)
class SweepReport:
    """What :meth:`GridFSAttachmentStore.sweep_orphans` removed."""

    abandoned_uploads: int
    """Attachments that waited for their bytes too long: metadata and partial bytes."""
    orphaned_files: int
    """GridFS files no attachment refers to any more."""
    orphaned_chunk_sets: int
    """Chunks of files whose ``files`` document is gone (an interrupted write or delete)."""
    unused_attachments: int = 0
    """Complete attachments no message ever used, with their bytes (``unused_after``)."""


class GridFSAttachmentStore(AttachmentStore[TContext], Generic[TContext]):
    """ChatKit's :class:`~chatkit.store.AttachmentStore` with the bytes in GridFS.

    The metadata goes through ``store`` (a :class:`~chatkit_mongo.MongoStore`), owned by
    the context's owner like everything else; the bytes go to the GridFS bucket
    ``bucket_name`` (default: the store's ``collections.bucket``), written and read as
    the GridFS specification lays them out (see ``_gridfs``), so any GridFS reader, the
    drivers' buckets included, reads them. Building it registers it with ``store``, so
    ``store.delete_thread`` removes the bytes of the thread's attachments as well.
    """

    def __init__(
        self,
        store: MongoStore[TContext],
        *,
        upload_url: UrlFor,
        preview_url: UrlFor | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        allowed_mime_types: Iterable[str] | None = None,
        bucket_name: str | None = None,
        upload_lease: timedelta = DEFAULT_UPLOAD_LEASE,
    ) -> None:
        """Args:
        store: the MongoStore that holds the attachment metadata.
        upload_url: where the client sends the bytes of a two-phase upload.
        preview_url: where an image is shown from. Without it, images are stored as
            ``FileAttachment``: ChatKit's ``ImageAttachment`` requires a preview URL.
        max_bytes: the largest attachment accepted, counted while streaming.
        allowed_mime_types: e.g. ``["image/*", "application/pdf"]``; None allows any.
        bucket_name: the GridFS bucket; defaults to ``store.collections.bucket``.
        upload_lease: how long an upload's claim on an attachment holds unless renewed
            (see :data:`DEFAULT_UPLOAD_LEASE`); past it, another upload may take over.
        """
        check_positive_int(max_bytes, "max_bytes")
        _check_positive_duration(upload_lease, "upload_lease")
        self.upload_lease: Final = upload_lease
        self.store: Final = store
        self.max_bytes: Final = max_bytes
        self.allowed_mime_types: Final = (
            None
            if allowed_mime_types is None
            else frozenset(_allowed_pattern(p) for p in allowed_mime_types)
        )
        self.bucket_name: Final = bucket_name or store.collections.bucket
        self._upload_url = upload_url
        self._preview_url = preview_url
        # Why a registration: the attachment store is built from the metadata store and
        # knows the bucket; from now on the store's erase cascade removes bytes too.
        self._persistence = store.persistence
        self._persistence.use_bucket(self.bucket_name)
        self._attachments = self._persistence.collection("attachment")
        self._files = self._persistence.collection("file")
        self._chunks = self._persistence.collection("chunk")

    @property
    def telemetry_target(self) -> Target:
        """Its store's: the attachment metadata's collection names each span."""
        return self.store.telemetry_target

    # ------------------------------------------------------------------ ChatKit API

    def generate_attachment_id(self, mime_type: str, context: TContext) -> str:
        return new_id("attachment")

    @traced("create_attachment", "attachment")
    async def create_attachment(
        self, input: AttachmentCreateParams, context: TContext
    ) -> Attachment:
        """Two-phase upload, phase one: save the metadata, awaiting its bytes.

        The MIME type and declared size are checked here, so a refused file is never
        sent at all; the upload checks them again against the bytes that arrive.
        """
        owner = await self.store.persistence.begin(context)
        mime_type = self._check_mime_type(input.mime_type)
        size = input.size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be a non-negative int, got {size!r}")
        if size > self.max_bytes:
            raise AttachmentTooLargeError(
                f"{input.name!r} is {size} bytes; attachments may hold at most {self.max_bytes}"
            )
        attachment_id = self.generate_attachment_id(mime_type, context)
        descriptor = AttachmentUploadDescriptor.model_validate(
            {"url": self._upload_url(attachment_id, context), "method": "POST"}
        )
        attachment = self._new(attachment_id, input.name, mime_type, descriptor, context)
        await self._persistence.insert_pending(owner, attachment, size)
        return attachment

    @traced("upload", "attachment")
    async def upload(self, attachment_id: str, data: UploadData, context: TContext) -> Attachment:
        """Two-phase upload, phase two: stream ``data`` into GridFS; return the metadata.

        Refused (and nothing kept) when the bytes pass ``max_bytes`` or the declared
        size, fall short of the declared size, the MIME type is not allowed, the
        attachment already has its bytes or is receiving them (within the ``upload_lease``
        of that other upload), or it is not the caller's
        (:class:`~chatkit.store.NotFoundError`). Should the reply of its completion be
        lost, the attachment is read back, and returned if the upload did complete it.
        """
        owner = await self.store.persistence.begin(context)
        key = queries.attachment_filter(owner, check_id(attachment_id, "attachment_id"))
        return await self._upload(owner, key, attachment_id, owner_file_id(owner), data)

    @traced("create_and_upload", "attachment")
    async def create_and_upload(
        self, name: str, mime_type: str, data: UploadData, context: TContext
    ) -> Attachment:
        """Direct upload: create the attachment and store its bytes in one call.

        On any refusal or failure neither the metadata nor any byte is left behind.

        Why an upload whose completion reply was lost returns the attachment, rather than
        deleting it and raising: the bytes are whole and recorded, and the caller, told
        of a failure, would only send them again. It is read back by its id (fresh, so
        only this call knows it) before the error could reach the caller. Whatever is
        left after any other failure (or a cancellation, which no caller waits for) is
        deleted: the metadata, whatever its state, then the bytes. Each step of that is
        retried across network faults; should they all fail, an upload still pending is
        removed by the sweep once past its cut-off, and, only if the completion had
        landed and every later command failed, the complete attachment that nobody has
        the id of by the sweep's ``unused_after`` option.
        """
        owner = await self.store.persistence.begin(context)
        mime_type = self._check_mime_type(mime_type)
        attachment_id = self.generate_attachment_id(mime_type, context)
        attachment = self._new(attachment_id, name, mime_type, None, context)
        key = queries.attachment_filter(owner, attachment_id)
        # Chosen here, so that the clean-up knows which bytes are this call's.
        file_id = owner_file_id(owner)
        try:
            await self._persistence.insert_pending(owner, attachment, None)
            return await self._upload(owner, key, attachment_id, file_id, data)
        except BaseException:
            await shielded(self._discard(owner, key, file_id))
            raise

    @traced("open_download", "attachment")
    async def open_download(self, attachment_id: str, context: TContext) -> Download:
        """The caller's attachment with its length and chunks, or ``NotFoundError``.

        Attachments still waiting for their bytes, and other owners' ones, are not found.
        With encryption, so is one the owner cannot read: its key shredded, or bytes
        made for another attachment or owner; all of that is known before any byte is
        handed out. ``length`` counts plaintext bytes. Bytes that fail their integrity
        check further on raise :class:`~chatkit_mongo.errors.CiphertextError` while
        streaming, never hand out an unauthenticated byte, and hold back the final
        piece until the whole stream is proved complete.
        """
        owner = await self.store.persistence.begin(context)
        key = queries.attachment_filter(owner, check_id(attachment_id, "attachment_id"))
        document = await self._attachments.find_one(self._complete(key))
        not_found = NotFoundError(f"Attachment {attachment_id} not found")
        if document is None:
            raise not_found
        content = await self._persistence.unseal(owner, document[Field.DATA], attachment_id)
        if content is None:
            raise not_found
        attachment = self._persistence.read_attachment(content, attachment_id)
        stored = await self._open_bytes(owner, attachment_id, document[UploadField.FILE_ID])
        return Download(attachment, stored.length, stored.chunks)

    @traced("read_bytes", "attachment")
    async def read_bytes(self, attachment_id: str, context: TContext) -> bytes:
        """The whole attachment in memory: for small files fed to a model."""
        download = await self.open_download(attachment_id, context)
        return b"".join([chunk async for chunk in download.chunks])

    @traced("delete_attachment", "attachment")
    async def delete_attachment(self, attachment_id: str, context: TContext) -> None:
        """Remove the attachment's bytes; idempotent. The metadata stays for the store.

        Another owner's attachment is left alone without saying whether it exists.
        """
        owner = await self.store.persistence.begin(context)
        key = queries.attachment_filter(owner, check_id(attachment_id, "attachment_id"))

        async def unlink_then_delete() -> None:
            # The reference goes first: a process dying in between leaves bytes that no
            # attachment refers to, which the orphan sweep removes.
            previous = await self._attachments.find_one_and_update(
                {**key, UploadField.FILE_ID: {"$ne": None}},
                {"$unset": {UploadField.FILE_ID: ""}},
                projection={UploadField.FILE_ID: 1},
            )
            if previous is not None:
                await self._persistence.delete_owned_files(owner, [previous[UploadField.FILE_ID]])

        await shielded(unlink_then_delete())

    # ------------------------------------------------------------------ maintenance

    @traced("reseal_bytes", "attachment")
    async def reseal_bytes(
        self, owner: str, attachment_id: str, *, encrypted: bool | None = None
    ) -> bool:
        """Rewrite one complete attachment's bytes in the store's current form (the
        migration's step): encrypted when the store has ``encryption=``, plain when not;
        ``encrypted`` overrides that (``False`` with encryption on decrypts: the reverse
        migration, which needs the key to read). True if the bytes were rewritten; False
        if they already were in that form, or the attachment's bytes changed meanwhile
        (deleted, or rewritten by another call) and this call changed nothing.

        Raises ``NotFoundError`` when ``owner`` has no complete attachment
        ``attachment_id`` with bytes it can read (none, still uploading, its file missing
        or another owner's, its key shredded), and ``CiphertextError`` when its encrypted
        bytes fail their integrity check; nothing is changed then.

        How it stays readable whatever stops it: the bytes are streamed (memory bounded,
        decrypted and encrypted piece by piece) into a NEW file, marked as a rewrite;
        then the attachment's ``file_id`` is switched to it by one update that holds only
        if it still names the old file; then the old file is deleted through the
        ownership proof. A stop before the switch leaves the old bytes in place, one
        after it the new ones; what is left over is a file no attachment refers to, which
        the orphan sweep removes (a rewrite's file once older than its cut-off, so a
        rewrite under way is never swept from under it).

        A maintenance call, by owner rather than request context: it expects the
        indexes (and with encryption the key vault's) in place, as ``init`` or
        :meth:`MongoStore.ensure_indexes` leave them.
        """
        self._persistence.check_open()
        engine = self._persistence.encryption
        target = engine is not None if encrypted is None else encrypted
        if target and engine is None:
            raise EncryptionConfigError("encrypted=True needs a store with encryption settings")
        key = queries.attachment_filter(owner, check_id(attachment_id, "attachment_id"))
        document = await self._attachments.find_one(self._complete(key))
        if document is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        old_id = document[UploadField.FILE_ID]
        source = await self._open_bytes(owner, attachment_id, old_id)
        content = None
        if source.encrypted != target:
            try:
                content = await self._persistence.unseal(owner, document[Field.DATA], attachment_id)
            except BaseException:
                await source.close()
                raise
        if content is None:
            await source.close()
            if source.encrypted == target:
                return False
            raise NotFoundError(f"Attachment {attachment_id} not found")
        name = self._persistence.read_attachment(content, attachment_id).name
        new_id = owner_file_id(owner)
        try:
            try:
                await self._store_bytes(
                    owner, attachment_id, name, new_id, source.chunks, encrypt=target, rewrite=True
                )
            finally:
                await source.close()
            switched = await shielded(
                self._attachments.update_one(
                    {**key, UploadField.FILE_ID: old_id}, {"$set": {UploadField.FILE_ID: new_id}}
                )
            )
        except BaseException:
            await shielded(self._drop_unless_referenced(key, new_id))
            raise
        if not switched.matched_count:
            await shielded(self._persistence.delete_owned_files(owner, [new_id]))
            return False
        await shielded(self._persistence.delete_owned_files(owner, [old_id]))
        return True

    @traced("sweep_orphans", "attachment")
    async def sweep_orphans(
        self,
        *,
        abandoned_after: timedelta = DEFAULT_ABANDONED_AFTER,
        now: datetime | None = None,
        batch_size: int = SWEEP_BATCH,
        unused_after: timedelta | None = None,
    ) -> SweepReport:
        """Remove, across all owners, what no finished attachment needs any more.

        1. attachments pending (awaiting or receiving bytes) since before
           ``now - abandoned_after``, with whatever bytes they had received;
        2. GridFS files that no attachment refers to (its metadata was deleted by a
           store that knew no bucket, a delete was interrupted, or, with retention on,
           it expired: the bytes of an expired attachment go at the next sweep, even
           before the server's TTL pass has deleted its metadata); a file written by
           :meth:`reseal_bytes` only once older than the cut-off, as no attachment
           refers to it until the rewrite switches to it;
        3. chunks whose file document is gone and whose id is older than the cut-off;
        4. only with ``unused_after`` (off by default): complete attachments that no
           message uses, whose upload began before ``now - unused_after``, with their
           bytes. "No message uses it": it has no thread. ChatKit creates an attachment
           before the message that uses it, and gives it the message's thread
           (``save_attachment``) before it stores the message; so an attachment without
           a thread is one whose message was never sent, or a direct upload whose
           caller got an error after every command to clean it up had failed. Choose an
           age longer than a user takes to send a message after attaching (a day, say):
           an attachment a user is still composing with would be deleted from under them.
           Each is deleted by its owner and id, and only if it still has no thread, then
           its bytes through the ownership proof: one owner's sweep never touches
           another's data.

        Safe while uploads run: an upload's attachment refers to its file id from before
        its first chunk, and one younger than the cut-off is never touched. GridFS files
        are looked at and deleted ``batch_size`` at a time, so memory and every command
        stay that size however many files the bucket holds.
        """
        check_positive_int(batch_size, "batch_size")
        if unused_after is not None:
            _check_positive_duration(unused_after, "unused_after")
        now = now or datetime.now(UTC)
        cutoff = now - abandoned_after
        unused = 0 if unused_after is None else await self._sweep_unused(now - unused_after)
        return SweepReport(
            abandoned_uploads=await self._sweep_abandoned(cutoff),
            orphaned_files=await self._sweep_unreferenced_files(cutoff, batch_size),
            orphaned_chunk_sets=await self._sweep_chunks_without_file(cutoff, batch_size),
            unused_attachments=unused,
        )

    # ------------------------------------------------------------------ internals

    def _check_mime_type(self, mime_type: object) -> str:
        """The bare, lower-case MIME type (parameters dropped), if it is allowed."""
        if not isinstance(mime_type, str):
            raise AttachmentTypeError(f"mime_type must be a str, not {type(mime_type).__name__}")
        bare = mime_type.split(";", 1)[0].strip().lower()
        if not _MIME_TYPE.fullmatch(bare):
            raise AttachmentTypeError(f"{mime_type!r:.80} is not a MIME type (type/subtype)")
        allowed = self.allowed_mime_types
        if allowed is not None and not {bare, bare.split("/")[0] + "/*", "*/*"} & allowed:
            raise AttachmentTypeError(
                f"attachments of type {bare} are not accepted; allowed: {sorted(allowed)}"
            )
        return bare

    def _new(
        self,
        attachment_id: str,
        name: str,
        mime_type: str,
        descriptor: AttachmentUploadDescriptor | None,
        context: TContext,
    ) -> Attachment:
        if mime_type.startswith("image/") and self._preview_url is not None:
            return ImageAttachment.model_validate(
                {
                    "id": attachment_id,
                    "name": name,
                    "mime_type": mime_type,
                    "upload_descriptor": descriptor,
                    "preview_url": self._preview_url(attachment_id, context),
                }
            )
        return FileAttachment(
            id=attachment_id, name=name, mime_type=mime_type, upload_descriptor=descriptor
        )

    async def _upload(
        self, owner: str, key: dict[str, Any], attachment_id: str, file_id: str, data: UploadData
    ) -> Attachment:
        """Claim the attachment ``key`` for the file ``file_id``, stream ``data`` into it,
        complete it; after a failure, hand the claim back and delete the bytes, unless
        the completion landed: its attachment is then returned, unless the failure was a
        cancellation or the like (``BaseException``), which no caller waits for.

        Why ``file_id`` is chosen by the caller, not the claim: should the claim's reply
        be lost, the release still knows which claim to hand back. Owner first: see
        owner_file_id.
        """
        try:
            claimed = await self._persistence.claim_upload(
                key, attachment_id, file_id, self.upload_lease
            )
            content = await self._persistence.unseal(owner, claimed[Field.DATA], attachment_id)
            if content is None:  # sealed under a key the owner no longer has
                raise NotFoundError(f"Attachment {attachment_id} not found")
            attachment = self._persistence.read_attachment(content, attachment_id)
            self._check_mime_type(attachment.mime_type)
            renewing = _renewing(
                _pieces(data),
                lambda: self._persistence.renew_upload(key, attachment_id, file_id),
                self.upload_lease.total_seconds() / _RENEWALS_PER_LEASE,
            )
            async with aclosing(renewing):
                await self._write(
                    owner, attachment, file_id, renewing, claimed[UploadField.DECLARED_SIZE]
                )
            return await self._persistence.complete_upload(
                key, attachment_id, file_id, claimed[Field.DATA]
            )
        except BaseException as failure:
            completed = await shielded(self._persistence.release_upload(key, file_id))
            if completed is None or not isinstance(failure, Exception):
                raise
            content = await self._persistence.unseal(owner, completed[Field.DATA], attachment_id)
            if content is None:
                raise
            return self._persistence.read_attachment(content, attachment_id)

    async def _discard(self, owner: str, key: dict[str, Any], file_id: str) -> None:
        """Delete the attachment ``key`` whatever its state, then the bytes of ``file_id``:
        what is left of a direct upload whose caller never received its id. Why the
        metadata first: stopped in between, what is left is bytes no attachment refers
        to, which the orphan sweep removes."""
        try:
            await retried(lambda: self._attachments.delete_one(key))
            await retried(lambda: self._persistence.delete_owned_files(owner, [file_id]))
        except ConnectionFailure:  # left to the sweep: see create_and_upload
            return

    async def _write(
        self,
        owner: str,
        attachment: Attachment,
        file_id: str,
        data: AsyncIterator[bytes],
        declared_size: int | None,
    ) -> None:
        """Stream ``data`` into the file ``file_id``, counting plaintext bytes as they
        arrive (encrypted on the way when the store has encryption)."""
        limit = self.max_bytes if declared_size is None else min(self.max_bytes, declared_size)
        counted = _counted(data, attachment.name, limit, self.max_bytes, declared_size)
        encrypt = self._persistence.encryption is not None
        async with aclosing(counted):
            await self._store_bytes(
                owner, attachment.id, attachment.name, file_id, counted, encrypt=encrypt
            )

    async def _store_bytes(
        self,
        owner: str,
        attachment_id: str,
        name: str,
        file_id: Any,
        plaintext: AsyncIterator[bytes],
        *,
        encrypt: bool,
        rewrite: bool = False,
    ) -> None:
        """Write ``plaintext`` as the file ``file_id`` of ``owner``'s attachment.

        Encrypted, the file holds ``encrypt_stream(owner, plaintext, bound_to=attachment
        id)``, is flagged ``metadata.encrypted``, and is named after the attachment id:
        the attachment's name lives only in its sealed metadata. Memory: one insert's
        GridFS chunks, about 1 MiB (see ``_gridfs.write_file``), one piece of
        ``plaintext`` and, encrypted, up to two stream pieces (see ``_encryption``),
        whatever the file's size.
        """
        metadata: dict[str, Any] = {Field.OWNER: owner, Field.ATTACHMENT_ID: attachment_id}
        stream = plaintext
        engine = self._persistence.encryption
        if encrypt:
            if engine is None:
                raise EncryptionConfigError("encrypting bytes needs encryption settings")
            metadata[GridFSField.ENCRYPTED] = True
            name = attachment_id
            stream = engine.encrypt_stream(owner, plaintext, bound_to=attachment_id)
        if rewrite:
            metadata[GridFSField.REWRITE] = True
        await write_file(
            self._files, self._chunks, file_id, stream, filename=name, metadata=metadata
        )

    async def _open_bytes(self, owner: str, attachment_id: str, file_id: Any) -> _StoredBytes:
        """The plaintext of ``owner``'s file ``file_id`` of ``attachment_id``, or
        ``NotFoundError`` when it is missing, not theirs, or (encrypted) not readable
        for them: decided before any byte is handed out."""
        not_found = NotFoundError(f"Attachment {attachment_id} not found")
        file = await find_file(self._files, file_id)
        if file is None:
            raise not_found
        metadata = file.metadata
        if (metadata.get(Field.OWNER), metadata.get(Field.ATTACHMENT_ID)) != (owner, attachment_id):
            raise not_found
        engine = self._persistence.encryption
        if metadata.get(GridFSField.ENCRYPTED) is not True:
            if engine is not None:
                await _check_unflagged(engine, owner, attachment_id, self._chunks, file)
            return _StoredBytes(False, file.length, read_file(self._chunks, file))
        if engine is None:
            raise EncryptionConfigError(
                f"the bytes of attachment {attachment_id} are encrypted, and this store has "
                "no encryption settings; pass the same encryption= they were written with"
            )
        try:
            length, chunks = await _decrypted(engine, owner, attachment_id, self._chunks, file)
        except (KeyUnavailableError, CiphertextError) as exc:
            raise not_found from exc
        return _StoredBytes(True, length, chunks)

    async def _drop_unless_referenced(self, key: dict[str, Any], file_id: Any) -> None:
        """Delete the file ``file_id`` unless the attachment ``key`` now refers to it (a
        switch whose reply was lost, or that a cancellation reached after it landed)."""
        kept = await self._attachments.find_one(
            {**key, UploadField.FILE_ID: file_id}, {GridFSField.ID: 1}
        )
        if kept is None:
            await self._persistence.delete_owned_files(key[Field.OWNER], [file_id])

    def _complete(self, key: dict[str, Any]) -> dict[str, Any]:
        """The filter of the attachment ``key`` once its bytes are complete (and alive)."""
        return {
            **key,
            UploadField.STATE: {"$exists": False},
            UploadField.FILE_ID: {"$ne": None},
            **self._persistence.alive(),
        }

    async def _sweep_abandoned(self, cutoff: datetime) -> int:
        stale = self._attachments.find(
            {UploadField.PENDING_SINCE: {"$lt": cutoff}},
            {Field.OWNER: 1, Field.ATTACHMENT_ID: 1, UploadField.PENDING_SINCE: 1},
        )
        removed = 0
        for candidate in await stale.to_list(None):
            # Deleted only if still pending since the same moment: an upload that began
            # or finished meanwhile keeps its attachment. Why the owner and attachment id
            # in the filter: a single-document delete on a sharded collection must carry
            # the whole shard key to be routed (older servers refuse it otherwise).
            taken = await shielded(self._attachments.find_one_and_delete(candidate))
            if taken is None:
                continue
            removed += 1
            if taken.get(UploadField.FILE_ID) is not None:
                # Through the ownership proof like every delete of an owner's bytes: an
                # abandoned attachment whose file_id names another owner's file (an
                # imported or hand-edited reference) must not erase that owner's bytes.
                await shielded(
                    self._persistence.delete_owned_files(
                        taken[Field.OWNER], [taken[UploadField.FILE_ID]]
                    )
                )
        return removed

    async def _sweep_unused(self, cutoff: datetime) -> int:
        """Complete attachments without a thread whose upload began before ``cutoff``
        (by their file id's time), and their bytes: see :meth:`sweep_orphans`."""
        candidates = self._attachments.find(
            {
                UploadField.STATE: {"$exists": False},
                Field.THREAD_ID: None,
                UploadField.FILE_ID: {"$ne": None},
            },
            {Field.OWNER: 1, Field.ATTACHMENT_ID: 1, UploadField.FILE_ID: 1},
        )
        removed = 0
        async for candidate in candidates:
            file_id = candidate[UploadField.FILE_ID]
            if _younger(file_id_time(file_id), cutoff):
                continue
            owner = candidate[Field.OWNER]
            unused = {
                **queries.attachment_filter(owner, candidate[Field.ATTACHMENT_ID]),
                UploadField.STATE: {"$exists": False},
                Field.THREAD_ID: None,
                UploadField.FILE_ID: file_id,
            }
            deleted = await shielded(self._attachments.delete_one(unused))
            if deleted.deleted_count:
                removed += 1
                await shielded(self._persistence.delete_owned_files(owner, [file_id]))
        return removed

    # Why both sweeps below go a batch of files at a time: a bucket may hold millions of
    # files. Listing them all and deleting them in one ``$in`` held every id in memory
    # and passed MongoDB's 16 MiB command limit at roughly 250,000 to 400,000 files;
    # now memory and each command stay the size of one batch.

    async def _sweep_unreferenced_files(self, cutoff: datetime, batch_size: int) -> int:
        files = self._files.find({}, {GridFSField.ID: 1, GridFSField.METADATA: 1})
        removed = 0
        async for batch in _batches(files, batch_size):
            orphans = [file[GridFSField.ID] for file in batch if not await self._kept(file, cutoff)]
            await shielded(self._persistence.delete_unreferenced_files(orphans))
            removed += len(orphans)
        return removed

    async def _kept(self, file: dict[str, Any], cutoff: datetime) -> bool:
        """Whether the sweep keeps the GridFS file ``file`` (its id and metadata): a living
        attachment of the owner its metadata names refers to it, or it is a rewrite under
        way (referred to only once it switches) younger than ``cutoff``."""
        metadata = file.get(GridFSField.METADATA) or {}
        if metadata.get(GridFSField.REWRITE) is True and _younger(
            file_id_time(file[GridFSField.ID]), cutoff
        ):
            return True
        owner, attachment_id = metadata.get(Field.OWNER), metadata.get(Field.ATTACHMENT_ID)
        if not (isinstance(owner, str) and isinstance(attachment_id, str)):
            return False
        referenced = await self._attachments.find_one(
            {
                **queries.attachment_filter(owner, attachment_id),
                UploadField.FILE_ID: file[GridFSField.ID],
                **self._persistence.alive(),
            },
            {GridFSField.ID: 1},
        )
        return referenced is not None

    async def _sweep_chunks_without_file(self, cutoff: datetime, batch_size: int) -> int:
        grouped = await maybe_await(
            self._chunks.aggregate([{"$group": {GridFSField.ID: f"${GridFSField.FILES_ID}"}}])
        )
        removed = 0
        async for batch in _batches(grouped, batch_size):
            file_ids = [group[GridFSField.ID] for group in batch]
            present = self._files.find({GridFSField.ID: {"$in": file_ids}}, {GridFSField.ID: 1})
            existing = {file[GridFSField.ID] async for file in present}
            orphans = [
                file_id
                for file_id in file_ids
                if file_id not in existing and not _younger(file_id_time(file_id), cutoff)
            ]
            await shielded(self._persistence.delete_unreferenced_files(orphans))
            removed += len(orphans)
        return removed


async def _batches(cursor: AsyncIterable[dict[str, Any]], size: int) -> AsyncIterator[list[Any]]:
    """The documents of ``cursor`` in lists of at most ``size``."""
    batch: list[Any] = []
    async for document in cursor:
        batch.append(document)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_positive_duration(value: object, name: str) -> None:
    if not isinstance(value, timedelta):
        raise TypeError(f"{name} must be a timedelta, not {type(value).__name__}")
    if value <= timedelta(0):
        raise ValueError(f"{name} must be positive, got {value}")


async def _renewing(
    pieces: AsyncIterator[bytes], renew: Callable[[], Awaitable[None]], every: float
) -> AsyncGenerator[bytes]:
    """``pieces`` passed on, calling ``renew()`` (the upload's lease) whenever ``every``
    seconds have passed since the last renewal, or the claim."""
    renewed = time.monotonic()
    async for piece in pieces:
        if time.monotonic() - renewed >= every:
            await renew()
            renewed = time.monotonic()
        yield piece


def _younger(started: datetime | None, cutoff: datetime) -> bool:
    return started is not None and started >= cutoff


def _allowed_pattern(pattern: object) -> str:
    if not isinstance(pattern, str) or not (
        pattern == "*/*"
        or _MIME_TYPE.fullmatch(pattern.lower())
        or (pattern.endswith("/*") and _MIME_TYPE.fullmatch(pattern.lower()[:-1] + "x"))
    ):
        raise ValueError(f"allowed_mime_types entry {pattern!r} is not type/subtype or type/*")
    return pattern.lower()


async def _pieces(data: UploadData) -> AsyncIterator[bytes]:
    """``data`` as a stream of byte strings, at most one chunk held at a time."""
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data).cast("B")
        for start in range(0, len(view), _READ_SIZE):
            yield bytes(view[start : start + _READ_SIZE])
    elif isinstance(data, AsyncIterable):
        async for piece in data:
            if not isinstance(piece, bytes | bytearray | memoryview):
                raise TypeError(f"upload chunks must be bytes, not {type(piece).__name__}")
            yield bytes(piece)
    elif callable(getattr(data, "read", None)):
        while piece := await maybe_await(data.read(_READ_SIZE)):
            if not isinstance(piece, bytes | bytearray | memoryview):
                raise TypeError(f"read() must return bytes, not {type(piece).__name__}")
            yield bytes(piece)
    else:
        raise TypeError(
            "upload data must be bytes, an async iterable of bytes or a file-like object "
            f"with read(size), not {type(data).__name__}"
        )


async def _counted(
    pieces: AsyncIterator[bytes], name: str, limit: int, max_bytes: int, declared: int | None
) -> AsyncGenerator[bytes]:
    """``pieces`` passed on while they stay within ``limit``; refused past it, or short
    of the ``declared`` size at their end. Counts the bytes as they arrive, before any
    encryption: the limits are on what the client sent."""
    received = 0
    async for piece in pieces:
        received += len(piece)
        if received > limit:
            raise AttachmentTooLargeError(too_large_message(name, limit, limit != max_bytes))
        yield piece
    if declared is not None and received != declared:
        raise IncompleteUploadError(f"{name!r}: {received} bytes arrived, {declared} were declared")


@dataclass(frozen=True)
class _StoredBytes:
    """A file's plaintext as it is read: whether it is stored encrypted, its exact length
    in plaintext bytes, and its chunks; :meth:`close` when done with them."""

    encrypted: bool
    length: int
    chunks: AsyncGenerator[bytes]

    async def close(self) -> None:
        """Close the chunks, and with them their cursor (closing twice is harmless)."""
        await self.chunks.aclose()


async def _check_unflagged(
    engine: OwnerEncryption, owner: str, attachment_id: str, chunks: Any, file: StoredFile
) -> None:
    """Refuse (``CiphertextError``) bytes without the encrypted flag that an encrypted
    store must not hand out as they are: any, when its encryption is strict; an
    encrypted stream's, always (its first bytes are the stream's header).

    Why the bytes decide and not the flag: the flag is not authenticated, so clearing it
    on an encrypted file would otherwise serve the ciphertext as the file. A plaintext
    file that happens to begin with the header is refused too, in a store still being
    migrated: it cannot be told from a ciphertext whose flag was cleared.
    """
    from ._encryption import STREAM_MAGIC  # noqa: PLC0415  (see store._engine)

    what = f"the bytes of attachment {attachment_id} of owner {owner!r}"
    if engine.config.strict:
        raise CiphertextError(
            f"{what} are not stored encrypted, and this store's encryption is strict: "
            "refused, as nothing proves they are the owner's (encrypt what is left in the "
            "clear with `chatkit-mongo migrate --to encrypted`)"
        )
    first_chunk = {GridFSField.FILES_ID: file.file_id, GridFSField.CHUNK_NUMBER: 0}
    first = await chunks.find_one(first_chunk, {GridFSField.CHUNK_DATA: 1})
    head = b"" if first is None else bytes(first.get(GridFSField.CHUNK_DATA, b""))
    if head.startswith(STREAM_MAGIC):
        raise CiphertextError(
            f"{what} are an encrypted stream without the encrypted flag (altered): refused"
        )


async def _decrypted(
    engine: OwnerEncryption, owner: str, attachment_id: str, chunks: Any, file: StoredFile
) -> tuple[int, AsyncGenerator[bytes]]:
    """The exact plaintext length of an encrypted file and its plaintext chunks.

    Why the final record is decrypted first (when the file has more than one piece):
    the stored size fixes the plaintext's length only to within 16 bytes (CBC padding),
    the final piece's bytes give it exactly (see ``final_record``). Why the first piece
    is decrypted before returning: a file the owner cannot read (key shredded, another
    owner's key, made for another attachment) must read as not found, before any byte.
    Every cursor opened here is closed on every failure.
    """
    from ._encryption import PIECE_BYTES, final_record  # noqa: PLC0415  (see store._engine)

    raw = read_file(chunks, file)
    plain = engine.decrypt_stream(owner, raw, bound_to=attachment_id)
    try:
        index, offset = final_record(file.length, attachment_id)
        length = None
        if index:
            tail = b"".join([chunk async for chunk in read_file(chunks, file, start=offset)])
            final = engine.decrypt_stream(
                owner, _single(tail), bound_to=attachment_id, first_piece=index
            )
            length = index * PIECE_BYTES + len(b"".join([piece async for piece in final]))
        first = await anext(plain)
    except BaseException:
        await _close(plain, raw)
        raise
    return (len(first) if length is None else length), _checked(plain, raw, first, length)


async def _checked(
    plain: AsyncGenerator[bytes],
    raw: AsyncGenerator[bytes],
    held: bytes,
    length: int | None,
) -> AsyncGenerator[bytes]:
    """The decrypted pieces, each handed out only once the next one has authenticated
    or the stream has ended proved complete; the total must be ``length`` (None: the
    first piece is the only one). So a file cut short, extended or altered is a
    ``CiphertextError`` before its last byte, never a short body that looks whole."""
    expected = len(held) if length is None else length
    sent = 0
    try:
        async for piece in plain:
            sent += len(held)
            if sent + len(piece) > expected:
                raise CiphertextError(f"encrypted bytes run past their {expected} bytes")
            if held:
                yield held
            held = piece
        if sent + len(held) != expected:
            raise CiphertextError(
                f"encrypted bytes hold {sent + len(held)} bytes, their final piece says {expected}"
            )
        if held:
            yield held
    except KeyUnavailableError as exc:  # the key was shredded while the bytes streamed
        raise CiphertextError(f"the bytes can no longer be decrypted: {exc}") from exc
    finally:
        await _close(plain, raw)


async def _close(*generators: AsyncGenerator[bytes]) -> None:
    for generator in generators:
        await generator.aclose()


async def _single(data: bytes) -> AsyncIterator[bytes]:
    yield data


def too_large_message(name: str, limit: int, by_declared_size: bool) -> str:
    """Why an upload was refused, in words: over the size declared when the attachment
    was created, or over the store's ``max_bytes``."""
    if by_declared_size:
        return (
            f"{name!r} is larger than its declared size, {plural(limit, 'byte')}; "
            "nothing of it was kept"
        )
    return (
        f"{name!r} is larger than {plural(limit, 'byte')}, the most this store accepts (max_bytes)"
    )
