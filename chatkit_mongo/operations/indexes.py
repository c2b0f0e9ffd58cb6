"""Creating and checking the indexes of :data:`chatkit_mongo.schema.INDEXES`.

Why compare before creating: a real server refuses an index whose keys or name clash
with an existing one (codes 85 and 86), but test doubles silently add a second index,
and either way the operator deserves to hear which index is in the way. So the plan
is computed from ``listIndexes`` once, the same way on every backend, and the create
step only sends what is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pymongo import IndexModel
from pymongo.errors import OperationFailure

from .._driver import AsyncDatabaseLike, maybe_await
from ..errors import IndexConflictError
from ..schema import INDEXES, CollectionNames, IndexSpec, describe_option

IndexState = Literal["present", "missing", "conflict"]

_INDEX_OPTION_CONFLICT = 85
_INDEX_KEY_SPECS_CONFLICT = 86
_COMPARED_OPTIONS = ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds")


@dataclass(frozen=True)
class IndexStatus:
    """What the database holds for one needed index."""

    spec: IndexSpec
    collection: str
    state: IndexState
    detail: str = ""
    created: bool = False
    """Created by this call (``state`` is then ``present``)."""

    def describe(self) -> str:
        text = f"{self.spec.describe(self.collection)}: {'created' if self.created else self.state}"
        return f"{text} ({self.detail})" if self.detail else text


async def plan_indexes(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    specs: Sequence[IndexSpec] = INDEXES,
) -> list[IndexStatus]:
    """Compare the needed indexes with what the database has; changes nothing."""
    existing: dict[str, list[dict[str, Any]]] = {}
    for kind in dict.fromkeys(spec.kind for spec in specs):
        cursor = await maybe_await(database[collections.name_of(kind)].list_indexes())
        existing[kind] = await cursor.to_list(None)
    return [_status(spec, collections.name_of(spec.kind), existing[spec.kind]) for spec in specs]


async def ensure_indexes(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    specs: Sequence[IndexSpec] = INDEXES,
) -> list[IndexStatus]:
    """Create the missing indexes; raise :class:`IndexConflictError` if any clash.

    Idempotent, and safe from many processes at once: creating an index identical to
    an existing one is a no-op on the server. Nothing is created when a conflict is
    found, so a half-migrated set of indexes is never left behind by this call.
    """
    plan = await plan_indexes(database, collections, specs)
    _raise_conflicts(plan)
    created: list[IndexStatus] = []
    for collection, missing in _group_missing(plan).items():
        try:
            await database[collection].create_indexes([_model(s.spec) for s in missing])
        except OperationFailure as exc:  # another process created a clashing one meanwhile
            if exc.code in (_INDEX_OPTION_CONFLICT, _INDEX_KEY_SPECS_CONFLICT):
                raise IndexConflictError(
                    f"creating indexes {[s.spec.name for s in missing]} on {collection} "
                    f"failed: {exc}"
                ) from exc
            raise
        created.extend(missing)
    return [
        IndexStatus(s.spec, s.collection, "present", created=True) if s in created else s
        for s in plan
    ]


def _status(spec: IndexSpec, collection: str, existing: Iterable[dict[str, Any]]) -> IndexStatus:
    wanted_keys = list(spec.keys)
    for index in existing:
        keys = [(name, _direction(value)) for name, value in dict(index["key"]).items()]
        same_keys = keys == wanted_keys
        if not same_keys and index.get("name") != spec.name:
            continue
        if not same_keys:
            return IndexStatus(
                spec, collection, "conflict", f"an index named {spec.name} has keys {keys}"
            )
        wanted = _wanted_options(spec)
        differing = [
            option
            for option in _COMPARED_OPTIONS
            if _normalise(index.get(option)) != _normalise(wanted.get(option))
        ]
        if differing:
            have = ", ".join(describe_option(o, _normalise(index.get(o))) for o in differing)
            need = ", ".join(describe_option(o, _normalise(wanted.get(o))) for o in differing)
            return IndexStatus(
                spec,
                collection,
                "conflict",
                f"index {index.get('name')} has the same keys but {have}, "
                f"where chatkit-mongo needs {need}",
            )
        detail = "" if index.get("name") == spec.name else f"as {index.get('name')}"
        return IndexStatus(spec, collection, "present", detail)
    return IndexStatus(spec, collection, "missing")


def _direction(value: Any) -> Any:
    """Servers may report ``1.0`` for ``1``; text and hashed keys stay strings."""
    return int(value) if isinstance(value, int | float) else value


def _wanted_options(spec: IndexSpec) -> dict[str, Any]:
    return {"unique": spec.unique, **spec.options}


def _normalise(value: Any) -> Any:
    """``unique: False`` and an absent ``unique`` mean the same to the server."""
    return None if value is False else value


def _model(spec: IndexSpec) -> IndexModel:
    return IndexModel(list(spec.keys), name=spec.name, **_wanted_options(spec))


def _group_missing(plan: Iterable[IndexStatus]) -> dict[str, list[IndexStatus]]:
    grouped: dict[str, list[IndexStatus]] = {}
    for status in plan:
        if status.state == "missing":
            grouped.setdefault(status.collection, []).append(status)
    return grouped


def _raise_conflicts(plan: Iterable[IndexStatus]) -> None:
    conflicts = [status for status in plan if status.state == "conflict"]
    if conflicts:
        raise IndexConflictError(
            "existing indexes clash with the ones chatkit-mongo needs; drop or rename them, "
            "then create again: " + "; ".join(status.describe() for status in conflicts)
        )
