"""Documents the running ChatKit release cannot read, made as they happen: written by a
newer release (an item type this one does not know), edited by hand, cut short.

Each damage is applied to a document the store wrote, in the database, the way an
operator's shell or another release would: the store never writes such documents.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from chatkit_mongo.schema import Field

from .conftest import NAMES

Damage = Callable[[Any, dict[str, Any]], Awaitable[None]]
"""``(collection, key)``: make the one document at ``key`` unreadable."""


async def newer_item_type(collection: Any, key: dict[str, Any]) -> None:
    """An item of a type a later ChatKit release adds (its content is otherwise sound)."""
    await collection.update_one(
        key, {"$set": {f"{Field.DATA}.type": "hologram", f"{Field.DATA}.frames": [1, 2]}}
    )


async def hand_edited(collection: Any, key: dict[str, Any]) -> None:
    """A field an operator set by hand to a value of the wrong type: a thread's or an
    item's date, an attachment's name."""
    document = await collection.find_one(key)
    field = "created_at" if "created_at" in document[Field.DATA] else "name"
    await collection.update_one(key, {"$set": {f"{Field.DATA}.{field}": ["last tuesday"]}})


async def truncated(collection: Any, key: dict[str, Any]) -> None:
    """Content cut short: only its first field left (no type, no dates)."""
    document = await collection.find_one(key)
    first = next(iter(document[Field.DATA].items()))
    await collection.update_one(key, {"$set": {Field.DATA: dict([first])}})


DAMAGES: Final[dict[str, Damage]] = {
    "newer item type": newer_item_type,
    "hand-edited field": hand_edited,
    "truncated": truncated,
}
THREAD_DAMAGES: Final[dict[str, Damage]] = {
    "hand-edited field": hand_edited,
    "truncated": truncated,
}
"""A thread has no type to be newer in; the other two damages apply."""


async def damage_item(
    database: Any, damage: Damage, owner: str, thread_id: str, item_id: str
) -> None:
    key = {Field.OWNER: owner, Field.THREAD_ID: thread_id, Field.ITEM_ID: item_id}
    await damage(database[NAMES.items], key)


async def damage_thread(database: Any, damage: Damage, owner: str, thread_id: str) -> None:
    await damage(database[NAMES.threads], {Field.OWNER: owner, Field.THREAD_ID: thread_id})


async def damage_attachment(database: Any, damage: Damage, owner: str, attachment_id: str) -> None:
    key = {Field.OWNER: owner, Field.ATTACHMENT_ID: attachment_id}
    await damage(database[NAMES.attachments], key)


async def stored_data(collection: Any, key: dict[str, Any]) -> Any:
    document = await collection.find_one(key)
    return None if document is None else document[Field.DATA]
