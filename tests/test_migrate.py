"""``migrate``: a store's content converted to ciphertext and back, on both real drivers.

Interrupted at every batch (before its write is sent, after it landed, and by the
progress callback between batches) and run again, the store ends fully converted, every
document equal to what was stored before, nothing lost or duplicated. A concurrent
application write is never overwritten; documents whose key is gone are reported, not
looped on. The doubles cannot run a key vault, so every test here runs on the suite's
wire server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from bson import Binary
from chatkit.types import Attachment, ThreadItem, ThreadMetadata
from click.testing import CliRunner, Result

from chatkit_mongo import MongoStore
from chatkit_mongo._encryption import OwnerEncryption, is_ciphertext
from chatkit_mongo.apps.cli import cli
from chatkit_mongo.attachments import GridFSAttachmentStore
from chatkit_mongo.encryption import DEFAULT_LOCAL_KEY_VARIABLE as ENV_KEY
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.operations.migrate import (
    MigrationReport,
    Target,
    count_pending,
    migrate,
    pending_filter,
)
from chatkit_mongo.schema import MODEL_KINDS, CollectionNames, Field, GridFSField, Kind, UploadField

from .samples import assistant_message, every_item, file_attachment, image_attachment, thread
from .unreadable_support import DAMAGES, damage_item

pytest_plugins = ("tests.encryption_fixtures",)

COLLECTIONS = CollectionNames()
OWNERS = ("alice", "bob")
BATCH = 4


class Interrupted(Exception):
    """The fault the tests inject."""


Snapshot = dict[
    str,
    tuple[list[ThreadMetadata], dict[str, list[ThreadItem]], list[Attachment], dict[str, bytes]],
]
BYTES = {owner: os.urandom(300 * 1024 + index) for index, owner in enumerate(OWNERS)}
"""Per owner, the bytes of one attachment: two GridFS chunks and a piece of a third."""


def attachment_store(store: MongoStore[Any]) -> GridFSAttachmentStore[Any]:
    return GridFSAttachmentStore(store, upload_url=lambda attachment_id, context: "unused")


async def seed(database: Any) -> None:
    """Per owner: three threads, one holding every item variant, two attachments without
    bytes and one with, written by stores without encryption (as a store that ran
    without it holds them)."""
    store: MongoStore[Any] = MongoStore(database)
    files = attachment_store(store)
    for owner in OWNERS:
        context = {"user_id": owner}
        for number in range(3):
            await store.save_thread(
                thread(f"thr_{owner}_{number}", title=f"{owner} {number}"), context
            )
        for item in every_item(f"thr_{owner}_0"):
            await store.add_thread_item(f"thr_{owner}_0", item, context)
        await store.add_thread_item(
            f"thr_{owner}_1", assistant_message(f"msg_{owner}", f"thr_{owner}_1"), context
        )
        await store.save_attachment(file_attachment(f"atc_f_{owner}", f"thr_{owner}_0"), context)
        await store.save_attachment(image_attachment(f"atc_i_{owner}"), context)
        await files.create_and_upload(
            "notes.bin", "application/octet-stream", BYTES[owner], context
        )


async def snapshot(store: MongoStore[Any]) -> Snapshot:
    """Everything each owner can read, through the Store API, the bytes included."""
    result: Snapshot = {}
    files = attachment_store(store)
    for owner in OWNERS:
        context = {"user_id": owner}
        threads = (await store.load_threads(100, None, "asc", context)).data
        items = {
            each.id: (await store.load_thread_items(each.id, None, 100, "asc", context)).data
            for each in threads
        }
        listed = store.persistence.collection("attachment").find(
            {Field.OWNER: owner}, {Field.ATTACHMENT_ID: 1}
        )
        attachment_ids = sorted([document[Field.ATTACHMENT_ID] async for document in listed])
        attachments = [await store.load_attachment(each, context) for each in attachment_ids]
        uploaded = [each for each in attachments if each.name == "notes.bin"]
        contents = {each.name: await files.read_bytes(each.id, context) for each in uploaded}
        result[owner] = (threads, items, attachments, contents)
    return result


async def stored_forms(database: Any, *, orphans: int = 0) -> dict[Kind, list[str]]:
    """Per kind, the form of each stored ``data`` ("plain" or "encrypted"), and for
    ``file`` of each file an attachment refers to. Besides those, exactly ``orphans``
    files (each written by a rewrite), and no chunk without its file."""
    forms: dict[Kind, list[str]] = {}
    for kind, name in COLLECTIONS.by_kind(MODEL_KINDS).items():
        documents = await database[name].find({}).to_list(None)
        forms[kind] = [
            "encrypted" if is_ciphertext(document[Field.DATA]) else "plain"
            for document in documents
            if isinstance(document[Field.DATA], dict) or is_ciphertext(document[Field.DATA])
        ]
        assert len(forms[kind]) == len(documents), f"a {kind} holds neither form"
    referenced = set(await database[COLLECTIONS.attachments].distinct(UploadField.FILE_ID))
    files = await database[COLLECTIONS.bucket_files].find({}).to_list(None)
    unreferenced = [each for each in files if each["_id"] not in referenced]
    assert len(unreferenced) == orphans, unreferenced
    assert all(each[GridFSField.METADATA].get(GridFSField.REWRITE) for each in unreferenced)
    assert referenced <= {each["_id"] for each in files}, "an attachment lost its bytes"
    chunk_files = set(await database[COLLECTIONS.bucket_chunks].distinct(GridFSField.FILES_ID))
    assert chunk_files == {each["_id"] for each in files}, "a chunk without its file"
    forms["file"] = [
        "encrypted" if each[GridFSField.METADATA].get(GridFSField.ENCRYPTED) else "plain"
        for each in files
        if each["_id"] in referenced
    ]
    return forms


class Fault:
    """A ``wrap_collection`` that counts the migration's writes (its bulk writes of
    documents, and each attachment's switch to its rewritten bytes) and stops at the
    ``at``-th: before sending it, or after it landed."""

    def __init__(self, at: int, *, after: bool) -> None:
        self.at = at
        self.after = after
        self.writes = 0

    def __call__(self, kind: Kind, collection: Any) -> Any:
        return _Wrapped(collection, self, switches=kind == "attachment")


class _Wrapped:
    def __init__(self, collection: Any, fault: Fault, *, switches: bool) -> None:
        self._collection = collection
        self._fault = fault
        self._switches = switches

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def _write(self, method: str, *args: Any, **options: Any) -> Any:
        fault = self._fault
        fault.writes += 1
        if fault.writes == fault.at and not fault.after:
            raise Interrupted(f"before write {fault.at}")
        result = await getattr(self._collection, method)(*args, **options)
        if fault.writes == fault.at:
            raise Interrupted(f"after write {fault.at}")
        return result

    async def bulk_write(self, requests: Any, **options: Any) -> Any:
        return await self._write("bulk_write", requests, **options)

    async def update_one(self, *args: Any, **options: Any) -> Any:
        if not self._switches:
            return await self._collection.update_one(*args, **options)
        return await self._write("update_one", *args, **options)


class Before:
    """A ``wrap_collection`` that runs ``action`` (an application write) just before the
    first bulk write on ``kind``."""

    def __init__(self, kind: Kind, action: Callable[[], Awaitable[None]]) -> None:
        self.kind = kind
        self.action: Callable[[], Awaitable[None]] | None = action

    def __call__(self, kind: Kind, collection: Any) -> Any:
        return _Intercepting(collection, self) if kind == self.kind else collection


class _Intercepting:
    def __init__(self, collection: Any, before: Before) -> None:
        self._collection = collection
        self._before = before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def bulk_write(self, requests: Any, **options: Any) -> Any:
        action, self._before.action = self._before.action, None
        if action is not None:
            await action()
        return await self._collection.bulk_write(requests, **options)


@pytest.fixture
def database(wire_client: Any) -> Any:
    """A database of its own (the server cannot drop one)."""
    return wire_client[f"migrate_{uuid.uuid4().hex[:12]}"]


def store_on(
    database: Any, encryption: Encryption | None, *, strict: bool = False
) -> MongoStore[Any]:
    """A store on ``database``; with ``encryption``, one being migrated (``strict=False``,
    reading both forms) unless ``strict``."""
    if encryption is not None:
        encryption = dataclasses.replace(encryption, strict=strict)
    return MongoStore(database, encryption=encryption)


async def count_writes(database: Any, key_settings: Encryption, target: Target) -> int:
    """How many bulk writes a full migration of ``database`` to ``target`` makes: run on
    a reference database, seeded as each interrupted run's database is."""
    fault = Fault(0, after=False)
    await migrate(
        database, COLLECTIONS, key_settings, target, batch_size=BATCH, wrap_collection=fault
    )
    return fault.writes


async def test_an_unencrypted_store_is_encrypted_and_reads_the_same(
    database: Any, key_settings: Encryption
) -> None:
    await seed(database)
    before = await snapshot(store_on(database, None))
    pending = await count_pending(database, COLLECTIONS, "encrypted")
    handled: list[int] = []

    report = await migrate(
        database,
        COLLECTIONS,
        key_settings,
        "encrypted",
        batch_size=BATCH,
        on_progress=handled.append,
    )

    forms = await stored_forms(database)
    assert all(form == "encrypted" for each in forms.values() for form in each)
    assert sum(report.converted.values()) == pending == sum(handled)
    assert report.converted == {kind: len(each) for kind, each in forms.items()}
    assert (report.unreadable, report.damaged, report.left, report.passes) == ({}, {}, 0, 1)
    assert max(handled) <= BATCH
    store = store_on(database, key_settings)
    try:
        assert await snapshot(store) == before
    finally:
        await store.close()
    assert await count_pending(database, COLLECTIONS, "encrypted") == 0


@pytest.mark.parametrize("target", ["encrypted", "plain"])
@pytest.mark.parametrize("after", [False, True], ids=["before-write", "after-write"])
async def test_interrupted_at_every_batch_then_rerun_ends_fully_converted(
    wire_client: Any, key_settings: Encryption, target: Target, after: bool
) -> None:
    """For each batch k: a run stopped at k, then a full run; every document converted,
    equal to the original, none lost or duplicated. Between the two runs, every document
    is in one form or the other and the whole store reads the same with encryption on."""
    reference = wire_client[f"migrate_{uuid.uuid4().hex[:12]}"]
    await seed(reference)
    if target == "plain":
        await migrate(reference, COLLECTIONS, key_settings, "encrypted", batch_size=BATCH)
    writes = await count_writes(reference, key_settings, target)
    assert writes >= 5, "too few batches to interrupt each kind's first, middle and last"
    leftovers = {"removed": 0, "orphans": 0}
    for at in range(1, writes + 1):
        database = wire_client[f"migrate_{uuid.uuid4().hex[:12]}"]
        await seed(database)
        before = await snapshot(store_on(database, None))
        if target == "plain":
            await migrate(database, COLLECTIONS, key_settings, "encrypted", batch_size=BATCH)
        documents = {kind: len(forms) for kind, forms in (await stored_forms(database)).items()}

        with pytest.raises(Interrupted):
            await migrate(
                database,
                COLLECTIONS,
                key_settings,
                target,
                batch_size=BATCH,
                wrap_collection=Fault(at, after=after),
            )
        halfway = store_on(database, key_settings)
        try:
            assert await snapshot(halfway) == before, f"unreadable after stopping at write {at}"
        finally:
            await halfway.close()

        report = await migrate(database, COLLECTIONS, key_settings, target, batch_size=BATCH)
        forms = await stored_forms(database, orphans=report.orphans)
        leftovers["removed"] += report.leftovers_removed
        leftovers["orphans"] += report.orphans
        assert {kind: len(each) for kind, each in forms.items()} == documents
        assert all(form == target for each in forms.values() for form in each), at
        assert (report.unreadable, report.damaged, report.left) == ({}, {}, 0)
        # Once fully encrypted, a strict store (the default) reads it all.
        final = store_on(database, key_settings if target == "encrypted" else None, strict=True)
        try:
            assert await snapshot(final) == before, f"content changed after stopping at {at}"
        finally:
            await final.close()
    # Stopped just after each attachment's switch, a rewrite leaves its old bytes: the
    # original upload (deleted by the re-run) or a rewrite's file (left to the sweep).
    stranded = len(OWNERS) if after else 0
    expected = {"removed": stranded, "orphans": 0}
    if target == "plain":
        expected = {"removed": 0, "orphans": stranded}
    assert leftovers == expected


async def test_a_progress_callback_that_raises_stops_between_batches(
    wire_client: Any, key_settings: Encryption
) -> None:
    """Stopped by the progress callback after each batch k in turn (as a terminal's
    Ctrl-C between batches), then re-run: fully converted, equal, nothing duplicated."""
    batches = 0
    for stop_at in range(1, 100):
        database = wire_client[f"migrate_{uuid.uuid4().hex[:12]}"]
        await seed(database)
        before = await snapshot(store_on(database, None))
        seen: list[int] = []

        def progress(done: int, seen: list[int] = seen, stop_at: int = stop_at) -> None:
            seen.append(done)
            if len(seen) == stop_at:
                raise Interrupted(f"after batch {stop_at}")

        try:
            await migrate(
                database,
                COLLECTIONS,
                key_settings,
                "encrypted",
                batch_size=BATCH,
                on_progress=progress,
            )
        except Interrupted:
            pass
        else:
            batches = stop_at - 1
            break
        converted_before = sum(seen)
        report = await migrate(database, COLLECTIONS, key_settings, "encrypted", batch_size=BATCH)
        assert sum(report.converted.values()) + converted_before == sum(
            len(forms) for forms in (await stored_forms(database)).values()
        )
        store = store_on(database, key_settings)
        try:
            assert await snapshot(store) == before
        finally:
            await store.close()
    assert batches >= 5


async def test_the_reverse_migration_round_trips(database: Any, key_settings: Encryption) -> None:
    await seed(database)
    plain = await database[COLLECTIONS.items].find({}, {"_id": 1, Field.DATA: 1}).to_list(None)
    before = await snapshot(store_on(database, None))
    await migrate(database, COLLECTIONS, key_settings, "encrypted", batch_size=BATCH)
    report = await migrate(database, COLLECTIONS, key_settings, "plain", batch_size=BATCH)

    forms = await stored_forms(database)
    assert all(form == "plain" for each in forms.values() for form in each)
    assert report.converted == {kind: len(each) for kind, each in forms.items()}
    assert await snapshot(store_on(database, None)) == before
    again = await database[COLLECTIONS.items].find({}, {"_id": 1, Field.DATA: 1}).to_list(None)
    assert again == plain  # byte for byte the documents the store first wrote
    nothing = await migrate(database, COLLECTIONS, key_settings, "plain", batch_size=BATCH)
    assert (nothing.converted, nothing.passes) == ({}, 1)


async def test_documents_whose_key_is_gone_are_counted_and_left(
    database: Any, key_settings: Encryption, wire_client: Any
) -> None:
    await seed(database)
    await migrate(database, COLLECTIONS, key_settings, "encrypted", batch_size=BATCH)
    bobs: dict[Kind, int] = {
        kind: await database[name].count_documents({Field.OWNER: "bob"})
        for kind, name in COLLECTIONS.by_kind(MODEL_KINDS).items()
    }
    bobs["file"] = 1
    async with OwnerEncryption(key_settings, wire_client) as engine:
        assert await engine.shred("bob")

    for _ in range(2):  # and again: it passes over them each time, never loops
        report = await migrate(database, COLLECTIONS, key_settings, "plain", batch_size=BATCH)
        assert report.unreadable == bobs
        assert report.unreadable_owners == {"bob"}
        assert (report.damaged, report.left, report.passes) == ({}, 0, 1)
        assert "cannot decrypt" in report.describe()
        assert "bob" in report.describe()
    for kind, name in COLLECTIONS.by_kind(MODEL_KINDS).items():
        async for document in database[name].find({}):
            owner_is_bob = document[Field.OWNER] == "bob"
            assert is_ciphertext(document[Field.DATA]) == owner_is_bob, kind
    async for file in database[COLLECTIONS.bucket_files].find({}):
        owner_is_bob = file[GridFSField.METADATA][Field.OWNER] == "bob"
        assert bool(file[GridFSField.METADATA].get(GridFSField.ENCRYPTED)) == owner_is_bob
    alice = {"user_id": "alice"}
    assert len((await store_on(database, None).load_threads(10, None, "asc", alice)).data) == 3


async def test_a_ciphertext_copied_over_another_document_stays_unreadable(
    database: Any, key_settings: Encryption
) -> None:
    """An owner's ciphertext copied over another document of the same owner reads as not
    found there; decrypting the store must not make it readable under the wrong id."""
    await seed(database)
    await migrate(database, COLLECTIONS, key_settings, "encrypted", batch_size=BATCH)
    threads = database[COLLECTIONS.threads]
    source = await threads.find_one({Field.OWNER: "alice", Field.THREAD_ID: "thr_alice_1"})
    await threads.update_one(
        {Field.OWNER: "alice", Field.THREAD_ID: "thr_alice_2"},
        {"$set": {Field.DATA: source[Field.DATA]}},
    )

    report = await migrate(database, COLLECTIONS, key_settings, "plain", batch_size=BATCH)

    assert (report.unreadable, report.unreadable_owners) == ({"thread": 1}, {"alice"})
    copied = await threads.find_one({Field.THREAD_ID: "thr_alice_2"})
    assert is_ciphertext(copied[Field.DATA])
    assert await count_pending(database, COLLECTIONS, "plain") == 1


async def test_an_altered_ciphertext_is_reported_as_damaged(
    database: Any, key_settings: Encryption
) -> None:
    await seed(database)
    await migrate(database, COLLECTIONS, key_settings, "encrypted", batch_size=BATCH)
    threads = database[COLLECTIONS.threads]
    document = await threads.find_one({Field.THREAD_ID: "thr_alice_2"})
    altered = bytearray(document[Field.DATA])
    altered[-1] ^= 1
    await threads.update_one(
        {"_id": document["_id"]}, {"$set": {Field.DATA: Binary(bytes(altered), 6)}}
    )

    report = await migrate(database, COLLECTIONS, key_settings, "plain", batch_size=BATCH)

    assert report.damaged == {"thread": 1}
    assert (report.unreadable, report.left) == ({}, 0)
    assert "integrity" in report.describe()
    assert await count_pending(database, COLLECTIONS, "plain") == 1


@pytest.mark.parametrize("writer", ["encrypted", "plain"])
async def test_a_concurrent_application_write_is_never_overwritten(
    database: Any, key_settings: Encryption, writer: str
) -> None:
    """The application saves an item between the migration's read of it and its write:
    the application's content stays. Written in plaintext (an application still without
    encryption), it is converted by the next pass; written encrypted, it is left."""
    await seed(database)
    context = {"user_id": "alice"}
    first_item = min(item.id for item in every_item("thr_alice_0"))
    edited = assistant_message(first_item, "thr_alice_0", text="edited while migrating")
    application = store_on(database, key_settings if writer == "encrypted" else None)

    async def write() -> None:
        await application.save_item("thr_alice_0", edited, context)

    report = await migrate(
        database,
        COLLECTIONS,
        key_settings,
        "encrypted",
        batch_size=BATCH,
        wrap_collection=Before("item", write),
    )

    forms = await stored_forms(database)
    documents = sum(len(each) for each in forms.values())
    assert (report.changed_meanwhile, report.passes, report.left) == (1, 2, 0)
    # the application's plaintext is converted by the second pass; its ciphertext is left
    assert sum(report.converted.values()) == documents - (writer == "encrypted")
    assert all(form == "encrypted" for each in forms.values() for form in each)
    reader = store_on(database, key_settings)
    try:
        assert await reader.load_item("thr_alice_0", first_item, context) == edited
    finally:
        await reader.close()
        await application.close()


def test_the_pending_filters_name_each_form() -> None:
    assert pending_filter("encrypted") == {Field.DATA: {"$type": "object"}}
    assert pending_filter("plain") == {Field.DATA: {"$not": {"$type": "object"}}}
    with pytest.raises(ValueError, match="target must be one of encrypted, plain"):
        pending_filter("clear")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, True, 2.5])
async def test_a_bad_batch_size_is_refused(
    database: Any, key_settings: Encryption, size: Any
) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        await migrate(database, COLLECTIONS, key_settings, "encrypted", batch_size=size)


def test_the_report_says_what_was_done() -> None:
    report = MigrationReport("plain", converted={"thread": 2, "item": 1})
    assert report.describe() == "converted to plain: 2 threads, 1 item, 0 attachments, 0 files"
    report.left = 3
    assert "still in the old form: 3 documents" in report.describe()


def run_cli(uri: str, database: Any, settings: Encryption | None, *args: str, key: Path) -> Result:
    """``chatkit-mongo migrate`` as a user runs it: by URI, with a master key file."""
    options = ["--uri", uri, "--database", database.name]
    if settings is not None:
        key.write_bytes(bytes(settings.kms_providers["local"]["key"]))
        options += ["--master-key-file", str(key), "--key-vault", settings.key_vault_namespace]
    return CliRunner().invoke(cli, ["migrate", *args, *options], env={ENV_KEY: None})


async def test_the_command_converts_both_ways_and_says_so(
    database: Any, key_settings: Encryption, wire_server_uri: str, tmp_path: Path
) -> None:
    await seed(database)
    before = await snapshot(store_on(database, None))
    key = tmp_path / "master.key"

    result = await asyncio.to_thread(
        run_cli, wire_server_uri, database, key_settings, "--to", "encrypted", key=key
    )
    assert result.exit_code == 0, result.output
    assert result.output == "converted to encrypted: 6 threads, 24 items, 6 attachments, 2 files\n"
    assert await count_pending(database, COLLECTIONS, "encrypted") == 0

    result = await asyncio.to_thread(
        run_cli,
        wire_server_uri,
        database,
        key_settings,
        "--to",
        "plain",
        "--batch-size",
        "3",
        key=key,
    )
    assert result.exit_code == 0, result.output
    assert result.output == "converted to plain: 6 threads, 24 items, 6 attachments, 2 files\n"
    assert await snapshot(store_on(database, None)) == before


async def test_the_command_fails_naming_the_owners_it_cannot_decrypt(
    database: Any, key_settings: Encryption, wire_client: Any, wire_server_uri: str, tmp_path: Path
) -> None:
    await seed(database)
    await migrate(database, COLLECTIONS, key_settings, "encrypted")
    async with OwnerEncryption(key_settings, wire_client) as engine:
        await engine.shred("bob")

    result = await asyncio.to_thread(
        run_cli, wire_server_uri, database, key_settings, "--to", "plain", key=tmp_path / "k"
    )

    assert result.exit_code == 1
    assert "cannot decrypt 3 threads, 12 items, 3 attachments, 1 file" in result.output
    assert "(owners: bob)" in result.output
    assert "Error: 19 documents not converted; see above" in result.output


@pytest.mark.parametrize(
    ("args", "says", "status"),
    [
        (["--to", "plain"], "migrate needs the master key", 1),
        (["--to", "clear"], "'clear' is not one of 'encrypted', 'plain'", 1),
        ([], "Missing option '--to'", 2),
    ],
)
def test_the_command_refuses_what_it_cannot_do(
    args: list[str], says: str, status: int, tmp_path: Path
) -> None:
    """The CLI's policy (docs/cli/index.md): a value that cannot be used, or an option
    that needs another, exits 1 in one line; only the grammar (a missing option) is 2."""
    result = run_cli("mongodb://127.0.0.1:9", _Named("db"), None, *args, key=tmp_path / "k")
    assert result.exit_code == status
    assert says in result.output


def test_the_command_refuses_a_bad_batch_size(key_settings: Encryption, tmp_path: Path) -> None:
    result = run_cli(
        "mongodb://127.0.0.1:9",
        _Named("db"),
        key_settings,
        "--to",
        "plain",
        "--batch-size",
        "0",
        key=tmp_path / "k",
    )
    assert result.exit_code == 1  # a value out of range: the policy's runtime error
    assert "--batch-size" in result.output


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


@pytest.mark.parametrize("damage_name", DAMAGES)
async def test_an_unreadable_document_is_converted_as_stored_and_skipped_when_read(
    database: Any, key_settings: Encryption, damage_name: str
) -> None:
    """A document this ChatKit release cannot read is not the migration's to judge: it
    is encrypted and decrypted as it is stored, byte for byte, and an encrypted store's
    pages skip it after decrypting it, as a plain store's do."""
    await seed(database)
    await damage_item(database, DAMAGES[damage_name], "alice", "thr_alice_0", "msg_assistant")
    plain = await database[COLLECTIONS.items].find({}, {"_id": 1, Field.DATA: 1}).to_list(None)

    encrypted = await migrate(database, COLLECTIONS, key_settings, "encrypted", batch_size=BATCH)
    store = store_on(database, key_settings)
    try:
        page = await store.load_thread_items("thr_alice_0", None, 100, "asc", {"user_id": "alice"})
    finally:
        await store.close()
    await migrate(database, COLLECTIONS, key_settings, "plain", batch_size=BATCH)

    assert encrypted.skipped == 0
    assert encrypted.converted["item"] == len(plain)
    assert "msg_assistant" not in [item.id for item in page.data]
    assert len(page.data) == len(every_item()) - 1
    assert store.unreadable.skipped == {COLLECTIONS.items: 1}
    again = await database[COLLECTIONS.items].find({}, {"_id": 1, Field.DATA: 1}).to_list(None)
    assert again == plain
