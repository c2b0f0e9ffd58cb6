"""Crypto-shredding by ``purge --owner`` (and ``purge_owner``), and the key vault in
``init`` and ``doctor``, on the real drivers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chatkit.store import NotFoundError
from pymongo import IndexModel

from chatkit_mongo import MongoStore
from chatkit_mongo._encryption import OwnerEncryption, has_key_vault_index, key_vault_indexes
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.errors import KeyUnavailableError
from chatkit_mongo.operations.erase import purge_owner
from chatkit_mongo.schema import Field

from .cli_support import owner_documents
from .conftest import NAMES, RequestContext
from .encrypted_data import fresh_database, run, seed_encrypted, write_key_file
from .encryption_support import chunked, collect, count_keys
from .samples import thread

pytest_plugins = ("tests.encryption_fixtures",)


async def readable_for(
    settings: Encryption, client: Any, owner: str, backup: dict[str, list[dict[str, Any]]]
) -> tuple[list[Any], list[bytes]]:
    """What a new process with the master key can read of a raw copy of ``owner``'s data:
    the decrypted documents (None for each unreadable one), the decrypted files."""
    documents: list[Any] = []
    files: list[bytes] = []
    async with OwnerEncryption(settings, client) as engine:
        for name in NAMES.by_kind(("thread", "item", "attachment")).values():
            for document in backup[name]:
                documents.append(await engine.decrypt(owner, document[Field.DATA]))
        for file in backup[NAMES.bucket_files]:
            stored = b"".join(
                bytes(chunk["data"])
                for chunk in backup[NAMES.bucket_chunks]
                if chunk["files_id"] == file["_id"]
            )
            bound_to = file["metadata"][Field.ATTACHMENT_ID]
            try:
                files.append(
                    await collect(
                        engine.decrypt_stream(owner, chunked(stored, 999), bound_to=bound_to)
                    )
                )
            except KeyUnavailableError:
                files.append(b"")
    return documents, files


async def test_purge_owner_shreds_the_key_so_no_backup_of_the_owner_is_readable(
    wire_client: Any, key_settings: Encryption
) -> None:
    database = fresh_database(wire_client)
    alice = await seed_encrypted(database, key_settings, "alice")
    await seed_encrypted(database, key_settings, "bob")
    backup = await owner_documents(database, "alice")  # a raw copy, as a dump would hold
    documents, files = await readable_for(key_settings, wire_client, "alice", backup)
    assert len(documents) == 13
    assert None not in documents
    assert files == [alice.data]
    namespace = key_settings.key_vault_namespace

    # The command, as an operator runs it: no master key, only the key vault's name.
    result = await run(database, namespace, "purge", "--owner", "alice")

    assert result.exit_code == 0, result.output
    assert "erased 1 thread, 11 items, 1 attachment, 1 file, 4 chunks" in result.output
    assert f"; data key shredded in {namespace}" in result.output
    assert await count_keys(key_settings, wire_client, "alice") == 0
    assert await count_keys(key_settings, wire_client, "bob") == 1
    documents, files = await readable_for(key_settings, wire_client, "alice", backup)
    assert documents == [None] * 13
    assert files == [b""]
    # The backup restored into a database: the store finds nothing of alice's.
    restored = fresh_database(wire_client)
    for name, found in backup.items():
        if found:
            await restored[name].insert_many(found)
    store: MongoStore[Any] = MongoStore(restored, encryption=key_settings)
    try:
        with pytest.raises(NotFoundError):
            await store.load_thread(alice.thread_id, RequestContext(user_id="alice"))
        page = await store.load_threads(10, None, "asc", RequestContext(user_id="alice"))
        assert page.data == []
    finally:
        await store.close()
    # Bob's content is untouched and readable.
    bob_store: MongoStore[Any] = MongoStore(database, encryption=key_settings)
    try:
        loaded = await bob_store.load_thread("thr_1", RequestContext(user_id="bob"))
        assert loaded.title is not None
    finally:
        await bob_store.close()

    again = await run(database, namespace, "purge", "--owner", "alice")

    assert again.exit_code == 0, again.output
    assert (
        f"erased 0 threads, 0 items, 0 attachments, 0 files, 0 chunks; no data key in {namespace}"
        in again.output
    )


async def test_purge_owner_dry_run_says_the_key_would_be_shredded_and_keeps_it(
    wire_client: Any, key_settings: Encryption
) -> None:
    database = fresh_database(wire_client)
    await seed_encrypted(database, key_settings, "alice")
    namespace = key_settings.key_vault_namespace

    result = await run(database, namespace, "purge", "--owner", "alice", "--dry-run")

    assert result.exit_code == 0, result.output
    assert (
        "would erase 1 thread, 11 items, 1 attachment, 1 file, 4 chunks; "
        f"data key would be shredded in {namespace}" in result.output
    )
    assert await count_keys(key_settings, wire_client, "alice") == 1
    nobody = await run(database, namespace, "purge", "--owner", "nobody", "--dry-run")
    assert f"; no data key in {namespace}" in nobody.output


async def test_purge_owner_api_shreds_through_the_callers_driver_only_when_given_a_vault(
    wire_client: Any, key_settings: Encryption
) -> None:
    database = fresh_database(wire_client)
    await seed_encrypted(database, key_settings, "alice")
    namespace = key_settings.key_vault_namespace

    without = await purge_owner(database, NAMES, "alice", dry_run=True)
    assert without.key_vault is None
    assert without.describe_keys() == "no key vault given, no data key looked for"
    erased = await purge_owner(database, NAMES, "alice", key_vault=namespace)

    assert (erased.threads, erased.items, erased.data_keys) == (1, 11, 1)
    assert erased.describe_keys() == f"data key shredded in {namespace}"
    assert await count_keys(key_settings, wire_client, "alice") == 0
    with pytest.raises(ValueError, match=r"database\.collection"):
        await purge_owner(database, NAMES, "alice", key_vault="no-dot")


async def test_init_creates_the_key_vault_index_with_a_master_key_or_a_named_vault(
    wire_client: Any, key_settings: Encryption, tmp_path: Path
) -> None:
    database = fresh_database(wire_client)
    namespace = key_settings.key_vault_namespace
    line = f"{namespace}.keyAltNames_1 {{keyAltNames: 1}} unique"

    dry = await run(database, namespace, "init", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert (
        f"{line} partialFilterExpression={{'keyAltNames': {{'$exists': True}}}}: missing"
        in dry.output
    )
    assert not has_key_vault_index(await key_vault_indexes(namespace, wire_client))

    created = await run(database, namespace, "init")

    assert created.exit_code == 0, created.output
    assert "}: created" in created.output
    assert has_key_vault_index(await key_vault_indexes(namespace, wire_client))
    assert "}: present" in (await run(database, namespace, "init")).output

    # With the master key (another vault, so the index is created anew there).
    other = Encryption.local(
        bytes(key_settings.kms_providers["local"]["key"]),
        key_vault_namespace=f"{database.name}_kv.vault",
    )
    keyed = await run(
        database, other.key_vault_namespace, "init", master_key=write_key_file(tmp_path, other)
    )
    assert keyed.exit_code == 0, keyed.output
    assert f"{other.key_vault_namespace}.keyAltNames_1" in keyed.output


async def test_init_reports_an_index_in_the_way_of_the_key_vault_index(
    wire_client: Any, key_settings: Encryption
) -> None:
    database = fresh_database(wire_client)
    namespace = key_settings.key_vault_namespace
    vault = wire_client[key_settings.key_vault_database][key_settings.key_vault_collection]
    await vault.create_indexes([IndexModel([("other", 1)], name="keyAltNames_1")])

    dry = await run(database, namespace, "init", "--dry-run")
    result = await run(database, namespace, "init")

    assert dry.exit_code == 1
    assert "}: conflict" in dry.output
    assert result.exit_code == 1
    assert "another index has its name" in result.output


async def test_doctor_reports_the_key_vault_unreadable_owners_and_content_in_the_clear(
    wire_client: Any, key_settings: Encryption, engine: OwnerEncryption, tmp_path: Path
) -> None:
    database = fresh_database(wire_client)
    namespace = key_settings.key_vault_namespace

    unused = await run(database, f"{database.name}_none.vault", "doctor")
    assert "ok          encryption: not in use" in unused.output

    await seed_encrypted(database, key_settings, "alice")
    await seed_encrypted(database, key_settings, "bob")
    healthy = await run(database, namespace, "doctor")
    assert f"ok          key vault: {namespace}: 2 data keys" in healthy.output
    assert "keyAltNames_1" in healthy.output
    assert "}: present" in healthy.output
    assert "every owner with encrypted content has a data key (2 owners)" in healthy.output
    assert "content in the clear" not in healthy.output  # no master key: not checked

    assert await engine.shred("bob")
    plain: MongoStore[Any] = MongoStore(database)
    await plain.save_thread(thread("thr_plain"), RequestContext(user_id="carol"))
    key_file = write_key_file(tmp_path, key_settings)

    broken = await run(database, namespace, "doctor", master_key=key_file)

    assert broken.exit_code == 1
    assert (
        "fail        owners without data key: "
        "1 owner with encrypted content unreadable for good: 'bob'" in broken.output
    )
    assert (
        "fail        content in the clear: 1 document (files included) not encrypted yet"
        in broken.output
    )
    assert "next: for each owner named above" in broken.output
    assert "chatkit-mongo purge --owner <owner>" in broken.output
    assert "next: encrypt what is still in the clear" in broken.output


async def test_doctor_fails_while_the_key_vault_index_is_missing(
    wire_client: Any, key_settings: Encryption
) -> None:
    database = fresh_database(wire_client)
    namespace = key_settings.key_vault_namespace
    await seed_encrypted(database, key_settings, "alice")  # its store made the index
    bare = f"{database.name}_bare.vault"
    await wire_client[f"{database.name}_bare"]["vault"].insert_one({"keyAltNames": ["x"]})

    result = await run(database, bare, "doctor")

    assert result.exit_code == 1
    assert f"fail        key vault index: {bare}.keyAltNames_1" in result.output
    assert f"next: run `chatkit-mongo init --key-vault {bare}`" in result.output
    assert "alice" in result.output  # her content's key is not in this vault
    assert namespace not in result.output
