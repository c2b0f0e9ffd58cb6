"""Create the indexes MongoStore needs, at deploy time.

For deployments whose application user may not create indexes
(``MongoStore(..., auto_create_indexes=False)``): an operator with the right role runs
``chatkit-mongo init`` once per release (``chatkit-mongo-create-indexes`` is the same
command under its older name). Idempotent; a clashing index exits 1 and names it.
"""

from __future__ import annotations

from collections.abc import Callable

from .._driver import AsyncDatabaseLike
from ..errors import IndexConflictError
from ..operations.indexes import ensure_indexes, plan_indexes
from ..schema import CollectionNames, index_specs

Echo = Callable[[str], None]


def planned(collections: CollectionNames, *, retention: bool = False) -> list[str]:
    """The index specs, one line each, as ``--dry-run`` prints them without connecting."""
    return [
        f"{spec.describe(collections.name_of(spec.kind))}  # {spec.why}"
        for spec in index_specs(retention)
    ]


async def create_indexes(
    database: AsyncDatabaseLike,
    collections: CollectionNames,
    *,
    dry_run: bool,
    echo: Echo,
    retention: bool = False,
) -> int:
    """Check (``dry_run``) or create the indexes; print each one's state; return an exit code.

    ``retention``: also the TTL indexes a store with ``retention`` set needs.
    0: every index is present (or would be created); 1: an existing index clashes.
    """
    specs = index_specs(retention)
    if dry_run:
        plan = await plan_indexes(database, collections, specs)
        for status in plan:
            echo(status.describe())
        return 1 if any(status.state == "conflict" for status in plan) else 0
    try:
        report = await ensure_indexes(database, collections, specs)
    except IndexConflictError as exc:
        echo(f"error: {exc}")
        return 1
    for status in report:
        echo(status.describe())
    return 0
