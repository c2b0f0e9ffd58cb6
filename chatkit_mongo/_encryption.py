"""The encryption engine: one data key per owner, documents and byte streams.

Built on MongoDB's explicit client-side encryption (libmongocrypt through PyMongo's
``AsyncClientEncryption``, or on Motor PyMongo's ``ClientEncryption`` on a worker thread,
:class:`ThreadedClientEncryption`): every byte of
content is encrypted with ``AEAD_AES_256_CBC_HMAC_SHA_512-Random`` under the owner's data
key, so no cryptography is written here, and deleting the owner's key in the key vault
is the one act that makes all of the owner's content unreadable (crypto-shredding).

Documents (the ``data`` sub-document of a thread, item or attachment) become one BSON
binary of subtype 6, libmongocrypt's ciphertext format (FLE 1 "random" blob)::

    byte 0        2 (the blob kind: random-algorithm ciphertext)
    bytes 1..16   the data key's UUID (the owner's key)
    byte 17       3 (the BSON type of the plaintext: a document)
    bytes 18..    IV (16) | AES-256-CBC of the BSON document, PKCS#7-padded | HMAC (32)

so a ciphertext is ``len(bson.encode(data)) // 16 * 16 + 82`` bytes: 67 to 82 more than
the plaintext (:data:`DOCUMENT_OVERHEAD_MAX`). Bytes 1..16 are checked against the
owner's key BEFORE decrypting: content copied or imported under another owner reads as
not found, though this process could decrypt it.

Byte streams (attachment bytes), :data:`STREAM_MAGIC` then records::

    STREAM_MAGIC (8 bytes: b"CKMENC" 0x00 0x01, the format and its version)
    record*:  length (4 bytes, little-endian) | subtype-6 ciphertext (as above) of the
              BSON document {f: file nonce (16 random bytes), a: bound_to, n: piece index,
              z: is the final piece, b: up to PIECE_BYTES of plaintext}

Each piece is its own authenticated ciphertext, so memory stays at about two pieces
whatever the file's size, and no unauthenticated byte is ever handed out. The index,
the final-piece flag, the file nonce and ``bound_to`` (the attachment id) sit inside the
authenticated plaintext, so reordering, dropping, duplicating or splicing pieces from
another file, cutting the stream short, appending to it, or moving a whole file to
another attachment are all detected (:class:`CiphertextError`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Any, Final, Protocol, TypeGuard

import bson
from bson.binary import UUID_SUBTYPE, Binary
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from gridfs import DEFAULT_CHUNK_SIZE
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import AsyncMongoClient
from pymongo.asynchronous.encryption import AsyncClientEncryption
from pymongo.encryption import ClientEncryption
from pymongo.errors import ConfigurationError, DuplicateKeyError, EncryptionError

from ._driver import maybe_await
from ._telemetry import note
from .encryption import KEY_ALT_NAMES, KEY_VAULT_INDEX, Encryption, split_key_vault_namespace
from .errors import CiphertextError, EncryptionConfigError, KeyUnavailableError, MasterKeyError

ALGORITHM: Final = "AEAD_AES_256_CBC_HMAC_SHA_512-Random"
"""Random, not deterministic: equal content gives unequal ciphertexts, so nothing about
the content can be learnt by comparing documents (content is never queried)."""
ENCRYPTED_SUBTYPE: Final = 6
_RANDOM_BLOB: Final = 2
_KEY_ID: Final = slice(1, 17)
_VALUE_TYPE: Final = 17
_BSON_DOCUMENT: Final = 3
_AES_BLOCK: Final = 16
DOCUMENT_OVERHEAD_MAX: Final = 82
"""Most bytes a ciphertext adds to its plaintext's BSON: 18 header, 16 IV, up to 16
padding, 32 HMAC. The store keeps this much headroom under MongoDB's 16 MiB."""

STREAM_MAGIC: Final = b"CKMENC\x00\x01"
PIECE_BYTES: Final = DEFAULT_CHUNK_SIZE
"""Plaintext per stream piece: one GridFS chunk (255 KiB), the unit the bucket moves."""
_LENGTH_BYTES: Final = 4
_PIECE_OVERHEAD_MAX: Final = 1024
"""Bound on what a piece adds beyond its bytes (BSON framing, ``bound_to``, ciphertext
overhead); a record announcing more than ``PIECE_BYTES`` plus this is refused before
any of it is buffered, so a hostile length cannot make a reader allocate."""
_MAX_BOUND_TO: Final = 512
_INT32_PIECES: Final = 2**31
"""Piece indexes below this are BSON int32, so every full record has one size (a file
needs 2**31 pieces, over 500 TiB, to pass it)."""
_NONCE_BYTES: Final = 16
_MAX_CACHED_OWNERS: Final = 10_000
"""Bounds the cache's memory in a process serving many owners (least recently used go)."""


class ClientEncryptionLike(Protocol):
    """The explicit-encryption calls the engine makes: PyMongo's ``AsyncClientEncryption``
    and :class:`ThreadedClientEncryption` (on Motor) both fit. Tests wrap a real one to inject
    faults and cancellations."""

    async def create_data_key(
        self,
        kms_provider: str,
        master_key: Mapping[str, Any] | None = None,
        key_alt_names: Sequence[str] | None = None,
    ) -> Binary: ...

    async def get_key_by_alt_name(self, key_alt_name: str) -> Any: ...

    async def get_key(self, id: Binary) -> Any: ...

    async def delete_key(self, id: Binary) -> Any: ...

    async def encrypt(self, value: Any, algorithm: str, key_id: Binary | None = None) -> Binary: ...

    async def decrypt(self, value: Binary) -> Any: ...

    async def close(self) -> None: ...


def open_client_encryption(
    config: Encryption, key_vault_client: Any, codec_options: CodecOptions[Any]
) -> ClientEncryptionLike:
    """The driver's explicit-encryption object for ``key_vault_client``.

    Why on the type: a Motor client answers any attribute with a database, so only
    ``type(client)`` tells the drivers apart.
    """
    kind = type(key_vault_client)
    try:
        if issubclass(kind, AsyncMongoClient):
            return AsyncClientEncryption(
                dict(config.kms_providers),
                config.key_vault_namespace,
                key_vault_client,
                codec_options,
                kms_tls_options=_optional_dict(config.kms_tls_options),
                key_expiration_ms=round(config.key_cache_seconds * 1000),
            )
        if issubclass(kind, AsyncIOMotorClient):
            # Why not Motor's AsyncIOMotorClientEncryption: it runs the same synchronous
            # object on Motor's executor, at about 85 us more per call (220 against 135
            # us per decrypt, measured), cannot decrypt a page in one trip, and cannot
            # set key_expiration_ms. ``delegate`` is the PyMongo client Motor wraps.
            return ThreadedClientEncryption(
                ClientEncryption(
                    dict(config.kms_providers),
                    config.key_vault_namespace,
                    key_vault_client.delegate,
                    codec_options,
                    kms_tls_options=_optional_dict(config.kms_tls_options),
                    key_expiration_ms=round(config.key_cache_seconds * 1000),
                )
            )
    except ConfigurationError as exc:  # pymongocrypt missing, or a provider it rejects
        raise EncryptionConfigError(
            f"client-side encryption cannot start: {exc}. Install chatkit-mongo[encryption]."
        ) from exc
    raise TypeError(
        "encryption needs a pymongo.AsyncMongoClient or a motor AsyncIOMotorClient as key "
        f"vault client, not {kind.__name__}"
    )


class ThreadedClientEncryption:
    """PyMongo's synchronous explicit encryption with each call on a worker thread (the
    engine's on Motor, whose client is a synchronous PyMongo client underneath), so
    that the key vault reads and KMS requests libmongocrypt may make never block the
    event loop; :meth:`decrypt_all` decrypts a whole page in one trip to the thread."""

    def __init__(self, encryption: ClientEncryption[Any]) -> None:
        self._sync = encryption

    async def create_data_key(
        self,
        kms_provider: str,
        master_key: Mapping[str, Any] | None = None,
        key_alt_names: Sequence[str] | None = None,
    ) -> Binary:
        return await asyncio.to_thread(
            self._sync.create_data_key,
            kms_provider,
            master_key=master_key,
            key_alt_names=key_alt_names,
        )

    async def get_key_by_alt_name(self, key_alt_name: str) -> Any:
        return await asyncio.to_thread(self._sync.get_key_by_alt_name, key_alt_name)

    async def get_key(self, id: Binary) -> Any:
        return await asyncio.to_thread(self._sync.get_key, id)

    async def delete_key(self, id: Binary) -> Any:
        return await asyncio.to_thread(self._sync.delete_key, id)

    async def encrypt(self, value: Any, algorithm: str, key_id: Binary | None = None) -> Binary:
        return await asyncio.to_thread(self._sync.encrypt, value, algorithm, key_id=key_id)

    async def decrypt(self, value: Binary) -> Any:
        return await asyncio.to_thread(self._sync.decrypt, value)

    async def decrypt_all(self, values: list[Binary]) -> list[Any]:
        """Each value decrypted, or the ``EncryptionError`` it raised, in one trip."""
        return await asyncio.to_thread(_decrypt_each, self._sync, values)

    async def close(self) -> None:
        await asyncio.to_thread(self._sync.close)


def has_key_vault_index(indexes: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``listIndexes`` of the key vault shows a unique index on ``keyAltNames``
    alone (:data:`~chatkit_mongo.encryption.KEY_VAULT_INDEX`, or one equivalent for
    uniqueness), the index that makes first writes race-safe."""
    return any(
        list(dict(index["key"]).items()) == [(KEY_ALT_NAMES, 1)] and bool(index.get("unique"))
        for index in indexes
    )


async def ensure_key_vault_index(config: Encryption | str, key_vault_client: Any) -> None:
    """Create :data:`~chatkit_mongo.encryption.KEY_VAULT_INDEX`; a no-op when present.

    ``config`` may be the key vault's namespace alone: creating the index needs no
    master key (``init`` run by an operator who holds none)."""
    await _key_vault(config, key_vault_client).create_indexes([KEY_VAULT_INDEX])


async def key_vault_indexes(
    config: Encryption | str, key_vault_client: Any
) -> list[dict[str, Any]]:
    """The key vault's indexes as ``listIndexes`` reports them (for ``doctor``); ``config``
    may be the namespace alone, as for :func:`ensure_key_vault_index`."""
    cursor = await maybe_await(_key_vault(config, key_vault_client).list_indexes())
    indexes: list[dict[str, Any]] = await cursor.to_list(None)
    return indexes


def is_ciphertext(value: object) -> TypeGuard[Binary]:
    """Whether a stored ``data`` field holds a ciphertext (else it is a plaintext
    document, as written with encryption off): what a migration and ``doctor`` test."""
    return isinstance(value, Binary) and value.subtype == ENCRYPTED_SUBTYPE


def check_document_ciphertext(value: object, what: str) -> None:
    """Refuse (:class:`CiphertextError`) a value that is not shaped as a document
    ciphertext of this engine: subtype 6, a random-algorithm blob of a document, of a
    length :func:`document_ciphertext_size` can give. Needs no key (an import checks
    the ciphertexts it restores); whether it decrypts, and for whom, is the reader's
    check (:meth:`OwnerEncryption.decrypt`)."""
    _key_uuid(value, what)
    assert isinstance(value, Binary)  # _key_uuid refused anything else
    extra = len(value) - DOCUMENT_OVERHEAD_MAX
    if extra < 0 or extra % _AES_BLOCK:
        raise CiphertextError(f"{what} is {len(value)} bytes long, which no ciphertext is")


def document_ciphertext_size(plaintext_bson_size: int) -> int:
    """The length of a subtype-6 ciphertext of a document of this many BSON bytes."""
    return plaintext_bson_size // _AES_BLOCK * _AES_BLOCK + DOCUMENT_OVERHEAD_MAX


def encrypted_stream_size(size: int, bound_to: str) -> int:
    """The exact length of :meth:`OwnerEncryption.encrypt_stream`'s output for ``size``
    plaintext bytes (what GridFS stores, for quotas and the size overhead)."""
    full, rest = divmod(size, PIECE_BYTES)
    if full and not rest:  # the last full piece is the final one
        full, rest = full - 1, PIECE_BYTES
    pieces = sum(_record_size(bound_to, index, PIECE_BYTES) for index in range(full))
    return len(STREAM_MAGIC) + pieces + _record_size(bound_to, full, rest)


def final_record(stored_size: int, bound_to: str) -> tuple[int, int]:
    """The index of the final piece of a stream of ``stored_size`` bytes made by
    :meth:`OwnerEncryption.encrypt_stream` for ``bound_to``, and the offset of its record.

    Why this and not an inverse of :func:`encrypted_stream_size`: CBC's padding makes 16
    plaintext sizes share one ciphertext size, so the stored size alone cannot give the
    plaintext's exact length. Every piece but the final one holds exactly
    :data:`PIECE_BYTES`, so their records all have one size, and the final record's
    place follows from ``stored_size``; decrypting that record alone
    (``decrypt_stream(..., first_piece=index)``) gives the exact length:
    ``index * PIECE_BYTES`` plus its bytes.

    Raises :class:`CiphertextError` when no such stream has this size.
    """
    full = _record_size(bound_to, 0, PIECE_BYTES)
    smallest = _record_size(bound_to, 0, 0)
    body = stored_size - len(STREAM_MAGIC)
    index = max(body - 1, 0) // full  # the records before the final one are all full
    last = body - index * full
    if last < smallest or (last - smallest) % _AES_BLOCK or index >= _INT32_PIECES:
        raise CiphertextError(
            f"no encrypted stream for {bound_to!r} is {stored_size} bytes long (altered)"
        )
    return index, len(STREAM_MAGIC) + index * full


def _record_size(bound_to: str, index: int, length: int) -> int:
    """The stored size of the record of piece ``index`` holding ``length`` bytes."""
    framing = len(bson.encode(_piece(Binary(bytes(_NONCE_BYTES)), bound_to, index, False, b"")))
    return _LENGTH_BYTES + document_ciphertext_size(framing + length)


class OwnerEncryption:
    """Per-owner data keys and the encryption of documents and byte streams with them.

    One per MongoDB client (its caches belong to that client's key vault). Reads never
    create keys; the first write of an owner does. Use as ``async with`` or call
    :meth:`close`; the key vault client stays open, it belongs to the caller.
    """

    def __init__(
        self,
        config: Encryption,
        key_vault_client: Any,
        *,
        codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
        client_encryption: ClientEncryptionLike | None = None,
    ) -> None:
        """Args:
        config: KMS providers, master key, key vault and cache lifetime.
        key_vault_client: the ``AsyncMongoClient`` or ``AsyncIOMotorClient`` holding the
            key vault (usually the store's own client).
        codec_options: how decrypted documents are decoded; pass the store database's,
            so decrypted content reads back exactly as unencrypted content does.
        client_encryption: the explicit-encryption object to use instead of the
            driver's own (a seam for tests; it must talk to the same key vault).
        """
        self.config: Final = config
        self._key_vault_client = key_vault_client
        self._encryption = client_encryption or open_client_encryption(
            config, key_vault_client, codec_options
        )
        self._keys = _KeyCache(config.key_cache_seconds)
        self._index_checked = False
        self._master_key_checked = False

    async def __aenter__(self) -> OwnerEncryption:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._encryption.close()

    async def ensure_key_vault_index(self) -> None:
        """Create the key vault's unique index (a no-op when present), so that this
        engine may create keys from now on."""
        await ensure_key_vault_index(self.config, self._key_vault_client)
        self._index_checked = True

    # Keys -----------------------------------------------------------------------------

    async def key_for_read(self, owner: str) -> Binary | None:
        """The owner's data key id, or None when the owner has none (never had, or
        shredded). Never creates a key."""
        _check_owner(owner)
        cached = self._keys.get(owner)
        if cached is not None:
            return cached
        key_id = await self._find(owner)
        if key_id is not None:
            self._keys.put(owner, key_id)
        return key_id

    async def key_for_write(self, owner: str) -> Binary:
        """The owner's data key id, created on the owner's first write.

        Race-safe across processes: when two create the key at once, the key vault's
        unique index refuses the second insert and the loser reads the winner's key.
        Each step is one operation, and the cache is filled only with a key read back
        or created, so a cancellation or fault at any point leaves either no key or
        one complete key, and the next call carries on from there.
        """
        key_id = await self.key_for_read(owner)
        if key_id is not None:
            return key_id
        await self._require_index()
        # Why before creating: a wrong master key would wrap the new key as readily as
        # the right one, splitting the owners between two master keys.
        await self.check_master_key()
        try:
            key_id = await self._encryption.create_data_key(
                self.config.kms_provider,
                master_key=_optional_dict(self.config.master_key),
                key_alt_names=[owner],
            )
            note("key_created", True)
        except EncryptionError as exc:
            if not isinstance(exc.cause, DuplicateKeyError):
                # libmongocrypt or the KMS refused to wrap the key with the master key
                raise self._master_key_error(exc, making=True) from exc
            key_id = await self._find(owner)
            if key_id is None:  # the winner's key was shredded at once
                raise KeyUnavailableError(
                    f"the data key of owner {owner!r} was created and deleted meanwhile; retry"
                ) from exc
        key_id = _as_key_id(key_id)
        self._keys.put(owner, key_id)
        return key_id

    async def shred(self, owner: str) -> bool:
        """Delete the owner's data key (every key named after the owner): all content
        encrypted for the owner, in the database, backups and exports, becomes
        unreadable. True if a key was deleted, False if the owner had none.

        Other processes may go on using the key from their caches for at most
        ``key_cache_seconds``; this process stops at once.
        """
        _check_owner(owner)
        self._keys.evict(owner)
        deleted = False
        while (key_id := await self._find(owner)) is not None:
            result = await self._encryption.delete_key(key_id)
            deleted = deleted or result.deleted_count > 0
        self._keys.evict(owner)
        return deleted

    async def check_master_key(self) -> None:
        """Raise :class:`MasterKeyError` naming the master key's source unless it opens
        the key vault's data keys; a vault holding none of this KMS provider's keys
        passes. Checked against the server once per engine, then remembered.

        How: one data key of the vault made with this engine's KMS provider encrypts a
        probe value, which needs that key unwrapped by the master key, and tells a wrong
        master key from a good one without any content.
        """
        if self._master_key_checked:
            return
        provider = {"masterKey.provider": self.config.kms_provider}
        found = await _key_vault(self.config, self._key_vault_client).find_one(provider, {"_id": 1})
        if found is not None:
            key_id = _as_key_id(found["_id"])
            error = await self._refusal(key_id)
            if error is not None and await self._encryption.get_key(key_id) is not None:
                raise self._master_key_error(error)
        self._master_key_checked = True

    # Documents ------------------------------------------------------------------------

    async def encrypt(self, owner: str, data: Mapping[str, Any]) -> Binary:
        """``data`` (a ``data`` sub-document) as one subtype-6 ciphertext under the
        owner's key, created if the owner has none yet."""
        return await self._encrypt_value(owner, dict(data))

    async def decrypt(self, owner: str, ciphertext: Binary) -> dict[str, Any] | None:
        """The document ``ciphertext`` holds, if it was made with ``owner``'s key; None
        when it was made with another owner's key or the owner's key is gone.

        Raises :class:`CiphertextError` when the value is not a document ciphertext or
        fails its integrity check (altered), and :class:`MasterKeyError` when the master
        key does not open the owner's data key.
        """
        return (await self.decrypt_many(owner, [ciphertext]))[0]

    async def decrypt_many(
        self, owner: str, ciphertexts: Sequence[Binary]
    ) -> list[dict[str, Any] | None]:
        """:meth:`decrypt` of each of ``ciphertexts`` (a page's ``data`` fields), in
        order: None for those made with another owner's key, all None when the owner's
        key is gone; the same errors, for the first that fails.

        Why one call for a page: one key lookup for all, and on Motor, whose explicit
        encryption runs each call on a worker thread, one trip to that thread for the
        whole page instead of one per document (a page of 20 cost over three times a
        plain one, round trips of the thread pool one after another).
        """
        shapes = [_key_uuid(value, "an encrypted document") for value in ciphertexts]
        readable: list[dict[str, Any] | None] = [None] * len(shapes)
        key_id = await self.key_for_read(owner)
        if key_id is None:
            return readable
        mine = [index for index, key_uuid in enumerate(shapes) if key_uuid == bytes(key_id)]
        values = await self._decrypt_values([ciphertexts[index] for index in mine])
        for index, value in zip(mine, values, strict=True):
            if isinstance(value, EncryptionError):
                if await self._key_gone(owner, key_id):
                    return [None] * len(shapes)
                raise await self._decrypt_failure(
                    owner, key_id, value, f"an encrypted document of owner {owner!r}"
                )
            if not isinstance(value, dict):
                raise CiphertextError(
                    f"an encrypted document of owner {owner!r} holds a {type(value).__name__}"
                )
            readable[index] = value
        return readable

    # Byte streams ---------------------------------------------------------------------

    async def encrypt_stream(
        self, owner: str, data: AsyncIterable[bytes], *, bound_to: str
    ) -> AsyncIterator[bytes]:
        """``data`` encrypted as a stream (see the module's docstring), for ``bound_to``
        (the attachment id). Holds at most two pieces plus one input chunk."""
        _check_bound_to(bound_to)
        key_id = await self.key_for_write(owner)
        nonce = Binary(secrets.token_bytes(_NONCE_BYTES))
        yield STREAM_MAGIC
        buffer = bytearray()
        index = 0
        async for chunk in data:
            buffer += chunk
            while len(buffer) > PIECE_BYTES:  # more follows, so this piece is not the last
                piece = _take(buffer, PIECE_BYTES)
                yield await self._seal(owner, key_id, _piece(nonce, bound_to, index, False, piece))
                index += 1
        final = _piece(nonce, bound_to, index, True, bytes(buffer))
        yield await self._seal(owner, key_id, final)

    async def decrypt_stream(
        self, owner: str, data: AsyncIterable[bytes], *, bound_to: str, first_piece: int = 0
    ) -> AsyncGenerator[bytes]:
        """The plaintext of a stream made by :meth:`encrypt_stream` for ``owner`` and
        ``bound_to``, piece by piece, each authenticated before it is handed out.

        ``first_piece``: ``data`` starts at the record of this piece instead of at the
        stream's header (e.g. the final record alone, placed by :func:`final_record`);
        the records must still run, in order, to the final piece.

        Raises :class:`KeyUnavailableError` when the owner's key is gone or the stream
        was made with another owner's key (before any byte), and :class:`CiphertextError`
        when it was altered, cut short, extended, reordered or spliced. A caller
        streaming to a client must treat an error after some bytes as a failed transfer.
        """
        _check_bound_to(bound_to)
        key_id = await self.key_for_read(owner)
        if key_id is None:
            raise KeyUnavailableError(f"owner {owner!r} has no data key (shredded or never made)")
        if isinstance(first_piece, bool) or not isinstance(first_piece, int) or first_piece < 0:
            raise ValueError(f"first_piece must be a non-negative int, got {first_piece!r}")
        reader = _StreamReader(header=first_piece == 0)
        expected = first_piece
        nonce: bytes | None = None
        async for chunk in data:
            for record in reader.feed(chunk):
                if reader.finished:
                    raise CiphertextError("encrypted stream: data follows the final piece")
                piece = await self._open(owner, key_id, record, expected, expected == first_piece)
                nonce = nonce or piece["f"]
                if piece["f"] != nonce:
                    raise CiphertextError(
                        f"encrypted stream: piece {expected} is from another file"
                    )
                if piece["a"] != bound_to:
                    raise CiphertextError(
                        f"encrypted stream: made for {piece['a']!r}, not for {bound_to!r}"
                    )
                reader.finished = bool(piece["z"])
                expected += 1
                yield bytes(piece["b"])
        reader.close()

    # Internals ------------------------------------------------------------------------

    async def _seal(self, owner: str, key_id: Binary, piece: dict[str, Any]) -> bytes:
        """One stream record: the piece's ciphertext after its length."""
        ciphertext = await self._encrypt_value(owner, piece, key_id)
        return len(ciphertext).to_bytes(_LENGTH_BYTES, "little") + ciphertext

    async def _open(
        self, owner: str, key_id: Binary, record: bytes, expected: int, first: bool
    ) -> dict[str, Any]:
        ciphertext = Binary(record, ENCRYPTED_SUBTYPE)
        if _key_uuid(ciphertext, f"encrypted stream piece {expected}") != bytes(key_id):
            if first:
                raise KeyUnavailableError(
                    f"an encrypted stream was made with another key than owner {owner!r}'s"
                )
            raise CiphertextError(f"encrypted stream: piece {expected} is under another key")
        try:
            piece = await self._encryption.decrypt(ciphertext)
        except EncryptionError as exc:
            if await self._key_gone(owner, key_id):
                raise KeyUnavailableError(f"the data key of owner {owner!r} is gone") from exc
            raise await self._decrypt_failure(
                owner, key_id, exc, f"encrypted stream: piece {expected}"
            ) from exc
        if not isinstance(piece, dict) or set(piece) != {"f", "a", "n", "z", "b"}:
            raise CiphertextError(f"encrypted stream: piece {expected} is not a stream piece")
        if piece["n"] != expected:
            raise CiphertextError(
                f"encrypted stream: piece {piece['n']} came where piece {expected} belongs "
                "(reordered, dropped or duplicated)"
            )
        return piece

    async def _encrypt_value(
        self, owner: str, value: dict[str, Any], stream_key: Binary | None = None
    ) -> Binary:
        """Encrypt under the owner's key.

        A document whose cached key was shredded by another process meanwhile takes a
        fresh key once, instead of being written where nobody can read it. A stream piece
        (``stream_key``) never changes key halfway through its file: it fails instead.
        """
        key_id = stream_key or await self.key_for_write(owner)
        try:
            return await self._encryption.encrypt(value, ALGORITHM, key_id=key_id)
        except EncryptionError as exc:
            if not await self._key_gone(owner, key_id):
                # The key is there and cannot encrypt: its master key is another one.
                raise self._master_key_error(exc) from exc
            if stream_key is not None:
                raise KeyUnavailableError(
                    f"the data key of owner {owner!r} was deleted while a stream was encrypted"
                ) from exc
        return await self._encryption.encrypt(
            value, ALGORITHM, key_id=await self.key_for_write(owner)
        )

    async def _decrypt_values(self, ciphertexts: list[Binary]) -> list[Any]:
        """The driver's decryption of each ciphertext, or the ``EncryptionError`` it
        raised in its place. On Motor (:class:`ThreadedClientEncryption`) the whole list
        goes to the worker thread at once: the work is the same, the trips are one."""
        if len(ciphertexts) > 1 and isinstance(self._encryption, ThreadedClientEncryption):
            return await self._encryption.decrypt_all(ciphertexts)
        values: list[Any] = []
        for ciphertext in ciphertexts:
            try:
                values.append(await self._encryption.decrypt(ciphertext))
            except EncryptionError as exc:
                values.append(exc)
        return values

    async def _decrypt_failure(
        self, owner: str, key_id: Binary, exc: EncryptionError, what: str
    ) -> Exception:
        """Why a ciphertext under the owner's (present) key did not decrypt: the master
        key does not open that key (:class:`MasterKeyError`), else the ciphertext was
        altered (:class:`CiphertextError`). Told apart by encrypting a probe with the
        key, which only the unwrapping of the key can make fail."""
        error = await self._refusal(key_id)
        if error is not None:
            return self._master_key_error(error)
        return CiphertextError(f"{what} failed its integrity check: {exc}")

    async def _refusal(self, key_id: Binary) -> EncryptionError | None:
        """The error encrypting a probe value with ``key_id`` raises, None if it works."""
        try:
            await self._encryption.encrypt("probe", ALGORITHM, key_id=key_id)
        except EncryptionError as exc:
            return exc
        return None

    def _master_key_error(self, cause: EncryptionError, *, making: bool = False) -> MasterKeyError:
        """The error naming the master key's source, for a failure of libmongocrypt
        with the key present in the vault, or (``making``) while wrapping a new one."""
        vault = self.config.key_vault_namespace
        what = (
            f"cannot make a data key in the key vault {vault}"
            if making
            else f"does not open the data keys of the key vault {vault}: it is not the "
            "master key they were made with"
        )
        error = MasterKeyError(f"{self.config.master_key_source} {what} ({cause})")
        error.__cause__ = cause
        return error

    async def _key_gone(self, owner: str, key_id: Binary) -> bool:
        """After a failure: whether the key is missing from the vault (then forgotten)."""
        if await self._encryption.get_key(key_id) is not None:
            return False
        self._keys.evict(owner)
        return True

    async def _find(self, owner: str) -> Binary | None:
        document = await self._encryption.get_key_by_alt_name(owner)
        return None if document is None else _as_key_id(document["_id"])

    async def _require_index(self) -> None:
        """Refuse to create keys in a vault without the unique index: without it, two
        processes could each create a key for one owner and write content under both."""
        if self._index_checked:
            return
        if not has_key_vault_index(await key_vault_indexes(self.config, self._key_vault_client)):
            raise EncryptionConfigError(
                f"the key vault {self.config.key_vault_namespace} has no unique index on "
                f"{KEY_ALT_NAMES}; create it first (ensure_key_vault_index, or the init command)"
            )
        self._index_checked = True


class _StreamReader:
    """Splits an encrypted stream into records, holding at most one record and a chunk."""

    def __init__(self, *, header: bool = True) -> None:
        self._buffer = bytearray()
        self._header = not header  # True once the header is read, or none is expected
        self.finished = False

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        if not self._header:
            if len(self._buffer) < len(STREAM_MAGIC):
                return []
            if self._buffer[: len(STREAM_MAGIC)] != STREAM_MAGIC:
                raise CiphertextError("not an encrypted stream of this format (bad header)")
            del self._buffer[: len(STREAM_MAGIC)]
            self._header = True
        records: list[bytes] = []
        while len(self._buffer) >= _LENGTH_BYTES:
            length = int.from_bytes(self._buffer[:_LENGTH_BYTES], "little")
            if length > PIECE_BYTES + _PIECE_OVERHEAD_MAX:
                raise CiphertextError(f"encrypted stream: a record claims {length} bytes")
            end = _LENGTH_BYTES + length
            if len(self._buffer) < end:
                break
            del self._buffer[:_LENGTH_BYTES]
            records.append(_take(self._buffer, length))
        return records

    def close(self) -> None:
        if not self._header:
            raise CiphertextError("encrypted stream: empty or cut short in its header")
        if self._buffer or not self.finished:
            raise CiphertextError("encrypted stream: cut short before its final piece")


class _KeyCache:
    """Owner -> data key id, each entry trusted for ``lifetime`` seconds."""

    def __init__(self, lifetime: float) -> None:
        self._lifetime = lifetime
        self._entries: OrderedDict[str, tuple[Binary, float]] = OrderedDict()

    def get(self, owner: str) -> Binary | None:
        entry = self._entries.get(owner)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._entries[owner]
            return None
        self._entries.move_to_end(owner)
        return entry[0]

    def put(self, owner: str, key_id: Binary) -> None:
        self._entries[owner] = (key_id, time.monotonic() + self._lifetime)
        self._entries.move_to_end(owner)
        while len(self._entries) > _MAX_CACHED_OWNERS:
            self._entries.popitem(last=False)

    def evict(self, owner: str) -> None:
        self._entries.pop(owner, None)


def _take(buffer: bytearray, size: int) -> bytes:
    """Remove and return the first ``size`` bytes of ``buffer``, copying them once."""
    with memoryview(buffer) as view:
        taken = bytes(view[:size])
    del buffer[:size]
    return taken


def _decrypt_each(encryption: Any, ciphertexts: list[Binary]) -> list[Any]:
    """In a worker thread: the synchronous explicit encryption's decryption of each
    ciphertext, or the ``EncryptionError`` it raised."""
    values: list[Any] = []
    for ciphertext in ciphertexts:
        try:
            values.append(encryption.decrypt(ciphertext))
        except EncryptionError as exc:
            values.append(exc)
    return values


def _piece(nonce: Binary, bound_to: str, index: int, last: bool, data: bytes) -> dict[str, Any]:
    """A stream piece's plaintext: its bytes with what binds them to their place."""
    return {"f": nonce, "a": bound_to, "n": index, "z": last, "b": Binary(data)}


def _key_vault(config: Encryption | str, client: Any) -> Any:
    namespace = config if isinstance(config, str) else config.key_vault_namespace
    database, collection = split_key_vault_namespace(namespace)
    return client[database][collection]


def _key_uuid(ciphertext: object, what: str) -> bytes:
    """The key UUID of a document ciphertext, read without decrypting."""
    if not is_ciphertext(ciphertext):
        raise CiphertextError(
            f"{what} must be BSON binary subtype 6, got {type(ciphertext).__name__}"
        )
    if (
        len(ciphertext) <= _VALUE_TYPE
        or ciphertext[0] != _RANDOM_BLOB
        or ciphertext[_VALUE_TYPE] != _BSON_DOCUMENT
    ):
        raise CiphertextError(f"{what} is not a randomly encrypted document")
    return bytes(ciphertext[_KEY_ID])


def _as_key_id(value: object) -> Binary:
    if isinstance(value, uuid.UUID):
        return Binary.from_uuid(value)
    if isinstance(value, Binary) and value.subtype == UUID_SUBTYPE:
        return Binary(bytes(value), UUID_SUBTYPE)
    raise TypeError(f"a data key _id must be a UUID, got {value!r}")


def _check_owner(owner: object) -> None:
    if not isinstance(owner, str) or not owner:
        raise ValueError(f"owner must be a non-empty str, got {owner!r}")


def _check_bound_to(bound_to: object) -> None:
    if not isinstance(bound_to, str) or not bound_to or len(bound_to) > _MAX_BOUND_TO:
        raise ValueError(f"bound_to must be a non-empty str of at most {_MAX_BOUND_TO} characters")


def _optional_dict(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)
