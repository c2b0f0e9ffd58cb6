"""Average BSON sizes of the documents the store writes, and of their index keys.

Typical documents go through the real store onto the embedded backend (mongomock-motor),
are read back raw and measured with ``bson.encode``: the sizes docs/sharding.md's scale model
uses. Index keys are measured the same way (the key values of each index of
``schema.INDEXES``, BSON-encoded), an upper bound before WiredTiger's prefix compression.
``PYTHONPATH=. python scripts/measure_documents.py``
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from statistics import mean
from typing import Any

import bson
import mongomock_motor
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ClientToolCallItem,
    InferenceOptions,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)

from chatkit_mongo import GridFSAttachmentStore, MongoStore
from chatkit_mongo.schema import INDEXES, CollectionNames

OWNER = "eu:user_000123456"
"""A region prefix and a user id of typical length."""
TURNS = 20
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "model")


def text(words: int) -> str:
    return " ".join(WORDS[n % len(WORDS)] for n in range(words))


async def main() -> None:
    with mongomock_motor.enabled_gridfs_integration():
        client: Any = mongomock_motor.AsyncMongoMockClient()
        database = client["measure"]
        store: MongoStore[Any] = MongoStore(database, owner=lambda context: OWNER)
        attachments = GridFSAttachmentStore(store, upload_url=lambda i, c: f"https://x/{i}")
        start = datetime(2026, 11, 22, 9, 30)
        thread_id = store.generate_thread_id(None)
        await store.save_thread(ThreadMetadata(id=thread_id, created_at=start, title=text(6)), None)
        for turn in range(TURNS):
            at = start + timedelta(minutes=turn)
            user = UserMessageItem(
                id=store.generate_item_id("message", None, None),  # type: ignore[arg-type]
                thread_id=thread_id,
                created_at=at,
                content=[UserMessageTextContent(text=text(40))],
                inference_options=InferenceOptions(),
                attachments=[],
            )
            reply = AssistantMessageItem(
                id=store.generate_item_id("message", None, None),  # type: ignore[arg-type]
                thread_id=thread_id,
                created_at=at + timedelta(seconds=5),
                content=[AssistantMessageContent(text=text(200))],
            )
            tool = ClientToolCallItem(
                id=store.generate_item_id("tool_call", None, None),  # type: ignore[arg-type]
                thread_id=thread_id,
                created_at=at + timedelta(seconds=2),
                name="lookup",
                arguments={"query": text(8)},
                call_id=f"call_{turn}",
                status="completed",
                output={"rows": [text(10)] * 3},
            )
            for item in (user, tool, reply):
                await store.add_thread_item(thread_id, item, None)
        upload = await attachments.create_and_upload(
            "quarterly report.pdf", "application/pdf", b"%PDF" * 100_000, None
        )
        await store.save_attachment(upload.model_copy(update={"thread_id": thread_id}), None)

        names = CollectionNames()
        print(f"documents of one thread of {TURNS} turns (user message, tool call, reply):")
        for kind, name in names.by_kind().items():
            documents = await database[name].find().to_list(None)
            sizes = [len(bson.encode(document)) for document in documents]
            print(f"  {kind:<12} {len(sizes):>3} documents, average {mean(sizes):>8.0f} bytes")
            for spec in (spec for spec in INDEXES if spec.kind == kind):
                keys = [len(bson.encode(_key(document, spec.keys))) for document in documents]
                print(f"    index {spec.name:<26} key average {mean(keys):>5.0f} bytes")


def _key(document: dict[str, Any], keys: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return {str(n): _get(document, name) for n, (name, _) in enumerate(keys)}


def _get(document: dict[str, Any], path: str) -> Any:
    value: Any = document
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


if __name__ == "__main__":
    asyncio.run(main())
