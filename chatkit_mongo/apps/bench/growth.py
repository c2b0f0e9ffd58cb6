"""Phase (``--growth``, long): one thread grows to each size and the same turn is timed
there. On a real server a turn must cost the same at 10,000 items as at 100."""

from __future__ import annotations

from typing import Any, Final

from .calls import exchange, new_thread, turn
from .harness import OPERATIONS, Phase, Run, Timings, tabulate

GROWER: Final = "bench-grower"
"""The owner of the growing thread."""


async def measure(run: Run) -> dict[str, Any]:
    settings, points = run.settings, []
    if settings.growth:
        thread_id, items = await new_thread(run.store, GROWER), 0
        for size in settings.sizes:
            run.progress.phase(f"growth: one thread grows to {size} items", (size - items + 1) // 2)
            while items < size:
                await exchange(run.store, GROWER, thread_id, settings, items)
                items += 2
                run.progress.step()
            timings = Timings()
            for seed in range(settings.samples_per_size):
                await turn(run.store, GROWER, thread_id, settings, time=timings.time, seed=seed)
            points.append({"items": items, "operations": timings.summary()})
            items += 2 * settings.samples_per_size
    return {"growth": points, "growth_p50_ratio": _ratio(points)}


def _ratio(points: list[dict[str, Any]]) -> dict[str, float]:
    """p50 at the largest size over p50 at the smallest: about 1 when latency stays flat."""
    if not points:
        return {}
    first, last = points[0]["operations"], points[-1]["operations"]
    return {
        operation: round(last[operation]["p50_ms"] / first[operation]["p50_ms"], 2)
        for operation in first
        if first[operation]["p50_ms"] > 0
    }


def table(report: dict[str, Any]) -> list[str]:
    if not report["growth"]:
        return []
    ratios = ", ".join(f"{name} x{ratio}" for name, ratio in report["growth_p50_ratio"].items())
    lines = tabulate(
        "p50 ms as one thread grows:",
        {"items": 8} | dict.fromkeys(OPERATIONS[1:], ".3f"),
        {
            point["items"]: [point["operations"][name]["p50_ms"] for name in OPERATIONS[1:]]
            for point in report["growth"]
        },
    )
    return [*lines, f"largest/smallest p50: {ratios}"]


def chart(axes: Any, report: dict[str, Any]) -> None:
    if report["growth"]:
        sizes = [point["items"] for point in report["growth"]]
        for name in OPERATIONS[1:]:
            p50 = [point["operations"][name]["p50_ms"] for point in report["growth"]]
            axes.plot(sizes, p50, marker="o", label=name)
        axes.set_xscale("log")
        axes.legend()
    else:
        axes.text(0.5, 0.5, "growth phase not run (--growth)", ha="center", va="center")
    axes.set_xlabel("items in the thread")
    axes.set_ylabel("p50 latency (ms)")
    axes.set_title("Latency as a thread grows")


PHASE = Phase("growth", measure, table, chart)
