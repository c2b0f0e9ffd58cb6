"""Turning ChatKit's pydantic models into MongoDB documents and back.

Why ``model_dump(mode="json")``: it gives a native BSON sub-document that people can
read and query in mongosh, while keeping what BSON dates would lose: ISO strings keep
microseconds and tell a naive datetime from an aware one (ChatKit stamps items with
naive ``datetime.now()`` and later subtracts it from ``datetime.now()``).

Why every write is proved to read back, or read back in memory, before it is sent:
fields typed ``Any`` (thread and attachment metadata, tool outputs, hidden context) may
hold values JSON cannot keep (NaN, a datetime, a tuple). Such a value is refused with
an error that names the field, instead of being stored and coming back different.
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


Dumped = tuple[dict[str, Any], int | None]
"""A model's dump and, where :func:`proved_dump` proved it, an upper bound of its BSON
size that also vouches it encodes, holds no DBRef shape and fewer than ``MAX_NESTING``
documents and arrays (see :func:`check_document`); None where that is not proved."""


def dump(model: BaseModel, adapter: TypeAdapter[Any], what: str) -> Dumped:
    """The model as a BSON-ready dict (with its proved bound), or
    :class:`UnstorableError` naming ``what``.

    Why the proof first: validating the dump back and comparing it with the model is
    most of a write's CPU, and for the common model (plain strings, ints, naive
    datetimes, JSON metadata) its answer is known from the values alone. Where
    :func:`proved_dump` proves it, it also gives the dump; wherever it cannot, pydantic
    dumps the model and the full check runs, so every refusal is the full check's own,
    word for word.
    """
    proved = proved_dump(model, adapter)
    if proved is not None:
        return proved
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
    return data, None


def check_document(
    document: dict[str, Any], what: str, proof: Dumped | None = None, *, envelope: int | None = None
) -> None:
    """Refuse, before anything is sent, a document MongoDB would reject or truncate, or
    one that would not read back as it is (see :func:`is_dbref_shaped`).

    ``proof``, the :data:`Dumped` of the document's one sub-document, skips every
    check where it settles them (see :func:`_proved_storable`): a write then neither
    encodes nor walks its document (the driver encodes it once, to send it).
    ``envelope``, where the caller built every other element of ``document`` from
    values it checked, is :func:`envelope_bytes` of them: the proof then settles the
    checks in constant time, with no walk of the document's fields either.

    Why the encode comes first otherwise: most documents are small, and a small one can
    hold neither too deep a nesting nor a DBRef-shaped object unseen, so the walk that
    looks for those is skipped (see ``_SCAN_FROM_BYTES``). Whenever the encode fails or
    the walk cannot be skipped, the checks run in their full order, so the error is the
    one the full check gives.
    """
    if proof is not None:
        data, bound = proof
        if bound is not None and (
            _proved_storable(document, data, bound)
            if envelope is None
            else bound <= MAX_DOCUMENT_BYTES - _SIZE_HEADROOM - envelope
        ):
            return
    try:
        encoded = bson.encode(document)
    except (OverflowError, InvalidDocument, UnicodeEncodeError, RecursionError):
        encoded = None
    # Why nothing more for a short document: shorter than _SCAN_FROM_BYTES, it is also
    # far inside the size limit. The tests are written out here: every write pays them.
    if encoded is None or len(encoded) >= _SCAN_FROM_BYTES or _DBREF_KEY in encoded:
        _check_structure(document, what)
        _check_encoded(document, what, encoded)


def envelope_bytes(texts: Mapping[str, int], dates: tuple[str, ...], proved: str) -> int:
    """The most BSON bytes a document takes besides what its proved sub-document's bound
    covers (see :func:`check_document`): its length and NUL, each element of ``texts``
    (key -> a str of at most that many characters, 4 UTF-8 bytes each at most), each
    date of ``dates`` and the type byte, key and NUL of the sub-document ``proved``.

    Why the caller names its elements rather than the check reading them: a store
    document's other elements are an owner, ids and a sort key whose lengths the owner
    and id checks bound, and a naive date; the sum of their worst cases is a constant,
    so a write's check costs one comparison (it was a walk of every field, the largest
    of the steps left on a write besides the dump and the shield).
    """
    total = 5 + _header(proved)
    total += sum(_header(key) + 4 + 4 * chars + 1 for key, chars in texts.items())
    return total + sum(_header(key) + 8 for key in dates)


def _header(key: str) -> int:
    """An element's type byte, key and NUL."""
    return 1 + len(key.encode()) + 1


_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def _proved_storable(document: dict[str, Any], data: dict[str, Any], bound: int) -> bool:
    """Whether the checks are settled for ``document``: its one sub-document is ``data``,
    a proved dump within ``bound``; every other value is an ASCII str, a naive datetime,
    None, a bool or a 64-bit int, under a key that is a plain identifier (no NUL, no
    ``$``).

    Why that settles them: such values always encode; the document's size is at most
    the sum of its elements' (type byte, key, NUL, value; 8 bytes for a fixed-size
    value or a str's length and NUL) and the bound, compared with the limit; its
    nesting is one level above the dump's, which holds fewer than ``MAX_NESTING``
    documents and arrays; a DBRef shape needs a ``$`` key, which only the dump could
    hold, and the proof refused those. Anything else (False) takes the full check.
    """
    size = 5 + bound
    for key, value in document.items():
        if not (type(key) is str and key.isascii() and key.isidentifier()):
            return False
        size += 10 + len(key)
        kind = type(value)
        if kind is str:
            if not value.isascii():
                return False
            size += len(value)
        elif kind is int:
            if not _INT64_MIN <= value <= _INT64_MAX:
                return False
        elif value is data:
            continue
        elif not (value is None or kind is bool or (kind is datetime and value.tzinfo is None)):
            return False
    return size <= MAX_DOCUMENT_BYTES - _SIZE_HEADROOM


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

_Meter = list[int]
"""What a dump adds up while it walks, for :func:`check_document`: ``[0]``, bytes;
``[1]``, documents and arrays. Each value adds the bytes its BSON can take beyond the 8
that its parent counts for it (a parent counts ``10 + len(key)`` per element: type
byte, key, NUL and 8, a fixed-size value's size or a str's or container's length and
NUL): a str its UTF-8 length, a container its elements, a datetime 32 (its longest ISO
form). A value that BSON cannot encode, or whose key could make a DBRef shape, adds
:data:`_UNSTORABLE` instead: the bound is then past the limit and the full check runs,
and its error is the one given."""

_Dump = Callable[[Any, _Meter], Any]
"""``(value, meter) -> its JSON dump``, exactly as ``model_dump(mode="json")`` writes
it, only if that dump, validated back through the schema the function was compiled
from, is provably equal to the value; :data:`_UNPROVED` otherwise ("not proved", never
"refused"). It adds to ``meter`` as :data:`_Meter` says."""

_UNSTORABLE: Final = MAX_DOCUMENT_BYTES
"""What a value BSON cannot store adds to the meter's bytes: enough to pass the limit."""
_LIST_ELEMENT: Final = 17
"""What a parent counts per array element: 10 and its key, an index of at most 7 digits
(a longer one means ten million elements, whose count alone passes the limit)."""
_ISO_DATETIME: Final = 32
"""The longest ISO form of a datetime: ``YYYY-MM-DDTHH:MM:SS.ffffff+HH:MM``."""


class _Unproved:
    """The type of :data:`_UNPROVED`: None is a JSON value, so it cannot say "no"."""

    __slots__ = ()


_UNPROVED: Final = _Unproved()


def _never(value: Any, meter: _Meter) -> Any:
    return _UNPROVED


_DUMPS: Final[dict[int, tuple[TypeAdapter[Any], _Dump]]] = {}


def proved_dump(model: BaseModel, adapter: TypeAdapter[Any]) -> Dumped | None:
    """``model``'s JSON dump, if that dump, validated back through ``adapter``, is
    provably equal to ``model``, from its values alone; None means "not proved", never
    "refused". With it, an upper bound of its BSON size where that also proves it
    storable (see :data:`Dumped`). The dump's code for ``adapter``'s schema is compiled
    once (keyed by identity, the adapter kept alive with it so that the id is never
    reused).

    Why the proof also dumps and measures: it visits every value anyway, and for the
    values it proves the dump is the value itself (a datetime's ISO form; containers
    copied, so that what is sent is what was checked, whatever changes the caller's
    model meanwhile). pydantic's serializer, run besides, cost as much as the proof,
    and encoding the document to check it cost half as much again: a write then pays
    one walk over the model instead of three.
    """
    entry = _DUMPS.get(id(adapter))
    if entry is None:
        entry = _DUMPS[id(adapter)] = (adapter, _compile_schema(adapter.core_schema))
    meter = [0, 0]
    try:
        data = entry[1](model, meter)
    except RecursionError:  # a model nested past the interpreter's limit, or a cycle
        return None
    if data is _UNPROVED:
        return None
    # Why 8 more: the meter counts what the dump adds beyond what its parent counts.
    return data, (8 + meter[0] if meter[1] < MAX_NESTING else None)


def _compile_schema(schema: Mapping[str, Any]) -> _Dump:
    try:
        return _Compiler().build(schema)
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


def _datetime_text(value: Any) -> Any:
    """A round-trip datetime as pydantic writes it: ``isoformat()``, with ``Z`` for a
    zero offset (pinned against pydantic for every such datetime by the tests);
    :data:`_UNPROVED` for any other value."""
    if not _is_round_trip_datetime(value):
        return _UNPROVED
    text: str = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _utf8(text: str) -> int:
    """A non-ASCII str's UTF-8 length; :data:`_UNSTORABLE` for one with a lone surrogate."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return _UNSTORABLE


def _key_bytes(key: str) -> int:
    """A key's UTF-8 length; :data:`_UNSTORABLE` for one BSON refuses (a NUL in it) or
    one that could make its object a DBRef shape (any ``$`` key, to keep the test short)."""
    if "\x00" in key or key.startswith("$"):
        return _UNSTORABLE
    return len(key) if key.isascii() else _utf8(key)


def _int64(value: int) -> int:
    """What an int adds to the meter: nothing within BSON's 64-bit range."""
    return 0 if _INT64_MIN <= value <= _INT64_MAX else _UNSTORABLE


def _json_dump(value: Any, meter: _Meter) -> Any:
    """A value typed ``Any`` that JSON keeps as it is: None, bool, int, finite float and
    str (exact types, no subclasses), and lists and str-keyed dicts of those; its dump is
    a copy, as pydantic's is.

    Why a copy and not the value itself: between the checks and the driver's encoding
    the event loop runs other tasks, and one of them may change the caller's metadata;
    what is sent must be what was checked. A value that contains itself, or is nested
    past the interpreter's limit, ends in ``RecursionError``, which sends the model to
    pydantic's dump and the full check (see :func:`proved_dump`).
    """
    kind = type(value)
    if kind is str:
        meter[0] += len(value) if value.isascii() else _utf8(value)
        return value
    if kind is int:
        meter[0] += _int64(value)
        return value
    if kind is bool or value is None:
        return value
    if kind is float:
        return value if isfinite(value) else _UNPROVED
    if kind is list:
        meter[0] += _LIST_ELEMENT * len(value)
        meter[1] += 1
        items = []
        for element in value:
            dumped = _json_dump(element, meter)
            if dumped is _UNPROVED:
                return _UNPROVED
            items.append(dumped)
        return items
    if kind is dict:
        meter[0] += 10 * len(value)
        meter[1] += 1
        entries = {}
        for key, element in value.items():
            if type(key) is not str:
                return _UNPROVED
            meter[0] += _key_bytes(key)
            dumped = _json_dump(element, meter)
            if dumped is _UNPROVED:
                return _UNPROVED
            entries[key] = dumped
        return entries
    return _UNPROVED


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
    """Compiles a pydantic-core schema into a :data:`_Dump`, accepting only the schema
    shapes whose round trip is known; any other shape (validators, custom serializers,
    constraints, aliases, smart unions, URLs...) compiles to :func:`_never`, which sends
    the value to pydantic's dump and the full check. Conservative by construction: an
    unknown key in a schema node is enough to give up on that node.

    Why each accepted shape is exact, for a value of exactly the expected type:
    ``model_dump(mode="json")`` returns a str, int or bool as it is, a finite float as
    it is, a literal's value as it is, a datetime as its ISO form (see
    :func:`_datetime_text`), lists and str-keyed dicts item by item, a model as a dict
    of its fields in the schema's order; and the validator of each shape returns those
    values equal. A model compares equal when its class, extras, private attributes and
    fields do (``BaseModel.__eq__``).

    Why the dump is Python source, one plain function per schema node, compiled once
    per schema (as ``dataclasses`` does for ``__init__``), rather than closures: a
    write runs it with the caches as cold as they are between round trips, and there
    it costs what it touches. A model's function reads each field once and tests the
    plain ones in one expression, its names and types constants of its own code.
    No value of a model or schema is ever written into the source: field names go in
    through ``repr`` of a ``str``, everything else (classes, choices) as named constants.
    """

    def __init__(self) -> None:
        self.definitions: dict[str, Mapping[str, Any]] = {}
        self.by_ref: dict[str, str] = {}
        """A definition's reference -> the name its dump is bound to."""
        self.aliases: dict[str, str] = {}
        """Names bound after the functions exist: a definition's name -> its dump's."""
        self.unions: list[tuple[str, dict[type, str]]] = []
        """Per tagged union, its table's name and class -> the name of that class's dump."""
        self.source: list[str] = []
        self.namespace: dict[str, Any] = {
            "_UNPROVED": _UNPROVED,
            "_never": _never,
            "_datetime_text": _datetime_text,
            "datetime": datetime,
            "_json": _json_dump,
            "_utf8": _utf8,
            "_key_bytes": _key_bytes,
            "_int64": _int64,
            "isfinite": isfinite,
        }

    def build(self, schema: Mapping[str, Any]) -> _Dump:
        root = self.compile(schema)
        exec("\n".join(self.source), self.namespace)  # why source: see the class docstring
        namespace = self.namespace
        for alias in self.aliases:
            namespace[alias] = namespace[self._target(alias)]
        for table, dumps in self.unions:
            namespace[table] = {cls: namespace[name] for cls, name in dumps.items()}
        dump: _Dump = namespace[root]
        return dump

    def _target(self, name: str) -> str:
        """The function an alias ends at; :func:`_never` for a definition that is only
        a reference to itself (no value can be of it)."""
        seen = set()
        while name in self.aliases:
            if name in seen:
                return "_never"
            seen.add(name)
            name = self.aliases[name]
        return name

    def _constant(self, value: Any) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def _function(self, *body: str) -> str:
        name = f"_p{len(self.source)}"
        self.source.append(f"def {name}(value, m):\n" + "".join(f"    {line}\n" for line in body))
        return name

    def _scalar(self, test: str, size: str = "0") -> str:
        """A dump that is the value itself, where ``test`` (of ``value``) holds; it adds
        ``size`` (of ``value``) to the meter."""
        if size == "0":
            return self._function(f"return value if {test} else _UNPROVED")
        return self._function(
            f"if not ({test}):", "    return _UNPROVED", f"m[0] += {size}", "return value"
        )

    def compile(self, schema: Mapping[str, Any]) -> str:
        """The name of the dump of ``schema``."""
        kind = schema["type"]
        if kind == "definitions":
            for definition in schema["definitions"]:
                self.definitions[definition["ref"]] = definition
            return self.compile(schema["schema"])
        if kind == "definition-ref":
            return self._reference(schema["schema_ref"])
        test = self._scalar_test("value", schema)
        if test is not None:
            return self._scalar(test, self._scalar_size("value", schema))
        keys = schema.keys()
        if kind == "float" and keys <= _BARE_KEYS:
            return self._scalar("type(value) is float and isfinite(value)")
        if kind == "none" and keys <= _BARE_KEYS:
            return self._scalar("value is None")
        if kind == "any" and keys <= _BARE_KEYS:
            return "_json"
        if kind == "datetime" and keys <= _DATETIME_KEYS:
            return self._function(f"m[0] += {_ISO_DATETIME}", f"return {_iso('value')}")
        if kind == "nullable" and keys <= _BARE_KEYS | {"schema"}:
            inner = self.compile(schema["schema"])
            return self._function(f"return None if value is None else {inner}(value, m)")
        if kind == "default" and keys <= _DEFAULT_KEYS_FACTORY:
            return self.compile(schema["schema"])  # a stored value is dumped and read as is
        if kind == "list" and keys <= _BARE_KEYS | {"items_schema"}:
            return self._list(schema)
        if kind == "dict" and keys <= _BARE_KEYS | {"keys_schema", "values_schema"}:
            return self._dict(schema)
        if kind == "model" and keys <= _MODEL_KEYS:
            return self._model(schema)
        if kind == "tagged-union" and keys <= _UNION_KEYS:
            return self._tagged_union(schema)
        return "_never"

    def _reference(self, ref: str) -> str:
        """A named schema, compiled once; a recursive one calls its own name, which
        :meth:`build` binds once every function exists."""
        name = self.by_ref.get(ref)
        if name is None:
            name = self.by_ref[ref] = f"_d{len(self.by_ref)}"
            self.aliases[name] = self.compile(self.definitions[ref])
        return name

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while schema["type"] == "definition-ref":
            schema = self.definitions[schema["schema_ref"]]
        return schema

    def _scalar_test(self, subject: str, schema: Mapping[str, Any]) -> str | None:
        """The test that ``subject`` dumps as itself, written out for a plain, nullable
        plain or str literal schema (no call); None for any other schema."""
        kind = schema["type"]
        keys = schema.keys()
        if kind in _PLAIN_TYPES and keys <= _BARE_KEYS:
            return f"type({subject}) is {_PLAIN_TYPES[kind].__name__}"
        if kind == "nullable" and keys <= _BARE_KEYS | {"schema"}:
            inner = self._scalar_test(subject, schema["schema"])
            return None if inner is None else f"({subject} is None or {inner})"
        if kind == "literal" and keys <= _BARE_KEYS | {"expected"}:
            expected = schema["expected"]
            if not all(_encodable(choice) for choice in expected):
                return None
            choices = self._constant(frozenset(expected))
            return f"type({subject}) is str and {subject} in {choices}"
        return None

    def _scalar_size(self, subject: str, schema: Mapping[str, Any]) -> str:
        """What ``subject``, of a schema :meth:`_scalar_test` accepts and once that test
        holds, adds to the meter (see :data:`_Meter`): an expression, "0" for nothing."""
        kind = schema["type"]
        if kind == "str":
            return f"(len({subject}) if {subject}.isascii() else _utf8({subject}))"
        if kind == "int":
            return f"_int64({subject})"
        if kind == "nullable":
            inner = self._scalar_size(subject, schema["schema"])
            return inner if inner == "0" else f"(0 if {subject} is None else {inner})"
        if kind == "literal":
            return str(max(len(choice.encode()) for choice in schema["expected"]))
        return "0"

    def _list(self, schema: Mapping[str, Any]) -> str:
        item_schema = schema["items_schema"]
        test = self._scalar_test("element", item_schema)
        head = [
            "if type(value) is not list:",
            "    return _UNPROVED",
            f"m[0] += {_LIST_ELEMENT} * len(value)",
            "m[1] += 1",
        ]
        if test is not None:  # a list of values that dump as themselves: a copy
            size = self._scalar_size("element", item_schema)
            return self._function(
                *head,
                *(["size = 0"] if size != "0" else []),
                "for element in value:",
                f"    if not ({test}):",
                "        return _UNPROVED",
                *([f"    size += {size}"] if size != "0" else []),
                *(["m[0] += size"] if size != "0" else []),
                "return value.copy()",
            )
        item = self.compile(item_schema)
        return self._function(
            *head,
            "dumped = []",
            "for element in value:",
            *[f"    {line}" for line in _dumped_into("element", item)],
            "    dumped.append(element)",
            "return dumped",
        )

    def _dict(self, schema: Mapping[str, Any]) -> str:
        keys = schema.get("keys_schema", {"type": "any"})
        if keys.keys() > _BARE_KEYS or keys["type"] not in ("str", "any"):
            return "_never"
        values = self.compile(schema.get("values_schema", {"type": "any"}))
        return self._function(
            "if type(value) is not dict:",
            "    return _UNPROVED",
            "m[0] += 10 * len(value)",
            "m[1] += 1",
            "dumped = {}",
            "for key, element in value.items():",
            "    if type(key) is not str:",
            "        return _UNPROVED",
            "    m[0] += _key_bytes(key)",
            *[f"    {line}" for line in _dumped_into("element", values)],
            "    dumped[key] = element",
            "return dumped",
        )

    def _model(self, schema: Mapping[str, Any]) -> str:
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
            return "_never"
        reads: list[str] = []  # each field read once, into a local of its own
        tests: list[str] = []  # the fields that dump as themselves, in one expression
        sizes: list[str] = []  # what those add to the meter, beyond the fixed part
        fixed = 0  # what the fields' elements add whatever their values (see _Meter)
        dumps: list[str] = []  # the others, each dumped and checked in turn
        entries: list[str] = []  # the dump, in the schema's order
        for index, (name, field) in enumerate(fields_schema["fields"].items()):
            if type(name) is not str:
                raise TypeError(f"field name {name!r}")
            key_bytes = _key_bytes(name)
            if key_bytes >= _UNSTORABLE:  # a name BSON cannot store as it is
                return "_never"
            fixed += 10 + key_bytes
            if field["type"] != "model-field" or not field.keys() <= _FIELD_KEYS:
                return "_never"
            inner = self._unwrap_default(field["schema"])
            if inner is None:
                return "_never"
            local = f"f{index}"
            reads.append(f"{local} = fields[{name!r}]")
            test = self._scalar_test(local, inner)
            if test is not None:
                tests.append(test)
                size = self._scalar_size(local, inner)
                if size.isdigit():
                    fixed += int(size)
                else:
                    sizes.append(size)
            elif inner["type"] == "datetime" and inner.keys() <= _DATETIME_KEYS:
                fixed += _ISO_DATETIME  # written out, as a datetime is on every write
                dumps += [f"{local} = {_iso(local)}", *_unproved_if(local)]
            else:
                dumped = self.compile(inner)
                if dumped == "_never":
                    return "_never"
                dumps += _dumped_into(local, dumped)
            entries.append(f"{name!r}: {local}")
        return self._function(
            f"if type(value) is not {self._constant(cls)}:",
            "    return _UNPROVED",
            "if value.__pydantic_extra__ or value.__pydantic_private__ is not None:",
            "    return _UNPROVED",
            "fields = value.__dict__",
            f"if len(fields) != {len(entries)}:",
            "    return _UNPROVED",
            "try:",
            *[f"    {read}" for read in reads],
            "except KeyError:  # a field deleted from the instance",
            "    return _UNPROVED",
            *([f"if not ({' and '.join(tests)}):", "    return _UNPROVED"] if tests else []),
            f"m[0] += {' + '.join([str(fixed), *sizes])}",
            "m[1] += 1",
            *dumps,
            f"return {{{', '.join(entries)}}}",
        )

    @staticmethod
    def _unwrap_default(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if schema["type"] != "default":
            return schema
        allowed = _DEFAULT_KEYS_FACTORY if "default_factory" in schema else _DEFAULT_KEYS
        if not schema.keys() <= allowed or schema.get("default_factory_takes_data"):
            return None
        inner: Mapping[str, Any] = schema["schema"]
        return inner

    def _tagged_union(self, schema: Mapping[str, Any]) -> str:
        """A union on a literal field: the dump's tag picks the schema that reads it back,
        so the value is proved by its own class's dump when that tag picks that class."""
        tag_field = schema["discriminator"]
        if type(tag_field) is not str or schema.get("strict"):
            return "_never"
        by_class: dict[type, str] = {}
        class_of_tag: dict[str, type] = {}
        for tag, choice in schema["choices"].items():
            resolved = self._resolve(choice)
            if type(tag) is not str or resolved["type"] != "model":
                return "_never"
            class_of_tag[tag] = resolved["cls"]
            by_class[resolved["cls"]] = self.compile(choice)
        table = self._constant(None)  # filled by build, once the dumps exist
        self.unions.append((table, by_class))
        return self._function(
            "cls = type(value)",
            f"dump = {table}.get(cls)",
            "if dump is None:",
            "    return _UNPROVED",
            f"tag = value.__dict__.get({tag_field!r})",
            f"if type(tag) is not str or {self._constant(class_of_tag)}.get(tag) is not cls:",
            "    return _UNPROVED",
            "return dump(value, m)",
        )


def _dumped_into(local: str, dump: str) -> list[str]:
    """Source that replaces ``local`` with its dump by ``dump``, or returns unproved."""
    return [f"{local} = {dump}({local}, m)", *_unproved_if(local)]


def _iso(subject: str) -> str:
    """The dump of ``subject``, a datetime field, as an expression: a naive datetime,
    ChatKit's own stamp on every item, is its ``isoformat()`` (no call of ours); any
    other value goes to :func:`_datetime_text`."""
    return (
        f"{subject}.isoformat() if type({subject}) is datetime and {subject}.tzinfo is None "
        f"else _datetime_text({subject})"
    )


def _unproved_if(local: str) -> list[str]:
    """Source that returns unproved where ``local`` is."""
    return [f"if {local} is _UNPROVED:", "    return _UNPROVED"]


def _encodable(choice: Any) -> bool:
    """A literal's choice that is a str UTF-8 encodes (a lone surrogate does not)."""
    if type(choice) is not str:
        return False
    try:
        choice.encode()
    except UnicodeEncodeError:
        return False
    return True
