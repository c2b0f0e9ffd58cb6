"""The demo ChatKit server, spoken to over HTTP in ChatKit's own request format."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Final

import httpx
import pytest
import uvicorn
from chatkit.types import FileAttachment, Page, ThreadMetadata
from click.testing import CliRunner

from chatkit_mongo import MongoStore
from chatkit_mongo.apps.cli import cli
from chatkit_mongo.apps.demo import (
    ATTACHMENTS_PATH,
    CHATKIT_PATH,
    DEMO_USER,
    MAX_REQUEST_BYTES,
    USER_HEADER,
    DemoContext,
    context_from_headers,
    create_app,
    demo_attachment_store,
)
from chatkit_mongo.asgi import attachment_routes
from chatkit_mongo.attachments import too_large_message

NO_OPTIONS: dict[str, Any] = {}


def user_input(text: str, attachments: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": list(attachments),
        "inference_options": NO_OPTIONS,
    }


class ChatKitClient:
    """Sends ChatKit requests as a ChatKit front end would, as one user."""

    def __init__(self, http: httpx.AsyncClient, user: str | None) -> None:
        self.http = http
        self.headers = {} if user is None else {USER_HEADER: user}

    async def send(self, kind: str, **params: Any) -> httpx.Response:
        # ASCII-escaped JSON, as browsers send it: a lone surrogate travels as \\ud800.
        body = json.dumps({"type": kind, "params": params})
        headers = {"Content-Type": "application/json", **self.headers}
        return await self.http.post(CHATKIT_PATH, content=body, headers=headers)

    async def call(self, kind: str, **params: Any) -> Any:
        response = await self.send(kind, **params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        return response.json()

    async def stream(self, kind: str, **params: Any) -> list[dict[str, Any]]:
        response = await self.send(kind, **params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse(response.text)


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            events.append(json.loads(block.removeprefix("data: ")))
    return events


def streamed_reply(events: list[dict[str, Any]]) -> str:
    deltas = [
        event["update"]["delta"]
        for event in events
        if event["type"] == "thread.item.updated"
        and event["update"]["type"] == "assistant_message.content_part.text_delta"
    ]
    assert len(deltas) > 1, "the reply must arrive word by word"
    return "".join(deltas)


def done_items(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event["item"] for event in events if event["type"] == "thread.item.done"]


@pytest.fixture
async def http(store: MongoStore[Any]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        yield client


async def test_a_conversation_streams_word_by_word_and_is_stored(
    http: httpx.AsyncClient, store: MongoStore[Any]
) -> None:
    alice = ChatKitClient(http, "alice")

    events = await alice.stream("threads.create", input=user_input("hello there"))

    assert [events[0]["type"], events[1]["type"]] == ["thread.created", "thread.item.done"]
    thread_id = events[0]["thread"]["id"]
    assert streamed_reply(events) == "You said: hello there"
    user_message, reply = done_items(events)
    assert user_message["type"] == "user_message"
    assert reply["type"] == "assistant_message"
    assert reply["content"][0]["text"] == "You said: hello there"

    events = await alice.stream(
        "threads.add_user_message", thread_id=thread_id, input=user_input("and again")
    )
    assert streamed_reply(events) == "You said: and again"

    stored = await store.load_thread_items(thread_id, None, 10, "asc", DemoContext("alice"))
    assert [item.type for item in stored.data] == [
        "user_message",
        "assistant_message",
        "user_message",
        "assistant_message",
    ]
    assert stored.data[3].model_dump()["content"][0]["text"] == "You said: and again"

    listed = await alice.call("items.list", thread_id=thread_id, order="asc", limit=3)
    assert [item["id"] for item in listed["data"]] == [item.id for item in stored.data[:3]]
    assert listed["has_more"] is True
    rest = await alice.call("items.list", thread_id=thread_id, order="asc", after=listed["after"])
    assert [item["id"] for item in rest["data"]] == [stored.data[3].id]

    renamed = await alice.call("threads.update", thread_id=thread_id, title="Greetings")
    assert renamed["title"] == "Greetings"
    fetched = await alice.call("threads.get_by_id", thread_id=thread_id)
    assert fetched["title"] == "Greetings"
    assert len(fetched["items"]["data"]) == 4
    threads = await alice.call("threads.list")
    assert [thread["id"] for thread in threads["data"]] == [thread_id]

    assert await alice.call("threads.delete", thread_id=thread_id) == {}
    assert (await alice.send("threads.get_by_id", thread_id=thread_id)).status_code == 404
    assert (await alice.call("threads.list"))["data"] == []


async def test_two_users_are_kept_apart(http: httpx.AsyncClient) -> None:
    alice, bob = ChatKitClient(http, "alice"), ChatKitClient(http, "bob")
    events = await alice.stream("threads.create", input=user_input("secret plans"))
    thread_id = events[0]["thread"]["id"]

    assert (await bob.call("threads.list"))["data"] == []
    assert (await bob.call("items.list", thread_id=thread_id))["data"] == []
    for response in (
        await bob.send("threads.get_by_id", thread_id=thread_id),
        await bob.send("threads.update", thread_id=thread_id, title="mine now"),
        await bob.send("threads.add_user_message", thread_id=thread_id, input=user_input("hi")),
    ):
        assert response.status_code == 404, response.text
        assert thread_id in response.json()["error"]
    assert await bob.call("threads.delete", thread_id=thread_id) == {}

    fetched = await alice.call("threads.get_by_id", thread_id=thread_id)
    assert "title" not in fetched, "bob's update must not rename it"
    assert len(fetched["items"]["data"]) == 2


async def test_without_a_user_header_requests_act_for_the_demo_user(
    http: httpx.AsyncClient, store: MongoStore[Any]
) -> None:
    anonymous = ChatKitClient(http, None)
    events = await anonymous.stream("threads.create", input=user_input("hi"))
    thread_id = events[0]["thread"]["id"]

    thread = await store.load_thread(thread_id, DemoContext(DEMO_USER))
    assert thread.id == thread_id
    demo_user = ChatKitClient(http, DEMO_USER)
    assert [t["id"] for t in (await demo_user.call("threads.list"))["data"]] == [thread_id]


async def test_the_reply_names_the_attachments(
    http: httpx.AsyncClient, store: MongoStore[Any]
) -> None:
    alice = DemoContext("alice")
    for attachment_id, name in (("atc_1", "notes.pdf"), ("atc_2", "plan.txt")):
        attachment = FileAttachment(id=attachment_id, name=name, mime_type="text/plain")
        await store.save_attachment(attachment, alice)

    events = await ChatKitClient(http, "alice").stream(
        "threads.create", input=user_input("see files", ("atc_1", "atc_2"))
    )

    thread_id = events[0]["thread"]["id"]
    assert streamed_reply(events) == (
        "You said: see files You attached 2 files: 'notes.pdf', 'plan.txt'."
    )
    stored = await store.load_attachment("atc_1", alice)
    assert stored.thread_id == thread_id, "ChatKit links the attachment to its thread"


async def test_each_write_is_logged(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatkit_mongo.apps.demo")
    events = await ChatKitClient(http, "carol").stream("threads.create", input=user_input("hi"))
    thread_id = events[0]["thread"]["id"]
    user_message, reply = done_items(events)
    await ChatKitClient(http, "carol").call("threads.delete", thread_id=thread_id)

    logged = [r.getMessage() for r in caplog.records if r.name == "chatkit_mongo.apps.demo"]
    assert logged == [
        f"[user carol] saved thread {thread_id} (title None)",
        f"[user carol] added user_message {user_message['id']} to thread {thread_id}",
        f"[user carol] added assistant_message {reply['id']} to thread {thread_id}",
        f"[user carol] deleted thread {thread_id} with its items and attachments",
    ]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"not json", 400, "not a valid ChatKit request"),
        (b'{"type": "threads.nuke", "params": {}}', 400, "not a valid ChatKit request"),
        (b'{"type": "threads.list", "params": {"limit": 5000}}', 400, "limit must be between"),
        (
            b'{"type": "threads.add_user_message", "params": {"thread_id": "thr_missing", '
            b'"input": {"content": [], "attachments": [], "inference_options": {}}}}',
            404,
            "Thread thr_missing not found",
        ),
        (b'{"type": "threads.get_by_id", "params": {"thread_id": "x"}}', 404, "Thread x not found"),
    ],
)
async def test_bad_requests_get_a_clear_error(
    http: httpx.AsyncClient, body: bytes, status: int, message: str
) -> None:
    response = await http.post(CHATKIT_PATH, content=body)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.parametrize(("header", "message"), [("  ", "blank"), ("u" * 513, "at most 512")])
async def test_an_unusable_user_header_is_refused(
    http: httpx.AsyncClient, store: MongoStore[Any], header: str, message: str
) -> None:
    response = await ChatKitClient(http, header).send("threads.create", input=user_input("hi"))
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert (await store.load_threads(10, None, "desc", DemoContext(DEMO_USER))).data == []


async def test_a_failure_after_the_stream_started_ends_it_with_an_error_event(
    store: MongoStore[Any],
) -> None:
    class FailingReplies(MongoStore[Any]):
        async def add_thread_item(self, thread_id: str, item: Any, context: Any) -> None:
            if item.type == "assistant_message":
                raise RuntimeError("the reply could not be stored")
            await super().add_thread_item(thread_id, item, context)

    failing: MongoStore[Any] = FailingReplies(store.database)
    transport = httpx.ASGITransport(app=create_app(failing))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
        events = await ChatKitClient(http, "alice").stream("threads.create", input=user_input("hi"))
    assert [events[0]["type"], events[1]["type"]] == ["thread.created", "thread.item.done"]
    assert events[-1]["type"] == "error"  # ChatKit's own in-band error, not a cut stream


@pytest.mark.parametrize(
    ("message", "status", "error"),
    [
        (user_input("hi", ("atc_missing",)), 404, "atc_missing"),
        (user_input("x" * 17 * 2**20), 400, "16 MiB"),
    ],
    ids=["missing attachment", "over 16 MiB"],
)
async def test_a_refused_first_message_leaves_no_thread_behind(
    *,
    http_with_attachments: httpx.AsyncClient,
    gridfs_store: MongoStore[Any],
    message: dict[str, Any],
    status: int,
    error: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression: ChatKit saves the thread before the message; the refusal left it empty."""
    caplog.set_level(logging.INFO)
    alice = ChatKitClient(http_with_attachments, "alice")
    response = await alice.send("threads.create", input=message)
    assert response.status_code == status, response.text
    assert error in response.json()["error"]
    assert (await alice.call("threads.list"))["data"] == []
    assert await gridfs_store.load_threads(10, None, "asc", DemoContext("alice")) == Page(data=[])
    assert any("its first message was refused" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info], "an expected error logs no traceback"


async def test_a_refused_first_message_keeps_its_uploaded_attachment(
    http_with_attachments: httpx.AsyncClient, gridfs_store: MongoStore[Any]
) -> None:
    """The rollback unlinks what ChatKit linked to the new thread; the upload stays."""
    http = http_with_attachments
    alice = ChatKitClient(http, "alice")
    upload = await http.post(
        ATTACHMENTS_PATH, files={"file": ("a.txt", b"abc", "text/plain")}, headers=alice.headers
    )
    attachment_id = upload.json()["id"]
    response = await alice.send(
        "threads.create", input=user_input("x" * 17 * 2**20, (attachment_id,))
    )
    assert response.status_code == 400
    kept = await gridfs_store.load_attachment(attachment_id, DemoContext("alice"))
    assert kept.thread_id is None
    download = await http.get(f"{ATTACHMENTS_PATH}/{attachment_id}", headers=alice.headers)
    assert download.content == b"abc"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_oversized_request_is_refused_before_chatkit_reads_it(
    store: MongoStore[Any], chunked: bool
) -> None:
    seen: list[bytes] = []
    app = create_app(store, max_request_bytes=1000)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(100):
            seen.append(b"x" * 100)
            yield seen[-1]

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
        response = await http.post(
            CHATKIT_PATH, content=body() if chunked else b"x" * 10_000, headers={USER_HEADER: "a"}
        )
    assert response.status_code == 413
    assert "at most 1000" in response.text or "over 1000 bytes" in response.text
    assert await store.load_threads(10, None, "asc", DemoContext("a")) == Page(data=[])


async def test_the_default_request_limit_is_a_mebibyte(http: httpx.AsyncClient) -> None:
    body = {"type": "threads.create", "params": {"input": user_input("x" * MAX_REQUEST_BYTES)}}
    response = await http.post(CHATKIT_PATH, json=body)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {
                "type": "input.transcribe",
                "params": {"audio_base64": "AAAA", "mime_type": "audio/ogg"},
            },
            "transcribe() must be overridden",
        ),
        (
            {"type": "attachments.create", "params": {"name": "a", "size": 1, "mime_type": "a/b"}},
            "this server has no attachment store",
        ),
    ],
)
async def test_unsupported_requests_get_501_and_no_traceback(
    http: httpx.AsyncClient, body: dict[str, Any], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await http.post(CHATKIT_PATH, json=body)
    assert response.status_code == 501
    assert message in response.json()["error"]
    assert not [r for r in caplog.records if r.exc_info]


async def test_expected_404s_log_one_line_without_a_traceback(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: ChatKit logged a full traceback for a message to a missing thread."""
    caplog.set_level(logging.INFO)
    response = await ChatKitClient(http, "bob").send(
        "threads.add_user_message", thread_id="thr_gone", input=user_input("hi")
    )
    assert response.status_code == 404
    told = [r.getMessage() for r in caplog.records if "thr_gone not found" in r.getMessage()]
    assert told == ["[user bob] POST /chatkit refused 404: Thread thr_gone not found"]
    assert not [r for r in caplog.records if r.exc_info]


def _demo_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "chatkit_mongo.apps.demo"]


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [line for line in _demo_lines(caplog) if " refused " in line]


_MISSING_THREAD_MESSAGE: Final = {
    "type": "threads.add_user_message",
    "params": {"thread_id": "thr_gone", "input": user_input("hi")},
}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("POST", CHATKIT_PATH, b"not json", {}, 400),
        (
            "POST",
            CHATKIT_PATH,
            b'{"type": "threads.get_by_id", "params": {"thread_id": "x"}}',
            {},
            404,
        ),
        ("POST", CHATKIT_PATH, json.dumps(_MISSING_THREAD_MESSAGE).encode(), {}, 404),
        ("POST", CHATKIT_PATH, b"{}", {USER_HEADER: " "}, 400),
        ("POST", CHATKIT_PATH, b"x" * (18 * 2**20 + 1), {}, 413),
        ("GET", CHATKIT_PATH, b"", {}, 405),
        ("GET", "/nowhere", b"", {}, 404),
        ("POST", ATTACHMENTS_PATH, b"raw bytes", {"Content-Type": "text/plain"}, 415),
        ("GET", f"{ATTACHMENTS_PATH}/atc_missing", b"", {}, 404),
        ("POST", f"{ATTACHMENTS_PATH}/atc_missing/upload", b"abc", {}, 404),
    ],
    ids=[
        "not json",
        "missing thread",
        "missing thread, streaming",
        "blank user",
        "body too large",
        "wrong method",
        "unknown path",
        "direct upload not multipart",
        "download of nothing",
        "upload to nothing",
    ],
)
async def test_every_refusal_is_logged_once_with_its_reason(
    *,
    http_with_attachments: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    """Regression: a 400 or 413 was answered with no reason in the log."""
    caplog.set_level(logging.INFO)
    response = await http_with_attachments.request(method, path, content=body, headers=headers)
    assert response.status_code == status, response.text
    reason = (
        response.json()["error"]
        if response.headers.get("content-type", "").startswith("application/json")
        else response.text
    )
    user = "' '" if headers.get(USER_HEADER) == " " else DEMO_USER
    assert _refusals(caplog) == [f"[user {user}] {method} {path} refused {status}: {reason}"]
    assert not [r for r in caplog.records if r.exc_info]
    server_side = [r for r in caplog.records if r.name != "httpx"]  # not the test's client
    mentions = [r.getMessage() for r in server_side if reason in r.getMessage()]
    assert len(mentions) == 1, mentions


async def test_a_refusal_of_a_forged_path_is_still_one_line(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatkit_mongo.apps.demo")
    response = await http.get("/nowhere%0A[user admin] deleted everything")
    assert response.status_code == 404
    assert _refusals(caplog) == [
        f"[user {DEMO_USER}] GET /nowhere [user admin] deleted everything refused 404: Not Found"
    ]


async def test_an_id_holding_a_line_break_is_logged_on_one_line(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatkit_mongo.apps.demo")
    forged = "thr_x\n[user admin] deleted thread thr_y"
    assert await ChatKitClient(http, "bob").call("threads.delete", thread_id=forged) == {}
    assert _demo_lines(caplog) == [
        "[user bob] thread thr_x [user admin] deleted thread thr_y not found for this user: "
        "nothing deleted"
    ]


async def test_refusals_of_the_attachment_routes_are_logged_with_their_reason(
    http_with_attachments: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """413 past the declared size, then 409 for a second upload: each one line."""
    http = http_with_attachments
    alice = ChatKitClient(http, "alice")
    created = await alice.call("attachments.create", name="a.txt", size=3, mime_type="text/plain")
    url = created["upload_descriptor"]["url"]
    path = httpx.URL(url).path
    caplog.set_level(logging.INFO, logger="chatkit_mongo.apps.demo")
    too_large = await http.post(url, content=b"four", headers=alice.headers)
    stored = await http.post(url, content=b"abc", headers=alice.headers)
    again = await http.post(url, content=b"abc", headers=alice.headers)
    assert [too_large.status_code, stored.status_code, again.status_code] == [413, 200, 409]
    assert _refusals(caplog) == [
        f"[user alice] POST {path} refused 413: {too_large.json()['error']}",
        f"[user alice] POST {path} refused 409: {again.json()['error']}",
    ]


async def test_every_upload_and_removal_of_bytes_is_logged(
    http_with_attachments: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a direct upload logged only uvicorn's access line."""
    http = http_with_attachments
    alice = ChatKitClient(http, "alice")
    caplog.set_level(logging.INFO, logger="chatkit_mongo.apps.demo")
    direct = await http.post(
        ATTACHMENTS_PATH,
        files={"file": ("notes.txt", b"first file", "text/plain")},
        headers=alice.headers,
    )
    direct_id = direct.json()["id"]
    created = await alice.call("attachments.create", name="b.bin", size=3, mime_type="a/b")
    two_phase = await http.post(
        created["upload_descriptor"]["url"], content=b"abc", headers=alice.headers
    )
    assert (direct.status_code, two_phase.status_code) == (200, 200)
    await alice.call("attachments.delete", attachment_id=direct_id)

    assert _demo_lines(caplog) == [
        f"[user alice] stored the upload of attachment {direct_id} 'notes.txt' (text/plain)",
        f"[user alice] saved attachment {created['id']} 'b.bin' (thread None)",
        f"[user alice] stored the upload of attachment {created['id']} 'b.bin' (a/b)",
        f"[user alice] removed the bytes of attachment {direct_id}, if this user had any",
        f"[user alice] deleted attachment {direct_id}",
    ]


async def test_deleting_another_users_thread_logs_that_nothing_was_deleted(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = ChatKitClient(http, "alice"), ChatKitClient(http, "bob")
    thread_id = (await alice.stream("threads.create", input=user_input("mine")))[0]["thread"]["id"]
    caplog.set_level(logging.INFO, logger="chatkit_mongo.apps.demo")
    caplog.clear()
    assert await bob.call("threads.delete", thread_id=thread_id) == {}
    logged = [r.getMessage() for r in caplog.records if r.name == "chatkit_mongo.apps.demo"]
    assert logged == [f"[user bob] thread {thread_id} not found for this user: nothing deleted"]
    assert len((await alice.call("threads.get_by_id", thread_id=thread_id))["items"]["data"]) == 2


async def test_a_real_http_server_answers_one_request(store: MongoStore[Any]) -> None:
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    config = uvicorn.Config(create_app(store), log_level="warning")
    server = uvicorn.Server(config)
    # The socket listens before uvicorn starts, so the request simply waits to be accepted.
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        async with (
            asyncio.timeout(10),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            alice = ChatKitClient(client, "alice")
            events = await alice.stream("threads.create", input=user_input("over the wire"))
        assert streamed_reply(events) == "You said: over the wire"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)
        listening.close()


def test_serve_refuses_a_bad_uri_with_a_clear_message() -> None:
    result = CliRunner().invoke(cli, ["serve", "--uri", "http://not-mongodb"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: bad MongoDB URI: ")
    assert result.output.count("\n") == 1


def test_serve_reports_an_unreachable_server() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    result = CliRunner().invoke(cli, ["serve", "--uri", uri, "--timeout", "0.3"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot reach MongoDB within 0.3s: 127.0.0.1:{port}: ")


def test_serve_help_names_its_options() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--uri", "MONGODB_URI", "embedded", "--timeout"):
        assert option in result.output


async def test_stored_threads_are_listed_newest_first(
    http: httpx.AsyncClient, store: MongoStore[Any]
) -> None:
    alice = DemoContext("alice")
    for index in range(3):
        thread = ThreadMetadata(id=f"thr_{index}", created_at=datetime(2026, 1, 1, 0, index))
        await store.save_thread(thread, alice)
    threads = await ChatKitClient(http, "alice").call("threads.list", limit=2)
    assert [thread["id"] for thread in threads["data"]] == ["thr_2", "thr_1"]
    assert threads["has_more"] is True


@pytest.fixture
async def http_with_attachments(
    gridfs_store: MongoStore[Any],
) -> AsyncIterator[httpx.AsyncClient]:
    """The app as ``serve`` builds it: GridFS attachments and their routes mounted."""
    attachments = demo_attachment_store(gridfs_store, "http://demo")
    routes = attachment_routes(
        attachments, context=lambda request: context_from_headers(request.headers)
    )
    # Room for a message past MongoDB's 16 MiB document limit, to show its refusal.
    app = create_app(gridfs_store, attachments, routes=routes, max_request_bytes=18 * 2**20)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
        yield client


async def test_attachments_flow_through_the_demo_both_ways(
    http_with_attachments: httpx.AsyncClient,
) -> None:
    http = http_with_attachments
    alice = ChatKitClient(http, "alice")
    # Direct upload: one multipart POST.
    direct = await http.post(
        ATTACHMENTS_PATH,
        files={"file": ("notes.txt", b"first file", "text/plain")},
        headers=alice.headers,
    )
    assert direct.status_code == 200, direct.text
    direct_id = direct.json()["id"]
    # Two-phase: ChatKit's attachments.create, then the bytes to the descriptor's URL.
    created = await alice.call(
        "attachments.create", name="photo.png", size=9, mime_type="image/png"
    )
    upload_url = created["upload_descriptor"]["url"]
    uploaded = await http.post(upload_url, content=b"png bytes", headers=alice.headers)
    assert uploaded.status_code == 200, uploaded.text

    events = await alice.stream(
        "threads.create", input=user_input("look", (direct_id, created["id"]))
    )
    assert "'notes.txt', 'photo.png'" in streamed_reply(events)

    download = await http.get(f"{ATTACHMENTS_PATH}/{direct_id}", headers=alice.headers)
    assert (download.status_code, download.content) == (200, b"first file")
    image = await http.get(f"{ATTACHMENTS_PATH}/{created['id']}", headers=alice.headers)
    assert (image.content, image.headers["content-type"]) == (b"png bytes", "image/png")
    foreign = await http.get(f"{ATTACHMENTS_PATH}/{direct_id}", headers={USER_HEADER: "bob"})
    assert foreign.status_code == 404


def test_the_cli_lists_and_loads_serve_and_bench() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    rows = result.output.split("Commands:")[1].splitlines()
    listed = [line.split()[0] for line in rows if line.strip() and line[2] != " "]
    assert listed == [
        "bench",
        "doctor",
        "export",
        "import",
        "init",
        "migrate",
        "purge",
        "serve",
        "shard",
    ]
    for name in ("serve", "bench"):
        sub = CliRunner().invoke(cli, [name, "--help"])
        assert sub.exit_code == 0, sub.output
        assert f"{name} [OPTIONS]" in sub.output


async def test_an_upload_past_its_declared_size_is_refused_in_words(
    http_with_attachments: httpx.AsyncClient,
) -> None:
    """Regression: "'notes.txt' passed 5 bytes, the most allowed (its declared size)"."""
    alice = ChatKitClient(http_with_attachments, "alice")
    created = await alice.call(
        "attachments.create", name="notes.txt", size=5, mime_type="text/plain"
    )
    url = created["upload_descriptor"]["url"]
    response = await http_with_attachments.post(url, content=b"11 bytes!!!", headers=alice.headers)
    assert response.status_code == 413
    assert response.json()["error"] == (
        "'notes.txt' is larger than its declared size, 5 bytes; nothing of it was kept"
    )


def test_an_upload_past_max_bytes_is_refused_in_words() -> None:
    assert too_large_message("a.bin", 1, by_declared_size=False) == (
        "'a.bin' is larger than 1 byte, the most this store accepts (max_bytes)"
    )
