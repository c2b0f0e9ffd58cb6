"""The key vault seen by the operator commands: shred an owner's keys, check the index,
find the owners whose content lost its key.

Why none of this goes through the encryption engine (``OwnerEncryption``): the engine
needs the master key, which can read every owner's content. Deleting a key document,
creating an index or listing key names needs none, so ``purge``, ``init`` and ``doctor``
work for an operator who holds only database rights (and for a cloud KMS, whose
credentials the CLI cannot take). The key documents are libmongocrypt's; what is read
or deleted here is only their ``keyAltNames``, which hold the owner's name (see
:data:`~chatkit_mongo.encryption.KEY_ALT_NAMES`).
"""

from __future__ import annotations

from typing import Any, Final, Literal

from .._driver import AsyncDatabaseLike, maybe_await, shielded
from ..encryption import KEY_ALT_NAMES, KEY_VAULT_INDEX, split_key_vault_namespace
from ..errors import IndexConflictError
from ..schema import MODEL_KINDS, CollectionNames, Field, GridFSField, Kind

_BATCH: Final = 500
"""Owners asked of the key vault per query."""


def key_vault_collection(database: AsyncDatabaseLike, namespace: str) -> Any:
    """The key vault collection on ``database``'s client (checked ``database.collection``)."""
    database_name, collection = split_key_vault_namespace(namespace)
    return database.client[database_name][collection]


def owner_keys_filter(owner: str) -> dict[str, Any]:
    """The key documents named after ``owner``: what the engine finds by ``keyAltName``."""
    return {KEY_ALT_NAMES: owner}


async def shred_owner_keys(
    database: AsyncDatabaseLike, namespace: str, owner: str, *, dry_run: bool = False
) -> int:
    """Delete (or, ``dry_run``, count) the data keys of ``owner`` in the key vault
    ``namespace``: from then on every copy of the owner's encrypted content, backups and
    exports included, is unreadable. Returns how many keys went (would go).

    Why every key of that name, not one: a vault without its unique index may hold two
    (see ``KEY_VAULT_INDEX``); each would still decrypt what was written under it.
    """
    vault = key_vault_collection(database, namespace)
    if dry_run:
        return int(await vault.count_documents(owner_keys_filter(owner)))
    result = await shielded(vault.delete_many(owner_keys_filter(owner)))
    return int(result.deleted_count)


async def count_keys(database: AsyncDatabaseLike, namespace: str) -> int:
    return int(await key_vault_collection(database, namespace).count_documents({}))


def encrypted_content_filter(kind: Kind) -> dict[str, Any]:
    """Documents of ``kind`` whose content is encrypted: a ``data`` that is no document
    (a subtype-6 binary), or a GridFS file flagged as an encrypted stream.

    Why ``$not: {$type: "object"}`` and not ``$type: "binData"``: ``data`` is always one of
    the two, and the document type is the one every server and test double matches.
    """
    if kind == "file":
        return {GridFSField.METADATA_ENCRYPTED: True}
    return {Field.DATA: {"$not": {"$type": "object"}}}


def plaintext_content_filter(kind: Kind) -> dict[str, Any]:
    """Documents of ``kind`` whose content is stored in the clear (files: chatkit-mongo's
    files, those naming an owner, without the encrypted flag)."""
    if kind == "file":
        return {
            GridFSField.METADATA_OWNER: {"$exists": True},
            GridFSField.METADATA_ENCRYPTED: {"$ne": True},
        }
    return {Field.DATA: {"$type": "object"}}


CONTENT_KINDS: Final[tuple[Kind, ...]] = (*MODEL_KINDS, "file")
"""The kinds whose documents hold content that encryption protects."""


async def owners_with_encrypted_content(
    database: AsyncDatabaseLike, collections: CollectionNames
) -> list[str]:
    """Every owner with some encrypted content, sorted.

    A scan of each collection (no index serves the type of ``data``), grouped by owner
    on the server: an operator's check pays it, no write does.
    """
    owners: set[str] = set()
    for kind in CONTENT_KINDS:
        owner_field = GridFSField.METADATA_OWNER if kind == "file" else Field.OWNER
        pipeline = [
            {"$match": encrypted_content_filter(kind)},
            {"$group": {"_id": f"${owner_field}"}},
        ]
        cursor = await maybe_await(database[collections.name_of(kind)].aggregate(pipeline))
        async for group in cursor:
            if isinstance(group["_id"], str):
                owners.add(group["_id"])
    return sorted(owners)


async def owners_without_key(
    database: AsyncDatabaseLike, namespace: str, owners: list[str]
) -> list[str]:
    """Those of ``owners`` who have no data key in the vault (shredded, or never made in
    this vault), in the order given."""
    vault = key_vault_collection(database, namespace)
    keyed: set[str] = set()
    for start in range(0, len(owners), _BATCH):
        batch = owners[start : start + _BATCH]
        found = vault.find({KEY_ALT_NAMES: {"$in": batch}}, {KEY_ALT_NAMES: 1})
        async for key in found:
            keyed.update(name for name in key.get(KEY_ALT_NAMES) or () if name in batch)
    return [owner for owner in owners if owner not in keyed]


async def count_plaintext(database: AsyncDatabaseLike, collections: CollectionNames) -> int:
    """How many documents and files still hold their content in the clear."""
    total = 0
    for kind in CONTENT_KINDS:
        collection = database[collections.name_of(kind)]
        total += int(await collection.count_documents(plaintext_content_filter(kind)))
    return total


KeyVaultIndexState = Literal["present", "missing", "conflict"]


def describe_key_vault_index(namespace: str) -> str:
    """The key vault's unique index as ``init`` and ``doctor`` list indexes."""
    spec = KEY_VAULT_INDEX.document
    keys = ", ".join(f"{name}: {direction}" for name, direction in dict(spec["key"]).items())
    partial = spec["partialFilterExpression"]
    return f"{namespace}.{spec['name']} {{{keys}}} unique partialFilterExpression={partial}"


async def key_vault_index_state(database: AsyncDatabaseLike, namespace: str) -> KeyVaultIndexState:
    """Whether the key vault has its unique index (or one as good), lacks it, or has
    another index under its name, which would make creating it fail."""
    from .._encryption import has_key_vault_index, key_vault_indexes  # noqa: PLC0415

    split_key_vault_namespace(namespace)
    indexes = await key_vault_indexes(namespace, database.client)
    if has_key_vault_index(indexes):
        return "present"
    name = KEY_VAULT_INDEX.document["name"]
    return "conflict" if any(index.get("name") == name for index in indexes) else "missing"


async def ensure_key_vault_index(database: AsyncDatabaseLike, namespace: str) -> bool:
    """Create the key vault's unique index if it is missing; True if created now.

    Raises :class:`~chatkit_mongo.errors.IndexConflictError` when another index holds its
    name. Needs no master key, only the right to create an index in the vault.
    """
    from .._encryption import ensure_key_vault_index as create  # noqa: PLC0415

    state = await key_vault_index_state(database, namespace)
    if state == "conflict":
        raise IndexConflictError(
            f"{describe_key_vault_index(namespace)}: conflict (another index has its name); "
            "drop or rename it"
        )
    if state == "present":
        return False
    await create(namespace, database.client)
    return True
