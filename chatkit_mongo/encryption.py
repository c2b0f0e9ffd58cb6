"""Settings of client-side encryption: KMS providers, master key, key vault, key cache.

What is protected: the content of threads, items and attachments (their ``data``
sub-document and their bytes) is encrypted in the application with a data key of its
owner, kept wrapped by a master key in a key vault collection. The owner, ids, sort
key, dates and sizes stay in the clear. Deleting the owner's data key makes every copy
of that content unreadable, in backups and exports too (crypto-shredding), provided
no copy of the deleted key survives: keep the key vault (``key_vault_namespace``) out of
the content's long-lived backups, or back it up with a short retention, since restoring
an old key vault restores the keys it held.

What is not protected: who owns what, which threads, items and attachments exist, when
they were made, how many there are and how large they are (ciphertext length follows
plaintext length to within 16 bytes), and anything the application keeps outside the
``data`` sub-document. An administrator can delete encrypted documents, roll one back to
an earlier ciphertext of itself, or copy an item into another thread of its owner under
its own id, but cannot read them or alter them unnoticed, nor move one to another owner
or over another of the owner's documents (the store checks the owner's key and the id
inside the content: such a document reads as not found). Nor can they plant content in
the clear, as long as the store is strict (:attr:`Encryption.strict`, the default): a
store being migrated (``strict=False``) reads a plaintext ``data``, and plain bytes, as
they are.

Master keys: the ``local`` provider takes a 96-byte key held by the application (from
a file or an environment variable), for development, tests and the demo: whoever has
that key and the key vault can read everything. In production name a cloud KMS
(``aws``, ``azure``, ``gcp``, ``kmip``): ``kms_providers`` and ``master_key`` are passed
to libmongocrypt unchanged, in the shapes MongoDB's client-side encryption
documentation gives for each provider.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pymongo import IndexModel

from .errors import EncryptionConfigError

LOCAL_KEY_BYTES: Final = 96
"""The ``local`` provider's master key length that libmongocrypt requires."""
DEFAULT_KEY_VAULT_NAMESPACE: Final = "encryption.__keyVault"
"""The key vault's ``database.collection``, as MongoDB's documentation names it."""
DEFAULT_LOCAL_KEY_VARIABLE: Final = "CHATKIT_MONGO_LOCAL_MASTER_KEY"
"""The environment variable :meth:`Encryption.local_from_env` reads by default."""
DEFAULT_KEY_CACHE_SECONDS: Final = 60.0
"""How long a process trusts its cached owner -> data key mapping, and how long
libmongocrypt keeps a decrypted data key. After an owner's key is shredded elsewhere,
another process may still encrypt or decrypt with it for at most this long; anything it
writes then is unreadable, like the rest of the owner's data."""

KEY_ALT_NAMES: Final = "keyAltNames"
"""The key document field holding the owner's name (``keyAltName``), as libmongocrypt
names it."""
KEY_VAULT_INDEX: Final = IndexModel(
    [(KEY_ALT_NAMES, 1)],
    name="keyAltNames_1",
    unique=True,
    partialFilterExpression={KEY_ALT_NAMES: {"$exists": True}},
)
"""The key vault's unique index on ``keyAltNames``, as MongoDB's documentation gives it.

Why it matters here: it is what makes an owner's first write race-safe. Two processes
creating the owner's key at once both insert; the index refuses the second insert
(duplicate key), and the loser reads the winner's key. Partial, so keys without an alt
name (made by other tools) may coexist. ``init``/``ensure_indexes`` create it and
``doctor`` checks it; the key manager refuses to create keys in a vault without it."""


def split_key_vault_namespace(namespace: str) -> tuple[str, str]:
    """``(database, collection)`` of a key vault namespace ``database.collection``.

    Why a function of its own: the commands that reach the key vault without a master
    key (``purge`` shredding a key, ``doctor``, ``init``) check ``--key-vault`` the same
    way :class:`Encryption` does.
    """
    database, _, collection = namespace.partition(".")
    if not database or not collection or "$" in namespace:
        raise EncryptionConfigError(
            f"key_vault_namespace must be 'database.collection', got {namespace!r}"
        )
    return database, collection


def generate_local_master_key() -> str:
    """A new random master key for the ``local`` provider, base64 text (for a file or an
    environment variable). Losing it loses every encrypted document."""
    return base64.b64encode(secrets.token_bytes(LOCAL_KEY_BYTES)).decode("ascii")


@dataclass(frozen=True)
class Encryption:
    """How to encrypt: which KMS wraps data keys, where the key vault is, cache lifetime.

    Build it with :meth:`local`, :meth:`local_from_file` or :meth:`local_from_env` for
    the ``local`` provider, or directly with a cloud provider's settings, e.g.
    ``Encryption({"aws": {"accessKeyId": ..., "secretAccessKey": ...}}, kms_provider="aws",
    master_key={"region": ..., "key": ...})``.
    """

    kms_providers: Mapping[str, Mapping[str, Any]] = field(repr=False)
    """Credentials per provider, as libmongocrypt takes them; never shown in ``repr``."""
    kms_provider: str = "local"
    """The provider that wraps new data keys (a key of ``kms_providers``, e.g. ``aws``
    or a named one like ``kmip:primary``)."""
    master_key: Mapping[str, Any] | None = field(default=None, repr=False)
    """The provider's master key description; None for ``local``."""
    key_vault_namespace: str = DEFAULT_KEY_VAULT_NAMESPACE
    key_cache_seconds: float = DEFAULT_KEY_CACHE_SECONDS
    kms_tls_options: Mapping[str, Any] | None = field(default=None, repr=False)
    """TLS settings per KMS provider, passed to the driver unchanged."""
    strict: bool = True
    """Refuse content stored in the clear: a thread, item or attachment whose ``data`` is
    a plain document, or attachment bytes not stored as an encrypted stream, reads as a
    :class:`~chatkit_mongo.errors.CiphertextError` naming it, never as content.

    Why the default: once everything is encrypted, a plaintext document can only be a
    forgery (whoever can write to the database can write one, having no key), and a
    store that read it would serve it as the owner's content. Set ``strict=False`` only
    while a store written without encryption is being migrated (``chatkit-mongo migrate
    --to encrypted``), and drop it once ``chatkit-mongo doctor`` says "all content is
    encrypted"."""
    key_source: str | None = field(default=None, compare=False)
    """Where the master key came from, for error messages (e.g. ``environment variable
    CHATKIT_MONGO_LOCAL_MASTER_KEY``); :meth:`local_from_file` and
    :meth:`local_from_env` set it. Never the key itself."""

    def __post_init__(self) -> None:
        if not isinstance(self.kms_providers, Mapping) or not self.kms_providers:
            raise EncryptionConfigError("kms_providers must name at least one KMS provider")
        if self.kms_provider not in self.kms_providers:
            raise EncryptionConfigError(
                f"kms_provider {self.kms_provider!r} is not among the configured providers "
                f"{sorted(self.kms_providers)}"
            )
        local = self.kms_providers.get("local")
        if local is not None:
            key = local.get("key") if isinstance(local, Mapping) else None
            _check_local_key(key, "kms_providers['local']['key']")
        split_key_vault_namespace(self.key_vault_namespace)
        seconds = self.key_cache_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise EncryptionConfigError(f"key_cache_seconds must be a number, got {seconds!r}")
        if not math.isfinite(seconds) or seconds <= 0:
            raise EncryptionConfigError(
                f"key_cache_seconds must be positive and finite, got {seconds!r}"
            )
        if not isinstance(self.strict, bool):
            raise EncryptionConfigError(f"strict must be True or False, got {self.strict!r}")

    @property
    def master_key_source(self) -> str:
        """The master key as an error message names it: where it came from, else its
        KMS provider."""
        return self.key_source or f"the master key of KMS provider {self.kms_provider!r}"

    @property
    def key_vault_database(self) -> str:
        return split_key_vault_namespace(self.key_vault_namespace)[0]

    @property
    def key_vault_collection(self) -> str:
        return split_key_vault_namespace(self.key_vault_namespace)[1]

    @classmethod
    def local(cls, key: bytes, **options: Any) -> Encryption:
        """The ``local`` provider with ``key`` (96 bytes) as master key."""
        _check_local_key(key, "the local master key")
        return cls({"local": {"key": bytes(key)}}, kms_provider="local", **options)

    @classmethod
    def local_from_file(cls, path: str | os.PathLike[str], **options: Any) -> Encryption:
        """The ``local`` provider with the master key in ``path``: either exactly 96 raw
        bytes, or their base64 text (as :func:`generate_local_master_key` writes)."""
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise EncryptionConfigError(
                f"cannot read the local master key file {os.fspath(path)!r}: {exc.strerror}"
            ) from exc
        what = f"the local master key file {os.fspath(path)!r}"
        key = content if len(content) == LOCAL_KEY_BYTES else _from_base64(content, what)
        return cls.local(_checked(key, what), **{"key_source": what, **options})

    @classmethod
    def local_from_env(
        cls, variable: str = DEFAULT_LOCAL_KEY_VARIABLE, **options: Any
    ) -> Encryption:
        """The ``local`` provider with the master key as base64 text in ``variable``."""
        text = os.environ.get(variable)
        if not text:
            raise EncryptionConfigError(
                f"environment variable {variable} is not set or empty; it must hold the local "
                f"master key as base64 text of {LOCAL_KEY_BYTES} bytes"
            )
        what = f"environment variable {variable}"
        key = _checked(_from_base64(text.encode("ascii", "replace"), what), what)
        return cls.local(key, **{"key_source": what, **options})


def _from_base64(text: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EncryptionConfigError(
            f"{what} is not base64 text of a {LOCAL_KEY_BYTES}-byte key "
            f"(nor {LOCAL_KEY_BYTES} raw bytes): {exc}"
        ) from exc


def _checked(key: bytes, what: str) -> bytes:
    _check_local_key(key, what)
    return key


def _check_local_key(key: object, what: str) -> None:
    if not isinstance(key, bytes | bytearray):
        raise EncryptionConfigError(
            f"{what} must be {LOCAL_KEY_BYTES} bytes, not {type(key).__name__}"
        )
    if len(key) != LOCAL_KEY_BYTES:
        raise EncryptionConfigError(
            f"{what} holds {len(key)} bytes; the local KMS provider needs exactly {LOCAL_KEY_BYTES}"
        )
