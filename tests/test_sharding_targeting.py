"""Every query the store, the attachment store and the operations send, routed under the
chosen shard keys, with no cluster.

Why capture at mongomock's collection: both async doubles and the GridFS driver (Motor's
bucket over mongomock-motor) end there, so the filters recorded are the ones actually
sent, the driver's own included, not a hand-written list of what we think is sent. Each
one must be routed to one shard (equality on the whole key) or a key range (equality on
a prefix), or be listed in ``SCATTERS``; single-document writes must carry the whole key.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mongomock.collection
import mongomock_motor
import pytest
from bson import Binary, MinKey, ObjectId
from chatkit.types import AttachmentCreateParams
from hypothesis import given
from hypothesis import strategies as st

from chatkit_mongo import MongoStore
from chatkit_mongo.operations.erase import purge_inactive, purge_owner
from chatkit_mongo.operations.explain import hot_queries
from chatkit_mongo.operations.sharding import (
    SCATTERS,
    SINGLE_DOCUMENT_WRITES,
    in_range,
    route,
    scatter_of,
    zone_ranges,
)
from chatkit_mongo.operations.transfer import count_export, export_data, import_data
from chatkit_mongo.schema import (
    INDEXES,
    RETENTION_INDEXES,
    SHARD_KEYS,
    CollectionNames,
    Field,
    GridFSField,
    Kind,
    UploadField,
    prefix_range,
    shard_key_of,
)

from .attachment_support import CHUNK, make_attachments
from .cli_support import store_bytes
from .conftest import RequestContext
from .samples import BASE_TIME, assistant_message, every_item, file_attachment, thread

NAMES = CollectionNames()
_KINDS: dict[str, Kind] = {name: kind for kind, name in NAMES.by_kind().items()}
_FILTERED = (
    "find",
    "find_one",
    "update_one",
    "update_many",
    "replace_one",
    "delete_one",
    "delete_many",
    "find_one_and_update",
    "find_one_and_delete",
    "count_documents",
)


@dataclass(frozen=True)
class Sent:
    kind: Kind
    operation: str
    filter: dict[str, Any]
    upsert: bool = False


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[Sent]:
    """Record the outermost call of each collection operation, with its filter (an
    insert: its document; an aggregate: its first ``$match``)."""
    record: list[Sent] = []
    depth = [0]

    def note(collection: Any, operation: str, filter_: Any, upsert: bool = False) -> None:
        kind = _KINDS.get(collection.name)
        if kind is not None:
            record.append(Sent(kind, operation, dict(filter_ or {}), upsert))

    def wrap(name: str, describe: Callable[..., None]) -> None:
        original = getattr(mongomock.collection.Collection, name)

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            if depth[0] == 0:
                describe(self, *args, **kwargs)
            depth[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        monkeypatch.setattr(mongomock.collection.Collection, name, call)

    for operation in _FILTERED:

        def filtered(self: Any, *args: Any, _operation: str = operation, **kwargs: Any) -> None:
            filter_ = args[0] if args else kwargs.get("filter")
            note(self, _operation, filter_, bool(kwargs.get("upsert")))

        wrap(operation, filtered)

    def inserted(self: Any, document: Any, *args: Any, **kwargs: Any) -> None:
        note(self, "insert", document)

    def inserted_many(self: Any, documents: Any, *args: Any, **kwargs: Any) -> None:
        for document in documents:
            note(self, "insert", document)

    def aggregated(self: Any, pipeline: Any, *args: Any, **kwargs: Any) -> None:
        first = pipeline[0] if pipeline else {}
        note(self, "aggregate", first.get("$match", {}))

    wrap("insert_one", inserted)
    wrap("insert_many", inserted_many)
    wrap("aggregate", aggregated)

    builder = mongomock.collection.BulkOperationBuilder
    replace = builder.add_replace

    def add_replace(self: Any, selector: Any, doc: Any, upsert: Any, *args: Any, **kw: Any) -> Any:
        note(self.collection, "replace_one", selector, bool(upsert))
        return replace(self, selector, doc, upsert, *args, **kw)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(builder, "add_replace", add_replace)
    return record


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


async def _exercise_store(store: MongoStore[Any], clock: Clock | None) -> None:
    """Every Store method, pages with and without an anchor, both orders."""
    alice = RequestContext(user_id="eu:alice")
    await store.save_thread(thread("thr_1"), alice)
    await store.load_thread("thr_1", alice)
    await store.save_thread(thread("thr_2", created_at=BASE_TIME + timedelta(seconds=1)), alice)
    await store.load_threads(1, None, "desc", alice)
    await store.load_threads(1, "thr_2", "asc", alice)
    for item in every_item("thr_1")[:3]:
        await store.add_thread_item("thr_1", item, alice)
    await store.add_thread_item("thr_1", every_item("thr_1")[0], alice)  # an identical retry
    if clock is not None:
        clock.now += timedelta(days=20)  # due for a refresh: the re-stamp runs
    await store.save_item("thr_1", assistant_message("msg_a", "thr_1"), alice)
    await store.load_item("thr_1", "msg_a", alice)
    await store.load_thread_items("thr_1", None, 2, "desc", alice)
    await store.load_thread_items("thr_1", "msg_a", 2, "asc", alice)
    await store.delete_thread_item("thr_1", "msg_a", alice)
    await store.save_attachment(file_attachment("atc_1", "thr_1"), alice)
    await store.load_attachment("atc_1", alice)
    await store.delete_attachment("atc_1", alice)
    await store.save_thread(thread("thr_1", title="renamed"), alice)
    await store.delete_thread("thr_2", alice)


async def _exercise_attachments(store: MongoStore[Any], now: datetime) -> None:
    """Uploads of both kinds, a refused one, downloads, deletes, and a sweep that finds
    an abandoned upload, a file nobody refers to and chunks without a file."""
    attachments = make_attachments(store, max_bytes=3 * CHUNK)
    alice = RequestContext(user_id="eu:alice")
    payload = bytes(range(256)) * (CHUNK // 128)
    direct = await attachments.create_and_upload("a.bin", "application/pdf", payload, alice)
    params = AttachmentCreateParams(name="b.bin", size=10, mime_type="application/pdf")
    two_phase = await attachments.create_attachment(params, alice)
    await attachments.upload(two_phase.id, b"0123456789", alice)
    refused = await attachments.create_attachment(params, alice)
    with pytest.raises(Exception, match="declared"):
        await attachments.upload(refused.id, b"short", alice)
    download = await attachments.open_download(direct.id, alice)
    assert b"".join([chunk async for chunk in download.chunks]) == payload
    await attachments.read_bytes(two_phase.id, alice)
    await attachments.delete_attachment(two_phase.id, alice)
    linked = file_attachment(direct.id, "thr_1").model_copy(update={"name": "a.bin"})
    await store.save_attachment(linked, alice)
    abandoned = await attachments.create_attachment(params, alice)
    await attachments.upload(abandoned.id, io.BytesIO(b"0123456789"), alice)
    await attachments.create_attachment(params, alice)  # left awaiting: swept below
    orphan = await attachments.create_and_upload("c.bin", "application/pdf", b"x", alice)
    await store.delete_attachment(orphan.id, alice)  # metadata gone, bytes left
    await attachments.sweep_orphans(abandoned_after=timedelta(0), now=now + timedelta(days=1))
    await store.delete_thread("thr_1", alice)


async def _exercise_operations(
    database: Any, empty_database: Any, store: MongoStore[Any], path: Path
) -> None:
    bob = RequestContext(user_id="us:bob")
    attachments = make_attachments(store)
    await store.save_thread(thread("thr_old", created_at=datetime(2020, 1, 1)), bob)
    await store.add_thread_item(
        "thr_old", assistant_message("msg_old", "thr_old", datetime(2020, 1, 1)), bob
    )
    kept = await attachments.create_and_upload("k.bin", "application/pdf", b"k" * 10, bob)
    await store.save_attachment(file_attachment(kept.id, "thr_old"), bob)
    await _old_release_bytes(database, store, bob)
    for owner in (None, "us:bob"):
        await count_export(database, NAMES, owner)
        out = io.StringIO()
        await export_data(database, NAMES, out, owner=owner)
    await asyncio.to_thread(path.write_text, out.getvalue(), encoding="utf-8")
    await import_data(empty_database, NAMES, path)
    await import_data(empty_database, NAMES, path)  # again: the pre-check finds the _ids
    for dry_run in (True, False):
        await purge_inactive(database, NAMES, timedelta(days=30), dry_run=dry_run)
        await purge_owner(empty_database, NAMES, "us:bob", dry_run=dry_run)


async def _old_release_bytes(database: Any, store: MongoStore[Any], bob: RequestContext) -> None:
    """Bob's bytes as a release before owner file ids left them: a complete file and an
    upload cut off before its files document, both under bare ObjectIds. Export, import
    and purge then take the paths only such ids take (the listed attachment scans)."""
    old = await store_bytes(database, bob.user_id, "atc_old", b"old bytes", legacy=True)
    cut_off = ObjectId()
    await database[NAMES.bucket_chunks].insert_one(
        {GridFSField.FILES_ID: cut_off, GridFSField.CHUNK_NUMBER: 0, "data": Binary(b"cut")}
    )
    for attachment_id, file_id in (("atc_old", old), ("atc_cut", cut_off)):
        await store.save_attachment(file_attachment(attachment_id, "thr_old"), bob)
        await database[NAMES.attachments].update_one(
            {Field.OWNER: bob.user_id, Field.ATTACHMENT_ID: attachment_id},
            {"$set": {UploadField.FILE_ID: file_id}},
        )


@pytest.fixture
def gridfs() -> Iterator[None]:
    with mongomock_motor.enabled_gridfs_integration():
        yield


async def _everything(sent: list[Sent], path: Path) -> list[Sent]:
    client: Any = mongomock_motor.AsyncMongoMockClient()
    clock = Clock()
    plain = MongoStore(client["plain"])
    await _exercise_store(plain, None)
    await _exercise_attachments(plain, datetime.now(UTC))
    kept = MongoStore(client["kept"], retention=timedelta(days=30), clock=clock)
    await _exercise_store(kept, clock)
    await _exercise_attachments(kept, clock.now)
    await _exercise_operations(client["ops"], client["imported"], MongoStore(client["ops"]), path)
    return sent


def _unrouted(sent: Sent) -> str:
    where = route(sent.kind, sent.filter)
    if sent.operation in SINGLE_DOCUMENT_WRITES or sent.operation == "insert":
        return "" if where == "one shard" else f"needs the whole key, goes to {where}"
    if where == "every shard" and scatter_of(sent.kind, sent.operation, sent.filter) is None:
        return "goes to every shard and is not listed in SCATTERS"
    return ""


async def test_every_query_sent_is_targeted_or_a_listed_scatter(
    gridfs: None, sent: list[Sent], tmp_path: Path
) -> None:
    recorded = await _everything(sent, tmp_path / "export.jsonl")
    operations = {(s.kind, s.operation) for s in recorded}
    # The capture saw the paths that matter, the driver's GridFS reads and writes included.
    assert {
        ("item", "insert"),
        ("item", "find"),
        ("thread", "update_one"),
        ("thread", "find_one_and_update"),
        ("attachment", "find_one_and_update"),
        ("attachment", "find_one_and_delete"),
        ("file", "insert"),
        ("chunk", "insert"),
        ("chunk", "find"),
        ("chunk", "aggregate"),
        ("thread", "replace_one"),
    } <= operations
    problems = sorted(
        {f"{s.kind}.{s.operation} {s.filter}: {why}" for s in recorded if (why := _unrouted(s))}
    )
    assert problems == []
    unused = [
        scatter
        for scatter in SCATTERS
        if not any(
            scatter.matches(s.kind, s.operation, s.filter)
            and route(s.kind, s.filter) == "every shard"
            for s in recorded
        )
    ]
    assert unused == [], "a listed scatter that nothing sends any more"


async def test_a_store_request_never_goes_to_every_shard(gridfs: None, sent: list[Sent]) -> None:
    """Only operator jobs scatter. (The GridFS driver's own upload stream sent a limit-1
    index check to every shard when an upload started; the store writes files itself.)"""
    client: Any = mongomock_motor.AsyncMongoMockClient()
    store = MongoStore(client["db"])
    await _exercise_store(store, None)
    attachments = make_attachments(store)
    alice = RequestContext(user_id="eu:alice")
    uploaded = await attachments.create_and_upload("a", "application/pdf", b"abc", alice)
    await attachments.read_bytes(uploaded.id, alice)
    await attachments.delete_attachment(uploaded.id, alice)
    scattered = {(s.kind, s.operation) for s in sent if route(s.kind, s.filter) == "every shard"}
    assert scattered == set()


def test_the_hot_queries_as_data_are_routed_to_one_shard_or_the_owners_range() -> None:
    for label, find in hot_queries("eu:alice", "thr_1", "msg_1", "0001 msg_0"):
        assert route(find.kind, find.filter) != "every shard", label
    assert route("thread", hot_queries("o", "t", "i", None)[0][1].filter) == "one shard"


def test_every_unique_index_starts_with_its_collections_shard_key() -> None:
    for spec in (*INDEXES, *RETENTION_INDEXES):
        if spec.unique:
            fields = shard_key_of(spec.kind).fields
            assert tuple(name for name, _ in spec.keys[: len(fields)]) == fields, spec.name


def test_every_shard_key_has_its_supporting_index() -> None:
    for key in SHARD_KEYS:
        if key.index == "_id_":
            assert key.fields == ("_id",)
            continue
        (spec,) = [s for s in INDEXES if s.kind == key.kind and s.name == key.index]
        assert tuple(name for name, _ in spec.keys[: len(key.fields)]) == key.fields


_values = st.one_of(st.text(max_size=5), st.integers(), st.none())


@given(st.sampled_from(SHARD_KEYS), st.data())
def test_route_reads_equality_on_the_key_and_its_prefixes(key: Any, data: st.DataObject) -> None:
    full = {name: data.draw(_values) for name in key.fields}
    extra = data.draw(st.dictionaries(st.sampled_from(["x", "y", "data.z"]), _values))
    assert route(key.kind, {**extra, **full}) == "one shard"
    assert route(key.kind, {**extra, **full, key.fields[0]: {"$eq": 1}}) == "one shard"
    assert route(key.kind, {**extra, key.fields[0]: {"$in": [1, 2]}}) == "key range"
    if len(key.fields) > 1:
        assert route(key.kind, {**extra, key.fields[0]: full[key.fields[0]]}) == "key range"
        rest = {name: full[name] for name in key.fields[1:]}
        assert route(key.kind, {**extra, **rest}) == "every shard"
    ranged: Mapping[str, Any] = {key.fields[0]: {"$gt": "a"}}
    assert route(key.kind, {**extra, **ranged}) == "every shard"


@dataclass(frozen=True)
class RegionalContext:
    """docs/sharding.md's zone example: a user in a region."""

    region: str
    user_id: str


def regional_owner(context: RegionalContext) -> str:
    """docs/sharding.md's resolver: the region first, so a zone on ``"eu:"`` holds EU tenants."""
    return f"{context.region}:{context.user_id}"


async def test_the_region_prefixed_owner_puts_every_document_and_byte_in_its_zone(
    gridfs: None,
) -> None:
    client: Any = mongomock_motor.AsyncMongoMockClient()
    database = client["chatkit"]
    store: MongoStore[RegionalContext] = MongoStore(database, owner=regional_owner)
    attachments = make_attachments(store)
    for region in ("eu", "us"):
        context = RegionalContext(region, "alice")
        await store.save_thread(thread("thr_1"), context)
        await store.add_thread_item("thr_1", assistant_message("msg_1"), context)
        uploaded = await attachments.create_and_upload(
            "a", "application/pdf", b"x" * CHUNK * 2, context
        )
        await store.save_attachment(uploaded.model_copy(update={"thread_id": "thr_1"}), context)
    zones = {
        region: {z.namespace: z for z in zone_ranges("chatkit", NAMES, f"{region}:", region)}
        for region in ("eu", "us")
    }
    for key in SHARD_KEYS:
        namespace = f"chatkit.{NAMES.name_of(key.kind)}"
        documents = await database[NAMES.name_of(key.kind)].find().to_list(None)
        assert documents, key.kind
        for document in documents:
            owner = document.get("owner") or document.get("metadata", {}).get("owner")
            if owner is None:  # a chunk: its file's owner
                file = await database[NAMES.bucket_files].find_one({"_id": document["files_id"]})
                owner = file["metadata"]["owner"]
            region = owner.split(":")[0]
            other = "us" if region == "eu" else "eu"
            assert in_range(key, document, zones[region][namespace]), (key.kind, document["_id"])
            assert not in_range(key, document, zones[other][namespace])


def test_zone_bounds_cover_exactly_the_owners_with_the_prefix() -> None:
    (threads, *_) = zone_ranges("db", NAMES, "eu:", "EU")
    assert threads.command() == {
        "updateZoneKeyRange": "db.chatkit_threads",
        "min": {"owner": "eu:", "thread_id": MinKey()},
        "max": {"owner": "eu;", "thread_id": MinKey()},
        "zone": "EU",
    }


@given(st.text(min_size=1, max_size=4), st.text(max_size=6))
def test_prefix_range_holds_a_string_exactly_when_it_starts_with_the_prefix(
    prefix: str, value: str
) -> None:
    lower, upper = prefix_range(prefix)
    inside = lower <= value < upper
    assert inside == value.startswith(prefix)
    assert (lower <= prefix + value < upper) is True
