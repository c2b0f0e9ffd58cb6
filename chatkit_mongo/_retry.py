"""Clean-up steps retried across a network fault: the one retry policy of the library.

Why a retry of our own, when drivers retry writes: they retry once, and only on a
replica set or sharded cluster (a standalone server has no retryable writes), and a
clean-up runs just after a network error, when it is most likely to meet another.
PyMongo then pauses the server's connection pool until its monitor reaches the server
again (at most ``minHeartbeatFrequencyMS``, 500 ms, later), and every command fails at
once meanwhile: a clean-up retried at once would fail again. Hence a few waits that
together outlast that check.

Only for steps that are safe to repeat (each is a conditional update, a delete, or a
read), so a step whose reply was lost is simply run again. A step that still fails is
left to the upload lease and the orphan sweep, which is why its caller may give up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

from pymongo.errors import ConnectionFailure

_T = TypeVar("_T")

RETRY_DELAYS: Final = (0.1, 0.5, 1.0)
"""Seconds waited before each retry: 1.6 s in all, past PyMongo's paused-pool window."""


async def retried(step: Callable[[], Awaitable[_T]]) -> _T:
    """``step()``, run again after each of :data:`RETRY_DELAYS` while it fails with a
    connection error (reset, timeout, not primary); the last failure is raised."""
    for delay in RETRY_DELAYS:
        try:
            return await step()
        except ConnectionFailure:
            await asyncio.sleep(delay)
    return await step()
