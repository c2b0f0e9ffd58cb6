"""Turning ChatKit's pydantic models into MongoDB documents and back.

Why ``model_dump(mode="json")``: it gives a native BSON sub-document that people can
read and query in mongosh, while keeping what BSON dates would lose: ISO strings keep
microseconds and tell a naive datetime from an aware one (ChatKit stamps items with
naive ``datetime.now()`` and later subtracts it from ``datetime.now()``).

Why every write is read back in memory before it is sent: fields typed ``Any`` (thread
and attachment metadata, tool outputs, hidden context) may hold values JSON cannot keep
(NaN, a datetime, a tuple). Such a value is refused with an error that names the field,
instead of being stored and coming back different.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from math import isfinite
from typing import Any, Final, TypeVar

import bson
from bson.errors import InvalidDocument
from chatkit.types import Attachment, AttachmentBase, ThreadItem, ThreadMetadata
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
    """The model as a BSON-ready dict, or :class:`UnstorableError` naming ``what``.

    Why the proof before the read-back: validating the dump back and comparing it with
    the model is most of a write's CPU, and for the common model (plain strings, ints,
    naive datetimes, JSON metadata) its answer is known from the values alone. Where
    :func:`round_trip_proved` proves it, the read-back is skipped; wherever it cannot, the full
    check runs, so every refusal is the full check's own, word for word.
    """
    try:
        # ``model_dump(mode="json")`` without its argument handling (a third of its cost)
        data: dict[str, Any] = model.__pydantic_serializer__.to_python(model, mode="json")
    except (PydanticSerializationError, UnicodeDecodeError) as exc:  # bytes not UTF-8, objects
        raise UnstorableError(
            f"{what} holds a value that cannot be written as JSON: {exc}. Store it as a JSON value."
        ) from exc
    except ValueError as exc:  # pydantic's serializer meeting a value that contains itself
        raise UnstorableError(
            f"{what} holds a value that contains itself ({exc}); JSON cannot write a cycle"
        ) from exc
    if round_trip_proved(model, adapter):
        return data
    try:
        loaded = adapter.validate_python(data)
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
    # Why nothing more for a short document: shorter than _SCAN_FROM_BYTES, it is also
    # far inside the size limit. The tests are written out here: every write pays them.
    if encoded is None or len(encoded) >= _SCAN_FROM_BYTES or _DBREF_KEY in encoded:
        _check_structure(document, what)
        _check_encoded(document, what, encoded)


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
    _check_size(size, what)


def _check_size(size: int, what: str) -> None:
    if size > MAX_DOCUMENT_BYTES - _SIZE_HEADROOM:
        raise UnstorableError(
            f"{what} is {size} bytes as BSON; a MongoDB document holds at most "
            f"{MAX_DOCUMENT_BYTES - _SIZE_HEADROOM} here (16 MiB less room for the _id). "
            "Keep large content in attachments."
        )


def is_dbref_shaped(value: dict[str, Any]) -> bool:
    """Whether BSON decoding turns this object into a ``DBRef``.

    Why this is the one shape to refuse: it is the only sub-document the BSON decoder
    (PyMongo's C and Python decoders alike, in ``bson._get_object``) does not return as
    it was encoded; every other JSON value decodes back equal.
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
    for name in type(saved).model_fields:
        if getattr(saved, name) != getattr(loaded, name):
            return name
    return "?"


# ---------------------------------------------------------------- the round-trip proof

_Proof = Callable[[Any], bool]
"""``value -> True`` only if the value, dumped as JSON and validated back through the
schema it was compiled from, is provably equal to itself; False means "not proved"."""


def _never(value: Any) -> bool:
    return False


_PROOFS: Final[dict[int, tuple[TypeAdapter[Any], _Proof]]] = {}


def round_trip_proved(model: BaseModel, adapter: TypeAdapter[Any]) -> bool:
    """Whether ``model``, dumped as JSON and validated back through ``adapter``, is
    provably equal to itself, from its values alone; False means "not proved", never
    "refused". The proof for ``adapter``'s schema is compiled once (keyed by identity,
    the adapter kept alive with it so that the id is never reused)."""
    entry = _PROOFS.get(id(adapter))
    if entry is None:
        entry = _PROOFS[id(adapter)] = (adapter, _compile_schema(adapter.core_schema))
    return entry[1](model)


def _compile_schema(schema: Mapping[str, Any]) -> _Proof:
    try:
        return _Compiler().compile(schema)
    except (KeyError, TypeError, ValueError):  # a schema shape this compiler never saw
        return _never


_FIXED_OFFSET_UNIT: Final = 60
"""pydantic writes a UTC offset in whole minutes: finer offsets do not read back equal."""


def _is_round_trip_datetime(value: Any) -> bool:
    """A datetime whose ISO form reads back equal: naive, or with a fixed offset in whole
    minutes. Why not any tzinfo: a zone whose offset depends on ``fold`` (a repeated
    hour) compares unequal with the fixed-offset datetime it reads back as."""
    if type(value) is not datetime:
        return False
    zone = value.tzinfo
    if zone is None:
        return True
    if type(zone) is not timezone:
        return False
    offset = zone.utcoffset(None)
    return offset.microseconds == 0 and offset.seconds % _FIXED_OFFSET_UNIT == 0


def _is_round_trip_json(value: Any) -> bool:
    """A value typed ``Any`` that JSON keeps as it is: None, bool, int, finite float and
    str (exact types, no subclasses), and lists and str-keyed dicts of those. Iterative:
    the dump already succeeded, so the value is finite and acyclic, but may be deep."""
    stack = [value]
    while stack:
        current = stack.pop()
        kind = type(current)
        if kind is str or kind is int or kind is bool or current is None:
            continue
        if kind is float:
            if not isfinite(current):
                return False
        elif kind is list:
            stack.extend(current)
        elif kind is dict:
            for key in current:
                if type(key) is not str:
                    return False
            stack.extend(current.values())
        else:
            return False
    return True


_PLAIN_TYPES: Final[dict[str, type]] = {"str": str, "int": int, "bool": bool}
"""Schemas whose validator returns a value of exactly this type unchanged."""
_BARE_KEYS: Final = frozenset({"type", "metadata"})
_MODEL_KEYS: Final = _BARE_KEYS | {
    "serialization",
    "cls",
    "schema",
    "config",
    "ref",
    "custom_init",
    "root_model",
}
_TRANSPARENT_SERIALIZERS: Final = (
    {"type": "function-wrap", "function": AttachmentBase._serialize, "info_arg": True},
)
"""Model serializers known to dump a model as the default serializer does when, as in
:func:`dump`, no serialization context is given: ChatKit's attachments drop their
``metadata`` only when the context asks for ``exclude_metadata``."""
_MODEL_CONFIG_KEYS: Final = frozenset({"title"})
_DATETIME_KEYS: Final = _BARE_KEYS | {"microseconds_precision"}
_FIELDS_KEYS: Final = _BARE_KEYS | {"fields", "model_name", "computed_fields"}
_FIELD_KEYS: Final = _BARE_KEYS | {"schema", "frozen"}
_DEFAULT_KEYS: Final = _BARE_KEYS | {"schema", "default", "default_factory"}
_DEFAULT_KEYS_FACTORY: Final = _DEFAULT_KEYS | {"default_factory_takes_data"}
_UNION_KEYS: Final = _BARE_KEYS | {"choices", "discriminator", "strict", "from_attributes"}


class _Compiler:
    """Compiles a pydantic-core schema into a :data:`_Proof`, accepting only the schema
    shapes whose round trip is known; any other shape (validators, custom serializers,
    constraints, aliases, smart unions, URLs...) compiles to :func:`_never`, which sends
    the value to the full check. Conservative by construction: an unknown key in a
    schema node is enough to give up on that node.

    Why each accepted shape is exact, for a value of exactly the expected type:
    ``model_dump(mode="json")`` returns a str, int or bool as it is, a finite float as
    it is, a literal's value as it is, a datetime as its ISO form (see
    :func:`_is_round_trip_datetime`), lists and str-keyed dicts item by item; and the
    validator of each shape returns those values equal. A model compares equal when
    its class, extras, private attributes and fields do (``BaseModel.__eq__``).
    """

    def __init__(self) -> None:
        self.definitions: dict[str, Mapping[str, Any]] = {}
        self.by_ref: dict[str, list[_Proof]] = {}

    def compile(self, schema: Mapping[str, Any]) -> _Proof:
        kind = schema["type"]
        if kind == "definitions":
            for definition in schema["definitions"]:
                self.definitions[definition["ref"]] = definition
            return self.compile(schema["schema"])
        if kind == "definition-ref":
            return self._reference(schema)
        keys = schema.keys()
        if kind in _PLAIN_TYPES and keys <= _BARE_KEYS:
            expected = _PLAIN_TYPES[kind]
            return lambda value: type(value) is expected
        if kind == "float" and keys <= _BARE_KEYS:
            return lambda value: type(value) is float and isfinite(value)
        if kind == "none" and keys <= _BARE_KEYS:
            return lambda value: value is None
        if kind == "any" and keys <= _BARE_KEYS:
            return _is_round_trip_json
        if kind == "datetime" and keys <= _DATETIME_KEYS:
            return _is_round_trip_datetime
        if kind == "literal" and keys <= _BARE_KEYS | {"expected"}:
            return self._literal(schema)
        if kind == "nullable" and keys <= _BARE_KEYS | {"schema"}:
            inner = self.compile(schema["schema"])
            return lambda value: value is None or inner(value)
        if kind == "default" and keys <= _DEFAULT_KEYS_FACTORY:
            return self.compile(schema["schema"])  # a stored value is dumped and read as is
        if kind == "list" and keys <= _BARE_KEYS | {"items_schema"}:
            return self._list(self.compile(schema["items_schema"]))
        if kind == "dict" and keys <= _BARE_KEYS | {"keys_schema", "values_schema"}:
            return self._dict(schema)
        if kind == "model" and keys <= _MODEL_KEYS:
            return self._model(schema)
        if kind == "tagged-union" and keys <= _UNION_KEYS:
            return self._tagged_union(schema)
        return _never

    def _reference(self, schema: Mapping[str, Any]) -> _Proof:
        """A named schema, compiled once; a recursive one refers to itself through the
        cell, filled once its compilation ends."""
        ref = schema["schema_ref"]
        if ref not in self.by_ref:
            cell: list[_Proof] = []
            self.by_ref[ref] = cell
            cell.append(self.compile(self.definitions[ref]))
        cell = self.by_ref[ref]
        if cell:
            return cell[0]

        def recursive(value: Any) -> bool:  # compiled inside its own definition
            return cell[0](value)

        return recursive

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while schema["type"] == "definition-ref":
            schema = self.definitions[schema["schema_ref"]]
        return schema

    @staticmethod
    def _literal(schema: Mapping[str, Any]) -> _Proof:
        expected = schema["expected"]
        if not all(type(choice) is str for choice in expected):
            return _never
        allowed = frozenset(expected)
        return lambda value: type(value) is str and value in allowed

    @staticmethod
    def _list(item: _Proof) -> _Proof:
        def proof(value: Any) -> bool:
            return type(value) is list and all(map(item, value))

        return proof

    def _dict(self, schema: Mapping[str, Any]) -> _Proof:
        keys = schema.get("keys_schema", {"type": "any"})
        if keys.keys() > _BARE_KEYS or keys["type"] not in ("str", "any"):
            return _never
        values = self.compile(schema.get("values_schema", {"type": "any"}))

        def proof(value: Any) -> bool:
            if type(value) is not dict:
                return False
            for key, element in value.items():
                if type(key) is not str or not values(element):
                    return False
            return True

        return proof

    def _model(self, schema: Mapping[str, Any]) -> _Proof:
        cls = schema["cls"]
        fields_schema = schema["schema"]
        serialization = schema.get("serialization")
        if (
            (serialization is not None and serialization not in _TRANSPARENT_SERIALIZERS)
            or schema.get("custom_init") or schema.get("root_model")
            or not schema.get("config", {}).keys() <= _MODEL_CONFIG_KEYS
            or fields_schema["type"] != "model-fields"
            or not fields_schema.keys() <= _FIELDS_KEYS
            or fields_schema.get("computed_fields")
            or cls.__eq__ is not BaseModel.__eq__
            or cls.__pydantic_generic_metadata__["origin"] is not None
        ):  # fmt: skip
            return _never
        plain: list[tuple[str, frozenset[type]]] = []
        literal: list[tuple[str, frozenset[str]]] = []
        dates: list[str] = []
        other: list[tuple[str, _Proof]] = []
        for name, field in fields_schema["fields"].items():
            if field["type"] != "model-field" or not field.keys() <= _FIELD_KEYS:
                return _never
            inner = self._unwrap_default(field["schema"])
            if inner is None:
                return _never
            types = self._plain_types(inner)
            if types is not None:
                plain.append((name, types))
            elif inner["type"] == "literal" and inner.keys() <= _BARE_KEYS | {"expected"}:
                choices = inner["expected"]
                if not all(type(choice) is str for choice in choices):
                    return _never
                literal.append((name, frozenset(choices)))
            elif inner["type"] == "datetime" and inner.keys() <= _DATETIME_KEYS:
                dates.append(name)
            else:
                other.append((name, self.compile(inner)))
        count = len(fields_schema["fields"])
        # Why the checks are split by kind: the plain and literal fields, most of a
        # ChatKit item, cost a type test each, with no call.

        def proof(value: Any) -> bool:
            if type(value) is not cls:
                return False
            if value.__pydantic_extra__ or value.__pydantic_private__ is not None:
                return False
            attributes = value.__dict__
            if len(attributes) != count:
                return False
            try:
                for name, types in plain:
                    if type(attributes[name]) not in types:
                        return False
                for name, choices in literal:
                    element = attributes[name]
                    if type(element) is not str or element not in choices:
                        return False
                for name in dates:
                    if not _is_round_trip_datetime(attributes[name]):
                        return False
                for name, check in other:
                    if not check(attributes[name]):
                        return False
            except KeyError:  # a field deleted from the instance
                return False
            return True

        return proof

    @staticmethod
    def _unwrap_default(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if schema["type"] != "default":
            return schema
        allowed = _DEFAULT_KEYS_FACTORY if "default_factory" in schema else _DEFAULT_KEYS
        if not schema.keys() <= allowed or schema.get("default_factory_takes_data"):
            return None
        inner: Mapping[str, Any] = schema["schema"]
        return inner

    @staticmethod
    def _plain_types(schema: Mapping[str, Any]) -> frozenset[type] | None:
        """The exact types a plain (or nullable plain) schema proves by type alone."""
        nullable = schema["type"] == "nullable" and schema.keys() <= _BARE_KEYS | {"schema"}
        inner = schema["schema"] if nullable else schema
        if inner["type"] not in _PLAIN_TYPES or not inner.keys() <= _BARE_KEYS:
            return None
        expected = _PLAIN_TYPES[inner["type"]]
        return frozenset({expected, type(None)}) if nullable else frozenset({expected})

    def _tagged_union(self, schema: Mapping[str, Any]) -> _Proof:
        """A union on a literal field: the dump's tag picks the schema that reads it back,
        so the value is proved by its own class's proof when that tag picks that class."""
        tag_field = schema["discriminator"]
        if type(tag_field) is not str or schema.get("strict"):
            return _never
        by_class: dict[type, _Proof] = {}
        class_of_tag: dict[str, type] = {}
        for tag, choice in schema["choices"].items():
            resolved = self._resolve(choice)
            if type(tag) is not str or resolved["type"] != "model":
                return _never
            class_of_tag[tag] = resolved["cls"]
            by_class[resolved["cls"]] = self.compile(choice)

        def proof(value: Any) -> bool:
            check = by_class.get(type(value))
            if check is None or not check(value):
                return False
            return class_of_tag.get(value.__dict__[tag_field]) is type(value)

        return proof
