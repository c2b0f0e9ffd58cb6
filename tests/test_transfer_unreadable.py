"""Export and import keep the documents the installed ChatKit cannot read: exported as
they are stored, imported as they are (counted), byte for byte; only content that is no
stored element at all (not an object, or naming another element) is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chatkit_mongo import MongoStore

from .cli_support import all_documents, encoded, run
from .conftest import NAMES, RequestContext
from .samples import assistant_message, file_attachment, thread
from .unreadable_support import DAMAGES, damage_attachment, damage_item, damage_thread

ALICE = RequestContext("alice")


async def _seed_unreadable(database: Any) -> None:
    store: MongoStore[Any] = MongoStore(database)
    await store.save_thread(thread("thr_1"), ALICE)
    await store.save_thread(thread("thr_2"), ALICE)
    await store.save_attachment(file_attachment("atc_1", "thr_1"), ALICE)
    for name in ("msg_ok", *DAMAGES):
        await store.add_thread_item("thr_1", assistant_message(name.replace(" ", "_")), ALICE)
    for name, damage in DAMAGES.items():
        await damage_item(database, damage, "alice", "thr_1", name.replace(" ", "_"))
    await damage_thread(database, DAMAGES["truncated"], "alice", "thr_2")
    await damage_attachment(database, DAMAGES["hand-edited field"], "alice", "atc_1")


async def test_unreadable_documents_are_exported_as_stored_and_imported_as_they_are(
    backend: str, database: Any, empty_database: Any, tmp_path: Path
) -> None:
    await _seed_unreadable(database)
    out = tmp_path / "export.jsonl"

    exported = await run(backend, database, "export", "--out", str(out))
    imported = await run(backend, empty_database, "import", str(out))

    assert exported.exit_code == 0, exported.output
    assert imported.exit_code == 0, imported.output
    assert len(out.read_text().splitlines()) == 2 + 1 + 4
    assert encoded(await all_documents(empty_database)) == encoded(await all_documents(database))
    assert (
        "imported as they are, though this ChatKit release cannot read them (pages skip "
        "them): 1 thread, 3 items, 1 attachment"
    ) in imported.output
    store: MongoStore[Any] = MongoStore(empty_database)
    page = await store.load_thread_items("thr_1", None, 10, "asc", ALICE)
    assert [item.id for item in page.data] == ["msg_ok"]
    assert store.unreadable.skipped == {NAMES.items: 3}


async def test_an_import_line_whose_content_names_another_element_is_refused(
    backend: str, database: Any, empty_database: Any, tmp_path: Path
) -> None:
    store: MongoStore[Any] = MongoStore(database)
    await store.save_thread(thread("thr_1"), ALICE)
    out = tmp_path / "export.jsonl"
    assert (await run(backend, database, "export", "--out", str(out))).exit_code == 0
    for data, message in (
        ({"id": "thr_other"}, "data.id is 'thr_other' but thread_id is 'thr_1'"),
        ("a string", "data must be an object, not str"),
    ):
        line = json.loads(out.read_text())
        line["document"]["data"] = data
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(line) + "\n")

        result = await run(backend, empty_database, "import", str(bad))

        assert result.exit_code == 1
        assert message in result.output
        assert await empty_database[NAMES.threads].count_documents({}) == 0
