"""A wrong master key is named everywhere, through PyMongo Async and Motor on the wire
server: the store's reads and writes raise :class:`MasterKeyError` naming where the key
came from (no driver ``EncryptionError`` escapes, no altered content is blamed), and
``doctor``, ``export --decrypt`` and ``migrate`` fail with one line naming the key file or
variable, having changed nothing."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from pathlib import Path
from typing import Any, Final

import pytest
from click.testing import CliRunner, Result
from pymongo.errors import EncryptionError

from chatkit_mongo import ChatKitMongoError, MasterKeyError, MongoStore
from chatkit_mongo._encryption import ensure_key_vault_index
from chatkit_mongo.apps.cli import cli
from chatkit_mongo.encryption import DEFAULT_LOCAL_KEY_VARIABLE, LOCAL_KEY_BYTES, Encryption

from . import capabilities, samples
from .cli_support import owner_documents
from .conftest import RequestContext
from .encrypted_attachment_support import encrypted_attachments
from .encrypted_data import fresh_database, run, seed_encrypted, write_key_file
from .encryption_support import count_keys, interrupting_engine

pytest_plugins = ("tests.encryption_fixtures",)

ALICE: Final = RequestContext("alice")
BOB: Final = RequestContext("bob")


def other_key_file(directory: Path) -> Path:
    """Another local master key than the one the vault's keys were made with."""
    path = directory / f"wrong-{uuid.uuid4().hex[:6]}.key"
    path.write_bytes(os.urandom(LOCAL_KEY_BYTES))
    return path


async def test_a_wrong_master_key_is_named_on_every_read_and_write(
    wire_client: Any, key_settings: Encryption, tmp_path: Path
) -> None:
    database = fresh_database(wire_client)
    right = encrypted_attachments(database, key_settings)
    await right.store.save_thread(samples.thread("thr_1"), ALICE)
    await right.store.add_thread_item("thr_1", samples.assistant_message("msg_1"), ALICE)
    created = await right.create_and_upload("notes.txt", "text/plain", b"some bytes", ALICE)
    await right.store.close()
    key_file = other_key_file(tmp_path)
    wrong_settings = Encryption.local_from_file(
        key_file, key_vault_namespace=key_settings.key_vault_namespace
    )
    wrong = encrypted_attachments(database, wrong_settings)
    store = wrong.store
    try:
        calls = {
            "load_thread": store.load_thread("thr_1", ALICE),
            "load_threads": store.load_threads(10, None, "asc", ALICE),
            "load_item": store.load_item("thr_1", "msg_1", ALICE),
            "load_thread_items": store.load_thread_items("thr_1", None, 10, "asc", ALICE),
            "load_attachment": store.load_attachment(created.id, ALICE),
            "read_bytes": wrong.read_bytes(created.id, ALICE),
            "save_thread": store.save_thread(samples.thread("thr_1", title="new"), ALICE),
            "add_thread_item": store.add_thread_item(
                "thr_1", samples.assistant_message("msg_2"), ALICE
            ),
            "upload": wrong.create_and_upload("more.txt", "text/plain", b"more", ALICE),
            "new owner's first write": store.save_thread(samples.thread("thr_b"), BOB),
        }
        for name, call in calls.items():
            with pytest.raises(MasterKeyError) as raised:
                await call
            error = raised.value
            assert isinstance(error, ChatKitMongoError), name
            assert not isinstance(error, EncryptionError), name
            assert f"the local master key file {str(key_file)!r} does not open" in str(error), name
            assert key_settings.key_vault_namespace in str(error), name
        # The new owner's key was not made under the wrong master key.
        assert await count_keys(key_settings, wire_client, "bob") == 0
    finally:
        await store.close()
    reopened: MongoStore[Any] = MongoStore(database, encryption=key_settings)
    try:  # nothing was changed by the refused writes
        assert (await reopened.load_thread("thr_1", ALICE)).title is None
        items = await reopened.load_thread_items("thr_1", None, 10, "asc", ALICE)
        assert [item.id for item in items.data] == ["msg_1"]
    finally:
        await reopened.close()


async def test_doctor_checks_the_master_key_against_the_vault_naming_its_file(
    wire_client: Any, key_settings: Encryption, tmp_path: Path
) -> None:
    database = fresh_database(wire_client)
    namespace = key_settings.key_vault_namespace
    await seed_encrypted(database, key_settings, "alice")

    healthy = await run(
        database, namespace, "doctor", master_key=write_key_file(tmp_path, key_settings)
    )
    assert "ok          master key: the local master key file" in healthy.output
    assert "opens the key vault's data keys" in healthy.output

    wrong = other_key_file(tmp_path)
    broken = await run(database, namespace, "doctor", master_key=wrong)
    assert broken.exit_code == 1
    assert (
        f"fail        master key: the local master key file {str(wrong)!r} does not open the "
        f"data keys of the key vault {namespace}" in broken.output
    )
    assert "next: give the master key the key vault's data keys were made with" in broken.output


def invoke_with_variable(database: Any, key_vault: str, key: bytes, *args: str) -> Result:
    """``chatkit-mongo`` with the master key in ``$CHATKIT_MONGO_LOCAL_MASTER_KEY``."""
    argv = ["--uri", capabilities.server().uri, "--database", database.name]
    argv += ["--key-vault", key_vault, *args]
    env = {DEFAULT_LOCAL_KEY_VARIABLE: base64.b64encode(key).decode()}
    return CliRunner().invoke(cli, argv, env=env)


def one_error_line(result: Result) -> str:
    """The command's failure, which must be a single ``Error:`` line."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    return errors[0]


async def test_export_decrypt_with_a_wrong_key_fails_naming_it_and_writes_nothing(
    wire_client: Any, key_settings: Encryption, tmp_path: Path
) -> None:
    database = fresh_database(wire_client)
    await seed_encrypted(database, key_settings, "alice")
    wrong = other_key_file(tmp_path)
    out = tmp_path / "alice.jsonl"

    result = await run(
        database,
        key_settings.key_vault_namespace,
        "export",
        "--owner",
        "alice",
        "--decrypt",
        "--out",
        str(out),
        master_key=wrong,
    )

    assert f"the local master key file {str(wrong)!r} does not open" in one_error_line(result)
    assert sorted(os.listdir(tmp_path)) == [wrong.name]  # no export, no partial file


@pytest.mark.parametrize("target", ["plain", "encrypted"])
async def test_migrate_with_a_wrong_key_fails_naming_it_and_changes_nothing(
    wire_client: Any, key_settings: Encryption, target: str
) -> None:
    database = fresh_database(wire_client)
    await seed_encrypted(database, key_settings, "alice")
    plain: MongoStore[Any] = MongoStore(database)
    await plain.save_thread(samples.thread("thr_plain"), RequestContext("carol"))
    before = {owner: await owner_documents(database, owner) for owner in ("alice", "carol")}

    result = await asyncio.to_thread(
        invoke_with_variable,
        database,
        key_settings.key_vault_namespace,
        os.urandom(LOCAL_KEY_BYTES),
        "migrate",
        "--to",
        target,
    )

    line = one_error_line(result)
    assert f"environment variable {DEFAULT_LOCAL_KEY_VARIABLE} does not open" in line
    after = {owner: await owner_documents(database, owner) for owner in ("alice", "carol")}
    assert after == before


async def test_a_refused_key_creation_is_named_not_a_driver_error(
    wire_client: Any, tmp_path: Path
) -> None:
    """libmongocrypt (or a cloud KMS) refusing to wrap an owner's new key: the caller
    gets a ``MasterKeyError`` naming the key's source, and no key is left behind."""
    key_file = tmp_path / "master.key"
    key_file.write_bytes(os.urandom(LOCAL_KEY_BYTES))
    settings = Encryption.local_from_file(
        key_file, key_vault_namespace=f"kv_{uuid.uuid4().hex[:12]}.__keyVault"
    )
    await ensure_key_vault_index(settings, wire_client)
    refusal = EncryptionError(Exception("the KMS refused to wrap the key"))
    # The vault is empty: the lookup, then the creation (no key to check the master key on).
    engine, seam = interrupting_engine(settings, wire_client, at=2, error=refusal)
    async with engine:
        with pytest.raises(MasterKeyError) as raised:
            await engine.encrypt("alice", {"text": "hello"})
    assert seam.calls == ["get_key_by_alt_name", "create_data_key"]
    assert str(raised.value) == (
        f"the local master key file {str(key_file)!r} cannot make a data key in the key vault "
        f"{settings.key_vault_namespace} (the KMS refused to wrap the key)"
    )
    assert await count_keys(settings, wire_client, "alice") == 0
