"""The one place that names collections, document fields and indexes.

The store, the index script, the CLI and the tests all read these constants, so a
field renamed here is renamed everywhere, and the indexes can never drift away from
the queries they serve.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from bson import ObjectId
from pydantic import TypeAdapter

from ._checks import MAX_ID_LENGTH as MAX_ID_LENGTH  # noqa: PLC0414  (re-exported)
from ._codec import ATTACHMENT_ADAPTER, ITEM_ADAPTER, THREAD_ADAPTER, envelope_bytes
from ._codec import MAX_DOCUMENT_BYTES as MAX_DOCUMENT_BYTES  # noqa: PLC0414
from ._codec import MAX_NESTING as MAX_NESTING  # noqa: PLC0414
from .owner import MAX_OWNER_LENGTH

# Re-exported above: the limits a stored value must keep, which error messages name
# (ids of at most MAX_ID_LENGTH characters, MongoDB's 16 MiB documents and 100 levels).

Direction = Literal[1, -1]
Kind = Literal["thread", "item", "attachment", "file", "chunk"]
"""A kind of stored document: the one name the registry (:data:`DOCUMENT_KINDS`), the
indexes, the shard keys, the collection handles, the queries and export lines use. Its
collection is a property of its registry entry (:attr:`DocumentKind.collection`)."""


class Field:
    """Top-level document fields.

    Why top-level copies of ids and times, when the model already holds them under
    ``DATA``: indexes and equality filters need stable, flat paths that no
    user-supplied key can shadow (user metadata lives only inside ``DATA``).
    """

    OWNER: Final = "owner"
    """The tenant (user or organisation) that owns the document; first in every index a
    tenant's query uses (the sweep and GridFS's own indexes serve other lookups)."""
    THREAD_ID: Final = "thread_id"
    ITEM_ID: Final = "item_id"
    ATTACHMENT_ID: Final = "attachment_id"
    SORT_KEY: Final = "sk"
    """Microsecond timestamp and id in one string; see :func:`sort_key`."""
    CREATED_AT: Final = "created_at"
    """A BSON date (milliseconds, UTC) for people querying in mongosh; never read back."""
    DATA: Final = "data"
    """The pydantic model as a native BSON sub-document (``model_dump(mode="json")``)."""
    EXPIRES_AT: Final = "expires_at"
    """With retention on: when the document's thread expires, one BSON date shared by the
    thread, its items and its attachments. Absent with retention off."""


class UploadField:
    """Fields the attachment store adds to an attachment document, beside ``DATA``.

    Why top-level and not in the model's ``metadata``: they are the server's record of
    the bytes, which the client must not see or set, and ``save_attachment`` ``$set``s
    only its own fields, so these survive ChatKit's later saves of the metadata.
    """

    STATE: Final = "upload_state"
    """:data:`AWAITING` or :data:`RECEIVING` while the bytes are missing; absent once stored."""
    AWAITING: Final = "awaiting"
    RECEIVING: Final = "receiving"
    FILE_ID: Final = "file_id"
    """The GridFS ``_id`` of the bytes: claimed before the first chunk is written."""
    DECLARED_SIZE: Final = "declared_size"
    """The size the client announced when creating the attachment (two-phase only)."""
    PENDING_SINCE: Final = "pending_since"
    """When the attachment started waiting for its bytes, or its upload started; absent once
    stored. The orphan sweep removes uploads pending for too long."""


class GridFSField:
    """Field names the GridFS specification gives the ``files`` and ``chunks`` documents.

    The bytes' owner and attachment id sit in the file's ``metadata`` under
    :attr:`Field.OWNER` and :attr:`Field.ATTACHMENT_ID`.
    """

    ID: Final = "_id"
    METADATA: Final = "metadata"
    FILENAME: Final = "filename"
    UPLOAD_DATE: Final = "uploadDate"
    LENGTH: Final = "length"
    """In ``<bucket>.files``: the file's size in bytes, as stored (an Int64)."""
    CHUNK_SIZE: Final = "chunkSize"
    """In ``<bucket>.files``: the size of every chunk but the last."""
    FILES_ID: Final = "files_id"
    """In ``<bucket>.chunks``: the ``_id`` of the file a chunk belongs to."""
    METADATA_OWNER: Final = f"{METADATA}.{Field.OWNER}"
    METADATA_ATTACHMENT_ID: Final = f"{METADATA}.{Field.ATTACHMENT_ID}"
    ENCRYPTED: Final = "encrypted"
    """In the file's ``metadata``: True when the bytes are an encrypted stream (the
    format of ``chatkit_mongo._encryption``, bound to the attachment id); absent for
    plain bytes. Why a flag and not sniffing the stream's header: plain bytes that
    happen to start like it must still download as they are."""
    METADATA_ENCRYPTED: Final = f"{METADATA}.{ENCRYPTED}"
    REWRITE: Final = "rewrite"
    """In the file's ``metadata``: True on a file ``GridFSAttachmentStore.reseal_bytes``
    wrote to replace an attachment's bytes. No attachment refers to it until the rewrite
    switches to it, so the orphan sweep leaves it alone until it is older than its
    cut-off; afterwards it is a file like any other."""
    CHUNK_NUMBER: Final = "n"
    """In ``<bucket>.chunks``: the chunk's position; unique with ``files_id``."""
    CHUNK_DATA: Final = "data"
    """In ``<bucket>.chunks``: the bytes of the chunk."""


def bucket_collections(bucket: str) -> tuple[str, str]:
    """The ``files`` and ``chunks`` collections of a GridFS bucket, as the spec names them."""
    return document_kind("file").collection_in(bucket), document_kind("chunk").collection_in(bucket)


@dataclass(frozen=True)
class CollectionNames:
    """Names of the collections the store uses, one per kind of document."""

    threads: str = "chatkit_threads"
    items: str = "chatkit_items"
    attachments: str = "chatkit_attachments"
    bucket: str = "chatkit_files"
    """GridFS bucket of attachment bytes: collections ``<bucket>.files`` and ``<bucket>.chunks``."""

    def __post_init__(self) -> None:
        names = [(setting, getattr(self, setting)) for setting in collection_settings()]
        for setting, name in names:
            if not isinstance(name, str) or not name or "$" in name or "\0" in name:
                raise ValueError(f"collection name for {setting} is not usable: {name!r}")
        if len({name for _, name in names}) != len(names):
            raise ValueError(f"collection names must differ: {self!r}")

    def by_kind(self, kinds: Iterable[Kind] | None = None) -> dict[Kind, str]:
        """The collection of each of ``kinds`` (default: every kind, in export order)."""
        return {kind: self.name_of(kind) for kind in (KINDS if kinds is None else kinds)}

    def name_of(self, kind: Kind) -> str:
        """The collection that holds documents of ``kind``."""
        entry = document_kind(kind)
        return entry.collection_in(getattr(self, entry.setting))

    @property
    def bucket_files(self) -> str:
        return self.name_of("file")

    @property
    def bucket_chunks(self) -> str:
        return self.name_of("chunk")


@dataclass(frozen=True)
class DocumentKind:
    """One kind of stored document: where it lives and what identifies it.

    The registry :data:`DOCUMENT_KINDS` is the one place these facts live: the unique
    indexes, the shard keys, the import/export keys and the collection each export line
    goes to are all read from it.
    """

    name: Kind
    collection: str
    """Its collection: the :class:`CollectionNames` field naming it (``threads``), or for
    a GridFS document the bucket's collection as the GridFS specification names it
    (``files``: ``<bucket>.files``). Also what a count of them is called (:class:`PurgeCounts
    <chatkit_mongo._persistence.PurgeCounts>`)."""
    key: tuple[str, ...]
    """Its unique key: the keys of its unique index and of its shard key."""
    owner: str | None
    """The field naming its owner; None for a chunk, whose owner is its file's."""
    id_field: str | None
    """The top-level copy of the ChatKit model's ``id``; None for GridFS documents."""
    adapter: TypeAdapter[Any] | None
    """The pydantic adapter of the ChatKit model under ``data``; None for GridFS documents."""
    in_bucket: bool = False
    """Whether it lives in the GridFS bucket (:attr:`CollectionNames.bucket`)."""

    @property
    def setting(self) -> str:
        """The :class:`CollectionNames` field (and CLI option) that names its collection."""
        return BUCKET if self.in_bucket else self.collection

    def collection_in(self, name: str) -> str:
        """Its collection, given the value of its :attr:`setting`."""
        return f"{name}.{self.collection}" if self.in_bucket else name

    @property
    def match_key(self) -> tuple[str, ...]:
        """What an import matches an existing document by: the unique key, and the owner
        where the key lacks it (a file: its ``_id`` with its owner), so a line can never
        replace another owner's document."""
        if self.owner is None or self.owner in self.key:
            return self.key
        return (*self.key, self.owner)


DOCUMENT_KINDS: Final[tuple[DocumentKind, ...]] = (
    DocumentKind(
        "thread",
        "threads",
        (Field.OWNER, Field.THREAD_ID),
        Field.OWNER,
        Field.THREAD_ID,
        THREAD_ADAPTER,
    ),
    DocumentKind(
        "item",
        "items",
        (Field.OWNER, Field.THREAD_ID, Field.ITEM_ID),
        Field.OWNER,
        Field.ITEM_ID,
        ITEM_ADAPTER,
    ),
    DocumentKind(
        "attachment",
        "attachments",
        (Field.OWNER, Field.ATTACHMENT_ID),
        Field.OWNER,
        Field.ATTACHMENT_ID,
        ATTACHMENT_ADAPTER,
    ),
    DocumentKind(
        "file",
        "files",
        (GridFSField.ID,),
        GridFSField.METADATA_OWNER,
        None,
        None,
        in_bucket=True,
    ),
    DocumentKind(
        "chunk",
        "chunks",
        (GridFSField.FILES_ID, GridFSField.CHUNK_NUMBER),
        None,
        None,
        None,
        in_bucket=True,
    ),
)
"""Every kind of document, in export order: a chunk's file always comes before the chunk."""

BUCKET: Final = "bucket"
"""The :class:`CollectionNames` field naming the GridFS bucket."""

MODEL_KINDS: Final[tuple[Kind, ...]] = tuple(
    kind.name for kind in DOCUMENT_KINDS if kind.adapter is not None
)
"""The kinds that hold a ChatKit model: the store's own collections, which carry the
thread's expiry with retention on."""


KINDS: Final[tuple[Kind, ...]] = tuple(kind.name for kind in DOCUMENT_KINDS)
"""Every kind, in export order: a chunk's file always comes before the chunk."""


_ENTRIES: Final[dict[Kind, DocumentKind]] = {kind.name: kind for kind in DOCUMENT_KINDS}


def document_kind(name: Kind) -> DocumentKind:
    """The registry entry of ``name``."""
    return _ENTRIES[name]


def collection_settings() -> tuple[str, ...]:
    """The :class:`CollectionNames` fields the registry names, in its order: one per
    collection the store owns, and the bucket. The CLI has one option for each."""
    return tuple(dict.fromkeys(kind.setting for kind in DOCUMENT_KINDS))


def _ascending(fields: tuple[str, ...]) -> tuple[tuple[str, Direction], ...]:
    return tuple((name, 1) for name in fields)


@dataclass(frozen=True)
class IndexSpec:
    """One index the store needs, with the query it exists for."""

    kind: Kind
    name: str
    keys: tuple[tuple[str, Direction], ...]
    unique: bool = False
    why: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self, collection: str) -> str:
        """``coll.name {keys}`` and every option the index is made with, as people read
        them: ``unique``, ``sparse``, ``expireAfterSeconds=0``."""
        keys = ", ".join(f"{name}: {direction}" for name, direction in self.keys)
        options = {"unique": self.unique, **self.options}
        shown = [
            describe_option(name, value)
            for name, value in options.items()
            if value is not None and value is not False
        ]
        return " ".join([f"{collection}.{self.name} {{{keys}}}", *shown])


def describe_option(name: str, value: Any) -> str:
    """An index option as a listing shows it: a flag by its name, others ``name=value``;
    an absent flag as ``not unique`` / ``not sparse``."""
    if value is True:
        return name
    if value is None or value is False:
        return f"not {name}" if name in _FLAG_OPTIONS else f"no {name}"
    return f"{name}={value!r}"


_FLAG_OPTIONS: Final = frozenset({"unique", "sparse"})


INDEXES: Final[tuple[IndexSpec, ...]] = (
    IndexSpec(
        "thread",
        "owner_thread_unique",
        _ascending(document_kind("thread").key),
        unique=True,
        why="load/save/delete a thread; thread ids need only be unique within an owner",
    ),
    IndexSpec(
        "thread",
        "owner_sort",
        ((Field.OWNER, 1), (Field.SORT_KEY, 1)),
        why="load_threads pages in either order: equality on owner, then the sort key",
    ),
    IndexSpec(
        "item",
        "owner_thread_item_unique",
        _ascending(document_kind("item").key),
        unique=True,
        why="load/save/delete an item and resolve a page's `after` anchor; "
        "makes add_thread_item insert-only",
    ),
    IndexSpec(
        "item",
        "owner_thread_sort",
        ((Field.OWNER, 1), (Field.THREAD_ID, 1), (Field.SORT_KEY, 1)),
        why="load_thread_items pages in either order and delete_thread's cascade",
    ),
    IndexSpec(
        "attachment",
        "owner_attachment_unique",
        _ascending(document_kind("attachment").key),
        unique=True,
        why="load/save/delete attachment metadata",
    ),
    IndexSpec(
        "attachment",
        "owner_thread",
        ((Field.OWNER, 1), (Field.THREAD_ID, 1)),
        why="delete_thread removes the attachment metadata of the thread",
    ),
    IndexSpec(
        "attachment",
        "pending_uploads",
        ((UploadField.PENDING_SINCE, 1),),
        why="the orphan sweep finds uploads abandoned before a cut-off, across owners (an "
        "operator's task); sparse, so it holds only the few attachments still waiting for "
        "their bytes (sparse rather than partial: the doubles drop partialFilterExpression "
        "from listIndexes, which would read as a conflict)",
        options={"sparse": True},
    ),
    IndexSpec(
        "file",
        "owner_attachment",
        ((GridFSField.METADATA_OWNER, 1), (GridFSField.METADATA_ATTACHMENT_ID, 1)),
        why="export and purge find one owner's bytes; the orphan sweep finds a file's attachment",
    ),
    IndexSpec(
        "file",
        "filename_1_uploadDate_1",
        ((GridFSField.FILENAME, 1), (GridFSField.UPLOAD_DATE, 1)),
        why="the index the GridFS specification gives every bucket (the driver creates it "
        "on first upload; listed here so init creates it up front and doctor checks it)",
    ),
    IndexSpec(
        "chunk",
        "files_id_1_n_1",
        _ascending(document_kind("chunk").key),
        unique=True,
        why="reading a file's chunks in order; the GridFS specification's unique index",
    ),
)

RETENTION_INDEXES: Final[tuple[IndexSpec, ...]] = tuple(
    IndexSpec(
        kind,
        "expires_at_ttl",
        ((Field.EXPIRES_AT, 1),),
        why="retention: the server deletes a document once its thread's expiry has passed "
        "(a TTL index; expireAfterSeconds 0 because each document carries its own date)",
        options={"expireAfterSeconds": 0},
    )
    for kind in MODEL_KINDS
)
"""Why no TTL index on the GridFS bucket: the chunks (the bytes) carry no date, so they
need the orphan sweep whatever happens to their ``files`` document; once an attachment's
metadata is gone, the sweep removes its chunks and ``files`` document together, in the one
order of :meth:`Persistence.delete_unreferenced_files
<chatkit_mongo._persistence.Persistence.delete_unreferenced_files>` (chunks first), and a
download never reaches bytes of an expired
attachment, because it starts from the metadata."""


@dataclass(frozen=True)
class ShardKey:
    """The shard key of one collection, the index that supports it, and why it was chosen.

    Every key is ranged and starts with the owner (the GridFS collections: with a file id
    that starts with the owner, see :func:`owner_file_id`), so that one tenant's queries
    go to the shards holding that tenant's range, and a zone on an owner range pins a
    tenant's documents, bytes included, to a region. Every key ends with a field unique
    within what precedes it, so no key value holds more than one document and no chunk
    can grow jumbo: a very large owner or thread splits like any other range.
    """

    kind: Kind
    fields: tuple[str, ...]
    index: str
    """The index of :data:`INDEXES` that supports the key (``_id_``: the built-in one)."""
    why: str

    def document(self) -> dict[str, int]:
        """The key as ``shardCollection`` takes it: ranged, ascending."""
        return dict.fromkeys(self.fields, 1)

    def describe(self, collection: str) -> str:
        return f"{collection} {{{', '.join(f'{name}: 1' for name in self.fields)}}}"


ID_INDEX: Final = "_id_"

SHARD_KEYS: Final[tuple[ShardKey, ...]] = (
    ShardKey(
        "thread",
        document_kind("thread").key,
        "owner_thread_unique",
        why="a thread's reads and writes carry the whole key (one shard); a page of an "
        "owner's threads carries its prefix (the owner's range)",
    ),
    ShardKey(
        "item",
        document_kind("item").key,
        "owner_thread_item_unique",
        why="an item's reads and writes carry the whole key (one shard); a page of a "
        "thread carries owner and thread (the thread's range); a thread of millions of "
        "items still splits by item id, so it never makes a jumbo chunk",
    ),
    ShardKey(
        "attachment",
        document_kind("attachment").key,
        "owner_attachment_unique",
        why="an attachment's reads, claims and writes carry the whole key; a thread's "
        "attachments (delete_thread, retention) carry the owner (the owner's range)",
    ),
    ShardKey(
        "file",
        document_kind("file").key,
        ID_INDEX,
        why="the driver reads a file by _id; the id starts with the owner, so the owner's "
        "files sit in the owner's range and new uploads spread over owners instead of all "
        "landing on the shard holding the newest ObjectId",
    ),
    ShardKey(
        "chunk",
        document_kind("chunk").key,
        "files_id_1_n_1",
        why="the GridFS guidance: a download reads one file's chunks in order by files_id "
        "and n; files_id starts with the owner, so the bytes follow the owner's zone",
    ),
)
"""The chosen shard key of every collection: the one place the ``shard`` command, doctor,
the targeting tests and docs/sharding.md's table read. See docs/sharding.md."""


def shard_key_of(kind: Kind) -> ShardKey:
    return next(key for key in SHARD_KEYS if key.kind == kind)


FILE_ID_SEPARATOR: Final = "/"


def owner_file_id(owner: str, unique: ObjectId | None = None) -> str:
    """The GridFS ``_id`` of a new attachment's bytes: ``<owner>/<ObjectId hex>``.

    Why not GridFS's default ObjectId: a sharded ``chunks`` collection is keyed by
    ``files_id``, and ObjectIds only grow, so every new upload would land on the one shard
    holding the top of the range; and chunks carry no owner, so a zone could not pin the
    bytes to the owner's region. With the owner first, chunks and files sort by owner
    like the other collections (a region prefix in the owner pins the bytes too), and the
    ObjectId keeps the id unique and tells the orphan sweep when the upload began.
    """
    return f"{owner}{FILE_ID_SEPARATOR}{unique or ObjectId()}"


FileId = ObjectId | str
"""The GridFS file ids the attachment store writes: :func:`owner_file_id` strings, and
the bare ObjectIds of files uploaded before ids carried the owner (still read)."""


def file_id_owner(file_id: object) -> str | None:
    """The owner an :func:`owner_file_id` names, exactly as the attachment store writes
    one (``<owner>/`` then a lowercase 24-digit ObjectId hex); None for anything else.

    Why the exact form: the owner in the id is part of the proof that bytes are the
    owner's (:mod:`chatkit_mongo._gridfs`), so only the one shape the store writes counts.
    ``rpartition`` is unambiguous, as the hex holds no separator: an owner ``"a/b"`` gives
    ``"a/b/<hex>"``.
    """
    if not isinstance(file_id, str):
        return None
    owner, separator, suffix = file_id.rpartition(FILE_ID_SEPARATOR)
    if not (separator and owner and ObjectId.is_valid(suffix) and str(ObjectId(suffix)) == suffix):
        return None
    return owner


def is_file_id(value: object) -> bool:
    """Whether ``value`` has a shape the attachment store writes as a file id: an
    :func:`owner_file_id`, or a bare ObjectId (files uploaded before ids carried the
    owner). Anything else (an operator document, a regular expression, another string,
    another type) is no file id of this library."""
    return type(value) is ObjectId or file_id_owner(value) is not None


def file_id_time(file_id: object) -> datetime | None:
    """When the upload of ``file_id`` began: from its ObjectId (an :func:`owner_file_id`,
    or a bare ObjectId written before file ids carried the owner); None if unknown."""
    if isinstance(file_id, ObjectId):
        return file_id.generation_time
    if isinstance(file_id, str):
        suffix = file_id.rpartition(FILE_ID_SEPARATOR)[2]
        if ObjectId.is_valid(suffix):
            return ObjectId(suffix).generation_time
    return None


def prefix_range(prefix: str) -> tuple[str, str]:
    """The strings that start with ``prefix``, as ``[lower, upper)`` in MongoDB's simple
    (binary) order: the bounds of a zone on an owner prefix such as ``"eu:"``."""
    if not prefix:
        raise ValueError("a zone prefix must not be empty")
    following = ord(prefix[-1]) + 1
    if following > _LAST_CODE_POINT:
        raise ValueError(f"zone prefix {prefix!r} cannot end with the last code point")
    if _SURROGATES[0] <= following <= _SURROGATES[1]:  # no stored string holds one
        following = _SURROGATES[1] + 1
    return prefix, prefix[:-1] + chr(following)


_LAST_CODE_POINT: Final = 0x10FFFF
_SURROGATES: Final = (0xD800, 0xDFFF)


def index_specs(retention: bool) -> tuple[IndexSpec, ...]:
    """The indexes a store needs: :data:`INDEXES`, plus the TTL indexes with retention on."""
    return INDEXES + RETENTION_INDEXES if retention else INDEXES


_EPOCH: Final = datetime(1, 1, 1)
_SORT_DIGITS: Final = 18
"""Microseconds from year 1 to year 9999 fit in 18 decimal digits."""
MAX_SORT_KEY_LENGTH: Final = _SORT_DIGITS + 1 + MAX_ID_LENGTH
"""The longest :func:`sort_key`: its digits, a space and the longest id."""
ENVELOPE_BYTES: Final = envelope_bytes(
    {
        Field.OWNER: MAX_OWNER_LENGTH,
        Field.THREAD_ID: MAX_ID_LENGTH,
        Field.ITEM_ID: MAX_ID_LENGTH,
        Field.SORT_KEY: MAX_SORT_KEY_LENGTH,
    },
    (Field.CREATED_AT,),
    Field.DATA,
)
"""The most BSON bytes a thread's or item's document takes besides its ``data``: its
owner and ids at their longest, each character four UTF-8 bytes, the sort key and
``created_at``. With it, the store's check of a proved write is one comparison."""
_MICROSECOND: Final = timedelta(microseconds=1)


def utc_naive(value: datetime) -> datetime:
    """The same instant as a naive UTC datetime; a naive value already counts as UTC.

    BSON does the same with naive datetimes, so sort keys and stored dates agree.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        return value
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError as exc:
        raise ValueError(f"datetime {value!r} is outside the range UTC can express") from exc


def sort_key(created_at: datetime, element_id: str) -> str:
    """The string that orders threads and items: creation time, then id.

    Why a string and not a BSON date: dates keep milliseconds only, and ChatKit
    stamps items to the microsecond, so two items of one turn could tie or swap.
    Why the id inside it: it breaks ties between equal times uniquely, and a single
    field lets a keyset page be one range (``$gt``/``$lt``) on one index, with exact
    bounds and no ``$or``. Fixed-width decimal digits make byte order (MongoDB's
    simple collation) equal to time order.
    """
    naive = created_at if created_at.tzinfo is None else utc_naive(created_at)
    # Why written out so: every write pays this. A timedelta divided by a timedelta is
    # exact in C, and zfill is three times cheaper than a format spec.
    return str((naive - _EPOCH) // _MICROSECOND).zfill(_SORT_DIGITS) + " " + element_id


def sort_key_id(key: str) -> str:
    """The element id a :func:`sort_key` ends with."""
    return key.partition(" ")[2]
