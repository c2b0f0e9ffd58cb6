"""MongoStore behind a real ChatKitServer, driven with ChatKit's own request format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ThreadItemDoneEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from chatkit_mongo import MongoStore

from .conftest import RequestContext


class EchoServer(ChatKitServer[RequestContext]):
    """Answers every message with its own text; needs no model."""

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        text = " ".join(
            part.text
            for part in (input_user_message.content if input_user_message else [])
            if part.type == "input_text"
        )
        yield ThreadItemDoneEvent(
            item=AssistantMessageItem(
                id=self.store.generate_item_id("message", thread, context),
                thread_id=thread.id,
                created_at=datetime.now(),
                content=[AssistantMessageContent(text=f"echo: {text}")],
            )
        )


def _user_input(text: str) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": [],
        "inference_options": {},
    }


async def _stream(
    server: EchoServer, request: dict[str, Any], ctx: RequestContext
) -> list[dict[str, Any]]:
    result = await server.process(json.dumps(request), ctx)
    assert isinstance(result, StreamingResult)
    events = []
    async for chunk in result:
        for line in chunk.decode().splitlines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


async def _call(server: EchoServer, request: dict[str, Any], ctx: RequestContext) -> Any:
    result = await server.process(json.dumps(request), ctx)
    assert isinstance(result, NonStreamingResult)
    return json.loads(result.json)


async def test_a_conversation_is_stored_and_listed(
    store: MongoStore[Any], alice: RequestContext, bob: RequestContext
) -> None:
    server = EchoServer(store)
    events = await _stream(
        server, {"type": "threads.create", "params": {"input": _user_input("hello")}}, alice
    )
    assert [e["type"] for e in events][:2] == ["thread.created", "thread.item.done"]
    assert not [e for e in events if e["type"] == "error"], events
    thread_id = events[0]["thread"]["id"]
    assert thread_id.startswith("thr_")

    await _stream(
        server,
        {
            "type": "threads.add_user_message",
            "params": {"thread_id": thread_id, "input": _user_input("again")},
        },
        alice,
    )
    items = await _call(
        server, {"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}}, alice
    )
    texts = [item["content"][0]["text"] for item in items["data"]]
    assert texts == ["hello", "echo: hello", "again", "echo: again"]

    full = await _call(
        server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, alice
    )
    assert [item["type"] for item in full["items"]["data"]] == [
        "user_message",
        "assistant_message",
        "user_message",
        "assistant_message",
    ]
    await _call(
        server,
        {"type": "threads.update", "params": {"thread_id": thread_id, "title": "Greetings"}},
        alice,
    )
    listed = await _call(server, {"type": "threads.list", "params": {}}, alice)
    assert [(t["id"], t["title"]) for t in listed["data"]] == [(thread_id, "Greetings")]

    # Bob sees none of it.
    assert (await _call(server, {"type": "threads.list", "params": {}}, bob))["data"] == []
    bob_items = await store.load_thread_items(thread_id, None, 10, "asc", bob)
    assert bob_items.data == []

    await _call(server, {"type": "threads.delete", "params": {"thread_id": thread_id}}, alice)
    assert (await _call(server, {"type": "threads.list", "params": {}}, alice))["data"] == []
    assert (await store.load_thread_items(thread_id, None, 10, "asc", alice)).data == []
