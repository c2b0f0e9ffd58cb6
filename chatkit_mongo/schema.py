"""The one place that names collections, document fields and indexes.

The store, the index script, the CLI and the tests all read these constants, so a
field renamed here is renamed everywhere, and the indexes can never drift away from
the queries they serve.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

Direction = Literal[1, -1]
Role = Literal["threads", "items", "attachments"]


class Field:
    """Top-level document fields.

    Why top-level copies of ids and times, when the model already holds them under
    ``DATA``: indexes and equality filters need stable, flat paths that no
    user-supplied key can shadow (user metadata lives only inside ``DATA``).
    """

    OWNER: Final = "owner"
    """The tenant (user or organisation) that owns the document. First in every index."""
    THREAD_ID: Final = "thread_id"
    ITEM_ID: Final = "item_id"
    ATTACHMENT_ID: Final = "attachment_id"
    SORT_KEY: Final = "sk"
    """Microsecond timestamp and id in one string; see :func:`sort_key`."""
    CREATED_AT: Final = "created_at"
    """A BSON date (milliseconds, UTC) for people querying in mongosh; never read back."""
    DATA: Final = "data"
    """The pydantic model as a native BSON sub-document (``model_dump(mode="json")``)."""


@dataclass(frozen=True)
class CollectionNames:
    """Names of the collections the store uses, one per kind of document."""

    threads: str = "chatkit_threads"
    items: str = "chatkit_items"
    attachments: str = "chatkit_attachments"
    bucket: str = "chatkit_files"
    """GridFS bucket of attachment bytes: collections ``<bucket>.files`` and ``<bucket>.chunks``."""

    def __post_init__(self) -> None:
        names: dict[str, str] = dict(self.by_role().items())
        names["bucket"] = self.bucket
        for role, name in names.items():
            if not isinstance(name, str) or not name or "$" in name or "\0" in name:
                raise ValueError(f"collection name for {role} is not usable: {name!r}")
        if len(set(names.values())) != len(names):
            raise ValueError(f"collection names must differ: {self!r}")

    def by_role(self) -> dict[Role, str]:
        return {"threads": self.threads, "items": self.items, "attachments": self.attachments}


@dataclass(frozen=True)
class IndexSpec:
    """One index the store needs, with the query it exists for."""

    role: Role
    name: str
    keys: tuple[tuple[str, Direction], ...]
    unique: bool = False
    why: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def key_document(self) -> dict[str, int]:
        return dict(self.keys)


INDEXES: Final[tuple[IndexSpec, ...]] = (
    IndexSpec(
        "threads",
        "owner_thread_unique",
        ((Field.OWNER, 1), (Field.THREAD_ID, 1)),
        unique=True,
        why="load/save/delete a thread; thread ids need only be unique within an owner",
    ),
    IndexSpec(
        "threads",
        "owner_sort",
        ((Field.OWNER, 1), (Field.SORT_KEY, 1)),
        why="load_threads pages in either order: equality on owner, then the sort key",
    ),
    IndexSpec(
        "items",
        "owner_thread_item_unique",
        ((Field.OWNER, 1), (Field.THREAD_ID, 1), (Field.ITEM_ID, 1)),
        unique=True,
        why="load/save/delete an item and resolve a page's `after` anchor; "
        "makes add_thread_item insert-only",
    ),
    IndexSpec(
        "items",
        "owner_thread_sort",
        ((Field.OWNER, 1), (Field.THREAD_ID, 1), (Field.SORT_KEY, 1)),
        why="load_thread_items pages in either order and delete_thread's cascade",
    ),
    IndexSpec(
        "attachments",
        "owner_attachment_unique",
        ((Field.OWNER, 1), (Field.ATTACHMENT_ID, 1)),
        unique=True,
        why="load/save/delete attachment metadata",
    ),
    IndexSpec(
        "attachments",
        "owner_thread",
        ((Field.OWNER, 1), (Field.THREAD_ID, 1)),
        why="delete_thread removes the attachment metadata of the thread",
    ),
)

_EPOCH: Final = datetime(1, 1, 1)
_SORT_DIGITS: Final = 18
"""Microseconds from year 1 to year 9999 fit in 18 decimal digits."""


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
    delta = utc_naive(created_at) - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return f"{micros:0{_SORT_DIGITS}d} {element_id}"
