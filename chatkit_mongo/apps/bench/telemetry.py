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
from .harness import Phase, Run, tabulate

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
    limit, rows = report["telemetry_limit"], report[KEY]
    if not rows:
        return []
    return tabulate(
        f"{KEY}: a store with telemetry on over one with it off ({report['telemetry_sdk']}; "
        "p50 of interleaved A/B pairs):",
        {"operation": 20, "pairs": "d", "on us": ".1f", "off us": ".1f", "ratio": ".3f", "": "s"},
        {
            name: [row[k] for k in ("pairs", "on_p50_us", "off_p50_us", "ratio")]
            + ["" if row["ratio"] <= limit else f"over {limit:.2f}"]
            for name, row in rows.items()
        },
    )


def chart(axes: Any, report: dict[str, Any]) -> None:
    axes.bar(list(report[KEY]), [figures["ratio"] for figures in report[KEY].values()])
    axes.axhline(report["telemetry_limit"], color="red", linestyle="--", label="limit")
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.tick_params(axis="x", labelrotation=60)
    axes.set_ylabel("telemetry on p50 / off p50")
    axes.set_title("OpenTelemetry with the API alone (interleaved A/B)")
    axes.legend()


PHASE: Final = Phase(KEY, measure, table, chart)
