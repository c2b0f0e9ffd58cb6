"""``chatkit-mongo shard`` and doctor's sharding report, on the real ``AsyncMongoClient``
against mockupdb playing a mongos (or a replica set member): the exact commands sent."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from click.testing import CliRunner
from mockupdb import MockupDB
from pymongo import AsyncMongoClient

from chatkit_mongo.apps.cli import cli
from chatkit_mongo.operations.doctor import diagnose
from chatkit_mongo.operations.sharding import shard, shard_commands
from chatkit_mongo.schema import INDEXES, SHARD_KEYS, CollectionNames

NAMES = CollectionNames()
_SHARDING = {"enableSharding", "shardCollection", "createIndexes"}


class Cluster:
    """Answers every command as a mongos (or a replica set member) would, and records them.

    The catalog starts with ``sharded`` (namespace -> key); ``shardCollection`` adds to it.
    """

    def __init__(self, router: bool, sharded: dict[str, dict[str, Any]] | None = None) -> None:
        hello: dict[str, Any] = {"maxWireVersion": 21, "minWireVersion": 0}
        hello |= {"msg": "isdbgrid"} if router else {"setName": "rs0", "isWritablePrimary": True}
        self.hello = hello
        self.server = MockupDB(auto_ismaster=hello)
        self.sharded = dict(sharded or {})
        self.commands: list[dict[str, Any]] = []
        self._stop = threading.Event()

    def __enter__(self) -> Cluster:
        self.server.run()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.server.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                request = self.server.receives(timeout=0.1)
            except AssertionError:  # nothing arrived within the timeout
                continue
            document = dict(request.doc)
            self.commands.append(document)
            request.reply({**self._answer(document), "ok": 1})

    def _answer(self, command: dict[str, Any]) -> dict[str, Any]:
        name = next(iter(command))
        if name in ("hello", "ismaster", "isMaster", "ping", "buildInfo", "buildinfo"):
            return {**self.hello, "version": "8.0.0"}
        if name == "listIndexes":
            kind = next(k for k, n in NAMES.by_kind().items() if n == command["listIndexes"])
            indexes = [{"name": "_id_", "key": {"_id": 1}}] + [
                {"name": s.name, "key": dict(s.keys), "unique": s.unique, **s.options}
                for s in INDEXES
                if s.kind == kind
            ]
            return _cursor(indexes)
        if name == "find" and command["find"] == "collections":
            namespace = command["filter"]["_id"]
            key = self.sharded.get(namespace)
            return _cursor([] if key is None else [{"_id": namespace, "key": key}])
        if name == "shardCollection":
            self.sharded[command["shardCollection"]] = dict(command["key"])
            return {"collectionsharded": command["shardCollection"]}
        if name == "find":
            return _cursor([])
        return {}

    def sent(self, *names: str) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in c.items() if not k.startswith("$") and k != "lsid"}
            for c in self.commands
            if next(iter(c)) in names
        ]


def _cursor(documents: list[dict[str, Any]]) -> dict[str, Any]:
    return {"cursor": {"id": 0, "ns": "x.y", "firstBatch": documents}}


@pytest.fixture
def lines() -> list[str]:
    return []


@asynccontextmanager
async def _database(cluster: Cluster) -> AsyncIterator[Any]:
    """The ``chatkit`` database on a real ``AsyncMongoClient`` talking to ``cluster``."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        cluster.server.uri, serverSelectionTimeoutMS=5000, directConnection=True
    )
    try:
        yield client["chatkit"]
    finally:
        await client.close()


async def _shard(cluster: Cluster, lines: list[str]) -> int:
    async with _database(cluster) as database:
        return await shard(database, NAMES, lines.append)


async def _sharding_findings(cluster: Cluster) -> list[Any]:
    """What doctor reports about sharding on ``cluster``."""
    async with _database(cluster) as database:
        findings = await diagnose(database, NAMES)
    return [f for f in findings if f.subject == "sharding"]


async def test_on_a_mongos_it_sends_exactly_the_planned_commands(lines: list[str]) -> None:
    with Cluster(router=True) as cluster:
        assert await _shard(cluster, lines) == 0
    sent = cluster.sent("enableSharding", "shardCollection")
    assert sent == shard_commands("chatkit", NAMES)
    assert sent[:2] == [
        {"enableSharding": "chatkit"},
        {"shardCollection": "chatkit.chatkit_threads", "key": {"owner": 1, "thread_id": 1}},
    ]
    assert cluster.sent("createIndexes") == []  # init's indexes were all there
    assert len(lines) == len(SHARD_KEYS)
    assert all(line.endswith("sharded with the expected key") for line in lines), lines


async def test_on_a_mongos_it_leaves_sharded_collections_alone_and_reports_another_key(
    lines: list[str],
) -> None:
    sharded: dict[str, dict[str, Any]] = {
        "chatkit.chatkit_threads": {"owner": 1, "thread_id": 1},
        "chatkit.chatkit_items": {"owner": "hashed"},
    }
    with Cluster(router=True, sharded=sharded) as cluster:
        assert await _shard(cluster, lines) == 1
    namespaces = [c["shardCollection"] for c in cluster.sent("shardCollection")]
    assert namespaces == [
        "chatkit.chatkit_attachments",
        "chatkit.chatkit_files.files",
        "chatkit.chatkit_files.chunks",
    ]
    assert any("chatkit_items" in line and "another key {'owner': 'hashed'}" in line
               for line in lines)  # fmt: skip


async def test_on_a_replica_set_it_says_so_and_changes_nothing(lines: list[str]) -> None:
    with Cluster(router=False) as cluster:
        assert await _shard(cluster, lines) == 1
    assert lines == ["not a sharded cluster (hello says this is no mongos): nothing changed"]
    assert not [c for c in cluster.commands if next(iter(c)) in _SHARDING | {"listIndexes"}]


async def test_doctor_reports_sharding_per_collection_on_a_mongos() -> None:
    sharded = {"chatkit.chatkit_threads": {"owner": 1, "thread_id": 1}}
    with Cluster(router=True, sharded=sharded) as cluster:
        report = await _sharding_findings(cluster)
    assert [f.verdict for f in report] == ["ok", "fail", "fail", "fail", "fail"]
    assert "chatkit_items {owner: 1, thread_id: 1, item_id: 1}: not sharded" in report[1].detail
    assert not cluster.sent(*_SHARDING)  # doctor only reads


async def test_doctor_on_a_replica_set_says_there_is_nothing_to_shard() -> None:
    with Cluster(router=False) as cluster:
        (report,) = await _sharding_findings(cluster)
    assert (report.verdict, report.detail) == ("ok", "not a sharded cluster: nothing to shard")


def test_the_dry_run_prints_the_commands_without_connecting() -> None:
    result = CliRunner().invoke(
        cli, ["--uri", "mongodb://127.0.0.1:9", "-d", "app", "shard", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == 'db.adminCommand({"enableSharding": "app"})'
    assert lines[1] == (
        'db.adminCommand({"shardCollection": "app.chatkit_threads", "key": {"owner": 1, '
        '"thread_id": 1}})  // needs index chatkit_threads.owner_thread_unique '
        "{owner: 1, thread_id: 1} unique (created by init)"
    )
    assert lines[5].startswith(
        'db.adminCommand({"shardCollection": "app.chatkit_files.chunks", '
        '"key": {"files_id": 1, "n": 1}})'
    )
    assert len(lines) == 1 + len(SHARD_KEYS)
