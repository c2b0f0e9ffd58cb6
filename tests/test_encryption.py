"""The encryption engine on the real drivers: per-owner keys, documents, shredding, races,
faults and cancellation during key creation. Needs a MongoDB-wire server (see
``tests/encryption_support.py``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from typing import Any

import bson
import mongomock_motor
import pytest
from bson import Decimal128, Int64, ObjectId
from bson.binary import Binary
from chatkit.types import Attachment, ThreadItem, ThreadMetadata
from hypothesis import given
from hypothesis import strategies as st

from chatkit_mongo._codec import dump
from chatkit_mongo._encryption import (
    DOCUMENT_OVERHEAD_MAX,
    OwnerEncryption,
    document_ciphertext_size,
    ensure_key_vault_index,
    has_key_vault_index,
    is_ciphertext,
    key_vault_indexes,
)
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.errors import CiphertextError, EncryptionConfigError

from . import samples
from .encryption_support import (
    EngineRunner,
    close_client,
    count_keys,
    fresh_encryption,
    interrupting_engine,
    open_client,
)
from .strategies import INT64_MAX, INT64_MIN, hostile_keys, json_values

pytest_plugins = ("tests.encryption_fixtures",)

MARKER = "zebra-crossing-7f3a"
"""A plaintext that must never appear in a ciphertext."""

bson_scalars = st.one_of(
    json_values,
    st.binary(max_size=64),
    st.builds(ObjectId),
    st.integers(INT64_MIN, INT64_MAX).map(Int64),
    st.decimals(min_value=-(10**20), max_value=10**20, places=6).map(Decimal128),
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31)),
    st.datetimes(
        timezones=st.just(dt.UTC),
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
    ),
    st.floats(),  # NaN, infinities and -0.0 too: compared as BSON bytes below
)
bson_documents = st.dictionaries(
    hostile_keys,
    st.recursive(
        bson_scalars,
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(hostile_keys, children, max_size=3)
        ),
        max_leaves=12,
    ),
    max_size=6,
)


def stored_as_plaintext(document: dict[str, Any]) -> bytes:
    """What a document reads back as when stored unencrypted, as BSON bytes (so that NaN,
    -0.0, dates cut to milliseconds and aware dates read back naive all compare exactly)."""
    return bson.encode(bson.decode(bson.encode(document)))


def owner_key_uuid(ciphertext: Binary) -> bytes:
    return bytes(ciphertext[1:17])


def test_generated_documents_round_trip_exactly(wire_driver: str, wire_server_uri: str) -> None:
    runner = EngineRunner(wire_driver, wire_server_uri)
    try:

        @given(document=bson_documents)
        def round_trip(document: dict[str, Any]) -> None:
            ciphertext = runner.run(runner.engine.encrypt("alice", document))
            assert is_ciphertext(ciphertext)
            assert not is_ciphertext(document)
            assert not is_ciphertext(bson.Binary(bytes(ciphertext)))
            assert len(ciphertext) == document_ciphertext_size(len(bson.encode(document)))
            decrypted = runner.run(runner.engine.decrypt("alice", ciphertext))
            assert decrypted is not None
            assert bson.encode(decrypted) == stored_as_plaintext(document)

        round_trip()
    finally:
        runner.close()


async def test_every_chatkit_model_round_trips_through_its_data(engine: OwnerEncryption) -> None:
    """The ``data`` sub-document the store writes today, for every item variant, both
    attachment kinds and a thread, comes back equal and validates to the same model."""
    models = samples.every_model()
    assert {type(model).__name__ for model, _ in models} >= {"UserMessageItem", "WidgetItem"}
    for model, adapter in models:
        data, _ = dump(model, adapter, "sample")
        ciphertext = await engine.encrypt("alice", data)
        decrypted = await engine.decrypt("alice", ciphertext)
        assert decrypted == data
        loaded: ThreadItem | Attachment | ThreadMetadata = adapter.validate_python(decrypted)
        assert loaded == model


async def test_no_content_is_readable_in_a_ciphertext(engine: OwnerEncryption) -> None:
    data = {"title": MARKER, "nested": {"text": MARKER * 3}}
    ciphertext = await engine.encrypt("alice", data)
    assert MARKER.encode() not in bytes(ciphertext)
    assert len(ciphertext) - len(bson.encode(data)) <= DOCUMENT_OVERHEAD_MAX
    # Random encryption: equal content, unequal ciphertexts.
    assert await engine.encrypt("alice", data) != ciphertext


async def test_a_ciphertext_reads_only_for_the_owner_whose_key_made_it(
    engine: OwnerEncryption, key_settings: Encryption, wire_client: Any
) -> None:
    alice = await engine.encrypt("alice", {"text": MARKER})
    bob = await engine.encrypt("bob", {"text": "bob's"})
    assert owner_key_uuid(alice) == bytes(await engine.key_for_read("alice") or b"")
    assert owner_key_uuid(alice) != owner_key_uuid(bob)
    # Copied or imported under another owner: not found, for an owner with a key or without.
    assert await engine.decrypt("bob", alice) is None
    assert await engine.decrypt("carol", alice) is None
    assert await engine.decrypt("alice", bob) is None
    assert await count_keys(key_settings, wire_client, "carol") == 0  # reads never create keys
    # The application could technically decrypt it: the refusal is the owner check.
    engine_without_check, seam = interrupting_engine(key_settings, wire_client)
    async with engine_without_check:
        assert await seam.inner.decrypt(alice) == {"text": MARKER}
    assert await engine.decrypt("alice", alice) == {"text": MARKER}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: bytes([b[0] ^ 1]) + b[1:], id="blob-kind"),
        pytest.param(lambda b: b[:17] + bytes([2]) + b[18:], id="value-type"),
        pytest.param(lambda b: b[:40] + bytes([b[40] ^ 1]) + b[41:], id="body"),
        pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), id="hmac"),
        pytest.param(lambda b: b[:-16], id="cut"),
        pytest.param(lambda b: b[:10], id="stump"),
    ],
)
async def test_an_altered_document_ciphertext_is_refused(
    engine: OwnerEncryption, damage: Any
) -> None:
    ciphertext = await engine.encrypt("alice", {"text": MARKER})
    altered = Binary(damage(bytes(ciphertext)), 6)
    with pytest.raises(CiphertextError, match=r"integrity|not a randomly encrypted"):
        await engine.decrypt("alice", altered)


@pytest.mark.parametrize("value", [b"plain", Binary(b"x" * 40, 0), {"data": 1}, None])
async def test_a_value_that_is_not_a_ciphertext_is_refused(
    engine: OwnerEncryption, value: Any
) -> None:
    with pytest.raises(CiphertextError, match="subtype 6"):
        await engine.decrypt("alice", value)


async def test_shredding_makes_every_ciphertext_of_the_owner_unreadable(
    engine: OwnerEncryption, key_settings: Encryption, wire_client: Any
) -> None:
    alice = [await engine.encrypt("alice", {"n": n, "text": MARKER}) for n in range(5)]
    bob = [await engine.encrypt("bob", {"n": n}) for n in range(3)]
    assert [await engine.decrypt("alice", c) for c in alice] == [
        {"n": n, "text": MARKER} for n in range(5)
    ]

    assert await engine.shred("alice") is True
    assert await count_keys(key_settings, wire_client, "alice") == 0
    assert [await engine.decrypt("alice", c) for c in alice] == [None] * 5
    assert [await engine.decrypt("bob", c) for c in bob] == [{"n": n} for n in range(3)]
    assert await engine.shred("alice") is False  # nothing left to shred

    # A later write of the owner gets a new key; the shredded content stays unreadable.
    fresh = await engine.encrypt("alice", {"again": True})
    assert await engine.decrypt("alice", fresh) == {"again": True}
    assert [await engine.decrypt("alice", c) for c in alice] == [None] * 5


async def test_a_shred_elsewhere_is_seen_once_the_cache_lifetime_passes(
    wire_driver: str, wire_server_uri: str
) -> None:
    settings = fresh_encryption(key_cache_seconds=0.3)
    first, second = (
        open_client(wire_driver, wire_server_uri),
        open_client(wire_driver, wire_server_uri),
    )
    try:
        await ensure_key_vault_index(settings, first)
        async with (
            OwnerEncryption(settings, first) as here,
            OwnerEncryption(settings, second) as there,
        ):
            ciphertext = await here.encrypt("alice", {"text": MARKER})
            assert await there.shred("alice") is True
            await asyncio.sleep(0.4)
            assert await here.decrypt("alice", ciphertext) is None
            assert await here.key_for_read("alice") is None
    finally:
        await close_client(first)
        await close_client(second)


async def test_a_write_after_a_shred_elsewhere_takes_a_new_key(
    key_settings: Encryption, wire_client: Any, wire_server_uri: str, wire_driver: str
) -> None:
    """A process still caching a shredded key does not write content nobody can read:
    the encryption fails on the missing key, and the write takes a new key instead."""
    await ensure_key_vault_index(key_settings, wire_client)
    other = open_client(wire_driver, wire_server_uri)
    try:
        async with (
            OwnerEncryption(key_settings, wire_client) as here,
            OwnerEncryption(key_settings, other) as there,
        ):
            old_key = await here.key_for_write("alice")  # cached here, never loaded
            assert await there.shred("alice") is True
            ciphertext = await here.encrypt("alice", {"text": MARKER})
            assert owner_key_uuid(ciphertext) != bytes(old_key)
            assert await there.decrypt("alice", ciphertext) == {"text": MARKER}
            assert await count_keys(key_settings, wire_client, "alice") == 1
    finally:
        await close_client(other)


async def test_concurrent_first_writes_from_two_clients_make_one_key(
    key_settings: Encryption, wire_driver: str, wire_server_uri: str
) -> None:
    clients = [open_client(wire_driver, wire_server_uri) for _ in range(2)]
    owners = [f"owner{n}" for n in range(8)]
    try:
        await ensure_key_vault_index(key_settings, clients[0])
        engines = [OwnerEncryption(key_settings, client) for client in clients]
        writes = [
            engine.encrypt(owner, {"by": n})
            for owner in owners
            for n, engine in enumerate(engines)
            for _ in range(2)
        ]
        ciphertexts = await asyncio.gather(*writes)
        for owner in owners:
            assert await count_keys(key_settings, clients[0], owner) == 1
        keys = {owner_key_uuid(c) for c in ciphertexts}
        assert len(keys) == len(owners)
        for engine in engines:  # each reads what the other wrote
            for index, ciphertext in enumerate(ciphertexts):
                owner = owners[index // 4]
                assert await engine.decrypt(owner, ciphertext) == {"by": index % 4 // 2}
        for engine in engines:
            await engine.close()
    finally:
        for client in clients:
            await close_client(client)


async def test_the_loser_of_a_key_creation_race_reads_the_winners_key(
    key_settings: Encryption, wire_client: Any, engine: OwnerEncryption
) -> None:
    """Deterministic race: the loser looked before the winner inserted, so its insert
    hits the unique index, and it takes the winner's key."""
    winner_key = await engine.key_for_write("alice")
    loser, seam = interrupting_engine(key_settings, wire_client)
    seam.stale_lookups = 1
    async with loser:
        assert await loser.key_for_write("alice") == winner_key
    assert seam.calls == ["get_key_by_alt_name", "create_data_key", "get_key_by_alt_name"]
    assert await count_keys(key_settings, wire_client, "alice") == 1


async def test_keys_are_not_created_in_a_vault_without_its_unique_index(
    wire_client: Any,
) -> None:
    settings = fresh_encryption()
    async with OwnerEncryption(settings, wire_client) as engine:
        with pytest.raises(EncryptionConfigError, match=r"kv_\w+\.__keyVault.*keyAltNames"):
            await engine.encrypt("alice", {"text": MARKER})
        assert await count_keys(settings, wire_client, "alice") == 0
        await ensure_key_vault_index(settings, wire_client)
        assert has_key_vault_index(await key_vault_indexes(settings, wire_client))
        assert await engine.decrypt("alice", await engine.encrypt("alice", {"a": 1})) == {"a": 1}


KEY_CREATION_CALLS = 2
"""A first write's awaits on the key vault: look the key up, create it."""
RACE_CALLS = 3
"""A lost race's: look up (stale), create (duplicate), read the winner's."""


def interruptions(calls: int) -> list[Any]:
    """Every way to stop each of ``calls`` awaits: cancelled or failing, before or after
    the call reached the server."""
    return [
        pytest.param(how, at, after, id=f"{how}-at-{at}-{'after' if after else 'before'}")
        for how, at, after in itertools.product(
            ["cancel", "fault"], range(1, calls + 1), [False, True]
        )
    ]


@pytest.mark.parametrize(("how", "at", "after"), interruptions(KEY_CREATION_CALLS))
async def test_an_interrupted_first_write_leaves_no_half_state(
    key_settings: Encryption, wire_client: Any, how: str, at: int, after: bool
) -> None:
    await ensure_key_vault_index(key_settings, wire_client)
    error = None if how == "cancel" else ConnectionError("connection reset")
    engine, seam = interrupting_engine(key_settings, wire_client, at=at, after=after, error=error)
    async with engine:
        await interrupt(engine, seam, how)
        assert len(seam.calls) == at
        keys = await count_keys(key_settings, wire_client, "alice")
        assert keys == (1 if after and seam.calls[-1] == "create_data_key" else 0)
        # The next call works and ends with exactly one key, which both paths agree on.
        seam.at = 0
        ciphertext = await engine.encrypt("alice", {"text": MARKER})
        assert await engine.decrypt("alice", ciphertext) == {"text": MARKER}
        assert await count_keys(key_settings, wire_client, "alice") == 1


@pytest.mark.parametrize(("how", "at", "after"), interruptions(RACE_CALLS))
async def test_an_interrupted_lost_race_leaves_no_half_state(
    engine: OwnerEncryption, wire_client: Any, how: str, at: int, after: bool
) -> None:
    settings = engine.config
    winner_key = await engine.key_for_write("alice")
    error = None if how == "cancel" else ConnectionError("connection reset")
    loser, seam = interrupting_engine(settings, wire_client, at=at, after=after, error=error)
    seam.stale_lookups = 1
    async with loser:
        await interrupt(loser, seam, how)
        seam.at = 0
        assert await loser.key_for_write("alice") == winner_key
    assert await count_keys(settings, wire_client, "alice") == 1


async def interrupt(engine: OwnerEncryption, seam: Any, how: str) -> None:
    """Run a first write of alice until the seam stops it, then cancel it (or let the
    fault surface), and check the caller saw exactly that."""
    task = asyncio.ensure_future(engine.encrypt("alice", {"text": MARKER}))
    if how == "cancel":
        await asyncio.wait_for(seam.reached.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        with pytest.raises(ConnectionError):
            await task


def test_the_engine_refuses_a_client_of_no_known_driver(key_settings: Encryption) -> None:
    with pytest.raises(TypeError, match="AsyncMongoClient or a motor AsyncIOMotorClient"):
        OwnerEncryption(key_settings, mongomock_motor.AsyncMongoMockClient())


@pytest.mark.parametrize("owner", ["", None, 7])
async def test_an_owner_that_is_not_a_name_is_refused(engine: OwnerEncryption, owner: Any) -> None:
    with pytest.raises(ValueError, match="owner must be a non-empty str"):
        await engine.encrypt(owner, {"a": 1})
