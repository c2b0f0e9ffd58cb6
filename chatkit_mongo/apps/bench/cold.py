"""Phase: a cold store's first write of each model, and how long each held the loop.

Why: work done once, on first use (building a serializer, compiling, warming a cache),
lands on whichever request comes first, and stalls every other request on the event
loop meanwhile. The goal is at most :data:`~.harness.STALL_LIMIT_MS`, first call
included. This phase runs first, on a fresh store object, so from the command line
(a fresh process) nothing has written a thread, an item or an attachment before it.
On the embedded backend a call never waits for a socket, so its whole time is a stall.
"""

from __future__ import annotations

from typing import Any, Final

from .calls import file_attachment, new_thread, user_message, words
from .harness import STALL_LIMIT_MS, Phase, Run

OWNER: Final = "bench-cold"


async def measure(run: Run) -> dict[str, Any]:
    run.progress.phase("cold: a fresh store's first write of each model", 3)
    store, context = run.new_store(run.store.collections), {"user_id": OWNER}
    thread_id = ""

    async def thread() -> None:
        nonlocal thread_id
        thread_id = await new_thread(store, OWNER)

    async def item() -> None:
        await store.add_thread_item(thread_id, user_message(thread_id, words(20)), context)

    async def attachment() -> None:
        await store.save_attachment(file_attachment(thread_id), context)

    stalls = {}
    for write in (thread, item, attachment):
        stalls[write.__name__] = await run.lag.stall(write())
        run.progress.step()
    return {"first_write_stall_ms": stalls, "stall_limit_ms": STALL_LIMIT_MS}


def table(report: dict[str, Any]) -> list[str]:
    limit, stalls = report["stall_limit_ms"], report["first_write_stall_ms"]
    shown = ", ".join(
        f"{model} {ms:.2f}" + ("" if ms <= limit else f" (over {limit:g})")
        for model, ms in stalls.items()
    )
    return [f"loop stall of a cold store's first write, ms (goal <= {limit:g}): {shown}"]


PHASE = Phase("cold", measure, table)
