"""The FastAPI example (``examples/fastapi_server.py``), run as a newcomer would use it:
start-up, a streamed conversation, a two-phase upload, a message referencing the
attachment (whose bytes reach the model through the converter), and shutdown."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import examples.fastapi_server
from chatkit_mongo import MongoStore
from chatkit_mongo.apps._extras import install_commands
from examples.fastapi_server import RequestContext, create_app

from .unreadable_support import THREAD_DAMAGES, damage_thread


class ClosingStore(MongoStore[Any]):
    """Records that shutdown closed the store (a store on an injected client must still
    be closed by the application when it owns one)."""

    closed = False

    async def close(self) -> None:
        self.closed = True
        await super().close()


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    return [json.loads(block.removeprefix("data: ")) for block in blocks]


def _reply(events: list[dict[str, Any]]) -> str:
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    assistant = [item for item in done if item["type"] == "assistant_message"]
    text: str = assistant[-1]["content"][0]["text"]
    return text


def _message(text: str, attachments: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": list(attachments),
        "inference_options": {},
    }


@pytest.fixture
async def served(gridfs_store: MongoStore[Any]) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    store = ClosingStore(gridfs_store.database, auto_create_indexes=False)
    app = create_app(store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as http:
            yield http, store
    assert store.closed, "shutdown closes the store"


async def test_the_example_serves_a_conversation_with_an_attachment(
    served: tuple[httpx.AsyncClient, ClosingStore],
) -> None:
    http, store = served
    alice = {"X-User-Id": "alice"}

    started = await http.post(
        "/chatkit",
        json={"type": "threads.create", "params": {"input": _message("hello")}},
        headers=alice,
    )
    events = _events(started)
    thread_id = events[0]["thread"]["id"]
    assert _reply(events) == "You said: hello"

    # Two-phase upload: ChatKit's attachments.create, then the bytes to the upload URL.
    created = await http.post(
        "/chatkit",
        json={
            "type": "attachments.create",
            "params": {"name": "notes.txt", "size": 11, "mime_type": "text/plain"},
        },
        headers=alice,
    )
    assert created.status_code == 200, created.text
    descriptor = created.json()["upload_descriptor"]
    assert descriptor["url"] == f"http://127.0.0.1:8000/attachments/{created.json()['id']}/upload"
    uploaded = await http.post(descriptor["url"], content=b"hello notes", headers=alice)
    assert uploaded.status_code == 200, uploaded.text

    followed = await http.post(
        "/chatkit",
        json={
            "type": "threads.add_user_message",
            "params": {"thread_id": thread_id, "input": _message("see", (created.json()["id"],))},
        },
        headers=alice,
    )
    assert _reply(_events(followed)) == "You said: see I received notes.txt (11 bytes)."

    stored = await store.load_thread_items(thread_id, None, 10, "asc", RequestContext("alice"))
    assert [item.type for item in stored.data] == ["user_message", "assistant_message"] * 2
    listed = await http.post("/chatkit", json={"type": "threads.list", "params": {}}, headers=alice)
    assert [t["id"] for t in listed.json()["data"]] == [thread_id]
    download = await http.get(f"/attachments/{created.json()['id']}", headers=alice)
    assert download.content == b"hello notes"


async def test_the_example_keeps_users_apart_and_refuses_anonymous_requests(
    served: tuple[httpx.AsyncClient, ClosingStore],
) -> None:
    http, _ = served
    body = {"type": "threads.create", "params": {"input": _message("secret")}}
    thread_id = _events(await http.post("/chatkit", json=body, headers={"X-User-Id": "alice"}))[0][
        "thread"
    ]["id"]
    foreign = await http.post(
        "/chatkit",
        json={"type": "threads.get_by_id", "params": {"thread_id": thread_id}},
        headers={"X-User-Id": "bob"},
    )
    assert foreign.status_code == 404
    anonymous = await http.post("/chatkit", json={"type": "threads.list", "params": {}})
    assert anonymous.status_code == 401


def test_the_install_commands_shown_work_without_a_package_registry() -> None:
    """Regression: ``pip install 'chatkit-mongo[examples]'`` cannot work while the package
    is not on a registry; the example shows the commands the CLI's hints give."""
    shown = examples.fastapi_server.__doc__ or ""
    for command in install_commands("examples"):
        assert f"    {command}  " in shown
    assert "pip install 'chatkit-mongo[examples]'" not in shown


async def test_the_example_answers_an_unreadable_thread_404_and_lists_the_rest(
    served: tuple[httpx.AsyncClient, ClosingStore],
) -> None:
    """A thread this ChatKit release cannot read (written by a newer one, edited by
    hand) is a 404 naming it, never a 500 or a 400; the history list leaves it out."""
    http, store = served
    alice = {"X-User-Id": "alice"}
    created = []
    for text in ("kept", "damaged"):
        body = {"type": "threads.create", "params": {"input": _message(text)}}
        created.append(_events(await http.post("/chatkit", json=body, headers=alice))[0])
    damaged = created[1]["thread"]["id"]
    await damage_thread(store.database, THREAD_DAMAGES["hand-edited field"], "alice", damaged)

    got = await http.post(
        "/chatkit",
        json={"type": "threads.get_by_id", "params": {"thread_id": damaged}},
        headers=alice,
    )
    listed = await http.post("/chatkit", json={"type": "threads.list", "params": {}}, headers=alice)

    assert got.status_code == 404
    assert damaged in got.json()["error"]
    assert "cannot be read by this release of ChatKit" in got.json()["error"]
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()["data"]] == [created[0]["thread"]["id"]]
