"""Phase: many users take ChatKit turns in many threads, one call at a time: latency per
Store operation (p50, p99) and round trips per call (commands seen by a PyMongo
``CommandListener``, or on the embedded backend, calls on the collections)."""

from __future__ import annotations

from typing import Any

from .calls import new_thread, turn
from .harness import Phase, Run, Timings, tabulate


def user(index: int) -> str:
    return f"bench-user-{index}"


async def measure(run: Run) -> dict[str, Any]:
    settings, timings = run.settings, Timings(run.round_trips)
    users = [user(index) for index in range(settings.users)]
    run.progress.phase(
        f"workload: {settings.users} users take turns in {settings.threads_per_user} threads each",
        settings.users * settings.threads_per_user * settings.turns_per_thread,
    )
    threads = {
        name: [
            await new_thread(run.store, name, timings.time)
            for _ in range(settings.threads_per_user)
        ]
        for name in users
    }
    for seed in range(settings.turns_per_thread):
        for name in users:
            for thread_id in threads[name]:
                await turn(run.store, name, thread_id, settings, time=timings.time, seed=seed)
                run.progress.step()
    return {"operations": timings.summary()}


def table(report: dict[str, Any]) -> list[str]:
    return tabulate(
        "one call at a time, in ChatKit turns:",
        {"operation": 20, "calls": "d", "p50 ms": ".3f", "p99 ms": ".3f", "trips": ".2f"},
        {
            name: (row["calls"], row["p50_ms"], row["p99_ms"], row["round_trips_per_call"])
            for name, row in report["operations"].items()
        },
    )


def chart(axes: Any, report: dict[str, Any]) -> None:
    names = list(report["operations"])
    for offset, key in ((-0.2, "p50_ms"), (0.2, "p99_ms")):
        values = [report["operations"][name][key] for name in names]
        axes.bar([p + offset for p in range(len(names))], values, width=0.4, label=key[:3])
    axes.set_xticks(list(range(len(names))), names, rotation=20)
    axes.set_ylabel("latency (ms)")
    axes.set_title(f"Store operations ({report.get('backend', '?')}, {report.get('driver', '?')})")
    axes.legend()


PHASE = Phase("workload", measure, table, chart)
