"""Create the indexes MongoStore needs, at deploy time.

For deployments whose application user may not create indexes
(``MongoStore(..., auto_create_indexes=False)``): an operator with the right role runs
this once per release. Idempotent; a clashing index exits 1 and names it.

    chatkit-mongo-create-indexes --uri mongodb://... --database chatkit [--dry-run] [--retention]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from ._driver import DRIVER_INFO, AsyncDatabaseLike
from .errors import IndexConflictError
from .indexes import ensure_indexes, plan_indexes
from .schema import CollectionNames, index_specs

Echo = Callable[[str], None]


def planned(collections: CollectionNames, *, retention: bool = False) -> list[str]:
    """The index specs, one line each, as ``--dry-run`` prints them without connecting."""
    return [
        f"{spec.describe(collections.name_of(spec.role))}  # {spec.why}"
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatkit-mongo-create-indexes",
        description="Create the MongoDB indexes chatkit-mongo needs (idempotent).",
    )
    parser.add_argument(
        "--uri",
        default=os.environ.get("MONGODB_URI"),
        help="MongoDB connection string (default: env MONGODB_URI)",
    )
    parser.add_argument("--database", default="chatkit", help="database name (default: chatkit)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the planned indexes and their state; change nothing",
    )
    parser.add_argument(
        "--retention",
        action="store_true",
        help="also the TTL indexes of a store with retention set",
    )
    parser.add_argument(
        "--timeout-ms",
        type=int,
        default=10_000,
        help="how long to look for a server before giving up (default: 10000)",
    )
    for role, default in CollectionNames().by_role().items():
        parser.add_argument(
            f"--{role}-collection",
            default=default,
            dest=role,
            help=f"collection of {role} (default: {default})",
        )
    return parser


async def _run(args: argparse.Namespace, collections: CollectionNames) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        args.uri, driver=DRIVER_INFO, serverSelectionTimeoutMS=args.timeout_ms
    )
    try:
        return await create_indexes(
            client[args.database],
            collections,
            dry_run=args.dry_run,
            echo=print,
            retention=args.retention,
        )
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    collections = CollectionNames(
        threads=args.threads, items=args.items, attachments=args.attachments
    )
    if not args.uri:
        if args.dry_run:  # nothing to compare with: show what would be created
            print("\n".join(planned(collections, retention=args.retention)))
            return 0
        print("error: no MongoDB to connect to; pass --uri or set MONGODB_URI", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, collections))
    except (PyMongoError, ValueError) as exc:  # bad URI, unreachable server, no permission
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
