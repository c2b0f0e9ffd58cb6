"""Export and import of encrypted content, on the real drivers: ciphertext by default
(an export is as safe as the database), ``--decrypt`` for one owner's access request,
an import that restores ciphertext as it was and refuses a malformed one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bson import Binary, ObjectId, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS
from chatkit.store import NotFoundError
from click.testing import CliRunner

from chatkit_mongo import MongoStore
from chatkit_mongo._encryption import OwnerEncryption, is_ciphertext
from chatkit_mongo.apps.cli import cli
from chatkit_mongo.encryption import DEFAULT_LOCAL_KEY_VARIABLE, Encryption
from chatkit_mongo.schema import Field, GridFSField

from .cli_support import encoded, owner_documents
from .conftest import NAMES, RequestContext
from .encrypted_data import (
    SECRET,
    fresh_database,
    run,
    seed_encrypted,
    write_key_file,
)
from .encryption_support import chunked, collect, fresh_encryption
from .samples import every_item

pytest_plugins = ("tests.encryption_fixtures",)


def lines_of(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    return [
        json_util.loads(line, json_options=CANONICAL_JSON_OPTIONS) for line in text.splitlines()
    ]


async def test_export_keeps_ciphertext_and_import_restores_it_exactly(
    wire_client: Any, key_settings: Encryption, tmp_path: Path
) -> None:
    source, target = fresh_database(wire_client), fresh_database(wire_client)
    alice = await seed_encrypted(source, key_settings, "alice")
    out = tmp_path / "alice.jsonl"
    namespace = key_settings.key_vault_namespace

    exported = await run(source, namespace, "export", "--owner", "alice", "--out", str(out))

    assert exported.exit_code == 0, exported.output
    assert "1 thread, 11 items, 1 attachment, 1 file, 4 chunks" in exported.stderr
    text = out.read_text(encoding="utf-8")
    assert SECRET not in text
    assert "ça va" not in text
    lines = lines_of(out)
    documents = [line["document"] for line in lines if line["kind"] in MODEL_LINE_KINDS]
    assert len(documents) == 13
    assert all(is_ciphertext(d[Field.DATA]) for d in documents)
    (file,) = [line["document"] for line in lines if line["kind"] == "file"]
    assert file[GridFSField.METADATA][GridFSField.ENCRYPTED] is True

    imported = await run(target, namespace, "import", str(out))

    assert imported.exit_code == 0, imported.output
    assert encoded(await owner_documents(target, "alice")) == encoded(
        await owner_documents(source, "alice")
    )
    store: MongoStore[Any] = MongoStore(target, encryption=key_settings)
    try:
        loaded = await store.load_thread("thr_1", RequestContext(user_id="alice"))
        assert loaded.title == f"{SECRET} alice"
        items = await store.load_thread_items(
            "thr_1", None, 50, "asc", RequestContext(user_id="alice")
        )
        assert [item.id for item in items.data] == [item.id for item in every_item("thr_1")]
        engine = store.persistence.encryption
        assert engine is not None
        stored = await file_bytes_of(target, alice.file_id)
        plain = engine.decrypt_stream("alice", chunked(stored, 1000), bound_to=alice.attachment_id)
        assert await collect(plain) == alice.data
    finally:
        await store.close()


MODEL_LINE_KINDS = ("thread", "item", "attachment")


async def file_bytes_of(database: Any, file_id: Any) -> bytes:
    cursor = database[NAMES.bucket_chunks].find({GridFSField.FILES_ID: file_id})
    chunks = await cursor.sort(GridFSField.CHUNK_NUMBER, 1).to_list(None)
    return b"".join(bytes(chunk[GridFSField.CHUNK_DATA]) for chunk in chunks)


async def test_decrypted_export_is_the_owners_content_in_the_clear_and_imports_as_plaintext(
    wire_client: Any, key_settings: Encryption, tmp_path: Path
) -> None:
    source, target = fresh_database(wire_client), fresh_database(wire_client)
    alice = await seed_encrypted(source, key_settings, "alice")
    await seed_encrypted(source, key_settings, "bob")
    out = tmp_path / "alice-clear.jsonl"
    key_file = write_key_file(tmp_path, key_settings)
    namespace = key_settings.key_vault_namespace

    exported = await run(
        source,
        namespace,
        "export",
        "--owner",
        "alice",
        "--decrypt",
        "--out",
        str(out),
        master_key=key_file,
    )

    assert exported.exit_code == 0, exported.output
    assert "exported 1 thread, 11 items, 1 attachment, 1 file, 3 chunks" in exported.stderr
    assert "left out" not in exported.stderr
    lines = lines_of(out)
    assert not any(is_ciphertext(line["document"].get(Field.DATA)) for line in lines)
    assert SECRET in out.read_text(encoding="utf-8")
    assert "bob" not in {line["document"].get(Field.OWNER) for line in lines}
    (file,) = [line["document"] for line in lines if line["kind"] == "file"]
    assert GridFSField.ENCRYPTED not in file[GridFSField.METADATA]
    assert file["length"] == len(alice.data)
    chunks = [line["document"] for line in lines if line["kind"] == "chunk"]
    assert [chunk[GridFSField.CHUNK_NUMBER] for chunk in chunks] == [0, 1, 2]
    assert b"".join(chunk[GridFSField.CHUNK_DATA] for chunk in chunks) == alice.data

    imported = await run(target, namespace, "import", str(out))

    assert imported.exit_code == 0, imported.output
    assert await file_bytes_of(target, alice.file_id) == alice.data
    # Readable as plaintext with encryption off, and with it on (another key vault even).
    for encryption in (None, fresh_encryption()):
        store: MongoStore[Any] = MongoStore(target, encryption=encryption)
        try:
            context = RequestContext(user_id="alice")
            assert (await store.load_thread("thr_1", context)).title == f"{SECRET} alice"
            items = await store.load_thread_items("thr_1", None, 50, "asc", context)
            assert items.data == every_item("thr_1")
            attachment = await store.load_attachment(alice.attachment_id, context)
            assert attachment.id == alice.attachment_id
        finally:
            await store.close()


async def test_decrypted_export_leaves_out_and_counts_what_the_owner_cannot_read(
    wire_client: Any, key_settings: Encryption, engine: OwnerEncryption, tmp_path: Path
) -> None:
    database = fresh_database(wire_client)
    await seed_encrypted(database, key_settings, "alice")
    bob = await seed_encrypted(database, key_settings, "bob", "thr_b")
    # A document of alice's holding bob's ciphertext (copied across owners by hand):
    # decryptable by this process, but not with alice's key, so not alice's to read.
    bobs_thread = await database[NAMES.threads].find_one({Field.OWNER: "bob"})
    assert bobs_thread is not None
    copied = {**bobs_thread, "_id": ObjectId(), Field.OWNER: "alice", Field.THREAD_ID: "thr_copied"}
    await database[NAMES.threads].insert_one(copied)
    key_file = write_key_file(tmp_path, key_settings)
    namespace = key_settings.key_vault_namespace
    out = tmp_path / "alice.jsonl"

    result = await run(
        database,
        namespace,
        "export",
        "--owner",
        "alice",
        "--decrypt",
        "--out",
        str(out),
        master_key=key_file,
    )

    assert result.exit_code == 0, result.output
    assert "1 thread, 11 items" in result.stderr
    assert "left out, as they cannot be decrypted: 1 thread" in result.stderr
    assert "thr_copied" not in out.read_text(encoding="utf-8")

    assert await engine.shred("bob")
    shredded = await run(
        database,
        namespace,
        "export",
        "--owner",
        "bob",
        "--decrypt",
        "--out",
        str(out),
        master_key=key_file,
    )

    assert shredded.exit_code == 0, shredded.output
    assert "exported 0 threads, 0 items, 0 attachments, 0 files, 0 chunks" in shredded.stderr
    assert (
        "left out, as they cannot be decrypted: 1 thread, 11 items, 1 attachment, 1 file"
        in shredded.stderr
    )
    assert out.read_text(encoding="utf-8") == ""
    assert bob.owner == "bob"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--decrypt"], "--decrypt exports one owner's content: give --owner"),
        (["--owner", "alice", "--decrypt"], "--decrypt needs the master key"),
    ],
)
def test_decrypt_without_owner_or_master_key_is_one_line_and_exits_1(
    arguments: list[str], message: str
) -> None:
    result = CliRunner().invoke(
        cli,
        ["--uri", "mongodb://127.0.0.1:1", "export", *arguments],
        env={DEFAULT_LOCAL_KEY_VARIABLE: None},
    )

    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"Error: {message}")


async def test_a_ciphertext_imported_under_another_owner_reads_as_not_found(
    wire_client: Any, key_settings: Encryption, tmp_path: Path
) -> None:
    source, target = fresh_database(wire_client), fresh_database(wire_client)
    await seed_encrypted(source, key_settings, "alice")
    await seed_encrypted(target, key_settings, "bob", "thr_own")  # bob has a key of his own
    namespace = key_settings.key_vault_namespace
    out = tmp_path / "alice.jsonl"
    assert (
        await run(source, namespace, "export", "--owner", "alice", "--out", str(out))
    ).exit_code == 0
    # The same lines, relabelled as bob's: threads, items and attachments only (the
    # import refuses alice's files under bob outright, by their owner-prefixed ids).
    relabelled = tmp_path / "as-bob.jsonl"
    kept = []
    for line in out.read_text(encoding="utf-8").splitlines():
        parsed = json.loads(line)
        if parsed["kind"] in MODEL_LINE_KINDS:
            parsed["document"][Field.OWNER] = "bob"
            kept.append(json.dumps(parsed))
    relabelled.write_text("\n".join(kept) + "\n", encoding="utf-8")

    imported = await run(target, namespace, "import", str(relabelled))

    assert imported.exit_code == 0, imported.output
    store: MongoStore[Any] = MongoStore(target, encryption=key_settings)
    try:
        context = RequestContext(user_id="bob")
        with pytest.raises(NotFoundError):
            await store.load_thread("thr_1", context)
        with pytest.raises(NotFoundError):
            await store.load_item("thr_1", every_item("thr_1")[0].id, context)
        threads = await store.load_threads(10, None, "asc", context)
        assert [t.id for t in threads.data] == ["thr_own"]
        items = await store.load_thread_items("thr_1", None, 50, "asc", context)
        assert items.data == []
    finally:
        await store.close()


@pytest.mark.parametrize(
    "ciphertext",
    [
        Binary(bytes(82), 6),  # blob kind 0, not a random-algorithm ciphertext
        Binary(b"\x02" + bytes(16) + b"\x02" + bytes(64), 6),  # holds a string, not a document
        Binary(b"\x02" + bytes(16) + b"\x03" + bytes(65), 6),  # a length no ciphertext has
        Binary(b"\x02" + bytes(10), 6),  # cut short
    ],
)
async def test_import_refuses_a_malformed_ciphertext_naming_the_line_and_writes_nothing(
    wire_client: Any, key_settings: Encryption, tmp_path: Path, ciphertext: Binary
) -> None:
    source, target = fresh_database(wire_client), fresh_database(wire_client)
    await seed_encrypted(source, key_settings, "alice")
    namespace = key_settings.key_vault_namespace
    out = tmp_path / "alice.jsonl"
    assert (
        await run(source, namespace, "export", "--owner", "alice", "--out", str(out))
    ).exit_code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    third = json_util.loads(lines[2], json_options=CANONICAL_JSON_OPTIONS)
    third["document"][Field.DATA] = ciphertext
    lines[2] = json_util.dumps(third, json_options=CANONICAL_JSON_OPTIONS)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = await run(target, namespace, "import", str(out))

    assert result.exit_code == 1
    assert "line 3: bad item document: data (a ciphertext, binary subtype 6)" in result.output
    assert not any((await owner_documents(target, "alice")).values())
