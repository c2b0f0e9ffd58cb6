"""Many simulated users on one event loop: throughput, per-turn latency, loop lag.

Why the loop's lag: a ChatKit server serves every request on one event loop thread, so
any CPU the store (or a driver) spends there delays every other request. A ticker that
asks to wake every millisecond measures by how much it wakes late; its p99 and maximum
are what a streaming response would stutter by.

Each level gets collections of its own (fresh, so every level starts from the same
size) and each user a thread of their own; every user takes ChatKit turns back to back
for the level's duration.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    InferenceOptions,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)

from ..schema import CollectionNames
from ..store import MongoStore

TICK: Final = 0.001
"""The ticker's period (1 ms)."""
_PAGE: Final = 20


def level_collections(base: CollectionNames, users: int) -> CollectionNames:
    """The collections of the level with ``users`` users, beside the store's own."""
    return CollectionNames(
        threads=f"{base.threads}_load{users}",
        items=f"{base.items}_load{users}",
        attachments=f"{base.attachments}_load{users}",
        bucket=f"{base.bucket}_load{users}",
    )


def user_message(
    store: MongoStore[Any], thread: ThreadMetadata, context: Any, text: str
) -> UserMessageItem:
    """A user's message as ChatKit builds it, with the store's item id; shared by every
    benchmark phase so they all write the same documents."""
    return UserMessageItem(
        id=store.generate_item_id("message", thread, context),
        thread_id=thread.id,
        created_at=datetime.now(),
        content=[UserMessageTextContent(text=text)],
        inference_options=InferenceOptions(),
    )


def assistant_message(
    store: MongoStore[Any], thread: ThreadMetadata, context: Any, text: str
) -> AssistantMessageItem:
    """The assistant's reply as ChatKit builds it (see :func:`user_message`)."""
    return AssistantMessageItem(
        id=store.generate_item_id("message", thread, context),
        thread_id=thread.id,
        created_at=datetime.now(),
        content=[AssistantMessageContent(text=text)],
    )


async def _turn(store: MongoStore[Any], user: str, thread_id: str, words: str) -> None:
    """What ChatKit does for one user message (see :mod:`chatkit_mongo.apps.bench`)."""
    context = {"user_id": user}
    thread = await store.load_thread(thread_id, context)
    await store.add_thread_item(thread_id, user_message(store, thread, context, words), context)
    await store.load_thread_items(thread_id, None, _PAGE, "desc", context)
    await store.add_thread_item(
        thread_id, assistant_message(store, thread, context, words), context
    )
    await store.load_threads(_PAGE, None, "desc", context)


async def run_level(
    store: MongoStore[Any], users: int, seconds: float, reply_words: int = 40
) -> dict[str, float]:
    """``users`` users taking turns for ``seconds`` on ``store``; the level's figures."""
    words = " ".join(["word"] * reply_words)
    names = [f"load-user-{n}" for n in range(users)]
    threads = {}
    for name in names:
        thread = ThreadMetadata(id=store.generate_thread_id(None), created_at=datetime.now())
        await store.save_thread(thread, {"user_id": name})
        threads[name] = thread.id

    turns: list[float] = []
    lags: list[float] = []
    deadline = time.perf_counter() + seconds

    async def user(name: str) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await _turn(store, name, threads[name], words)
            turns.append(time.perf_counter() - start)
            # Between turns the model's reply streams, which gives the loop a turn even
            # on a backend that never waits (the embedded one runs in this thread).
            await asyncio.sleep(0)

    async def ticker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await asyncio.sleep(TICK)
            lags.append(max(time.perf_counter() - start - TICK, 0.0))

    started = time.perf_counter()
    await asyncio.gather(ticker(), *(user(name) for name in names))
    elapsed = time.perf_counter() - started
    turns.sort()
    lags.sort()
    return {
        "users": users,
        "turns": len(turns),
        "turns_per_s": round(len(turns) / elapsed, 1),
        "turn_p50_ms": round(percentile(turns, 0.50) * 1000, 2),
        "turn_p99_ms": round(percentile(turns, 0.99) * 1000, 2),
        "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 2),
        "lag_max_ms": round(lags[-1] * 1000, 2) if lags else 0.0,
    }


async def measure_concurrency(
    store: MongoStore[Any],
    levels: Sequence[int],
    seconds: float,
    *,
    reply_words: int = 40,
    step: Callable[[], None] = lambda: None,
) -> list[dict[str, float]]:
    """Every level on collections of its own beside ``store``'s; ``step`` after each."""
    figures = []
    for users in levels:
        level_store: MongoStore[Any] = MongoStore(
            store.database, collections=level_collections(store.collections, users)
        )
        await level_store.ensure_indexes()
        figures.append(await run_level(level_store, users, seconds, reply_words))
        step()
    return figures


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest rank: a value that was measured, never an interpolation between two."""
    if not ordered:
        return 0.0
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]
