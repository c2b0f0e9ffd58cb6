"""Index creation: complete, idempotent, automatic once per client, loud on conflicts."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import IndexModel

from chatkit_mongo import CollectionNames, IndexConflictError, MongoStore
from chatkit_mongo.apps.cli import create_indexes_main
from chatkit_mongo.apps.create_indexes import create_indexes, planned
from chatkit_mongo.operations.indexes import plan_indexes
from chatkit_mongo.schema import INDEXES, Field, GridFSField

from .conftest import NAMES, RequestContext
from .samples import thread


async def _index_keys(database: Any, collection: str) -> dict[str, list[tuple[str, int]]]:
    cursor = database[collection].list_indexes()
    if not hasattr(cursor, "to_list"):
        cursor = await cursor
    return {
        index["name"]: [(k, int(v)) for k, v in index["key"].items()]
        for index in await cursor.to_list(None)
    }


async def test_ensure_indexes_creates_every_spec_and_is_idempotent(database: Any) -> None:
    store: MongoStore[Any] = MongoStore(database)
    first = await store.ensure_indexes()
    assert [(s.state, s.created, s.detail) for s in first] == [("present", True, "")] * len(INDEXES)
    assert all(s.describe().endswith(": created") for s in first)
    second = await store.ensure_indexes()
    assert [(s.state, s.detail) for s in second] == [("present", "")] * len(INDEXES)
    names = store.collections
    for spec in INDEXES:
        indexes = await _index_keys(database, names.name_of(spec.kind))
        assert indexes[spec.name] == list(spec.keys)
    for kind, name in names.by_kind().items():  # _id plus ours, once
        expected = 1 + sum(1 for s in INDEXES if s.kind == kind)
        assert len(await _index_keys(database, name)) == expected


async def test_every_tenant_index_starts_with_the_owner() -> None:
    # The exceptions: the operator's orphan sweep looks across owners, and GridFS's own
    # two indexes serve reads by file id; owned bytes are found by their metadata owner.
    operator_or_gridfs = {"pending_uploads", "filename_1_uploadDate_1", "files_id_1_n_1"}
    tenant_indexes = [spec for spec in INDEXES if spec.name not in operator_or_gridfs]
    assert len(tenant_indexes) == len(INDEXES) - len(operator_or_gridfs)
    owner_fields = (Field.OWNER, GridFSField.METADATA_OWNER)
    assert all(spec.keys[0][0] in owner_fields for spec in tenant_indexes)


async def test_same_keys_with_other_options_is_a_clear_conflict(database: Any) -> None:
    await database[NAMES.threads].create_indexes(
        [IndexModel([("owner", 1), ("thread_id", 1)], name="legacy_not_unique")]
    )
    with pytest.raises(IndexConflictError) as raised:
        await MongoStore(database).ensure_indexes()
    assert (
        "chatkit_threads.owner_thread_unique {owner: 1, thread_id: 1} unique: conflict "
        "(index legacy_not_unique has the same keys but not unique, where chatkit-mongo "
        "needs unique)"
    ) in str(raised.value)
    plan = await plan_indexes(database, NAMES)
    assert [s.state for s in plan].count("conflict") == 1
    # Nothing was created while the conflict stands.
    assert set(await _index_keys(database, NAMES.items)) <= {"_id_"}


async def test_our_name_on_other_keys_is_a_clear_conflict(database: Any) -> None:
    await database[NAMES.items].create_indexes(
        [IndexModel([("owner", 1)], name="owner_thread_sort")]
    )
    with pytest.raises(IndexConflictError, match="an index named owner_thread_sort has keys"):
        await MongoStore(database).ensure_indexes()


async def test_same_keys_and_options_under_another_name_count_as_present(database: Any) -> None:
    await database[NAMES.threads].create_indexes(
        [IndexModel([("owner", 1), ("sk", 1)], name="dba_named_it")]
    )
    report = await MongoStore(database).ensure_indexes()
    by_name = {s.spec.name: s for s in report}
    assert (by_name["owner_sort"].state, by_name["owner_sort"].detail) == (
        "present",
        "as dba_named_it",
    )
    assert "owner_sort" not in await _index_keys(database, NAMES.threads)


async def test_indexes_are_created_automatically_once_per_client(
    database: Any, alice: RequestContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    first: MongoStore[Any] = MongoStore(database)
    persistence = type(first.persistence)  # where every call's index check starts
    original = persistence.ensure_indexes

    async def counting(self: Any) -> Any:
        calls.append("ensure")
        return await original(self)

    monkeypatch.setattr(persistence, "ensure_indexes", counting)
    await first.save_thread(thread(), alice)
    await first.load_thread("thr_1", alice)
    second: MongoStore[Any] = MongoStore(database)  # same client: already done
    await second.load_thread("thr_1", alice)
    assert calls == ["ensure"]
    assert "owner_thread_unique" in await _index_keys(database, first.collections.threads)


async def test_auto_creation_can_be_turned_off(database: Any, alice: RequestContext) -> None:
    store: MongoStore[Any] = MongoStore(database, auto_create_indexes=False)
    await store.save_thread(thread(), alice)
    assert set(await _index_keys(database, store.collections.threads)) == {"_id_"}


async def test_script_function_creates_then_reports_present(database: Any) -> None:
    lines: list[str] = []
    assert await create_indexes(database, NAMES, dry_run=True, echo=lines.append) == 0
    assert all(line.endswith(": missing") for line in lines)
    assert len(lines) == len(INDEXES)
    lines.clear()
    assert await create_indexes(database, NAMES, dry_run=False, echo=lines.append) == 0
    assert all(line.endswith(": created") for line in lines)
    lines.clear()
    assert await create_indexes(database, NAMES, dry_run=False, echo=lines.append) == 0
    assert all(line.endswith(": present") for line in lines)


async def test_script_function_exits_1_naming_the_conflict(database: Any) -> None:
    await database["chatkit_items"].create_indexes(
        [IndexModel([("owner", 1)], name="owner_thread_sort")]
    )
    lines: list[str] = []
    code = await create_indexes(database, NAMES, dry_run=False, echo=lines.append)
    assert code == 1
    assert "owner_thread_sort" in lines[-1]
    lines.clear()
    assert await create_indexes(database, NAMES, dry_run=True, echo=lines.append) == 1
    assert any(
        line.startswith("chatkit_items.owner_thread_sort") and "conflict" in line for line in lines
    )


def _script(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``chatkit-mongo-create-indexes`` as installed: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exited:
        create_indexes_main(list(argv))
    out, err = capsys.readouterr()
    code = exited.value.code
    assert isinstance(code, int)
    return code, out, err


def test_script_dry_run_without_a_server_prints_the_plan(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    code, out, err = _script(capsys, "--dry-run", "--threads-collection", "t")
    assert code == 0
    assert out.splitlines() == planned(CollectionNames(threads="t"))
    assert out.startswith("t.owner_thread_unique {owner: 1, thread_id: 1} unique")
    assert "compared with nothing" in err


def test_index_listings_show_every_option() -> None:
    lines = planned(NAMES, retention=True)
    assert any(
        line.startswith("chatkit_attachments.pending_uploads {pending_since: 1} sparse  #")
        for line in lines
    )
    ttl = [line for line in lines if "expires_at_ttl" in line]
    assert len(ttl) == 3
    assert all("{expires_at: 1} expireAfterSeconds=0  #" in line for line in ttl)


def test_script_without_uri_explains_and_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)
    code, _, err = _script(capsys)
    assert code == 1
    assert err == "Error: no MongoDB URI: pass --uri or set MONGODB_URI\n"


def test_script_with_unreachable_server_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _script(capsys, "--uri", "mongodb://127.0.0.1:1", "--timeout", "0.2")
    assert code == 1
    assert err.startswith("Error: cannot reach MongoDB within 0.2s: 127.0.0.1:1: ")
    assert err.count("\n") == 1
    assert "Topology Description" not in err
