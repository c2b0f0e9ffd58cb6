"""The fixture files of ChatKit releases (``tests/fixtures/chatkit-RELEASE.json``, written by
``scripts/chatkit_fixtures.py``) and the documents they hold, as the store stores them.

Only the standard library and chatkit-mongo's schema: the mixed-release check
(``scripts/mixed_release_check.py``) imports this under an older ChatKit too.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from chatkit_mongo.schema import Field, sort_key, utc_naive


def release_of(path: Path) -> tuple[int, ...]:
    """The release a fixture file is of: ``chatkit-1.6.5.json`` -> ``(1, 6, 5)``."""
    return tuple(int(part) for part in path.stem.removeprefix("chatkit-").split("."))


FIXTURES: Final = sorted(
    (Path(__file__).resolve().parent / "fixtures").glob("chatkit-*.json"), key=release_of
)
"""Every fixture file, oldest release first."""


def documents_of(path: Path) -> list[dict[str, Any]]:
    """The fixture's elements: ``{"kind": "thread" | "item" | "attachment", "data": ...}``."""
    documents: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["documents"]
    return documents


def stored(kind: str, data: dict[str, Any], owner: str = "alice") -> dict[str, Any]:
    """``data`` in its document, as the store writes one (``MongoStore._document`` and
    ``Persistence.attachment_document``): the owner, ids, sort key and naive UTC date."""
    if kind == "attachment":
        return {
            Field.OWNER: owner,
            Field.ATTACHMENT_ID: data["id"],
            Field.THREAD_ID: data.get("thread_id"),
            Field.DATA: data,
        }
    created = datetime.fromisoformat(data["created_at"])
    naive = created if created.tzinfo is None else utc_naive(created)
    key = {Field.OWNER: owner, Field.THREAD_ID: data["thread_id" if kind == "item" else "id"]}
    if kind == "item":
        key[Field.ITEM_ID] = data["id"]
    return {
        **key,
        Field.SORT_KEY: sort_key(naive, data["id"]),
        Field.CREATED_AT: naive,
        Field.DATA: data,
    }
