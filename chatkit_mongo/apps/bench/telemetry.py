"""Phase: what OpenTelemetry costs a store when the application records nothing.

A library's telemetry must cost next to nothing where nobody collects it: with
``opentelemetry-api`` installed (``mcp``, a ChatKit dependency, installs it) and no SDK
configured, each span is a non-recording one. Each Store operation is timed on a store
with its spans and metrics on (the default) against the same store with them off
(``Telemetry(enabled=False)``), in interleaved pairs on one collection set: their ratio
is the whole cost. The goal is at most :data:`LIMIT`.
"""

from __future__ import annotations

from typing import Any, Final

from ..._telemetry import Telemetry, recorder
from .calls import StoreCalls
from .harness import Phase, Run, ratio_chart, ratio_table

KEY: Final = "telemetry"
LIMIT: Final = 1.02
"""The store with telemetry on may cost at most 2% more than with it off."""


async def measure(run: Run) -> dict[str, Any]:
    if not run.settings.pairs:
        return {KEY: {}, "telemetry_limit": LIMIT, "telemetry_sdk": recorder()}
    collections = run.store.collections
    on = StoreCalls(run.new_store(collections), "bench-telemetry-on", run.settings)
    off_store = run.new_store(collections, telemetry=Telemetry(enabled=False))
    off = StoreCalls(off_store, "bench-telemetry-off", run.settings)
    await on.seed()
    await off.seed()
    label = f"{KEY}: spans and metrics on vs off, interleaved A/B pairs"
    figures = await run.ab(label, on.sides(), off.sides(), ("on", "off"))
    return {KEY: figures, "telemetry_limit": LIMIT, "telemetry_sdk": recorder()}


def table(report: dict[str, Any]) -> list[str]:
    if not report[KEY]:
        return []
    title = (
        f"{KEY}: a store with telemetry on over one with it off ({report['telemetry_sdk']}; "
        "p50 of interleaved A/B pairs):"
    )
    return ratio_table(title, report[KEY], ("on", "off"), report["telemetry_limit"])


def chart(axes: Any, report: dict[str, Any]) -> None:
    title = "OpenTelemetry with the API alone (interleaved A/B)"
    limit = report["telemetry_limit"]
    ratio_chart(axes, report[KEY], limit, "telemetry on p50 / off p50", title)


PHASE: Final = Phase(KEY, measure, table, chart)
