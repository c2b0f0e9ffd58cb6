"""The real server of the session (jongodb, or a mongod named by ``MONGODB_URI``) and
what it can do, probed once.

Why probe instead of listing jongodb's gaps: the same tests run against a real mongod
when ``MONGODB_URI`` is set, and there nothing may be skipped. A test that needs a
capability says so with ``@pytest.mark.needs(...)`` (or :func:`require` inside its
body); on a server without it, only its server runs are skipped, with a reason naming
the capability and the server's own answer.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from . import jongodb

PROBE_TIMEOUT_MS: Final = 10_000


def _explain(db: Any) -> None:
    db.command("explain", {"find": "probe", "filter": {}})


def _list_databases(db: Any) -> None:
    db.client.list_database_names()


def _list_collections(db: Any) -> None:
    db.list_collection_names()


def _drop(db: Any) -> None:
    db.command("drop", "probe")


def _drop_database(db: Any) -> None:
    db.client.drop_database(db.name)


def _drop_indexes(db: Any) -> None:
    db["probe"].create_index("n")
    db["probe"].drop_index("n_1")


def _db_stats(db: Any) -> None:
    db.command("dbStats")


def _max_min(db: Any) -> None:
    db["probe"].update_one({"_id": "m"}, {"$max": {"n": 9}, "$min": {"low": 0}})
    found = db["probe"].find_one({"_id": "m"})
    if (found["n"], found["low"]) != (9, 0):
        raise AssertionError(f"$max/$min left {found}")


def _find_one_and_delete(db: Any) -> None:
    db["probe"].find_one_and_delete({"_id": "m"})


def _projection(db: Any) -> None:
    found = db["probe"].find_one({"_id": "p"}, {"kept": 1})
    if set(found) != {"_id", "kept"}:
        raise AssertionError(f"projection {{kept: 1}} returned fields {sorted(found)}")


CAPABILITIES: Final[dict[str, Callable[[Any], None]]] = {
    "explain": _explain,
    "listDatabases": _list_databases,
    "listCollections": _list_collections,
    "drop": _drop,
    "dropDatabase": _drop_database,
    "dropIndexes": _drop_indexes,
    "dbStats": _db_stats,
    "$max/$min update operators": _max_min,
    "find_one_and_delete": _find_one_and_delete,
    "projections": _projection,
}
"""Each capability a test may need, and the probe that shows the server has it."""


def probe(uri: str) -> tuple[str, dict[str, str]]:
    """The server's version, and each missing capability with the server's answer."""
    missing: dict[str, str] = {}
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri, serverSelectionTimeoutMS=PROBE_TIMEOUT_MS) as client:
        version = str(client.server_info().get("version"))
        db: Any = client[f"chatkit_probe_{uuid.uuid4().hex[:12]}"]
        db["probe"].insert_many([{"_id": "m", "n": 5, "low": 1}, {"_id": "p", "kept": 1, "x": 2}])
        for name, check in CAPABILITIES.items():
            try:
                check(db)
            except (PyMongoError, AssertionError) as exc:
                missing[name] = str(exc).split(", full error")[0]
        if "dropDatabase" not in missing:
            client.drop_database(db.name)
    return version, missing


@dataclass
class Server:
    """The session's real server: its URI, what it is, and what it lacks."""

    uri: str
    name: str
    missing: dict[str, str]
    process: subprocess.Popen[str] | None = field(default=None, repr=False)

    def lacks(self, capability: str) -> str | None:
        """The skip reason if the server lacks ``capability``, else None."""
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; known: {list(CAPABILITIES)}")
        answer = self.missing.get(capability)
        return None if answer is None else f"{self.name} lacks {capability} ({answer})"


_server: Server | None = None
_failure: str | None = None


def server() -> Server:
    """The session's server, started (or connected to) on first use.

    ``MONGODB_URI`` names a server to use; otherwise jongodb is installed if need be and
    started on a free loopback port. If that fails: under ``CI=true`` the whole run stops
    with the error (a wire tier must never turn into silent skips); elsewhere the test is
    skipped with it.
    """
    global _server, _failure  # noqa: PLW0603 -- one server for the whole session
    if _server is not None:
        return _server
    if _failure is None:
        uri = os.environ.get("MONGODB_URI")
        process = None
        try:
            if not uri:
                process, uri = jongodb.start()
            version, missing = probe(uri)
        except (jongodb.JongodbError, OSError, PyMongoError) as exc:
            if process is not None:
                jongodb.stop(process)
            _failure = f"no wire server for the real-driver tier: {exc}"
        else:
            name = f"jongodb {version}" if process else f"MONGODB_URI server {version}"
            _server = Server(uri, name, missing, process)
            return _server
    if jongodb.in_ci():
        pytest.exit(f"CI=true and {_failure}", returncode=1)
    pytest.skip(_failure)


def started() -> Server | None:
    """The server if this session started or reached one, for the session's end."""
    return _server


def shutdown() -> None:
    """Stop the jongodb this session started, if any."""
    if _server is not None and _server.process is not None:
        jongodb.stop(_server.process)


def require(*capabilities: str) -> None:
    """Skip the running test unless the session's server has every capability."""
    current = server()
    reasons = [reason for c in capabilities if (reason := current.lacks(c))]
    if reasons:
        pytest.skip("; ".join(reasons))


def has(capability: str) -> bool:
    """Whether the session's server has ``capability`` (starting it if need be)."""
    return server().lacks(capability) is None
