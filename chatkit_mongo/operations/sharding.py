"""Sharding: where each query is routed, the commands that shard the collections, their state.

The shard keys themselves are data in :data:`chatkit_mongo.schema.SHARD_KEYS`. This
module reads them to

- tell where a mongos would send a query (:func:`route`): to one shard when the filter
  holds equality on the whole key, to the shards of a key range when it holds equality
  (or ``$in``) on a prefix, to every shard otherwise;
- list, in one place, the operations that must go to every shard, with their cost
  (:data:`SCATTERS`); the test suite fails on a broadcast query missing from it;
- print or run the commands that shard the collections, and report whether each one is
  sharded with the expected key (``chatkit-mongo shard``, ``chatkit-mongo doctor``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from bson import MaxKey, MinKey
from pymongo.errors import PyMongoError

from .._driver import AsyncDatabaseLike
from ..schema import (
    INDEXES,
    KINDS,
    MODEL_KINDS,
    SHARD_KEYS,
    CollectionNames,
    Field,
    GridFSField,
    Kind,
    ShardKey,
    UploadField,
    prefix_range,
)
from .indexes import ensure_indexes

Route = Literal["one shard", "key range", "every shard"]
Echo = Callable[[str], None]

ROUTER_MSG: Final = "isdbgrid"
"""What ``hello`` answers in ``msg`` on a mongos, and only there."""

SINGLE_DOCUMENT_WRITES: Final = frozenset(
    {"update_one", "replace_one", "delete_one", "find_one_and_update", "find_one_and_delete"}
)
"""Writes of at most one document: on a sharded collection they must carry equality on the
whole shard key (an upsert always, the others before MongoDB 7.1), or be refused."""


def _equality(value: Any) -> Literal["equal", "in", "other"]:
    if isinstance(value, Mapping) and any(str(name).startswith("$") for name in value):
        if set(value) == {"$eq"}:
            return "equal"
        if set(value) == {"$in"}:
            return "in"
        return "other"
    return "equal"


def route(kind: Kind, filter_: Mapping[str, Any]) -> Route:
    """Where a mongos sends a query on ``kind`` with ``filter_`` (an insert's document
    routes the same way: by its shard key fields)."""
    fields = next(key.fields for key in SHARD_KEYS if key.kind == kind)
    shapes = [_equality(filter_[name]) if name in filter_ else "absent" for name in fields]
    if all(shape == "equal" for shape in shapes):
        return "one shard"
    if shapes[0] in ("equal", "in"):
        return "key range"
    return "every shard"


@dataclass(frozen=True)
class Scatter:
    """A query that goes to every shard, on purpose, and what it costs there."""

    kind: Kind
    operation: str
    fields: frozenset[str]
    """The filter's top-level field names: what tells this query from others."""
    sent_by: str
    cost: str

    def matches(self, kind: Kind, operation: str, filter_: Mapping[str, Any]) -> bool:
        return (kind, operation, frozenset(filter_)) == (self.kind, self.operation, self.fields)


def _scatter(kind: Kind, operation: str, fields: tuple[str, ...], by: str, cost: str) -> Scatter:
    return Scatter(kind, operation, frozenset(fields), by, cost)


SCATTERS: Final[tuple[Scatter, ...]] = (
    _scatter(
        "attachment",
        "find",
        (UploadField.PENDING_SINCE,),
        "sweep_orphans: uploads abandoned before the cut-off, across owners",
        "one range scan per shard of the sparse pending_uploads index, which holds only "
        "attachments still waiting for bytes; then one single-shard delete per candidate",
    ),
    _scatter(
        "attachment",
        "find",
        (UploadField.STATE, Field.THREAD_ID, UploadField.FILE_ID),
        "sweep_orphans(unused_after=...): complete attachments without a thread",
        "a scan of every attachment on every shard (no index serves it), then one "
        "single-shard delete per old candidate: opt-in, run it off-peak",
    ),
    _scatter(
        "file",
        "find",
        (),
        "sweep_orphans: every GridFS file, to find those no attachment refers to",
        "reads every files document on every shard (O(all attachments)), then one "
        "single-shard lookup per file: run it off-peak, e.g. nightly",
    ),
    _scatter(
        "chunk",
        "aggregate",
        (),
        "sweep_orphans: the file ids of all chunks, to find chunks whose file is gone",
        "a $group over every chunk on every shard, through the files_id_1_n_1 index "
        "(O(all chunks)): the sweep's most expensive step",
    ),
    _scatter(
        "thread",
        "find",
        (Field.SORT_KEY,),
        "purge --older-than: threads created before the cut-off, across owners",
        "a scan of every thread on every shard (no index starts with sk), then "
        "single-shard or owner-range work per old thread: an operator's batch job",
    ),
    _scatter(
        "thread",
        "count_documents",
        (),
        "purge --older-than: the thread count for its progress bar",
        "counts every thread on every shard through an index: O(threads) keys",
    ),
    _scatter(
        "file",
        "find",
        (GridFSField.METADATA_OWNER,),
        "purge --owner and export --owner: the owner's files by their metadata",
        "one seek per shard on the owner_attachment index: round trips grow with the "
        "shard count, keys read only with the owner's files",
    ),
    _scatter(
        "file",
        "count_documents",
        (GridFSField.METADATA_OWNER,),
        "purge --owner --dry-run and export --owner's count: as the find above",
        "one seek per shard on the owner_attachment index",
    ),
    _scatter(
        "file",
        "find",
        (GridFSField.METADATA_OWNER, GridFSField.METADATA_ATTACHMENT_ID),
        "purge --older-than: the files of one expired thread's attachments",
        "one seek per shard on the owner_attachment index, per expired thread",
    ),
    _scatter(
        "attachment",
        "find",
        (UploadField.FILE_ID, Field.OWNER),
        "the ownership proof before deleting bytes (delete_attachment, delete_thread, "
        "purge), only for a bare ObjectId file id (uploaded before ids carried the owner) "
        "that has no files document (an upload cut off mid-stream): does another owner's "
        "attachment refer to it",
        "a scan of every attachment on every shard (no index serves file_id, and the query "
        "looks for the other owners, so it cannot carry one); never sent for an owner file "
        "id, whose owner is in the id",
    ),
    _scatter(
        "attachment",
        "find",
        (UploadField.FILE_ID,),
        "import's pre-check, only for bare ObjectId file ids (exports of files uploaded "
        "before ids carried the owner): which attachments refer to them",
        "a scan of every attachment on every shard per batch of 500 such ids (no index "
        "serves file_id); owner file ids are asked per owner, routed to its range",
    ),
    *(
        _scatter(kind, operation, (), "export (all owners): every document", "reads everything")
        for kind in MODEL_KINDS
        for operation in ("find", "count_documents")
    ),
    *(
        _scatter(
            "file",
            operation,
            (GridFSField.METADATA_OWNER,),
            "export (all owners): every file that names an owner",
            "reads every files document",
        )
        for operation in ("find", "count_documents")
    ),
    *(
        _scatter(
            kind,
            "find",
            ("$or",),
            "import's pre-check: a batch's _ids or keys already stored",
            "one query per shard per batch of 500 lines (the _id is not the shard key, "
            "so the _id half cannot be routed)",
        )
        for kind in KINDS
    ),
)
"""Every query that goes to every shard, who sends it and its cost. None is on the path
of a ChatKit request (the store writes and reads GridFS files itself, so the driver's
per-upload index check is gone); all are an operator's jobs (purge by age, the orphan
sweep, export or import of everything)."""


def scatter_of(kind: Kind, operation: str, filter_: Mapping[str, Any]) -> Scatter | None:
    return next((s for s in SCATTERS if s.matches(kind, operation, filter_)), None)


# ---------------------------------------------------------------- zones


@dataclass(frozen=True)
class ZoneRange:
    """One ``updateZoneKeyRange``: the documents of owners starting with a prefix."""

    namespace: str
    min: dict[str, Any]
    max: dict[str, Any]
    zone: str

    def command(self) -> dict[str, Any]:
        return {
            "updateZoneKeyRange": self.namespace,
            "min": self.min,
            "max": self.max,
            "zone": self.zone,
        }


def zone_ranges(
    database: str, collections: CollectionNames, prefix: str, zone: str
) -> list[ZoneRange]:
    """The key range of every collection holding the owners whose id starts with
    ``prefix`` (e.g. ``"eu:"``), for ``zone``. GridFS collections are included: their
    file ids start with the owner (see :func:`chatkit_mongo.schema.owner_file_id`)."""
    lower, upper = prefix_range(prefix)
    ranges = []
    for key in SHARD_KEYS:
        first, rest = key.fields[0], key.fields[1:]
        ranges.append(
            ZoneRange(
                f"{database}.{collections.name_of(key.kind)}",
                {first: lower, **dict.fromkeys(rest, MinKey())},
                {first: upper, **dict.fromkeys(rest, MinKey())},
                zone,
            )
        )
    return ranges


def in_range(key: ShardKey, document: Mapping[str, Any], zone: ZoneRange) -> bool:
    """Whether ``document``'s shard key value lies in ``[zone.min, zone.max)`` (the first
    field decides for string bounds; MinKey sorts before and MaxKey after any value)."""
    value = document[key.fields[0]]
    lower, upper = zone.min[key.fields[0]], zone.max[key.fields[0]]
    above = isinstance(lower, MinKey) or (isinstance(value, str) and value >= lower)
    below = isinstance(upper, MaxKey) or (isinstance(value, str) and value < upper)
    return above and below


# ---------------------------------------------------------------- commands and state


def shard_commands(database: str, collections: CollectionNames) -> list[dict[str, Any]]:
    """The admin commands that shard the store's collections with the chosen keys."""
    return [
        _enable_sharding(database),
        *(_shard_collection(database, collections, key) for key in SHARD_KEYS),
    ]


def _enable_sharding(database: str) -> dict[str, Any]:
    """Needed before MongoDB 6.0; accepted (and harmless) since."""
    return {"enableSharding": database}


def _shard_collection(database: str, collections: CollectionNames, key: ShardKey) -> dict[str, Any]:
    namespace = f"{database}.{collections.name_of(key.kind)}"
    return {"shardCollection": namespace, "key": key.document()}


def planned_commands(database: str, collections: CollectionNames) -> list[str]:
    """``shard --dry-run``: each command as mongosh takes it, with the index it needs."""
    lines = []
    for command in shard_commands(database, collections):
        line = f"db.adminCommand({json.dumps(command)})"
        namespace = command.get("shardCollection")
        key = next(
            (k for k in SHARD_KEYS if namespace == f"{database}.{collections.name_of(k.kind)}"),
            None,
        )
        lines.append(line if key is None else f"{line}  // {supporting_index(key, collections)}")
    return lines


def supporting_index(key: ShardKey, collections: CollectionNames) -> str:
    """The index a shard key needs, as the dry run prints it."""
    collection = collections.name_of(key.kind)
    for spec in INDEXES:
        if spec.kind == key.kind and spec.name == key.index:
            return f"needs index {spec.describe(collection)} (created by init)"
    return f"needs index {collection}.{key.index} (always present)"


State = Literal["sharded", "not sharded", "other key"]


@dataclass(frozen=True)
class ShardState:
    key: ShardKey
    namespace: str
    state: State
    actual: dict[str, Any] | None = None

    def describe(self) -> str:
        expected = self.key.describe(self.namespace)
        if self.state == "sharded":
            return f"{expected}: sharded with the expected key"
        if self.state == "not sharded":
            return f"{expected}: not sharded"
        return (
            f"{expected}: sharded with another key {self.actual} (reshardCollection to change it)"
        )


async def is_router(database: AsyncDatabaseLike) -> bool:
    """True when the server is a mongos (``hello``'s ``msg`` is ``isdbgrid``)."""
    hello = await database.command("hello")
    return bool(hello.get("msg") == ROUTER_MSG)


async def shard_states(
    database: AsyncDatabaseLike, collections: CollectionNames
) -> list[ShardState]:
    """Each collection's sharding as the cluster's catalog (``config.collections``) has it."""
    catalog = database.client["config"]["collections"]
    states = []
    for key in SHARD_KEYS:
        namespace = f"{database.name}.{collections.name_of(key.kind)}"
        entry = await catalog.find_one({"_id": namespace})
        if entry is None or entry.get("dropped") or "key" not in entry:
            states.append(ShardState(key, namespace, "not sharded"))
            continue
        actual = {name: _direction(value) for name, value in dict(entry["key"]).items()}
        state: State = "sharded" if actual == key.document() else "other key"
        states.append(ShardState(key, namespace, state, actual))
    return states


def _direction(value: Any) -> Any:
    return int(value) if isinstance(value, int | float) else value


async def shard(database: AsyncDatabaseLike, collections: CollectionNames, echo: Echo) -> int:
    """On a mongos: create the indexes the keys need, enable sharding, shard every
    collection not yet sharded, and report each; 0 when all end sharded as expected.

    A collection sharded with another key is reported and left alone (changing a key is
    ``reshardCollection``, an operator's decision). On any other server nothing is sent
    beyond ``hello``, and the exit code is 1.
    """
    if not await is_router(database):
        echo("not a sharded cluster (hello says this is no mongos): nothing changed")
        return 1
    await ensure_indexes(database, collections)
    admin = database.client["admin"]
    await admin.command(_enable_sharding(database.name))
    for state in await shard_states(database, collections):
        if state.state == "not sharded":
            await admin.command(_shard_collection(database.name, collections, state.key))
    after = await shard_states(database, collections)
    for state in after:
        echo(state.describe())
    return 0 if all(state.state == "sharded" for state in after) else 1


async def sharding_report(
    database: AsyncDatabaseLike, collections: CollectionNames
) -> list[tuple[bool | None, str]]:
    """For doctor: ``(ok, line)`` per collection on a mongos; one ``(None, why)`` line
    elsewhere (nothing to check on a replica set; unknown where ``hello`` fails)."""
    try:
        router = await is_router(database)
    except (NotImplementedError, PyMongoError) as exc:
        return [(None, f"the server does not answer hello ({exc})")]
    if not router:
        return [(True, "not a sharded cluster: nothing to shard")]
    try:
        states = await shard_states(database, collections)
    except PyMongoError as exc:
        return [(None, f"cannot read config.collections ({exc})")]
    return [(state.state == "sharded", state.describe()) for state in states]
