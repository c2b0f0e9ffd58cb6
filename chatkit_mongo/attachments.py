"""``GridFSAttachmentStore``: attachment bytes in GridFS, beside the conversation.

Why GridFS: the bytes then live in the same database, backups and access rules as the
threads that mention them, and travel in 255 KiB chunks, so neither an upload nor a
download holds a whole file in memory.

How an upload stays all-or-nothing: the attachment document is *claimed* first (its
state goes from awaiting to receiving, and it records the GridFS id of this attempt)
before a single chunk is written. The bytes are streamed under that fresh id, then the
state is cleared. Any failure or cancellation deletes the chunks of that id and hands
the attachment back to awaiting; a process that dies mid-way leaves a record the orphan
sweep finds. Downloads only ever follow a completed attachment's id.

Why ownership lives in the attachment document: every lookup starts from it with the
owner in the filter (through the store's unique ``owner, attachment_id`` index), and the
GridFS file also carries its owner and attachment in ``metadata``, checked again on
download and before any delete (:mod:`chatkit_mongo._gridfs`): a ``file_id`` that
points at another owner's bytes reaches nothing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Generic, Protocol

from chatkit.store import AttachmentStore, NotFoundError
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ImageAttachment,
)
from gridfs import DEFAULT_CHUNK_SIZE
from gridfs.errors import NoFile

from . import _queries as queries
from ._checks import check_id
from ._codec import ATTACHMENT_ADAPTER
from ._driver import gridfs_bucket, maybe_await, shielded
from ._text import plural
from .errors import (
    AttachmentTooLargeError,
    AttachmentTypeError,
    IncompleteUploadError,
)
from .schema import (
    Field,
    GridFSField,
    UploadField,
    file_id_time,
    owner_file_id,
)
from .store import MongoStore, TContext, new_id

DEFAULT_MAX_BYTES: Final = 32 * 1024 * 1024
"""Large enough for documents and photos a model reads; raise it for bigger files."""
DEFAULT_ABANDONED_AFTER: Final = timedelta(hours=24)
"""Longer than any honest upload takes, short enough that dead uploads do not pile up."""
_READ_SIZE: Final = DEFAULT_CHUNK_SIZE
"""Read file-like sources one GridFS chunk at a time: the bucket writes whole chunks."""
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


class GridFSAttachmentStore(AttachmentStore[TContext], Generic[TContext]):
    """ChatKit's :class:`~chatkit.store.AttachmentStore` with the bytes in GridFS.

    The metadata goes through ``store`` (a :class:`~chatkit_mongo.MongoStore`), owned by
    the context's owner like everything else; the bytes go to the GridFS bucket
    ``bucket_name`` (default: the store's ``collections.bucket``). The bucket is
    PyMongo's ``AsyncGridFSBucket`` for a PyMongo Async database, Motor's otherwise.
    Building it registers it with ``store``, so ``store.delete_thread`` removes the bytes
    of the thread's attachments as well.
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
    ) -> None:
        """Args:
        store: the MongoStore that holds the attachment metadata.
        upload_url: where the client sends the bytes of a two-phase upload.
        preview_url: where an image is shown from. Without it, images are stored as
            ``FileAttachment``: ChatKit's ``ImageAttachment`` requires a preview URL.
        max_bytes: the largest attachment accepted, counted while streaming.
        allowed_mime_types: e.g. ``["image/*", "application/pdf"]``; None allows any.
        bucket_name: the GridFS bucket; defaults to ``store.collections.bucket``.
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive int, got {max_bytes!r}")
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
        self._gridfs: Any = None

    # ------------------------------------------------------------------ ChatKit API

    def generate_attachment_id(self, mime_type: str, context: TContext) -> str:
        return new_id("attachment")

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

    async def upload(self, attachment_id: str, data: UploadData, context: TContext) -> Attachment:
        """Two-phase upload, phase two: stream ``data`` into GridFS; return the metadata.

        Refused (and nothing kept) when the bytes pass ``max_bytes`` or the declared
        size, fall short of the declared size, the MIME type is not allowed, the
        attachment already has its bytes or is receiving them, or it is not the
        caller's (:class:`~chatkit.store.NotFoundError`).
        """
        owner = await self.store.persistence.begin(context)
        key = queries.attachment_filter(owner, check_id(attachment_id, "attachment_id"))
        # Chosen here, not by the claim: should the claim's reply be lost, the release
        # below still knows which claim to hand back. Owner first: see owner_file_id.
        file_id = owner_file_id(owner)
        try:
            claimed = await self._persistence.claim_upload(key, attachment_id, file_id)
            attachment = ATTACHMENT_ADAPTER.validate_python(claimed[Field.DATA])
            self._check_mime_type(attachment.mime_type)
            await self._write(owner, attachment, file_id, data, claimed[UploadField.DECLARED_SIZE])
            return await self._persistence.complete_upload(key, attachment_id, file_id)
        except BaseException:
            await shielded(self._persistence.release_upload(key, file_id))
            raise

    async def create_and_upload(
        self, name: str, mime_type: str, data: UploadData, context: TContext
    ) -> Attachment:
        """Direct upload: create the attachment and store its bytes in one call.

        On any refusal or failure neither the metadata nor any byte is left behind.
        """
        owner = await self.store.persistence.begin(context)
        mime_type = self._check_mime_type(mime_type)
        attachment_id = self.generate_attachment_id(mime_type, context)
        attachment = self._new(attachment_id, name, mime_type, None, context)
        try:
            await self._persistence.insert_pending(owner, attachment, None)
            return await self.upload(attachment_id, data, context)
        except BaseException:
            pending = {
                **queries.attachment_filter(owner, attachment_id),
                UploadField.STATE: {"$exists": True},
            }
            await shielded(self._attachments.delete_one(pending))
            raise

    async def open_download(self, attachment_id: str, context: TContext) -> Download:
        """The caller's attachment with its length and chunks, or ``NotFoundError``.

        Attachments still waiting for their bytes, and other owners' ones, are not found.
        """
        owner = await self.store.persistence.begin(context)
        key = queries.attachment_filter(owner, check_id(attachment_id, "attachment_id"))
        complete = {
            **key,
            UploadField.STATE: {"$exists": False},
            UploadField.FILE_ID: {"$ne": None},
            **self._persistence.alive(),
        }
        document = await self._attachments.find_one(complete)
        not_found = NotFoundError(f"Attachment {attachment_id} not found")
        if document is None:
            raise not_found
        try:
            grid_out = await self._bucket().open_download_stream(document[UploadField.FILE_ID])
        except NoFile:
            raise not_found from None
        metadata = grid_out.metadata or {}
        if (metadata.get(Field.OWNER), metadata.get(Field.ATTACHMENT_ID)) != (owner, attachment_id):
            raise not_found
        attachment = ATTACHMENT_ADAPTER.validate_python(document[Field.DATA])
        return Download(attachment, int(grid_out.length), _chunks_of(grid_out))

    async def read_bytes(self, attachment_id: str, context: TContext) -> bytes:
        """The whole attachment in memory: for small files fed to a model."""
        download = await self.open_download(attachment_id, context)
        return b"".join([chunk async for chunk in download.chunks])

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

    async def sweep_orphans(
        self, *, abandoned_after: timedelta = DEFAULT_ABANDONED_AFTER, now: datetime | None = None
    ) -> SweepReport:
        """Remove, across all owners, what no finished attachment needs any more.

        1. attachments pending (awaiting or receiving bytes) since before
           ``now - abandoned_after``, with whatever bytes they had received;
        2. GridFS files that no attachment refers to (its metadata was deleted by a
           store that knew no bucket, a delete was interrupted, or, with retention on,
           it expired: the bytes of an expired attachment go at the next sweep, even
           before the server's TTL pass has deleted its metadata);
        3. chunks whose file document is gone and whose id is older than the cut-off.

        Safe while uploads run: an upload's attachment refers to its file id from before
        its first chunk, and one younger than the cut-off is never touched.
        """
        cutoff = (now or datetime.now(UTC)) - abandoned_after
        return SweepReport(
            abandoned_uploads=await self._sweep_abandoned(cutoff),
            orphaned_files=await self._sweep_unreferenced_files(),
            orphaned_chunk_sets=await self._sweep_chunks_without_file(cutoff),
        )

    # ------------------------------------------------------------------ internals

    def _bucket(self) -> Any:
        """The driver's bucket (see :func:`gridfs_bucket`), made on first use."""
        if self._gridfs is None:
            self._gridfs = gridfs_bucket(self.store.database, self.bucket_name)
        return self._gridfs

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

    async def _write(
        self,
        owner: str,
        attachment: Attachment,
        file_id: str,
        data: UploadData,
        declared_size: int | None,
    ) -> None:
        """Stream ``data`` into the file ``file_id``, counting bytes as they arrive.

        Each write is shielded so that a cancelled request never leaves a chunk insert
        in flight behind the cleanup that follows.
        """
        limit = self.max_bytes if declared_size is None else min(self.max_bytes, declared_size)
        metadata = {Field.OWNER: owner, Field.ATTACHMENT_ID: attachment.id}
        grid_in = self._bucket().open_upload_stream_with_id(
            file_id, attachment.name, metadata=metadata
        )
        received = 0
        async for piece in _pieces(data):
            received += len(piece)
            if received > limit:
                raise AttachmentTooLargeError(
                    too_large_message(attachment.name, limit, limit != self.max_bytes)
                )
            await shielded(grid_in.write(piece))
        if declared_size is not None and received != declared_size:
            raise IncompleteUploadError(
                f"{attachment.name!r}: {received} bytes arrived, {declared_size} were declared"
            )
        await shielded(grid_in.close())

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

    async def _sweep_unreferenced_files(self) -> int:
        files = self._files.find({}, {GridFSField.ID: 1, GridFSField.METADATA: 1})
        orphans = []
        for file in await files.to_list(None):
            metadata = file.get(GridFSField.METADATA) or {}
            owner, attachment_id = metadata.get(Field.OWNER), metadata.get(Field.ATTACHMENT_ID)
            referenced = None
            if isinstance(owner, str) and isinstance(attachment_id, str):
                referenced = await self._attachments.find_one(
                    {
                        **queries.attachment_filter(owner, attachment_id),
                        UploadField.FILE_ID: file[GridFSField.ID],
                        **self._persistence.alive(),
                    },
                    {GridFSField.ID: 1},
                )
            if referenced is None:
                orphans.append(file[GridFSField.ID])
        await shielded(self._persistence.delete_unreferenced_files(orphans))
        return len(orphans)

    async def _sweep_chunks_without_file(self, cutoff: datetime) -> int:
        grouped = await maybe_await(
            self._chunks.aggregate([{"$group": {GridFSField.ID: f"${GridFSField.FILES_ID}"}}])
        )
        file_ids = [group[GridFSField.ID] for group in await grouped.to_list(None)]
        present = await self._files.find(
            {GridFSField.ID: {"$in": file_ids}}, {GridFSField.ID: 1}
        ).to_list(None)
        existing = {file[GridFSField.ID] for file in present}
        orphans = [
            file_id
            for file_id in file_ids
            if file_id not in existing and not _younger(file_id_time(file_id), cutoff)
        ]
        await shielded(self._persistence.delete_unreferenced_files(orphans))
        return len(orphans)


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


async def _chunks_of(grid_out: Any) -> AsyncIterator[bytes]:
    """The file's chunks one by one; the download stream is closed however it ends."""
    try:
        while chunk := await grid_out.readchunk():
            yield chunk
    finally:
        await maybe_await(grid_out.close())


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
