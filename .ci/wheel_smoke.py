"""The installed wheel, used as a user would: run by ``nox -s wheel`` in a fresh virtualenv.

``store URI``: a thread and an item saved, listed, loaded and deleted through MongoStore on
the server at URI. ``demo URL``: one ChatKit request to the demo server at URL, its reply
streamed back. Standard library only besides the package: the bare wheel brings nothing
else. Exits non-zero, with the reason, on anything unexpected.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata
from pymongo import AsyncMongoClient

import chatkit_mongo
from chatkit_mongo import MongoStore


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"wheel smoke test failed: {message}")


async def store_round_trip(uri: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri)
    store: MongoStore[dict[str, str]] = MongoStore(client[f"wheel_{uuid.uuid4().hex[:8]}"])
    context = {"user_id": "wheel-user"}
    now = datetime.now(UTC)
    try:
        thread = ThreadMetadata(id="thr_wheel", created_at=now, title="from the wheel")
        await store.save_thread(thread, context)
        item = AssistantMessageItem(
            id="msg_wheel",
            thread_id=thread.id,
            created_at=now,
            content=[AssistantMessageContent(text="stored and read back")],
        )
        await store.add_thread_item(thread.id, item, context)
        check((await store.load_thread(thread.id, context)).title == "from the wheel", "title")
        page = await store.load_thread_items(thread.id, None, 10, "asc", context)
        check([i.id for i in page.data] == ["msg_wheel"], f"items {page.data}")
        check(page.data[0] == item, f"item read back as {page.data[0]}")
        await store.delete_thread(thread.id, context)
        left = await store.load_threads(10, None, "asc", context)
        check(left.data == [], f"threads left after delete: {left.data}")
    finally:
        await store.close()
        await client.close()


def demo_request(url: str) -> None:
    body = {
        "type": "threads.create",
        "params": {
            "input": {
                "content": [{"type": "input_text", "text": "hello wheel"}],
                "attachments": [],
                "inference_options": {},
            }
        },
    }
    request = urllib.request.Request(
        f"{url}/chatkit",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        check(response.status == 200, f"status {response.status}")
        text = response.read().decode()
    events = [json.loads(block.removeprefix("data: ")) for block in text.split("\n\n") if block]
    check(events[0]["type"] == "thread.created", f"first event {events[0]}")
    replies = [
        event["item"]["content"][0]["text"]
        for event in events
        if event["type"] == "thread.item.done" and event["item"]["type"] == "assistant_message"
    ]
    check(replies == ["You said: hello wheel"], f"replies {replies}")


def main() -> None:
    installed = Path(chatkit_mongo.__file__).resolve()
    check("site-packages" in installed.parts, f"chatkit_mongo imported from {installed}")
    command, target = sys.argv[1:3]
    if command == "store":
        asyncio.run(store_round_trip(target))
    else:
        check(command == "demo", f"unknown command {command}")
        demo_request(target)
    print(f"wheel smoke test passed: {command}")


if __name__ == "__main__":
    main()
