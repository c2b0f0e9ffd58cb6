"""Create the indexes MongoStore needs, at deploy time.

For deployments whose application user may not create indexes
(``MongoStore(..., auto_create_indexes=False)``): an operator with the right role runs
``chatkit-mongo init`` once per release (``chatkit-mongo-create-indexes`` is the same
command under its older name). Idempotent; a clashing index exits 1 and names it.

With a key vault (a master key given, or ``--key-vault`` named), also the key vault's
unique index on ``keyAltNames``: without it the store refuses to create data keys
(two processes could each make one for an owner). Why not always, for the default vault:
a deployment without encryption has no vault, and its ``init`` must neither create one
nor need rights on it. Why ``--key-vault`` alone suffices: the index needs no master key,
and the operator of a cloud-KMS deployment holds none the CLI can take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from .._driver import AsyncDatabaseLike
from ..errors import IndexConflictError
from ..operations.indexes import ensure_indexes, plan_indexes
from ..operations.key_vault import (
    describe_key_vault_index,
    ensure_key_vault_index,
    key_vault_index_state,
)
from ..schema import CollectionNames, index_specs

Echo = Callable[[str], None]

_KEY_VAULT_WHY: Final = "find an owner's data key; one key per owner, race-safe first writes"


def planned(
    collections: CollectionNames, *, retention: bool = False, key_vault: str | None = None
) -> list[str]:
    """The index specs, one line each, as ``--dry-run`` prints them without connecting."""
    lines = [
        f"{spec.describe(collections.name_of(spec.kind))}  # {spec.why}"
        for spec in index_specs(retention)
    ]
    if key_vault is not None:
        lines.append(f"{describe_key_vault_index(key_vault)}  # {_KEY_VAULT_WHY}")
    return lines


async def create_indexes(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    *,
    dry_run: bool,
    echo: Echo,
    retention: bool = False,
    key_vault: str | None = None,
) -> int:
    """Check (``dry_run``) or create the indexes; print each one's state; return an exit code.

    ``retention``: also the TTL indexes a store with ``retention`` set needs.
    ``key_vault``: also the unique index of the key vault of this namespace.
    0: every index is present (or would be created); 1: an existing index clashes.
    """
    specs = index_specs(retention)
    if dry_run:
        plan = await plan_indexes(database, collections, specs)
        for status in plan:
            echo(status.describe())
        conflict = any(status.state == "conflict" for status in plan)
        if key_vault is not None:
            state = await key_vault_index_state(database, key_vault)
            echo(f"{describe_key_vault_index(key_vault)}: {state}")
            conflict = conflict or state == "conflict"
        return 1 if conflict else 0
    try:
        report = await ensure_indexes(database, collections, specs)
        created = None if key_vault is None else await ensure_key_vault_index(database, key_vault)
    except IndexConflictError as exc:
        echo(f"error: {exc}")
        return 1
    for status in report:
        echo(status.describe())
    if key_vault is not None:
        echo(f"{describe_key_vault_index(key_vault)}: {'created' if created else 'present'}")
    return 0
