"""Phase: many simulated users on one event loop: throughput, per-turn latency, and the
loop's lag (see :class:`~.harness.LoopLag`) at each level.

Each level gets collections of its own (fresh, so every level starts from the same
size) and each user a thread of their own; every user takes ChatKit turns back to
back for the level's duration.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ...schema import CollectionNames
from ...store import MongoStore
from .calls import new_thread, turn
from .harness import BenchSettings, Phase, Run, beside, percentile, tabulate


def level_collections(base: CollectionNames, users: int) -> CollectionNames:
    """The collections of the level with ``users`` users, beside the store's own."""
    return beside(base, f"load{users}")


def writes(base: CollectionNames, settings: BenchSettings) -> list[str]:
    return [
        name
        for users in settings.concurrency
        for name in level_collections(base, users).by_kind().values()
    ]


async def measure(run: Run) -> dict[str, Any]:
    levels = run.settings.concurrency
    if levels:
        run.progress.phase(
            "concurrency: simulated users on one event loop, "
            f"{run.settings.seconds_per_level:g} s per level",
            len(levels),
        )
    figures = []
    for users in levels:
        store = run.new_store(level_collections(run.store.collections, users))
        await store.ensure_indexes()
        figures.append(await _level(run, store, users))
        run.progress.step()
    return {"concurrency": figures}


async def _level(run: Run, store: MongoStore[Any], users: int) -> dict[str, float]:
    names = [f"load-user-{n}" for n in range(users)]
    threads = {name: await new_thread(store, name) for name in names}
    turns: list[float] = []
    deadline = time.perf_counter() + run.settings.seconds_per_level

    async def user(name: str) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await turn(store, name, threads[name], run.settings, seed=len(turns))
            turns.append(time.perf_counter() - start)
            # Between turns the model's reply streams, which gives the loop a turn even
            # on a backend that never waits (the embedded one runs in this thread).
            await asyncio.sleep(0)

    mark = await run.lag.mark()
    started = time.perf_counter()
    await asyncio.gather(*(user(name) for name in names))
    elapsed = time.perf_counter() - started
    turns.sort()
    return {
        "users": users,
        "turns": len(turns),
        "turns_per_s": round(len(turns) / elapsed, 1),
        "turn_p50_ms": round(percentile(turns, 0.50) * 1000, 2),
        "turn_p99_ms": round(percentile(turns, 0.99) * 1000, 2),
        **(await run.lag.figures(mark)),
    }


def table(report: dict[str, Any]) -> list[str]:
    keys = ("turns", "turns_per_s", "turn_p50_ms", "turn_p99_ms", "lag_p99_ms", "lag_max_ms")
    return (
        tabulate(
            "concurrent users on one event loop (turns back to back):",
            {"users": 6, "turns": "d", "turns/s": ".1f", "turn p50 ms": ".2f", "turn p99 ms": ".2f"}
            | {"lag p99 ms": ".2f", "lag max ms": ".2f"},
            {level["users"]: [level[key] for key in keys] for level in report["concurrency"]},
        )
        if report["concurrency"]
        else []
    )


def chart(axes: Any, report: dict[str, Any]) -> None:
    levels = report["concurrency"]
    users = [level["users"] for level in levels]
    axes.plot(users, [level["turns_per_s"] for level in levels], marker="o", label="turns/s")
    axes.set_xscale("log", base=2)
    axes.set_xlabel("concurrent users on one event loop")
    axes.set_ylabel("turns per second")
    lag = axes.twinx()
    lag.plot(users, [level["lag_p99_ms"] for level in levels], "r--", marker="s", label="lag p99")
    lag.set_ylabel("event loop lag p99 (ms)")
    axes.set_title("Concurrency")
    axes.legend(loc="upper left")
    lag.legend(loc="upper right")


PHASE = Phase("concurrency", measure, table, chart, writes)
