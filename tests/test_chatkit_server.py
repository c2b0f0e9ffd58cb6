"""MongoStore behind a real ChatKitServer, driven with ChatKit's own request format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ThreadItemDoneEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from pydantic import ValidationError

from chatkit_mongo import MongoStore, UnreadableDocumentError

from .conftest import RequestContext
from .unreadable_support import DAMAGES, THREAD_DAMAGES, damage_item, damage_thread


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
    server: ChatKitServer[RequestContext], request: dict[str, Any], ctx: RequestContext
) -> list[dict[str, Any]]:
    result = await server.process(json.dumps(request), ctx)
    assert isinstance(result, StreamingResult)
    events = []
    async for chunk in result:
        for line in chunk.decode().splitlines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


async def _call(
    server: ChatKitServer[RequestContext], request: dict[str, Any], ctx: RequestContext
) -> Any:
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


class HistoryServer(ChatKitServer[RequestContext]):
    """Answers with how many items of the thread it can read, as an agent loading the
    conversation's history for its model would."""

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: RequestContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        history = await self.store.load_thread_items(thread.id, None, 100, "asc", context)
        yield ThreadItemDoneEvent(
            item=AssistantMessageItem(
                id=self.store.generate_item_id("message", thread, context),
                thread_id=thread.id,
                created_at=datetime.now(),
                content=[AssistantMessageContent(text=f"{len(history.data)} items")],
            )
        )


async def test_a_conversation_with_an_unreadable_item_goes_on(
    store: MongoStore[Any], database: Any, alice: RequestContext
) -> None:
    """An item a newer ChatKit release wrote is left out of every listing and of the
    history the server reads; the conversation neither fails nor errors."""
    server = HistoryServer(store)
    events = await _stream(
        server, {"type": "threads.create", "params": {"input": _user_input("hello")}}, alice
    )
    thread_id = events[0]["thread"]["id"]
    first_reply = events[-1]["item"]["id"]
    await damage_item(database, DAMAGES["newer item type"], "alice", thread_id, first_reply)

    events = await _stream(
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
    full = await _call(
        server, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}}, alice
    )

    assert not [e for e in events if e["type"] == "error"], events
    assert events[-1]["item"]["content"][0]["text"] == "2 items"  # hello, again
    texts = [item["content"][0]["text"] for item in items["data"]]
    assert texts == ["hello", "again", "2 items"]
    assert [item["id"] for item in full["items"]["data"]] == [i["id"] for i in items["data"]]


async def test_an_unreadable_thread_is_a_missing_one_to_the_server(
    store: MongoStore[Any], database: Any, alice: RequestContext
) -> None:
    """ChatKit's server lets a store's NotFoundError through, as every application's
    handler expects (404); an unreadable thread raises it, named, never a bare
    ValidationError (a ValueError: applications answer 400 for it, or 500)."""
    server = EchoServer(store)
    await store.save_thread(ThreadMetadata(id="thr_ok", created_at=datetime.now()), alice)
    await store.save_thread(ThreadMetadata(id="thr_bad", created_at=datetime.now()), alice)
    await damage_thread(database, THREAD_DAMAGES["truncated"], "alice", "thr_bad")

    listed = await _call(server, {"type": "threads.list", "params": {}}, alice)
    with pytest.raises(NotFoundError) as raised:
        await _call(
            server, {"type": "threads.get_by_id", "params": {"thread_id": "thr_bad"}}, alice
        )
    streamed = await server.process(
        json.dumps(
            {
                "type": "threads.add_user_message",
                "params": {"thread_id": "thr_bad", "input": _user_input("hi")},
            }
        ),
        alice,
    )
    assert isinstance(streamed, StreamingResult)
    with pytest.raises(NotFoundError) as raised_in_stream:
        async for _ in streamed:
            pass

    assert [t["id"] for t in listed["data"]] == ["thr_ok"]
    for error in (raised.value, raised_in_stream.value):
        assert isinstance(error, UnreadableDocumentError)
        assert not isinstance(error, ValidationError)
        assert "thr_bad" in str(error)
