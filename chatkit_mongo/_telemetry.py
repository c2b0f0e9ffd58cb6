"""OpenTelemetry spans and metrics for every public operation of the two stores.

Why only ``opentelemetry-api``: a library records and the application chooses the SDK
and its exporters (OpenTelemetry's rule for libraries). The API is imported once, here;
where it is not installed, :func:`traced` hands back the method itself, so no call pays
anything. With the API and no SDK configured, spans are the API's non-recording ones and
the instruments are no-ops: a call pays one wrapper and a context switch, which the
benchmark's overhead phase measures (``--telemetry``).

What is recorded follows the semantic conventions for database clients:
``db.system.name``, ``db.namespace``, ``db.collection.name``, ``db.operation.name`` on
each span, and the ``db.client.operation.duration`` histogram. Our own attributes carry
the :data:`PREFIX`. Why our spans are ``INTERNAL``: one store operation is several
driver commands, and the driver's spans under ours (``opentelemetry-instrumentation-
pymongo``) are the ``CLIENT`` spans, one per request to the server.

Redaction: no owner, no id and no content in any attribute, and an error is recorded by
its type alone (messages name ids), unless the store was built with
``telemetry=Telemetry(record_identifiers=True)``.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, Protocol, TypeVar

from .schema import CollectionNames, Kind

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

try:
    from opentelemetry import metrics, trace
except ImportError:  # pragma: no cover - the CI's bare-wheel check runs without it
    metrics = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]

PREFIX: Final = "chatkit_mongo."
"""The prefix of every attribute and metric of our own (not a semantic convention's)."""
INSTRUMENTATION_NAME: Final = "chatkit_mongo"
IDENTIFIERS: Final = ("thread_id", "item_id", "attachment_id")
"""The arguments recorded (as ``chatkit_mongo.thread_id``...) only when opted in."""
SDK_RECHECK_SECONDS: Final = 1.0
"""An SDK that the application configures after a store's first call records that
store's spans from at most this long later (see :meth:`Instruments.tracing`)."""
DURATION_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
"""The semantic conventions' advice for ``db.client.operation.duration``, in seconds."""

_P = ParamSpec("_P")
_R = TypeVar("_R")
_S = TypeVar("_S", bound="Instrumented")


@dataclass(frozen=True)
class Telemetry:
    """How a store reports itself to OpenTelemetry: ``MongoStore(telemetry=...)``.

    Args:
        enabled: open spans and record metrics (when the API is installed).
        record_identifiers: also record the thread, item and attachment ids of each
            call and the messages of errors. Off by default: ids are personal data in
            many deployments, and messages name them.
        tracer_provider: where the spans go; default the process's (``opentelemetry.
            trace.set_tracer_provider``), even one set after the store was built.
        meter_provider: where the metrics go; default the process's.
    """

    enabled: bool = True
    record_identifiers: bool = False
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None


@dataclass(frozen=True)
class Target:
    """Where a store's operations go: the values of the database attributes, built once
    per store (:meth:`of`), so that an operation only looks them up."""

    namespace: str
    collections: Mapping[Kind, str]
    encryption: str
    """``"off"`` or ``"on"``: the store's encryption mode, on every span."""
    settings: Telemetry
    instruments: Instruments | None
    """None without the API, or when the settings turn telemetry off."""
    made: dict[tuple[str, Kind], tuple[str, Mapping[str, Any]]] = field(
        default_factory=dict, compare=False, repr=False
    )
    """:meth:`operation`'s answers so far: a store has a dozen operations."""

    @classmethod
    def of(
        cls, namespace: str, names: CollectionNames, encryption: str, settings: Telemetry
    ) -> Target:
        kinds: tuple[Kind, ...] = ("thread", "item", "attachment")
        instruments = (
            instruments_for(settings.tracer_provider, settings.meter_provider)
            if settings.enabled
            else None
        )
        return cls(namespace, names.by_kind(kinds), encryption, settings, instruments)

    def operation(self, operation: str, kind: Kind) -> tuple[str, Mapping[str, Any]]:
        """The span name and attributes of ``operation`` on ``kind``'s collection, made
        once per store and operation: a call then only looks them up."""
        made = self.made.get((operation, kind))
        if made is not None:
            return made
        collection = self.collections[kind]
        attributes = {
            "db.system.name": "mongodb",
            "db.namespace": self.namespace,
            "db.collection.name": collection,
            "db.operation.name": operation,
            PREFIX + "encryption": self.encryption,
        }
        made = f"{operation} {collection}", MappingProxyType(attributes)
        self.made[operation, kind] = made
        return made


class Instrumented(Protocol):
    """What :func:`traced` reads from the object whose method it wraps."""

    @property
    def telemetry_target(self) -> Target: ...


class Instruments:
    """The tracer and the instruments that one pair of providers gives (the process's by
    default: the API's proxies then pick up an SDK configured later)."""

    def __init__(
        self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
    ) -> None:
        assert trace is not None
        assert metrics is not None
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)
        self.sdk_seen = tracer_provider is not None
        self.next_check = 0.0
        meter = metrics.get_meter(INSTRUMENTATION_NAME, meter_provider=meter_provider)
        self.duration = duration_histogram(meter)
        self.errors = meter.create_counter(
            PREFIX + "operation.errors",
            unit="{error}",
            description="Store operations that raised, by operation and error type.",
        )
        self.skipped = meter.create_counter(
            PREFIX + "documents.skipped",
            unit="{document}",
            description="Stored documents a page left out because they could not be read.",
        )

    def tracing(self) -> bool:
        """Whether a span could record: the store has a provider of its own, or the
        process's is no longer the API's proxy (an SDK is configured).

        Why not start a span regardless: with the API alone, starting and ending a span
        that records nothing was most of what telemetry cost a call (8 to 15 us of a
        300 us loopback read, measured with ``bench --telemetry``). Why asked at most
        every :data:`SDK_RECHECK_SECONDS` until an SDK is seen: asking the API costs
        about as much as such a span (it reads the environment each time).
        """
        if self.sdk_seen:
            return True
        now = time.monotonic()
        if now < self.next_check:
            return False
        assert trace is not None
        self.next_check = now + SDK_RECHECK_SECONDS
        self.sdk_seen = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        return self.sdk_seen


@functools.cache
def instruments_for(
    tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
) -> Instruments | None:
    """One :class:`Instruments` per pair of providers, shared by the stores that name
    them; None without the API."""
    return None if trace is None else Instruments(tracer_provider, meter_provider)


def duration_histogram(meter: Any) -> Any:
    """``db.client.operation.duration`` in seconds, with the conventions' bucket advice.

    Why the fallback: the ``otel`` extra asks for API 1.30, the first to take the
    advice, but another package (``mcp`` asks for 1.28) may have installed an older
    one; the store must then still import and record, with the SDK's buckets.
    """
    options = {"unit": "s", "description": "Duration of chatkit-mongo store operations."}
    try:
        return meter.create_histogram(
            "db.client.operation.duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            **options,
        )
    except TypeError:
        return meter.create_histogram("db.client.operation.duration", **options)


def error_type(exc: BaseException) -> str:
    """The semantic conventions' ``error.type`` of an exception: its full class name."""
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def _result_attributes(result: Any) -> dict[str, Any]:
    """What a return value tells without content: a page's size, a download's length."""
    if isinstance(result, bytes):
        return {PREFIX + "bytes": len(result)}
    has_more = getattr(result, "has_more", None)
    if isinstance(has_more, bool):
        return {PREFIX + "page.returned": len(result.data), PREFIX + "page.has_more": has_more}
    length = getattr(result, "length", None)
    if isinstance(length, int) and not isinstance(length, bool):
        return {PREFIX + "bytes": length}
    return {}


def traced(
    operation: str, kind: Kind
) -> Callable[
    [Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]]],
    Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]],
]:
    """Wrap a store's public async method in a span named ``"<operation> <collection>"``
    and record its duration (and its error, by type) in the metrics.

    ``kind`` names the collection (a key of the target's ``collections``). The page
    size asked is read from a ``limit`` argument, what came back from the result.
    """

    def decorate(
        method: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]],
    ) -> Callable[Concatenate[_S, _P], Coroutine[Any, Any, _R]]:
        if trace is None:
            return method
        signature = inspect.signature(method)
        names = list(signature.parameters)
        # The position of ``limit`` among the arguments after ``self``.
        limit_at = names.index("limit") - 1 if "limit" in names else None

        def describe(span: Any, settings: Telemetry, args: Any, kwargs: Any) -> None:
            """The call's own attributes: the page size asked, the ids if opted in."""
            if limit_at is not None:
                limit = kwargs.get("limit", args[limit_at] if limit_at < len(args) else None)
                if isinstance(limit, int):
                    span.set_attribute(PREFIX + "page.limit", limit)
            if settings.record_identifiers:
                bound = signature.bind_partial(None, *args, **kwargs).arguments
                for name in IDENTIFIERS:
                    if isinstance(bound.get(name), str):
                        span.set_attribute(PREFIX + name, bound[name])

        @functools.wraps(method)
        async def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            target = self.telemetry_target
            instruments = target.instruments
            if instruments is None:
                return await method(self, *args, **kwargs)
            settings = target.settings
            name, attributes = target.operation(operation, kind)
            span = (
                instruments.tracer.start_span(
                    name, kind=trace.SpanKind.INTERNAL, attributes=attributes
                )
                if instruments.tracing()
                else trace.INVALID_SPAN
            )
            started = time.perf_counter()
            try:
                # Why the span becomes current only when it records: switching the
                # context is most of a span's cost, and in an unsampled trace nothing
                # would read it.
                if not span.is_recording():
                    return await method(self, *args, **kwargs)
                describe(span, settings, args, kwargs)
                with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                    result = await method(self, *args, **kwargs)
                span.set_attributes(_result_attributes(result))
                return result
            except Exception as exc:
                failed = error_type(exc)
                attributes = {**attributes, "error.type": failed}
                span.set_attribute("error.type", failed)
                span.set_status(
                    trace.StatusCode.ERROR, str(exc) if settings.record_identifiers else failed
                )
                if settings.record_identifiers:
                    span.record_exception(exc)
                instruments.errors.add(1, attributes)
                raise
            finally:
                instruments.duration.record(time.perf_counter() - started, attributes)
                span.end()

        return wrapper

    return decorate


def recorder() -> str:
    """What records the process's spans: no API at all, the API alone (no SDK
    configured: spans record nothing), or an SDK's tracer provider."""
    if trace is None:
        return "opentelemetry-api not installed (nothing is wrapped)"
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        return "opentelemetry-api, no SDK configured"
    return f"tracer provider {type(provider).__module__}.{type(provider).__qualname__}"


def note(name: str, value: bool | int | str) -> None:
    """Record ``chatkit_mongo.<name>`` on the current span (the operation under way),
    e.g. that it ran the index check or made an owner's key. No-op without a span."""
    if trace is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(PREFIX + name, value)


def count_skipped(target: Target, collection: str) -> None:
    """Add one to ``chatkit_mongo.documents.skipped``: a document of ``collection`` that a
    page left out because the running ChatKit cannot read it (see ``_readable``)."""
    if target.instruments is None:
        return
    target.instruments.skipped.add(
        1,
        {
            "db.system.name": "mongodb",
            "db.namespace": target.namespace,
            "db.collection.name": collection,
        },
    )


@contextmanager
def command_span(command: str) -> Iterator[None]:
    """A span around one CLI command, named ``chatkit-mongo <command>``. An error is
    recorded by its type, the cause's where the CLI turned one of ours into its own
    (``click.ClickException`` from a ``ChatKitMongoError``)."""
    instruments = instruments_for(None, None)
    if instruments is None:
        yield
        return
    with instruments.tracer.start_as_current_span(
        f"chatkit-mongo {command}",
        attributes={PREFIX + "command": command},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except Exception as exc:
            failed = error_type(exc.__cause__ or exc)
            span.set_attribute("error.type", failed)
            span.set_status(trace.StatusCode.ERROR, failed)
            raise
