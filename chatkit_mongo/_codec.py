"""Turning ChatKit's pydantic models into MongoDB documents and back.

Why ``model_dump(mode="json")``: it gives a native BSON sub-document that people can
read and query in mongosh, while keeping what BSON dates would lose: ISO strings keep
microseconds and tell a naive datetime from an aware one (ChatKit stamps items with
naive ``datetime.now()`` and later subtracts it from ``datetime.now()``).

Why every write is read back in memory before it is sent: fields typed ``Any`` (thread
and attachment metadata, tool outputs, hidden context) may hold values JSON cannot keep
(NaN, a datetime, a tuple), and a field assigned without validation may hold anything.
Such a value is refused with an error that names the field, instead of being stored and
coming back different. The check is the definition itself (dump, validate the dump
back, compare), with pydantic's public API only: it holds for every model and every
pydantic version, and costs a few microseconds against a round trip of hundreds.

Why the document is then checked as BSON (:func:`check_document`): JSON is not all
MongoDB keeps. An integer past 64 bits, a lone surrogate, a NUL in a key, nesting past
100 levels, an object the decoder reads as a DBRef, and 16 MiB are refused here, named,
before anything is sent. The driver encodes the very dict that was checked: the dump
is pydantic's fresh copy, which no other task can change in between.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar, get_args

import bson
from bson.errors import InvalidDocument
from chatkit.types import Attachment, ThreadItem, ThreadMetadata
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from .errors import UnstorableError

_Model = TypeVar("_Model")

MAX_DOCUMENT_BYTES: Final = 16 * 1024 * 1024
"""MongoDB's document size limit (``maxBsonObjectSize``)."""
_SIZE_HEADROOM: Final = 1024
"""Room for ``_id`` and fields a later update adds (less than 100 bytes today)."""
MAX_NESTING: Final = 100
"""MongoDB refuses documents nested deeper than this; the drivers do not check."""

ITEM_ADAPTER: Final[TypeAdapter[ThreadItem]] = TypeAdapter(ThreadItem)
ATTACHMENT_ADAPTER: Final[TypeAdapter[Attachment]] = TypeAdapter(Attachment)
THREAD_ADAPTER: Final[TypeAdapter[ThreadMetadata]] = TypeAdapter(ThreadMetadata)


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The model classes a type names: itself, or the members of a union, annotated or not."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in get_args(annotation) for model in _models(argument)]


STORED_MODELS: Final[tuple[type[BaseModel], ...]] = (
    ThreadMetadata,
    *_models(ThreadItem),
    *_models(Attachment),
)
"""Every model class the store writes; each is built here, at import.

Why: ChatKit defines several of them (``ThreadMetadata``, ``AssistantMessageItem``...)
before the types they refer to, so pydantic builds their validator and serializer at
their first use: 1 to 2.5 ms of processor time each, on the event loop of whichever
request first dumps one (an item read through :data:`ITEM_ADAPTER` and saved again) or
builds one (a ``Thread`` reduced to its metadata). ``model_rebuild`` does nothing for a
class already built."""
for _model in STORED_MODELS:
    _model.model_rebuild()


def _parser(adapter: TypeAdapter[_Model]) -> Callable[[Any], _Model]:
    """``adapter.validate_python`` without its Python wrapper: the validator's own method.

    Why: the wrapper's handling of its (here all default) arguments costs about as much
    as validating a short item, and a page validates up to ``max_page_size`` of them.
    """
    parse: Callable[[Any], _Model] = adapter.validator.validate_python
    return parse


parse_thread: Final = _parser(THREAD_ADAPTER)
"""A stored thread's ``data`` as ``ThreadMetadata``, or pydantic's ``ValidationError``."""
parse_item: Final = _parser(ITEM_ADAPTER)
"""A stored item's ``data`` as its ``ThreadItem`` variant, or ``ValidationError``."""
parse_attachment: Final = _parser(ATTACHMENT_ADAPTER)
"""A stored attachment's ``data`` as its ``Attachment`` variant, or ``ValidationError``."""


def dump(model: BaseModel, adapter: TypeAdapter[Any], what: str) -> dict[str, Any]:
    """The model as a BSON-ready dict, or :class:`UnstorableError` naming ``what``:
    pydantic's JSON dump, validated back through ``adapter`` and compared with
    ``model`` (``BaseModel.__eq__``: class, fields, extras and private attributes)."""
    try:
        # ``model_dump(mode="json")`` without its argument handling (a third of its cost)
        data: dict[str, Any] = model.__pydantic_serializer__.to_python(model, mode="json")
    except (PydanticSerializationError, UnicodeDecodeError, TypeError) as exc:
        # bytes not UTF-8, objects, a union's tag that is not even hashable
        raise UnstorableError(
            f"{what} holds a value that cannot be written as JSON: {exc}. Store it as a JSON value."
        ) from exc
    except ValueError as exc:  # pydantic's serializer meeting a value that contains itself
        raise UnstorableError(
            f"{what} holds a value that contains itself ({exc}); JSON cannot write a cycle"
        ) from exc
    try:
        loaded = adapter.validator.validate_python(data)
    except ValidationError as exc:  # a custom serializer that does not validate back
        raise UnstorableError(f"{what} would not read back: {exc}") from exc
    if loaded != model:
        raise UnstorableError(
            f"{what} would not read back as saved: field {_first_difference(model, loaded)!r} "
            "holds a value that JSON cannot keep (NaN, infinity, datetime, bytes, tuple, set, "
            "or another non-JSON type). Store it as a JSON value."
        )
    return data


def check_document(document: dict[str, Any], what: str) -> None:
    """Refuse, before anything is sent, a document MongoDB would reject or truncate, or
    one that would not read back as it is (see :func:`is_dbref_shaped`).

    Why the encode comes first: most documents are small, and a small one can hold
    neither too deep a nesting nor a DBRef-shaped object unseen, so the walk that looks
    for those is skipped (see ``_SCAN_FROM_BYTES``). Whenever the encode fails or the
    walk cannot be skipped, the checks run in their full order, so the error is the one
    the full check gives.
    """
    try:
        encoded = bson.encode(document)
    except (OverflowError, InvalidDocument, UnicodeEncodeError, RecursionError):
        encoded = None
    if encoded is None or len(encoded) >= _SCAN_FROM_BYTES or _DBREF_KEY in encoded:
        _check_structure(document, what)
        _check_encoded(document, what, encoded)
    # Why nothing more for a short document: shorter than _SCAN_FROM_BYTES, it is also
    # far inside the size limit.


_DBREF_KEY: Final = b"\x02$ref\x00"
"""A string element keyed ``$ref`` as BSON: what every DBRef-shaped object holds."""
_LEVEL_BYTES: Final = 7
"""The fewest BSON bytes one more level of nesting adds: the element's type byte, a
one-byte key ("0" for an array) and its NUL, and the nested document's length and NUL."""
_SCAN_FROM_BYTES: Final = 5 + _LEVEL_BYTES * MAX_NESTING
"""The smallest BSON document nested past ``MAX_NESTING`` levels (an empty innermost
document is 5 bytes): anything shorter is provably nested deeply enough to store.

Why skipping the walk below this size is exact and not a guess: a document nested
``MAX_NESTING + 1`` levels is at least this long, and a DBRef-shaped object holds a
string element ``$ref``, whose type byte, key and NUL (``_DBREF_KEY``) then appear in
the bytes (they may also appear inside a string value: then the walk runs for nothing,
never the other way round)."""


def _check_structure(document: dict[str, Any], what: str) -> None:
    depth, dbref = _scan(document)
    if depth > MAX_NESTING:
        raise UnstorableError(f"{what} is nested {depth} levels deep; MongoDB allows {MAX_NESTING}")
    if dbref is not None:
        raise UnstorableError(
            f"{what} holds, at {_path_to(document, dbref)!r}, an object with the keys "
            f"{sorted(dbref)}: the BSON decoder of every driver reads an object with a string "
            '"$ref" and an "$id" (and a "$db" that is absent, null or a string) back as a '
            "DBRef, a database reference, not as the object saved. Rename its keys."
        )


def _check_encoded(document: dict[str, Any], what: str, encoded: bytes | None) -> None:
    """The encoder's refusal, named; or the size limit of the ``encoded`` document."""
    try:
        size = len(encoded if encoded is not None else bson.encode(document))
    except OverflowError as exc:
        raise UnstorableError(
            f"{what} holds an integer outside MongoDB's 64-bit range ({exc})"
        ) from exc
    except InvalidDocument as exc:
        raise UnstorableError(f"{what} cannot be encoded as BSON: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise UnstorableError(
            f"{what} holds a string with a lone surrogate ({exc.object[exc.start : exc.end]!r}), "
            "which BSON's UTF-8 cannot encode"
        ) from exc
    if size > MAX_DOCUMENT_BYTES - _SIZE_HEADROOM:
        raise UnstorableError(
            f"{what} is {size} bytes as BSON; a MongoDB document holds at most "
            f"{MAX_DOCUMENT_BYTES - _SIZE_HEADROOM} here (16 MiB less room for the _id). "
            "Keep large content in attachments."
        )


def is_dbref_shaped(value: dict[str, Any]) -> bool:
    """Whether BSON decoding turns this object into a ``DBRef``.

    Why this is the one shape to refuse: it is the only sub-document the BSON decoder
    (PyMongo's C and Python decoders alike) does not return as it was encoded; every
    other JSON value decodes back equal.
    """
    return (
        isinstance(value.get("$ref"), str)
        and "$id" in value
        and isinstance(value.get("$db"), str | None)
    )


_CONTAINERS: Final = (dict, list)


def _scan(value: Any) -> tuple[int, dict[str, Any] | None]:
    """Nesting depth of documents and arrays, counted as MongoDB does (iteratively), and
    the first sub-document that would decode as a DBRef, if any: one walk for both.

    Why level by level: only containers are ever kept, so each scalar costs one
    ``isinstance`` and nothing is pushed for it; three times faster than a stack of
    every node, and writes pay this on every call.
    """
    if not isinstance(value, _CONTAINERS):
        return 0, None
    depth = 0
    dbref: dict[str, Any] | None = None
    level: list[Any] = [value]
    while level:
        depth += 1
        below: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                if dbref is None and depth > 1 and "$ref" in node and is_dbref_shaped(node):
                    dbref = node
                children: Any = node.values()
            else:
                children = node
            for child in children:
                if isinstance(child, _CONTAINERS):
                    below.append(child)
        level = below
    return depth, dbref


def _path_to(document: Any, target: Any) -> str:
    """The dotted path of ``target`` (found by identity) inside ``document``; only on the
    error path, so the walk above needs to carry no paths."""
    stack: list[tuple[Any, str]] = [(document, "")]
    while stack:
        current, path = stack.pop()
        if current is target:
            return path
        if isinstance(current, dict):
            pairs: Any = current.items()
        elif isinstance(current, list):
            pairs = enumerate(current)
        else:
            continue
        stack.extend((child, f"{path}.{key}" if path else str(key)) for key, child in pairs)
    return "?"


def _first_difference(saved: BaseModel, loaded: BaseModel) -> str:
    """The first field whose values differ; a field the saved model lacks altogether
    (built without validation, then stripped) differs too."""
    missing = object()
    for name in type(saved).model_fields:
        if getattr(saved, name, missing) != getattr(loaded, name, missing):
            return name
    return "?"
