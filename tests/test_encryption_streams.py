"""Encrypted byte streams (attachment bytes) on the real drivers: exact round trips in
any chunking, exact size, every kind of tampering detected, bounded memory."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.errors import EncryptionError

from chatkit_mongo._encryption import (
    PIECE_BYTES,
    STREAM_MAGIC,
    OwnerEncryption,
    encrypted_stream_size,
    ensure_key_vault_index,
)
from chatkit_mongo.encryption import Encryption
from chatkit_mongo.errors import CiphertextError, KeyUnavailableError

from .encryption_support import (
    EngineRunner,
    chunked,
    close_client,
    collect,
    count_keys,
    fresh_encryption,
    interrupting_engine,
    open_client,
)

pytest_plugins = ("tests.encryption_fixtures",)

MiB = 1024 * 1024


def pattern(size: int, seed: int = 0) -> bytes:
    """Bytes whose every piece differs, so a moved piece cannot read back the same."""
    block = bytes((seed + n) % 251 for n in range(251))
    return (block * (size // len(block) + 1))[:size]


async def encrypt(
    engine: OwnerEncryption,
    data: bytes,
    *,
    owner: str = "alice",
    bound_to: str = "atc_1",
    chunk: int = 64 * 1024,
) -> bytes:
    return await collect(engine.encrypt_stream(owner, chunked(data, chunk), bound_to=bound_to))


async def decrypt(
    engine: OwnerEncryption,
    stream: bytes,
    *,
    owner: str = "alice",
    bound_to: str = "atc_1",
    chunk: int = 255 * 1024,
) -> bytes:
    return await collect(engine.decrypt_stream(owner, chunked(stream, chunk), bound_to=bound_to))


def records(stream: bytes) -> list[bytes]:
    """The length-prefixed records after the header, each with its prefix."""
    assert stream.startswith(STREAM_MAGIC)
    out, at = [], len(STREAM_MAGIC)
    while at < len(stream):
        end = at + 4 + int.from_bytes(stream[at : at + 4], "little")
        out.append(stream[at:end])
        at = end
    return out


def join(pieces: list[bytes]) -> bytes:
    return STREAM_MAGIC + b"".join(pieces)


EDGE_SIZES = [
    0,
    1,
    PIECE_BYTES - 1,
    PIECE_BYTES,
    PIECE_BYTES + 1,
    2 * PIECE_BYTES,
    3 * PIECE_BYTES + 7,
]


def test_streams_round_trip_exactly_in_any_chunking(wire_driver: str, wire_server_uri: str) -> None:
    runner = EngineRunner(wire_driver, wire_server_uri)
    try:

        @settings(max_examples=25)
        @given(
            size=st.sampled_from(EDGE_SIZES) | st.integers(0, 3 * PIECE_BYTES),
            write_chunk=st.integers(1, 2 * PIECE_BYTES),
            read_chunk=st.integers(1, 2 * PIECE_BYTES),
            bound_to=st.text(min_size=1, max_size=40),
        )
        def round_trip(size: int, write_chunk: int, read_chunk: int, bound_to: str) -> None:
            data = pattern(size)
            stream = runner.run(encrypt(runner.engine, data, bound_to=bound_to, chunk=write_chunk))
            assert len(stream) == encrypted_stream_size(size, bound_to)
            assert len(records(stream)) == max(1, -(-size // PIECE_BYTES))
            back = runner.run(decrypt(runner.engine, stream, bound_to=bound_to, chunk=read_chunk))
            assert back == data

        round_trip()
    finally:
        runner.close()


async def test_no_plaintext_is_readable_in_a_stream(engine: OwnerEncryption) -> None:
    marker = b"zebra-crossing-7f3a" * 100
    stream = await encrypt(engine, marker)
    assert marker[:19] not in stream


def test_the_size_overhead_is_small_and_exact() -> None:
    """Each 255 KiB piece costs its 4-byte length, at most 82 bytes of ciphertext overhead
    and its BSON framing (56 bytes plus ``bound_to``): about 0.06 % of the bytes."""
    bound_to = "atc_0123456789abcdef"
    for size in (0, 1, MiB, 100 * MiB):
        pieces = max(1, -(-size // PIECE_BYTES))
        overhead = encrypted_stream_size(size, bound_to) - size
        per_piece_most = 4 + 82 + 56 + len(bound_to)
        assert len(STREAM_MAGIC) < overhead <= len(STREAM_MAGIC) + pieces * per_piece_most
        assert overhead > len(STREAM_MAGIC) + pieces * (per_piece_most - 16)


@pytest.fixture
async def three_pieces(engine: OwnerEncryption) -> tuple[bytes, bytes]:
    data = pattern(2 * PIECE_BYTES + 1000)
    return data, await encrypt(engine, data)


Damage = Callable[[list[bytes]], list[bytes]]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(lambda r: r[:-1], "cut short before its final piece", id="drop-final"),
        pytest.param(lambda r: r[:1] + r[2:], "came where piece 1 belongs", id="drop-middle"),
        pytest.param(lambda r: [r[1], r[0], r[2]], "came where piece 0 belongs", id="swap"),
        pytest.param(lambda r: [r[0], r[0], *r[1:]], "came where piece 1 belongs", id="duplicate"),
        pytest.param(lambda r: [*r, r[2]], "data follows the final piece", id="append"),
        pytest.param(lambda r: [r[0], r[1], r[2][:-5]], "cut short", id="cut-mid-record"),
        pytest.param(
            lambda r: [r[0], r[1][:40] + bytes([r[1][40] ^ 1]) + r[1][41:], r[2]],
            "piece 1 failed its integrity check",
            id="flip-a-bit",
        ),
        pytest.param(
            lambda r: [r[0], r[1][:-1] + bytes([r[1][-1] ^ 1]), r[2]],
            "piece 1 failed its integrity check",
            id="flip-the-hmac",
        ),
        pytest.param(lambda r: [b"\xff\xff\xff\x7f", *r], "a record claims", id="huge-length"),
    ],
)
async def test_an_altered_stream_is_detected(
    engine: OwnerEncryption, three_pieces: tuple[bytes, bytes], damage: Damage, message: str
) -> None:
    data, stream = three_pieces
    handed_out = bytearray()
    with pytest.raises(CiphertextError, match=message):
        await drain(engine, join(damage(records(stream))), handed_out)
    assert data.startswith(bytes(handed_out))  # whatever came out before was authentic


async def drain(engine: OwnerEncryption, stream: bytes, into: bytearray) -> None:
    """Decrypt ``stream`` for alice, keeping what is handed out before any error."""
    async for piece in engine.decrypt_stream("alice", chunked(stream, 100_000), bound_to="atc_1"):
        into += piece


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        pytest.param(b"", "empty or cut short in its header", id="empty"),
        pytest.param(STREAM_MAGIC[:5], "empty or cut short in its header", id="short-header"),
        pytest.param(b"GIF89a\x00\x01" + b"\x00" * 100, "bad header", id="not-encrypted"),
        pytest.param(STREAM_MAGIC, "cut short before its final piece", id="header-only"),
    ],
)
async def test_a_stream_not_in_the_format_is_refused(
    engine: OwnerEncryption, stream: bytes, message: str
) -> None:
    await engine.key_for_write("alice")
    with pytest.raises(CiphertextError, match=message):
        await decrypt(engine, stream)


async def test_pieces_spliced_from_another_file_are_detected(engine: OwnerEncryption) -> None:
    first = records(await encrypt(engine, pattern(2 * PIECE_BYTES + 5, seed=1)))
    second = records(await encrypt(engine, pattern(2 * PIECE_BYTES + 5, seed=2)))
    with pytest.raises(CiphertextError, match="piece 1 is from another file"):
        await decrypt(engine, join([first[0], second[1], first[2]]))


async def test_a_stream_moved_to_another_attachment_is_detected(engine: OwnerEncryption) -> None:
    stream = await encrypt(engine, b"bytes of atc_1", bound_to="atc_1")
    with pytest.raises(CiphertextError, match="made for 'atc_1', not for 'atc_2'"):
        await decrypt(engine, stream, bound_to="atc_2")


async def test_another_owners_stream_is_unavailable(engine: OwnerEncryption) -> None:
    stream = await encrypt(engine, b"alice's bytes", owner="alice")
    await engine.key_for_write("bob")
    with pytest.raises(KeyUnavailableError, match="another key than owner 'bob'"):
        await decrypt(engine, stream, owner="bob")
    with pytest.raises(KeyUnavailableError, match="'carol' has no data key"):
        await decrypt(engine, stream, owner="carol")


async def test_a_shredded_owners_stream_is_unavailable(engine: OwnerEncryption) -> None:
    stream = await encrypt(engine, pattern(PIECE_BYTES + 1))
    bob = await encrypt(engine, b"bob's", owner="bob")
    assert await engine.shred("alice") is True
    with pytest.raises(KeyUnavailableError, match="'alice' has no data key"):
        await decrypt(engine, stream)
    assert await decrypt(engine, bob, owner="bob") == b"bob's"


async def generated(size: int, chunk: int) -> AsyncIterator[bytes]:
    """``size`` bytes made as they are asked for, so the source holds one chunk."""
    block = pattern(chunk)
    for start in range(0, size, chunk):
        yield block[: min(chunk, size - start)]


async def peak_memory(engine: OwnerEncryption, size: int) -> int:
    """Python's peak memory while ``size`` bytes are encrypted and decrypted as a stream."""
    tracemalloc.start()
    try:
        encrypted = engine.encrypt_stream("alice", generated(size, 64 * 1024), bound_to="atc_1")
        total = 0
        async for piece in engine.decrypt_stream("alice", encrypted, bound_to="atc_1"):
            total += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    return peak


async def test_streaming_holds_a_few_pieces_whatever_the_size(engine: OwnerEncryption) -> None:
    """Memory does not grow with the file: 4 MiB and 36 MiB streams peak alike, at a few
    pieces (encrypting and decrypting at once), where buffering would add 32 MiB. The
    slack covers pieces in flight in Motor's thread pool and garbage not yet collected."""
    await engine.key_for_write("alice")
    small = await peak_memory(engine, 4 * MiB)
    large = await peak_memory(engine, 36 * MiB)
    assert large < small + 8 * PIECE_BYTES, (small, large)
    assert large < 24 * PIECE_BYTES, large


@pytest.mark.parametrize("bound_to", ["", "x" * 513, None])
async def test_a_stream_needs_a_binding(engine: OwnerEncryption, bound_to: Any) -> None:
    with pytest.raises(ValueError, match="bound_to must be a non-empty str"):
        await encrypt(engine, b"data", bound_to=bound_to)


async def test_a_stream_never_changes_key_halfway(
    engine: OwnerEncryption, key_settings: Encryption, wire_client: Any
) -> None:
    """The owner's key is shredded (by another process) while a file is being encrypted
    and libmongocrypt no longer has it: the upload fails, and no new key is made for the
    rest of the file, whose pieces would then be under two keys."""
    here, seam = interrupting_engine(key_settings, wire_client)

    async def source() -> AsyncIterator[bytes]:
        yield pattern(PIECE_BYTES + 1)  # the first piece goes out: more follows
        assert await engine.shred("alice") is True
        seam.at, seam.error = len(seam.calls) + 1, EncryptionError(Exception("keys missing"))
        yield pattern(PIECE_BYTES)

    async with here:
        with pytest.raises(KeyUnavailableError, match="deleted while a stream was encrypted"):
            await collect(here.encrypt_stream("alice", source(), bound_to="atc_1"))
    assert await count_keys(key_settings, wire_client, "alice") == 0


async def test_a_stream_fails_once_a_key_shredded_elsewhere_leaves_the_cache(
    wire_server_uri: str,
) -> None:
    """The same without a seam, on PyMongo, which lets libmongocrypt forget keys after the
    engine's cache lifetime, so the next piece meets the deleted key in the vault (Motor
    takes no key_expiration_ms: libmongocrypt keeps a key 60 s there, the window the
    settings document)."""
    settings = fresh_encryption(key_cache_seconds=0.2)
    client, other = (
        open_client("pymongo", wire_server_uri),
        open_client("pymongo", wire_server_uri),
    )
    try:
        await ensure_key_vault_index(settings, client)
        async with (
            OwnerEncryption(settings, client) as here,
            OwnerEncryption(settings, other) as there,
        ):

            async def source() -> AsyncIterator[bytes]:
                yield pattern(PIECE_BYTES + 1)
                assert await there.shred("alice") is True
                await asyncio.sleep(0.3)
                yield pattern(PIECE_BYTES)

            with pytest.raises(KeyUnavailableError, match="deleted while a stream"):
                await collect(here.encrypt_stream("alice", source(), bound_to="atc_1"))
        assert await count_keys(settings, client, "alice") == 0
    finally:
        await close_client(client)
        await close_client(other)
