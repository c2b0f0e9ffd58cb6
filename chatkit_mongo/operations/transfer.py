"""Export and import of stored data as JSON Lines, per owner or everything.

Each line is ``{"kind": ..., "format": 2, "document": ...}`` in canonical MongoDB
Extended JSON. Why canonical: it keeps every BSON type as it was (an Int64 stays an
Int64, a date keeps its milliseconds, bytes stay bytes, an ObjectId stays one), so an
import writes back byte for byte the documents that were exported, ``_id`` included.

Why user keys are escaped (format 2): Extended JSON writes a BSON value as an object
with a ``$`` key (``{"$oid": ...}``), so it cannot tell a user's own ``$`` key (metadata
``{"$oid": "x"}``) from a type. Every object key, at any depth, that starts with ``$`` or
with the escape character ``~`` is written with one more ``~`` in front; on import one
``~`` is taken off again. A raw ``$`` key in a format-2 line is therefore always a type,
and a ``$`` object that is not a valid one makes the line malformed. Lines without a
``format`` (files written before it existed) are read as plain Extended JSON, as then.

Why import upserts by the unique keys, each starting with the owner: importing twice
changes nothing, and a line can only ever write the data of the owner it names. A
document whose ``_id`` is held by another owner's document would fail on the ``_id``
index instead of replacing it; the import checks every ``_id`` before the first write,
so such a file is refused by line with nothing written.

Why the whole file is checked before the first write: a bad line (not JSON, an unknown
kind, a thread that is not a ChatKit thread, bytes of a file that is not in the file)
is reported with its line number, and nothing has been written.

Documents the installed ChatKit release cannot read (written by a newer release, edited
by hand, cut short; see :mod:`chatkit_mongo._readable`) are exported as they are stored,
like every other, and imported as they are: nothing is lost on the way to a release
that reads them, and the store here skips them in pages as it would have in the database
they came from. The import counts them (:attr:`ImportCounts.unreadable`). What it still
refuses is a ``data`` that is not an object (nor a ciphertext) or whose ``id`` names
another element than the document's key: that is not a stored element at all.

Encrypted content (see :mod:`chatkit_mongo.encryption`) is exported as it is stored: a
``data`` that is a ciphertext (BSON binary subtype 6, written as Extended JSON's
``$binary``), a GridFS file flagged ``metadata.encrypted`` with its encrypted byte
stream. Why by default: an export is then exactly as safe as the database, and
shredding the owner's key makes the export unreadable too. An import restores such
lines as they were, checking that each ciphertext is well formed (it cannot check whose
key made it: a ciphertext imported under another owner is simply unreadable there, and
reads as not found). ``decrypt=`` (``export --owner X --decrypt``) writes one owner's
content in the clear instead, for an access request or a move to a store without
encryption; such an export imports as plaintext.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, TextIO

import bson
from bson import Binary, DBRef, ObjectId, json_util
from bson.code import Code
from bson.json_util import CANONICAL_JSON_OPTIONS
from pydantic import ValidationError
from pymongo import ReplaceOne

from .._checks import check_id, check_optional_id
from .._codec import check_document
from .._driver import AsyncDatabaseLike, shielded
from .._persistence import Persistence
from .._text import plural
from ..errors import (
    CiphertextError,
    ImportFileError,
    KeyUnavailableError,
    MasterKeyError,
    UnstorableError,
)
from ..owner import check_owner
from ..schema import (
    DOCUMENT_KINDS,
    FILE_ID_SEPARATOR,
    KINDS,
    CollectionNames,
    Field,
    FileId,
    GridFSField,
    Kind,
    UploadField,
    document_kind,
    file_id_owner,
    is_file_id,
)

_KIND: Final = "kind"
_FORMAT: Final = "format"
_DOCUMENT: Final = "document"
FORMAT: Final = 2
"""The version of the line format :func:`export_data` writes (see the module docstring)."""
_ESCAPE: Final = "~"
_BATCH_SIZE: Final = 500
"""Upserts sent per ``bulk_write``: few round trips, modest memory."""

if TYPE_CHECKING:  # the engine's module loads libmongocrypt's bindings: only when used
    from .._encryption import OwnerEncryption

_SPOOL_BYTES: Final = 8 * 1024 * 1024
"""A decrypted file's chunk lines are held in memory up to this size, then on disk."""

_KEYS: Final[dict[Kind, tuple[str, ...]]] = {kind.name: kind.match_key for kind in DOCUMENT_KINDS}
"""The key each kind is upserted by (:attr:`DocumentKind.match_key`)."""


def _owner_at(kind: Kind) -> int | None:
    """Where the owner sits in the kind's key; None for a chunk (its owner is its file's)."""
    owner = document_kind(kind).owner
    return None if owner is None else _KEYS[kind].index(owner)


Progress = Callable[[int], None]


@dataclass
class ImportCounts:
    """Per kind: documents inserted, replaced with other content, already identical; and
    among them, those the installed ChatKit release cannot read (imported as they are)."""

    inserted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    unchanged: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    unreadable: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def describe(self) -> str:
        counts = "; ".join(
            f"{kind}: {self.inserted[kind]} inserted, {self.updated[kind]} updated, "
            f"{self.unchanged[kind]} unchanged"
            for kind in KINDS
        )
        unreadable = [plural(count, kind) for kind, count in self.unreadable.items() if count]
        if not unreadable:
            return counts
        return (
            f"{counts}; imported as they are, though this ChatKit release cannot read them "
            f"(pages skip them): {', '.join(unreadable)}"
        )


def _scope(kind: Kind, owner: str | None) -> dict[str, Any]:
    if owner is None:
        return {GridFSField.METADATA_OWNER: {"$exists": True}} if kind == "file" else {}
    return {GridFSField.METADATA_OWNER if kind == "file" else Field.OWNER: owner}


async def count_export(
    database: AsyncDatabaseLike, collections: CollectionNames, owner: str | None
) -> int:
    """How many lines :func:`export_data` will write, for a progress bar."""
    total = 0
    for kind in ("thread", "item", "attachment", "file"):
        total += await database[collections.name_of(kind)].count_documents(_scope(kind, owner))
    return total


class ExportCounts(dict[Kind, int]):
    """Lines written per kind; and, for a decrypting export, ``left_out`` per kind: the
    owner's documents and files that could not be decrypted (their key is shredded,
    they were made with another owner's key, or they fail their integrity check), or
    that are in the clear where the encryption settings are strict."""

    def __init__(self) -> None:
        super().__init__(dict.fromkeys(KINDS, 0))
        self.left_out: dict[Kind, int] = dict.fromkeys(KINDS, 0)

    def describe(self) -> str:
        written = ", ".join(plural(count, kind) for kind, count in self.items())
        unreadable = [plural(count, kind) for kind, count in self.left_out.items() if count]
        if not unreadable:
            return written
        return f"{written}; left out, as they cannot be decrypted: {', '.join(unreadable)}"


async def export_data(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    out: TextIO,
    *,
    owner: str | None = None,
    on_progress: Progress | None = None,
    decrypt: OwnerEncryption | None = None,
) -> ExportCounts:
    """Write ``owner``'s documents (everyone's when None) to ``out``; count lines per kind.

    Files are those whose metadata names an owner: GridFS files that no attachment
    store wrote are not chatkit-mongo's to export. Encrypted content is written as it is
    stored, unless ``decrypt`` (the engine, with the master key) is given with an
    ``owner``: then that owner's content is written in the clear, and what cannot be
    decrypted for the owner is left out and counted (:attr:`ExportCounts.left_out`);
    a master key that does not open the key vault's keys raises
    :class:`~chatkit_mongo.errors.MasterKeyError` before anything is written.
    """
    if owner is not None:
        check_owner(owner)
    if decrypt is not None and owner is None:
        raise ValueError("a decrypting export is of one owner: give the owner")
    if decrypt is not None:
        # Why first: with a master key that opens none of the keys, every document would
        # be "left out" and the export would succeed empty; it fails naming the key.
        await decrypt.check_master_key()
    counts = ExportCounts()
    chunks = database[collections.bucket_chunks]
    reader = (
        None
        if decrypt is None or owner is None
        else _Decryptor(
            owner,
            decrypt,
            Persistence(database, collections, auto_create_indexes=False, encryption=decrypt),
        )
    )
    for kind in ("thread", "item", "attachment", "file"):
        cursor = database[collections.name_of(kind)].find(_scope(kind, owner))
        async for document in cursor.sort("_id", 1):
            chunk_lines = await _write_document(out, kind, document, chunks, reader)
            if chunk_lines is None:
                counts.left_out[kind] += 1
            else:
                counts[kind] += 1
                counts["chunk"] += chunk_lines
            if on_progress is not None:
                on_progress(1)
    return counts


@dataclass(frozen=True)
class _Decryptor:
    """What a decrypting export reads the owner's content with.

    Why through :meth:`Persistence.unseal`: it is the one place a stored ``data`` is
    turned back into content, so the export reads exactly what the store would (a
    plaintext left by a store being migrated included)."""

    owner: str
    engine: OwnerEncryption
    persistence: Persistence


async def _write_document(
    out: TextIO,
    kind: Kind,
    document: dict[str, Any],
    chunks: Any,
    reader: _Decryptor | None,
) -> int | None:
    """Write ``document`` (a file with its chunks); return how many chunk lines, or None
    when a decrypting export leaves it out, having written nothing of it."""
    if reader is not None and kind != "file":
        try:
            id_field = document_kind(kind).id_field
            element_id = None if id_field is None else document.get(id_field)
            data = await reader.persistence.unseal(reader.owner, document[Field.DATA], element_id)
        except CiphertextError:  # altered: no more readable than a shredded one
            data = None
        if data is None:
            return None
        _write_line(out, kind, {**document, Field.DATA: data})
        return 0
    if reader is not None and kind == "file" and _is_encrypted_file(document):
        return await _write_decrypted_file(out, reader, document, _chunks_of(chunks, document))
    if reader is not None and kind == "file" and reader.persistence.strict:
        return None  # bytes in the clear: refused by a strict store, so left out here too
    _write_line(out, kind, document)
    written = 0
    if kind == "file":
        async for chunk in _chunks_of(chunks, document):
            _write_line(out, "chunk", chunk)
            written += 1
    return written


def _chunks_of(chunks: Any, file: dict[str, Any]) -> Any:
    return chunks.find({GridFSField.FILES_ID: file["_id"]}).sort(GridFSField.CHUNK_NUMBER, 1)


def _is_encrypted_file(file: dict[str, Any]) -> bool:
    metadata = file.get(GridFSField.METADATA)
    return isinstance(metadata, dict) and metadata.get(GridFSField.ENCRYPTED) is True


async def _write_decrypted_file(
    out: TextIO, reader: _Decryptor, file: dict[str, Any], stored_chunks: Any
) -> int | None:
    """Write an encrypted GridFS file as the plain file it holds: its files document
    without the encrypted flag and with the plaintext's length, then the plaintext cut
    into chunks of the file's chunk size. None, writing nothing, when the stream cannot
    be decrypted for the owner (key gone, another owner's key, altered, cut short).

    Why the chunk lines are spooled: the files document, which must come first, states
    the length, known only once every piece is authenticated; the spool keeps memory
    bounded (a temporary file past ``_SPOOL_BYTES``). Why new chunk ``_id``s: the
    plaintext is another set of chunks than the stored ciphertext (fewer, other bytes);
    importing it where the ciphertext is still stored is refused by the import's check
    of each chunk's ``_id`` against its ``files_id`` and ``n``, so the two forms never
    mix in one file.
    """
    metadata = {k: v for k, v in file[GridFSField.METADATA].items() if k != GridFSField.ENCRYPTED}
    chunk_size = file.get(GridFSField.CHUNK_SIZE)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        return None
    plaintext = reader.engine.decrypt_stream(
        reader.owner,
        (bytes(chunk[GridFSField.CHUNK_DATA]) async for chunk in stored_chunks),
        bound_to=str(metadata.get(Field.ATTACHMENT_ID)),
    )
    length = written = 0
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8") as spool:

        def chunk_line(data: bytes) -> None:
            nonlocal written
            chunk = {
                "_id": ObjectId(),
                GridFSField.FILES_ID: file["_id"],
                GridFSField.CHUNK_NUMBER: written,
                GridFSField.CHUNK_DATA: Binary(data),
            }
            _write_line(spool, "chunk", chunk)
            written += 1

        buffer = bytearray()
        try:
            async for piece in plaintext:
                length += len(piece)
                buffer += piece
                while len(buffer) >= chunk_size:
                    chunk_line(bytes(buffer[:chunk_size]))
                    del buffer[:chunk_size]
        except MasterKeyError:  # no document is readable: the export must fail, not shrink
            raise
        except (KeyUnavailableError, CiphertextError, ValueError):
            return None  # ValueError: no attachment id to check the stream's binding with
        if buffer:
            chunk_line(bytes(buffer))
        _write_line(
            out, "file", {**file, GridFSField.LENGTH: length, GridFSField.METADATA: metadata}
        )
        spool.seek(0)
        shutil.copyfileobj(spool, out)
    return written


def _write_line(out: IO[str], kind: Kind, document: dict[str, Any]) -> None:
    """One line: a header in plain JSON, the document in canonical Extended JSON.

    Why the header is plain (``"format": 2``, not ``{"$numberInt": "2"}``): it is no
    stored BSON value, so it needs no type; plain, it reads as documented and any JSON
    tool can select lines by it. The import reads the whole line as Extended JSON, where
    both spellings are the number 2, so files written with the typed header still import.
    """
    body = json_util.dumps(_escape(document), json_options=CANONICAL_JSON_OPTIONS)
    out.write(f'{{"{_KIND}": {json.dumps(kind)}, "{_FORMAT}": {FORMAT}, "{_DOCUMENT}": {body}}}\n')


def _escaped_key(key: str) -> str:
    return _ESCAPE + key if key.startswith(("$", _ESCAPE)) else key


def _escape(value: Any) -> Any:
    """``value`` with every object key that starts with ``$`` or ``~`` given one more ``~``.

    Also inside the BSON values that hold documents (a DBRef's id and extra fields, a
    code's scope), since Extended JSON writes those as objects too. :func:`_unescape`
    is its exact inverse.
    """
    if isinstance(value, dict):
        return {_escaped_key(key): _escape(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_escape(child) for child in value]
    if isinstance(value, DBRef):
        extra = {k: _escape(v) for k, v in value.as_doc().items() if k not in _DBREF_KEYS}
        return DBRef(value.collection, _escape(value.id), value.database, **extra)
    if isinstance(value, Code) and value.scope is not None:
        return Code(str(value), _escape(value.scope))
    return value


_DBREF_KEYS: Final = frozenset({"$ref", "$id", "$db"})


def _unescape(value: Any) -> Any:
    """The inverse of :func:`_escape`, on a parsed format-2 document.

    A plain object left with a ``$`` key after parsing was not a valid Extended JSON
    type (``{"$date": "soon"}`` or an operator such as ``{"$ne": null}``): format 2
    escapes every user ``$`` key, so this is a malformed line, never user data.
    """
    if isinstance(value, dict):
        unescaped = {}
        for key, child in value.items():
            if key.startswith("$"):
                raise ValueError(
                    f"{{{key!r}: ...}} is not an Extended JSON type this file format "
                    f"can hold (a user key starting with $ is written as {_ESCAPE}{key})"
                )
            unescaped[key[1:] if key.startswith(_ESCAPE) else key] = _unescape(child)
        return unescaped
    if isinstance(value, list):
        return [_unescape(child) for child in value]
    if isinstance(value, DBRef):
        extra = {k: _unescape(v) for k, v in value.as_doc().items() if k not in _DBREF_KEYS}
        return DBRef(value.collection, _unescape(value.id), value.database, **extra)
    if isinstance(value, Code) and value.scope is not None:
        return Code(str(value), _unescape(value.scope))
    return value


async def import_data(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    path: Path,
    *,
    on_progress: Progress | None = None,
) -> ImportCounts:
    """Upsert every line of ``path``; check the whole file first, and write nothing if
    a line is bad (:class:`ImportFileError` names it)."""
    claims = _check_file(path)
    await _check_ids_free(database, collections, path)
    await _check_file_claims(database, collections, claims)
    counts = ImportCounts()
    batch: list[ReplaceOne[dict[str, Any]]] = []
    batch_kind: Kind | None = None

    async def flush() -> None:
        if batch_kind is None or not batch:
            return
        collection = database[collections.name_of(batch_kind)]
        result = await shielded(collection.bulk_write(list(batch), ordered=True))
        counts.inserted[batch_kind] += result.upserted_count
        counts.updated[batch_kind] += result.modified_count
        counts.unchanged[batch_kind] += result.matched_count - result.modified_count
        batch.clear()

    for _number, kind, document in _read_lines(path):
        if kind != batch_kind or len(batch) >= _BATCH_SIZE:
            await flush()
            batch_kind = kind
        batch.append(_upsert(kind, document))
        if not _readable(kind, document):
            counts.unreadable[kind] += 1
        if on_progress is not None:
            on_progress(1)
    await flush()
    return counts


def count_lines(path: Path) -> int:
    with path.open("rb") as stream:
        return sum(1 for line in stream if line.strip())


def _upsert(kind: Kind, document: dict[str, Any]) -> ReplaceOne[dict[str, Any]]:
    """Replace the document with this unique key by the exported one, or insert it.

    Why a whole replacement and not ``$set``: the document then comes back exactly as
    exported, field order and ``_id`` included. A document stored under the same key
    with another ``_id`` cannot be replaced (an ``_id`` cannot change): the import's
    pre-check refuses it before any write.
    """
    key = {name: _get(document, name) for name in _KEYS[kind]}
    return ReplaceOne(key, document, upsert=True)


def _get(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        value = value[part]
    return value


def _read_lines(path: Path) -> Iterator[tuple[int, Kind, dict[str, Any]]]:
    """``(line number, kind, document)`` of every non-blank line, each parsed and checked."""
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ImportFileError(
                    f"line {number}: not valid UTF-8: byte {raw[exc.start]:#04x} at "
                    f"position {exc.start} of the line"
                ) from None
            if text.strip():
                kind, document = _parse(number, text)
                yield number, kind, document


def _parse(number: int, text: str) -> tuple[Kind, dict[str, Any]]:
    try:
        line = json_util.loads(text, json_options=CANONICAL_JSON_OPTIONS)
    except RecursionError:
        raise ImportFileError(
            f"line {number}: nested too deeply (MongoDB allows 100 levels)"
        ) from None
    except Exception as exc:
        # Why every exception: the Extended JSON parsers raise ValueError, TypeError,
        # KeyError, OverflowError, InvalidId... depending on how a wrapper is malformed;
        # whichever it is, the line is not valid Extended JSON.
        raise ImportFileError(
            f"line {number}: not valid Extended JSON: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(line, dict) or set(line) - {_FORMAT} != {_KIND, _DOCUMENT}:
        raise ImportFileError(
            f'line {number}: expected {{"{_KIND}": ..., "{_FORMAT}": {FORMAT}, "{_DOCUMENT}": ...}}'
        )
    kind, document = line[_KIND], line[_DOCUMENT]
    if kind not in KINDS:
        raise ImportFileError(f"line {number}: unknown kind {kind!r}; expected one of {KINDS}")
    if not isinstance(document, dict):
        raise ImportFileError(f"line {number}: the {kind} document is not an object")
    if _FORMAT in line:
        if line[_FORMAT] != FORMAT or isinstance(line[_FORMAT], bool):
            raise ImportFileError(
                f"line {number}: unknown format {line[_FORMAT]!r}; this version reads "
                f"format {FORMAT} and lines without a format (written before it existed)"
            )
        try:
            document = _unescape(document)
        except RecursionError:
            raise ImportFileError(
                f"line {number}: nested too deeply (MongoDB allows 100 levels)"
            ) from None
        except ValueError as exc:
            raise ImportFileError(f"line {number}: not valid Extended JSON: {exc}") from None
    try:
        _check_import_line(kind, document)
    except (KeyError, TypeError, ValueError) as exc:
        raise ImportFileError(f"line {number}: bad {kind} document: {exc}") from exc
    try:
        check_document(document, f"the {kind} document")
    except UnstorableError as exc:
        raise ImportFileError(f"line {number}: {exc}") from None
    return kind, document


def _check_import_line(kind: Kind, document: dict[str, Any]) -> None:
    """Refuse a document the store could not read back, or one that names no owner.

    Why top-level ``$`` keys are refused here: the server refuses them in a replacement,
    and only when that batch is written, after earlier batches were. Why every id and
    reference must be a plain value of its one type (a str id, an ObjectId ``_id``, a
    file id as the attachment store writes one for a file's ``_id``, a chunk's
    ``files_id`` and an attachment's ``file_id``, a non-negative int ``n``): they reach
    upsert filters, the pre-check's ``$in`` and, later, the deletes that follow a
    reference; an object such as ``{"$ne": null}`` or a regular expression there would
    match other documents.
    """
    operators = sorted(name for name in document if name.startswith("$"))
    if operators:
        raise ValueError(f"top-level field names cannot start with $: {operators}")
    if "_id" in document and kind != "file":
        _check_object_id(document["_id"], "_id")
    for name in _KEYS[kind]:
        value = _get(document, name)
        if name == GridFSField.FILES_ID:
            _check_file_id(value, name, owner=None)
        elif name == GridFSField.CHUNK_NUMBER:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TypeError(f"{name} must be a non-negative int, not {value!r:.80}")
        elif name != "_id":
            check_id(value, name)
    if kind == "file":
        _check_file_id(document["_id"], "_id", owner=_get(document, GridFSField.METADATA_OWNER))
        check_id(_get(document, GridFSField.METADATA_ATTACHMENT_ID), "metadata.attachment_id")
    if kind == "chunk" and not isinstance(document.get(GridFSField.CHUNK_DATA), bytes):
        raise TypeError(f"{GridFSField.CHUNK_DATA} must be binary data")
    if kind == "attachment":
        check_optional_id(document.get(Field.THREAD_ID), Field.THREAD_ID)
        if document.get(UploadField.FILE_ID) is not None:
            _check_file_id(
                document[UploadField.FILE_ID], UploadField.FILE_ID, document[Field.OWNER]
            )
    id_field = document_kind(kind).id_field
    if id_field is None:
        return
    data = document[Field.DATA]
    if _check_sealed(data):
        return
    if not isinstance(data, dict):
        raise TypeError(f"{Field.DATA} must be an object, not {type(data).__name__}")
    # Why a missing id passes: a document cut short is imported as it was stored (see
    # the module docstring); one naming another element is not this document's content.
    if "id" in data and data["id"] != document[id_field]:
        raise ValueError(
            f"{Field.DATA}.id is {data['id']!r} but {id_field} is {document[id_field]!r}"
        )


def _readable(kind: Kind, document: dict[str, Any]) -> bool:
    """Whether the installed ChatKit release reads the line's content (a ciphertext
    counts as readable: only its owner's key can tell)."""
    adapter = document_kind(kind).adapter
    data = document.get(Field.DATA)
    if adapter is None or not isinstance(data, dict):
        return True
    try:
        adapter.validate_python(data)
    except ValidationError:
        return False
    return True


def _check_sealed(data: Any) -> bool:
    """Whether a line's ``data`` is a ciphertext (encrypted content, exported as stored),
    refusing one that is not well formed. Its content is not checked here (that needs the
    owner's key): the store checks it when it reads it, and one made with another owner's
    key reads as not found there.

    Why the engine's module is imported here: it holds the one definition of the
    ciphertext format, and loads libmongocrypt's bindings, which ``import chatkit_mongo``
    should not pay for.
    """
    from .._encryption import check_document_ciphertext, is_ciphertext  # noqa: PLC0415

    if not is_ciphertext(data):
        return False
    try:
        check_document_ciphertext(data, f"{Field.DATA} (a ciphertext, binary subtype 6)")
    except CiphertextError as exc:
        raise ValueError(str(exc)) from None
    return True


def _check_object_id(value: Any, what: str) -> None:
    if type(value) is not ObjectId:
        raise TypeError(f"{what} must be an ObjectId, not {type(value).__name__}: {value!r:.80}")


def _check_file_id(value: Any, what: str, owner: str | None) -> None:
    """Refuse a file id of a shape the attachment store never writes, or one whose owner
    prefix names another owner than the line's (``owner``; None for a chunk, whose file
    line, checked so, must come before it).

    Why both shapes: new uploads get :func:`~chatkit_mongo.schema.owner_file_id` ids,
    and files uploaded before that keep their bare ObjectIds, which exports still hold.
    Why a foreign prefix is refused outright: no upload of this owner can have made it.
    """
    if not is_file_id(value):
        raise TypeError(
            f"{what} must be a file id as the attachment store writes one, "
            f'"<owner>{FILE_ID_SEPARATOR}<ObjectId hex>" or an ObjectId (from before file ids '
            f"carried the owner), not {type(value).__name__}: {value!r:.80}"
        )
    named = file_id_owner(value)
    if owner is not None and named is not None and named != owner:
        raise ValueError(f"{what} {value!r:.80} is a file of the owner {named!r}, not of {owner!r}")


@dataclass(frozen=True)
class _FileClaim:
    """Who a line says a GridFS file belongs to: a file line's metadata, or the
    attachment line whose ``file_id`` refers to it."""

    number: int
    owner: str
    attachment_id: str

    def same_holder(self, other: _FileClaim | tuple[Any, Any]) -> bool:
        owner, attachment_id = (
            (other.owner, other.attachment_id) if isinstance(other, _FileClaim) else other
        )
        return (owner, attachment_id) == (self.owner, self.attachment_id)


def _check_file(path: Path) -> dict[FileId, _FileClaim]:
    """Parse every line, and refuse a chunk whose files document does not come first, or
    two lines that give one GridFS file to two attachments; return the file claims.

    Why: a chunk is then only ever written for a file whose owner this import checked,
    and every file id the import mentions has one owner and attachment, which
    :func:`_check_file_claims` then proves against the database.
    """
    file_ids: set[bytes] = set()
    claims: dict[FileId, _FileClaim] = {}
    for number, kind, document in _read_lines(path):
        claim: tuple[FileId, _FileClaim] | None = None
        if kind == "file":
            file_ids.add(_encoded(document["_id"]))
            claim = (
                document["_id"],
                _FileClaim(
                    number,
                    _get(document, GridFSField.METADATA_OWNER),
                    _get(document, GridFSField.METADATA_ATTACHMENT_ID),
                ),
            )
        elif kind == "attachment" and document.get(UploadField.FILE_ID) is not None:
            claim = (
                document[UploadField.FILE_ID],
                _FileClaim(number, document[Field.OWNER], document[Field.ATTACHMENT_ID]),
            )
        elif kind == "chunk" and _encoded(document[GridFSField.FILES_ID]) not in file_ids:
            raise ImportFileError(
                f"line {number}: chunk of file {document[GridFSField.FILES_ID]!r}, "
                "whose files document does not come before it in this file"
            )
        if claim is not None:
            file_id, holder = claim
            earlier = claims.setdefault(file_id, holder)
            if not earlier.same_holder(holder):
                raise ImportFileError(
                    f"line {number}: file {file_id!r} is given to attachment "
                    f"{holder.attachment_id!r} of {holder.owner!r}, but line {earlier.number} "
                    f"gives it to attachment {earlier.attachment_id!r} of {earlier.owner!r}"
                )
    return claims


async def _check_file_claims(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    claims: dict[FileId, _FileClaim],
) -> None:
    """Refuse the import if a GridFS file it mentions is, in the database, another
    attachment's (another owner's above all): its files document names another holder,
    an attachment of another holder refers to it, or chunks of it exist that nothing
    proves to be this holder's (an upload under way, whose files document comes last).

    Why: an attachment's ``file_id`` is what its owner's deletes and downloads follow;
    pointing alice's attachment at bob's bytes must not let alice reach them. Why the
    attachments are searched by ``file_id``, which no index serves: within one owner's
    attachments (or, for old bare ObjectId ids, all of them: see :func:`_referrers`), per
    batch of 500 file ids, an operator's import buys the proof without an index every
    write would pay for.
    """
    files = database[collections.bucket_files]
    attachments = database[collections.attachments]
    chunks = database[collections.bucket_chunks]
    pending = list(claims.items())
    errors: list[tuple[int, str]] = []
    for start in range(0, len(pending), _BATCH_SIZE):
        batch = dict(pending[start : start + _BATCH_SIZE])
        ids = list(batch)
        proven: set[FileId] = set()
        async for file in files.find({"_id": {"$in": ids}}, {GridFSField.METADATA: 1}):
            claim = batch[file["_id"]]
            metadata = file.get(GridFSField.METADATA) or {}
            holder = (metadata.get(Field.OWNER), metadata.get(Field.ATTACHMENT_ID))
            if claim.same_holder(holder):
                proven.add(file["_id"])
            else:
                errors.append((claim.number, f"file {file['_id']!r} is {_holder(*holder)}"))
        async for attachment in _referrers(attachments, batch):
            file_id = attachment[UploadField.FILE_ID]
            claim = batch[file_id]
            holder = (attachment.get(Field.OWNER), attachment.get(Field.ATTACHMENT_ID))
            if claim.same_holder(holder):
                proven.add(file_id)
            else:
                errors.append(
                    (claim.number, f"file {file_id!r} is referred to by {_holder(*holder)}")
                )
        unproven = [file_id for file_id in ids if file_id not in proven]
        stored = chunks.find({GridFSField.FILES_ID: {"$in": unproven}}, {GridFSField.FILES_ID: 1})
        # One query per batch: in the import of a sound file it finds nothing.
        for file_id in {chunk[GridFSField.FILES_ID] async for chunk in stored}:
            errors.append(
                (
                    batch[file_id].number,
                    f"chunks of file {file_id!r} are stored already, and nothing "
                    "shows they are this attachment's",
                )
            )
    if errors:
        number, message = min(errors)
        claim = next(c for c in claims.values() if c.number == number)
        raise ImportFileError(
            f"line {number}: {message}, not attachment {claim.attachment_id!r} of {claim.owner!r}"
        )


async def _referrers(
    attachments: Any, batch: dict[FileId, _FileClaim]
) -> AsyncIterator[dict[str, Any]]:
    """The attachments in the database that refer to a file of ``batch``.

    Why two kinds of query: an :func:`~chatkit_mongo.schema.owner_file_id` can only be
    its owner's (a line naming it for another owner was refused already), so only that
    owner's attachments are asked, one query per owner, routed to the owner's shards.
    A bare ObjectId (a file from before ids carried the owner) may be anyone's, so all
    attachments are asked: a scan of every shard, as no index serves ``file_id``, listed
    in :data:`chatkit_mongo.operations.sharding.SCATTERS`; an operator's import of old
    files pays it.
    """
    projection = {Field.OWNER: 1, Field.ATTACHMENT_ID: 1, UploadField.FILE_ID: 1}
    by_owner: dict[str, list[FileId]] = {}
    legacy: list[FileId] = []
    for file_id in batch:
        owner = file_id_owner(file_id)
        if owner is None:
            legacy.append(file_id)
        else:
            by_owner.setdefault(owner, []).append(file_id)
    filters = [
        {Field.OWNER: owner, UploadField.FILE_ID: {"$in": ids}} for owner, ids in by_owner.items()
    ]
    if legacy:
        filters.append({UploadField.FILE_ID: {"$in": legacy}})
    for filter_ in filters:
        async for attachment in attachments.find(filter_, projection):
            yield attachment


def _holder(owner: Any, attachment_id: Any) -> str:
    return f"attachment {attachment_id!r} of {owner!r}"


@dataclass
class _Claim:
    """A line's ``_id``, which line claims it, and the unique key it claims it for."""

    number: int
    id: Any
    key: tuple[Any, ...]


async def _check_ids_free(
    database: AsyncDatabaseLike, collections: CollectionNames, path: Path
) -> None:
    """Refuse the import if a line's ``_id`` is taken by a document of another key, or
    its key by a document of another ``_id``, in the database or on an earlier line.

    Why before any write: the upsert of such a line would fail on the ``_id`` index (or
    try to change an ``_id``), possibly after earlier batches were written. Why in
    batches of ``$in`` on ``_id`` or'ed with the keys: the ``_id`` index and the unique
    key indexes serve each batch in one round trip. The file's ids and keys are held
    once each (as BSON bytes) to catch a file that clashes with itself.
    """
    pending: dict[Kind, list[_Claim]] = {kind: [] for kind in KINDS}
    ids_seen: dict[Kind, dict[bytes, bytes]] = {kind: {} for kind in KINDS}
    keys_seen: dict[Kind, dict[bytes, bytes]] = {kind: {} for kind in KINDS}
    for number, kind, document in _read_lines(path):
        if "_id" not in document:
            continue
        claim = _Claim(number, document["_id"], _key(kind, document))
        encoded_id, encoded_key = _encoded(claim.id), _encoded(claim.key)
        if ids_seen[kind].setdefault(encoded_id, encoded_key) != encoded_key:
            raise ImportFileError(f"line {number}: {kind} _id {claim.id!r} is used twice")
        if keys_seen[kind].setdefault(encoded_key, encoded_id) != encoded_id:
            raise ImportFileError(
                f"line {number}: {kind} {_describe(kind, claim.key)} is used twice"
            )
        pending[kind].append(claim)
        if len(pending[kind]) >= _BATCH_SIZE:
            await _check_claims(database, collections, kind, pending[kind])
    for kind, claims in pending.items():
        await _check_claims(database, collections, kind, claims)


async def _check_claims(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    kind: Kind,
    claims: list[_Claim],
) -> None:
    """Check one batch; the error names the batch's first clashing line, whatever order
    the server returns the clashing documents in."""
    if not claims:
        return
    by_id = {_encoded(claim.id): claim for claim in claims}
    by_key = {_encoded(claim.key): claim for claim in claims}
    keys = [dict(zip(_KEYS[kind], claim.key, strict=True)) for claim in claims]
    clashes = {"$or": [{"_id": {"$in": [claim.id for claim in claims]}}, *keys]}
    projection = dict.fromkeys(_KEYS[kind], 1)
    errors: list[tuple[int, str]] = []
    async for existing in database[collections.name_of(kind)].find(clashes, projection):
        key = _key(kind, existing)
        claim = by_id.get(_encoded(existing["_id"])) or next(
            (claim for claim in claims if claim.id == existing["_id"]), None
        )  # the scan: an equal _id of another BSON type, e.g. 1.0 for 1
        if claim is None:  # found by its key alone
            claim = by_key[_encoded(key)]
            errors.append(
                (
                    claim.number,
                    f"{kind} {_describe(kind, key)} already exists with "
                    f"_id {existing['_id']!r}, not {claim.id!r}",
                )
            )
        elif key != claim.key:
            owner_at = _owner_at(kind)
            other_owner = owner_at is not None and key[owner_at] != claim.key[owner_at]
            errors.append(
                (
                    claim.number,
                    f"{kind} _id {claim.id!r} already exists and belongs "
                    f"to {'another owner' if other_owner else f'another {kind}'}",
                )
            )
    if errors:
        number, message = min(errors)
        raise ImportFileError(f"line {number}: {message}")
    claims.clear()


def _describe(kind: Kind, key: tuple[Any, ...]) -> str:
    return ", ".join(f"{name} {value!r}" for name, value in zip(_KEYS[kind], key, strict=True))


def _key(kind: Kind, document: dict[str, Any]) -> tuple[Any, ...]:
    """The document's unique key; a missing field reads as None."""
    values = []
    for name in _KEYS[kind]:
        try:
            values.append(_get(document, name))
        except (KeyError, TypeError):
            values.append(None)
    return tuple(values)


def _encoded(value: Any) -> bytes:
    """An ``_id`` or a key as hashable, exact BSON bytes (an ``_id`` may be a sub-document)."""
    return bson.encode({"_": value})
