"""OpenTelemetry: every public operation of both stores opens a span with the database
client conventions' attributes and ours, records its duration and errors in the
metrics, and says nothing of owners, ids or content unless asked to. Recorded with the
SDK's in-memory exporter and reader, on the doubles and through both real drivers,
where the driver's own command spans (``opentelemetry-instrumentation-pymongo``) nest
under the store's."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar, Final

import httpx
import pytest
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ThreadMetadata,
)
from click.testing import CliRunner
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from chatkit_mongo import ChatKitMongoError, MongoStore, Telemetry
from chatkit_mongo._telemetry import (
    DURATION_BUCKETS,
    PREFIX,
    SDK_RECHECK_SECONDS,
    command_span,
    duration_histogram,
    recorder,
)
from chatkit_mongo.apps.cli import cli
from examples.fastapi_server import create_app, otlp_providers, trace_requests

from . import capabilities
from .attachment_support import make_attachments
from .cli_support import first_answer
from .conftest import NAMES, RequestContext, is_server
from .encryption_support import fresh_encryption
from .unreadable_support import DAMAGES, damage_item

ROOT: Final = Path(__file__).resolve().parent.parent

pytest_plugins = ("tests.encryption_fixtures",)

SECRET_OWNER: Final = "owner-7f3a"
SECRET_TEXT: Final = "the launch code is 0000"

SPANS: Final = InMemorySpanExporter()
READER: Final = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def _sdk() -> Iterator[None]:
    """The application's side: an SDK with in-memory export, set once per process (the
    API refuses to replace a provider), and the PyMongo instrumentation, removed after."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(SPANS))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[READER]))
        # Stores that earlier tests of this process used see the SDK from this long on.
        time.sleep(SDK_RECHECK_SECONDS)
    instrumentor = PymongoInstrumentor()
    instrumentor.instrument()
    yield
    instrumentor.uninstrument()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    SPANS.clear()


def _ours() -> list[ReadableSpan]:
    """The spans chatkit-mongo opened, not the driver instrumentation's."""
    return [
        span
        for span in SPANS.get_finished_spans()
        if span.instrumentation_scope is not None
        and span.instrumentation_scope.name == "chatkit_mongo"
    ]


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def _thread(thread_id: str) -> ThreadMetadata:
    return ThreadMetadata(id=thread_id, created_at=datetime.now(), metadata={"note": SECRET_TEXT})


def _item(thread_id: str, item_id: str) -> AssistantMessageItem:
    return AssistantMessageItem(
        id=item_id,
        thread_id=thread_id,
        created_at=datetime.now(),
        content=[AssistantMessageContent(text=SECRET_TEXT)],
    )


def _points(name: str, namespace: str) -> list[Any]:
    """The data points of metric ``name`` for database ``namespace``: each test has a
    database of its own, while the reader's sums run over the whole process."""
    data = READER.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
        if dict(point.attributes or {})["db.namespace"] == namespace
    ]


async def test_every_store_operation_opens_a_span_with_the_database_conventions(
    database: Any,
) -> None:
    store: MongoStore[Any] = MongoStore(database, owner=lambda _: SECRET_OWNER)
    ctx = RequestContext("alice")
    await store.save_thread(_thread("thr_1"), ctx)
    await store.load_thread("thr_1", ctx)
    await store.add_thread_item("thr_1", _item("thr_1", "msg_1"), ctx)
    await store.save_item("thr_1", _item("thr_1", "msg_1"), ctx)
    await store.load_item("thr_1", "msg_1", ctx)
    await store.load_thread_items("thr_1", None, 5, "asc", ctx)
    await store.load_threads(5, None, "desc", ctx)
    await store.delete_thread_item("thr_1", "msg_1", ctx)
    await store.delete_thread("thr_1", ctx)

    spans = _ours()
    assert [s.name for s in spans] == [
        f"save_thread {NAMES.threads}",
        f"load_thread {NAMES.threads}",
        f"add_thread_item {NAMES.items}",
        f"save_item {NAMES.items}",
        f"load_item {NAMES.items}",
        f"load_thread_items {NAMES.items}",
        f"load_threads {NAMES.threads}",
        f"delete_thread_item {NAMES.items}",
        f"delete_thread {NAMES.threads}",
    ]
    for span in spans:
        attributes = _attributes(span)
        assert span.kind is SpanKind.INTERNAL
        assert span.status.status_code is StatusCode.UNSET
        assert attributes["db.system.name"] == "mongodb"
        assert attributes["db.namespace"] == database.name
        assert attributes["db.operation.name"] == span.name.split(" ")[0]
        assert attributes["db.collection.name"] == span.name.split(" ")[1]
        assert attributes[PREFIX + "encryption"] == "off"
        # Redaction: no owner, id or content anywhere in what is exported.
        shown = repr(attributes) + repr(span.events) + str(span.status.description)
        for secret in (SECRET_OWNER, SECRET_TEXT, "thr_1", "msg_1", "alice"):
            assert secret not in shown, (span.name, secret)
    await store.close()


async def test_the_first_operation_says_it_ran_the_index_check_and_later_ones_do_not(
    database: Any,
) -> None:
    store: MongoStore[Any] = MongoStore(database)
    ctx = RequestContext("alice")
    await store.save_thread(_thread("thr_1"), ctx)
    await store.load_thread("thr_1", ctx)
    first, second = (_attributes(s) for s in _ours())
    assert first[PREFIX + "index_check"] is True
    assert PREFIX + "index_check" not in second
    await store.close()


async def test_an_encrypted_store_says_so_and_marks_the_write_that_made_a_key(
    wire_client: Any,
) -> None:
    store: MongoStore[Any] = MongoStore(
        wire_client[f"otel_{uuid.uuid4().hex[:8]}"], encryption=fresh_encryption()
    )
    ctx = RequestContext("alice")
    await store.save_thread(_thread("thr_1"), ctx)
    await store.save_thread(_thread("thr_2"), ctx)
    await store.load_thread("thr_1", ctx)
    first, second, read = (_attributes(s) for s in _ours())
    assert {a[PREFIX + "encryption"] for a in (first, second, read)} == {"on"}
    assert first[PREFIX + "key_created"] is True
    assert PREFIX + "key_created" not in second
    assert PREFIX + "key_created" not in read
    await store.close()


async def test_a_page_span_says_what_was_asked_and_what_came_back(database: Any) -> None:
    store: MongoStore[Any] = MongoStore(database)
    ctx = RequestContext("alice")
    await store.save_thread(_thread("thr_1"), ctx)
    for n in range(3):
        await store.add_thread_item("thr_1", _item("thr_1", f"msg_{n}"), ctx)
    SPANS.clear()
    await store.load_thread_items("thr_1", None, 2, "asc", ctx)
    await store.load_thread_items("thr_1", "msg_1", limit=5, order="asc", context=ctx)
    first, second = (_attributes(s) for s in _ours())
    assert (first[PREFIX + "page.limit"], first[PREFIX + "page.returned"]) == (2, 2)
    assert first[PREFIX + "page.has_more"] is True
    assert (second[PREFIX + "page.limit"], second[PREFIX + "page.returned"]) == (5, 1)
    assert second[PREFIX + "page.has_more"] is False
    await store.close()


async def test_an_error_is_recorded_by_type_and_counted_without_its_message(
    database: Any,
) -> None:
    store: MongoStore[Any] = MongoStore(database)
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_missing", RequestContext("alice"))
    (span,) = _ours()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "chatkit.store.NotFoundError"
    assert _attributes(span)["error.type"] == "chatkit.store.NotFoundError"
    assert not span.events  # the message names the thread: not recorded by default
    (errors,) = _points(PREFIX + "operation.errors", database.name)
    assert errors.value == 1
    assert errors.attributes["db.operation.name"] == "load_thread"
    assert errors.attributes["error.type"] == "chatkit.store.NotFoundError"
    await store.close()


async def test_identifiers_and_messages_are_recorded_when_the_application_opts_in(
    database: Any,
) -> None:
    store: MongoStore[Any] = MongoStore(database, telemetry=Telemetry(record_identifiers=True))
    ctx = RequestContext("alice")
    await store.save_thread(_thread("thr_1"), ctx)
    await store.load_thread_items("thr_1", None, 5, "asc", ctx)
    with pytest.raises(NotFoundError):
        await store.load_item("thr_1", "msg_gone", ctx)
    _, page, failed = _ours()
    assert _attributes(page)[PREFIX + "thread_id"] == "thr_1"
    assert _attributes(failed)[PREFIX + "item_id"] == "msg_gone"
    assert failed.status.description == "Item msg_gone not found in thread thr_1"
    assert [event.name for event in failed.events] == ["exception"]
    # Content stays out even then.
    assert all(SECRET_TEXT not in repr(_attributes(s)) for s in _ours())
    await store.close()


async def test_a_store_given_its_own_providers_records_there_and_not_globally(
    database: Any,
) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    store: MongoStore[Any] = MongoStore(database, telemetry=telemetry)
    await store.save_thread(_thread("thr_1"), RequestContext("alice"))
    assert [s.name for s in spans.get_finished_spans()] == [f"save_thread {NAMES.threads}"]
    assert _ours() == []
    data = reader.get_metrics_data()
    assert data is not None
    names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert "db.client.operation.duration" in names
    await store.close()


async def test_a_document_a_page_skips_is_counted_once_in_the_metrics(database: Any) -> None:
    store: MongoStore[Any] = MongoStore(database)
    ctx = RequestContext("alice")
    await store.save_thread(_thread("thr_1"), ctx)
    for n in range(3):
        await store.add_thread_item("thr_1", _item("thr_1", f"msg_{n}"), ctx)
    await damage_item(database, DAMAGES["newer item type"], "alice", "thr_1", "msg_1")
    for _ in range(2):  # the second read of the page counts it again: it skipped it again
        page = await store.load_thread_items("thr_1", None, 10, "asc", ctx)
        assert [item.id for item in page.data] == ["msg_0", "msg_2"]
    (skipped,) = _points(PREFIX + "documents.skipped", database.name)
    assert skipped.value == 2
    assert dict(skipped.attributes)["db.collection.name"] == NAMES.items
    assert store.unreadable.total == 2
    await store.close()


async def test_turned_off_a_store_records_nothing(database: Any) -> None:
    store: MongoStore[Any] = MongoStore(database, telemetry=Telemetry(enabled=False))
    await store.save_thread(_thread("thr_1"), RequestContext("alice"))
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_2", RequestContext("alice"))
    assert _ours() == []
    assert _points("db.client.operation.duration", database.name) == []
    await store.close()


async def test_the_duration_histogram_counts_every_call_per_operation(database: Any) -> None:
    store: MongoStore[Any] = MongoStore(database)
    ctx = RequestContext("alice")
    await store.save_thread(_thread("thr_1"), ctx)
    for _ in range(3):
        await store.load_thread("thr_1", ctx)
    with pytest.raises(NotFoundError):
        await store.load_thread("thr_2", ctx)
    points: list[HistogramDataPoint] = _points("db.client.operation.duration", database.name)
    labels = [dict(p.attributes or {}) for p in points]
    counts = {
        (label["db.operation.name"], label.get("error.type")): p.count
        for label, p in zip(labels, points, strict=True)
    }
    assert counts == {
        ("save_thread", None): 1,
        ("load_thread", None): 3,
        ("load_thread", "chatkit.store.NotFoundError"): 1,
    }
    assert all(label["db.collection.name"] == NAMES.threads for label in labels)
    assert all(p.sum > 0 for p in points)
    await store.close()


async def test_the_drivers_command_spans_nest_under_the_store_operation(
    backend: str, database: Any
) -> None:
    """PyMongo's command monitoring, which the instrumentation listens to, runs in the
    caller's context on PyMongo Async and (through the executor's copied context) on
    Motor: each command's CLIENT span is a child of the operation's span. The doubles
    send no commands."""
    store: MongoStore[Any] = MongoStore(database, auto_create_indexes=False)
    ctx = RequestContext("alice")
    await store.save_thread(_thread("thr_1"), ctx)
    SPANS.clear()
    await store.load_thread("thr_1", ctx)
    commands = [s for s in SPANS.get_finished_spans() if s.kind is SpanKind.CLIENT]
    (operation,) = _ours()
    if not is_server(backend):
        assert commands == []
        return
    assert [s.name for s in commands] == [f"{database.name}.find"]
    assert commands[0].parent is not None
    assert commands[0].parent.span_id == operation.context.span_id
    await store.close()


async def test_attachment_operations_are_spans_that_say_how_many_bytes(
    gridfs_store: MongoStore[Any],
) -> None:
    attachments = make_attachments(gridfs_store)
    ctx = RequestContext("alice")
    created = await attachments.create_and_upload("a.txt", "text/plain", b"x" * 1000, ctx)
    data = await attachments.read_bytes(created.id, ctx)
    await attachments.delete_attachment(created.id, ctx)
    names = [s.name.split(" ")[0] for s in _ours()]
    assert names == ["create_and_upload", "open_download", "read_bytes", "delete_attachment"]
    by_name = {s.name.split(" ")[0]: _attributes(s) for s in _ours()}
    assert by_name["read_bytes"][PREFIX + "bytes"] == len(data) == 1000
    assert by_name["open_download"][PREFIX + "bytes"] == 1000
    assert all(a["db.collection.name"] == NAMES.attachments for a in by_name.values())
    download, read = _ours()[1:3]
    assert download.parent is not None
    assert download.parent.span_id == read.context.span_id  # read_bytes opens a download


_LATE_SDK: Final = """
import time
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from chatkit_mongo._telemetry import SDK_RECHECK_SECONDS, Instruments

instruments = Instruments(None, None)
before = instruments.tracing()
trace.set_tracer_provider(TracerProvider())
at_once = instruments.tracing()
time.sleep(SDK_RECHECK_SECONDS)
print(before, at_once, instruments.tracing(), Instruments(None, None).tracing())
"""


def test_spans_start_once_an_sdk_is_configured_even_after_the_first_call() -> None:
    """With the API alone no span is started (it would record nothing); an SDK
    configured later is asked about at most every SDK_RECHECK_SECONDS, then used."""
    late = subprocess.run(
        [sys.executable, "-c", _LATE_SDK],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert late.stdout.split() == ["False", "False", "True", "True"]


def test_the_recorder_is_named_the_api_alone_or_the_sdk_provider() -> None:
    assert recorder() == "tracer provider opentelemetry.sdk.trace.TracerProvider"
    alone = subprocess.run(
        [sys.executable, "-c", "from chatkit_mongo._telemetry import recorder; print(recorder())"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert alone.stdout.strip() == "opentelemetry-api, no SDK configured"


def test_a_cli_command_span_records_its_error_by_type() -> None:
    with pytest.raises(ChatKitMongoError), command_span("purge"):
        raise ChatKitMongoError("no owner named")
    (span,) = _ours()
    assert span.name == "chatkit-mongo purge"
    assert _attributes(span)["error.type"] == "chatkit_mongo.errors.ChatKitMongoError"
    assert span.status.status_code is StatusCode.ERROR


class _OldMeter:
    """An API meter from before 1.30: ``create_histogram`` takes no bucket advice."""

    def __init__(self) -> None:
        self.made: list[dict[str, Any]] = []

    def create_histogram(self, name: str, unit: str = "", description: str = "") -> str:
        self.made.append({"name": name, "unit": unit})
        return name


class _NewMeter(_OldMeter):
    def create_histogram(  # type: ignore[override]
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: list[float],
    ) -> str:
        self.made.append({"name": name, "buckets": explicit_bucket_boundaries_advisory})
        return name


def test_the_histogram_gets_the_conventions_buckets_and_works_without_them() -> None:
    new, old = _NewMeter(), _OldMeter()
    assert duration_histogram(new) == duration_histogram(old) == "db.client.operation.duration"
    assert new.made == [{"name": "db.client.operation.duration", "buckets": [*DURATION_BUCKETS]}]
    assert old.made == [{"name": "db.client.operation.duration", "unit": "s"}]


async def test_one_chatkit_turn_through_the_example_is_a_tree_request_store_commands(
    gridfs_backend: str, gridfs_store: MongoStore[Any]
) -> None:
    """The example's lines: a span per request (ASGI), the store's operations under it,
    and, on the real drivers, MongoDB's commands under those."""
    store: MongoStore[Any] = MongoStore(gridfs_store.database)
    app = create_app(store)
    trace_requests(app)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            SPANS.clear()
            response = await http.post(
                "/chatkit",
                json={
                    "type": "threads.create",
                    "params": {
                        "input": {
                            "content": [{"type": "input_text", "text": SECRET_TEXT}],
                            "attachments": [],
                            "inference_options": {},
                        }
                    },
                },
                headers={"X-User-Id": SECRET_OWNER},
            )
            assert response.status_code == 200, response.text
    spans = SPANS.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}
    (request,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert request.name == "POST /chatkit"

    def parent_of(span: ReadableSpan) -> ReadableSpan | None:
        return None if span.parent is None else by_id.get(span.parent.span_id)

    ours = _ours()
    assert [s.name.split(" ")[0] for s in ours] == [
        "save_thread",
        "add_thread_item",  # the user's message
        "load_thread_items",  # respond() reads the history
        "add_thread_item",  # the reply
    ]
    assert all(parent_of(s) is request for s in ours)
    commands = [s for s in spans if s.kind is SpanKind.CLIENT]
    if is_server(gridfs_backend):
        assert commands
        assert {parent_of(c) for c in commands} <= set(ours)
        assert all(parent_of(s) is not None for s in ours)
    else:
        assert commands == []
    for span in ours:
        shown = repr(_attributes(span))
        assert SECRET_OWNER not in shown
        assert SECRET_TEXT not in shown


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver on loopback: keeps each request's path and body."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads what arrived."""


def test_the_examples_otlp_providers_export_spans_and_metrics_to_the_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collector = HTTPServer(("127.0.0.1", 0), _Collector)
    worker = threading.Thread(target=collector.serve_forever, daemon=True)
    worker.start()
    try:
        host, port = collector.server_address[:2]
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{host!s}:{port}")
        tracer_provider, meter_provider = otlp_providers()
        with tracer_provider.get_tracer("example").start_as_current_span("load_thread probe"):
            pass
        meter_provider.get_meter("example").create_counter("probe.calls").add(1)
        assert tracer_provider.force_flush()
        assert meter_provider.force_flush()
        tracer_provider.shutdown()
        meter_provider.shutdown()
    finally:
        collector.shutdown()
        worker.join()
    paths = {path for path, _ in _Collector.received}
    assert paths == {"/v1/traces", "/v1/metrics"}
    bodies = b"".join(body for _, body in _Collector.received)
    assert b"load_thread probe" in bodies
    assert b"probe.calls" in bodies


def test_every_cli_command_is_a_span_and_its_error_is_named_by_its_cause(
    tmp_path: Path,
) -> None:
    uri = capabilities.server().uri
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": 2, "kind": "nonsense"}\n', encoding="utf-8")
    ran = CliRunner().invoke(cli, ["init", "--dry-run"])
    failed = CliRunner().invoke(cli, ["import", str(bad), "--uri", uri, "-d", "otel_cli"])
    assert ran.exit_code == 0, ran.output
    assert failed.exit_code == 1, failed.output
    ok, refused = _ours()
    assert (ok.name, _attributes(ok)[PREFIX + "command"]) == ("chatkit-mongo init", "init")
    assert ok.status.status_code is StatusCode.UNSET
    assert refused.name == "chatkit-mongo import"
    assert _attributes(refused)["error.type"] == "chatkit_mongo.errors.ImportFileError"
    assert refused.status.status_code is StatusCode.ERROR


def test_serve_with_otel_console_prints_each_store_operations_span(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = capabilities.server().uri
    main = "from chatkit_mongo.apps.cli import main; main()"
    arguments = ["serve", "--uri", uri, "-d", f"otel_serve_{port}", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, "-c", main, *arguments],
        env={**os.environ, "PYTHONPATH": str(ROOT), "CHATKIT_MONGO_OTEL_CONSOLE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        answer = first_answer(port, process)
        assert answer.status_code == 200, answer.text
    finally:
        process.send_signal(signal.SIGINT)
        _, log = process.communicate(timeout=30)
    spans = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    names = [span["name"] for span in spans]
    assert "load_threads chatkit_threads" in names
    listed = spans[names.index("load_threads chatkit_threads")]
    assert listed["attributes"]["db.operation.name"] == "load_threads"
    assert listed["attributes"]["chatkit_mongo.page.returned"] == 0
