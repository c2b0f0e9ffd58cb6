"""Encryption that cannot be downgraded, through PyMongo Async and Motor on the wire
server: a strict store (the default) refuses content stored in the clear, naming it,
and whether attachment bytes are ciphertext never rests on the file's unauthenticated
``metadata.encrypted`` flag, strict or not."""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections.abc import Awaitable
from typing import Any, Final

import pytest
from chatkit.store import NotFoundError

from chatkit_mongo import CiphertextError, MongoStore, export_data
from chatkit_mongo._encryption import STREAM_MAGIC, OwnerEncryption
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.schema import Field, GridFSField, Kind

from . import samples
from .conftest import NAMES, RequestContext
from .encrypted_attachment_support import encrypted_attachments, file_of, fresh_database

pytest_plugins = ("tests.encryption_fixtures",)

ALICE: Final = RequestContext("alice")
FORGED: Final = "forged by whoever can write to the database"


def test_encryption_is_strict_unless_told_otherwise(key_settings: Encryption) -> None:
    assert key_settings.strict is True
    assert dataclasses.replace(key_settings, strict=False).strict is False


@pytest.fixture
def wire_database(wire_client: Any) -> Any:
    return wire_client[f"chatkit_enc_{uuid.uuid4().hex[:12]}"]


async def test_a_strict_store_refuses_every_document_in_the_clear_naming_it(
    wire_database: Any, key_settings: Encryption
) -> None:
    plain: MongoStore[Any] = MongoStore(wire_database)
    await plain.save_thread(samples.thread("thr_1", title="plain"), ALICE)
    await plain.add_thread_item("thr_1", samples.assistant_message("msg_1"), ALICE)
    await plain.save_attachment(samples.file_attachment("atc_1", "thr_1"), ALICE)
    strict: MongoStore[Any] = MongoStore(wire_database, encryption=key_settings)
    try:
        reads: dict[str, list[Awaitable[Any]]] = {
            "thr_1": [
                strict.load_thread("thr_1", ALICE),
                strict.load_threads(10, None, "asc", ALICE),
            ],
            "msg_1": [
                strict.load_item("thr_1", "msg_1", ALICE),
                strict.load_thread_items("thr_1", None, 10, "desc", ALICE),
            ],
            "atc_1": [strict.load_attachment("atc_1", ALICE)],
        }
        for name, calls in reads.items():
            for call in calls:
                with pytest.raises(CiphertextError, match=rf"{name} of owner 'alice' .*strict"):
                    await call
    finally:
        await strict.close()


async def test_a_forged_plaintext_over_a_ciphertext_is_never_read_as_content(
    wire_database: Any, key_settings: Encryption
) -> None:
    """The database's writer replaces an item's and a thread's encrypted ``data`` with
    plaintext of its own: a strict store names them, and serves none of it."""
    store: MongoStore[Any] = MongoStore(wire_database, encryption=key_settings)
    try:
        await store.save_thread(samples.thread("thr_1", title="secret"), ALICE)
        await store.add_thread_item("thr_1", samples.assistant_message("msg_1"), ALICE)
        forged_item = samples.assistant_message("msg_1", text=FORGED)
        forged_thread = samples.thread("thr_1", title=FORGED)
        forgeries: list[tuple[Kind, Any, dict[str, str]]] = [
            ("item", forged_item, {Field.ITEM_ID: "msg_1"}),
            ("thread", forged_thread, {Field.THREAD_ID: "thr_1"}),
        ]
        for kind, model, key in forgeries:
            result = await wire_database[NAMES.name_of(kind)].update_one(
                {Field.OWNER: "alice", **key},
                {"$set": {Field.DATA: model.model_dump(mode="python")}},
            )
            assert result.modified_count == 1
        reads = [
            ("msg_1", store.load_item("thr_1", "msg_1", ALICE)),
            ("msg_1", store.load_thread_items("thr_1", None, 10, "asc", ALICE)),
            ("thr_1", store.load_thread("thr_1", ALICE)),
            ("thr_1", store.load_threads(10, None, "asc", ALICE)),
        ]
        for name, read in reads:
            with pytest.raises(CiphertextError, match=rf"{name} of owner 'alice' is stored in the"):
                await read
    finally:
        await store.close()


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "migrating"])
@pytest.mark.parametrize(
    "clear",
    [
        {"$set": {GridFSField.METADATA_ENCRYPTED: False}},
        {"$unset": {GridFSField.METADATA_ENCRYPTED: ""}},
    ],
    ids=["flag-false", "flag-unset"],
)
async def test_a_cleared_encrypted_flag_never_serves_the_ciphertext_as_the_file(
    wire_client: Any, key_settings: Encryption, strict: bool, clear: dict[str, Any]
) -> None:
    settings = dataclasses.replace(key_settings, strict=strict)
    attachments = encrypted_attachments(fresh_database(wire_client), settings)
    database = attachments.store.database
    try:
        data = b"the plaintext of a file " * 250
        created = await attachments.create_and_upload("notes.txt", "text/plain", data, ALICE)
        file = await file_of(attachments, created.id)
        cleared = await database[NAMES.bucket_files].update_one(
            {GridFSField.ID: file[GridFSField.ID]}, clear
        )
        assert cleared.modified_count == 1

        said = "strict" if strict else "an encrypted stream without the encrypted flag"
        with pytest.raises(CiphertextError, match=rf"attachment {created.id} .*{said}"):
            await attachments.read_bytes(created.id, ALICE)
        with pytest.raises(CiphertextError, match=said):
            await attachments.open_download(created.id, ALICE)
    finally:
        await attachments.store.close()


async def test_a_migrating_store_serves_plain_bytes_and_a_strict_one_refuses_them(
    wire_client: Any, key_settings: Encryption
) -> None:
    """Bytes uploaded before encryption: served as they are by a store being migrated
    (``strict=False``), even when they start like an encrypted stream only refused; a
    strict store refuses them naming the attachment."""
    database = fresh_database(wire_client)
    plain = encrypted_attachments(database, None)
    data = b"uploaded before encryption " * 100
    created = await plain.create_and_upload("old.txt", "text/plain", data, ALICE)
    header_like = await plain.create_and_upload(
        "odd.bin", "application/octet-stream", STREAM_MAGIC + b"not a stream", ALICE
    )
    migrating = encrypted_attachments(database, dataclasses.replace(key_settings, strict=False))
    strict = encrypted_attachments(database, key_settings)
    try:
        assert await migrating.read_bytes(created.id, ALICE) == data
        with pytest.raises(CiphertextError, match="without the encrypted flag"):
            await migrating.read_bytes(header_like.id, ALICE)
        with pytest.raises(CiphertextError, match=rf"{created.id} of owner 'alice' .*strict"):
            await strict.read_bytes(created.id, ALICE)
    finally:
        await migrating.store.close()
        await strict.store.close()


async def test_a_flag_set_on_plain_bytes_does_not_make_them_readable(
    wire_client: Any, key_settings: Encryption
) -> None:
    """The reverse forgery: plain bytes flagged as encrypted fail to decrypt, and read
    as not found, never as content."""
    database = fresh_database(wire_client)
    plain = encrypted_attachments(database, None)
    created = await plain.create_and_upload("old.txt", "text/plain", b"plain bytes", ALICE)
    migrating = encrypted_attachments(database, dataclasses.replace(key_settings, strict=False))
    try:
        file = await file_of(plain, created.id)
        await database[NAMES.bucket_files].update_one(
            {GridFSField.ID: file[GridFSField.ID]},
            {"$set": {GridFSField.METADATA_ENCRYPTED: True}},
        )
        with pytest.raises(NotFoundError):
            await migrating.read_bytes(created.id, ALICE)
    finally:
        await migrating.store.close()


async def test_a_decrypting_export_leaves_out_what_a_strict_store_refuses(
    wire_client: Any, key_settings: Encryption
) -> None:
    """``export --decrypt`` reads as the store does: with strict settings a document and
    bytes in the clear are left out and counted, never exported as the owner's content;
    with ``strict=False`` (a store being migrated) they are exported as they are."""
    database = fresh_database(wire_client)
    plain = encrypted_attachments(database, None)
    await plain.store.save_thread(samples.thread("thr_old", title=FORGED), ALICE)
    await plain.create_and_upload("old.txt", "text/plain", FORGED.encode(), ALICE)
    for strict, exported, left_out in [
        (True, 0, {"thread": 1, "attachment": 1, "file": 1}),
        (False, 1, {}),
    ]:
        settings = dataclasses.replace(key_settings, strict=strict)
        async with OwnerEncryption(
            settings, wire_client, codec_options=database.codec_options
        ) as engine:
            out = io.StringIO()
            counts = await export_data(database, NAMES, out, owner="alice", decrypt=engine)
        assert (counts["thread"], counts["file"]) == (exported, exported), strict
        assert {kind: n for kind, n in counts.left_out.items() if n} == left_out, strict
        assert (FORGED in out.getvalue()) is not strict
