"""Doing a piece of start-up work once per client, however many calls arrive at once.

Why: after a deploy, every request of a fresh process is a "first call". Checking the
indexes on each of them sent one ``listIndexes`` per collection per call (32 concurrent
first calls: 160 ``listIndexes`` and 25 ``createIndexes``), a burst every process
aims at the primary. Here the first caller does the work and every caller that arrives
meanwhile waits for its outcome, whichever task, event loop or thread it runs on (a
Motor client or a store may be shared by loops in threads).

Why a ``concurrent.futures.Future`` and a ``threading.Lock``: an ``asyncio`` future or
lock belongs to one event loop, and the callers may sit on several.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class OncePerClient:
    """Work done once per ``(client, key)``; concurrent callers share one run of it.

    A run that fails hands its exception to every caller that waited for it, and the
    next call tries again. A run whose caller is cancelled hands over: one of the
    waiting callers runs the work instead, so a cancelled request never leaves the
    others waiting for nothing, nor takes their work down with it.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._done: dict[int, set[Hashable]] = {}
        self._running: dict[tuple[int, Hashable], concurrent.futures.Future[bool]] = {}

    def is_done(self, client: Any, key: Hashable) -> bool:
        with self._guard:
            return key in self._done.get(id(client), ())

    def mark_done(self, client: Any, key: Hashable) -> None:
        """Record the work as done for ``client``; forgotten when the client is collected."""
        with self._guard:
            done = self._done.get(id(client))
            if done is None:
                done = self._done[id(client)] = set()
                weakref.finalize(client, self._forget, id(client))
            done.add(key)

    async def run(self, client: Any, key: Hashable, work: Callable[[], Awaitable[object]]) -> None:
        """Run ``work`` unless done for ``(client, key)``, or wait for the run under way."""
        while True:
            with self._guard:
                if key in self._done.get(id(client), ()):
                    return
                flight = self._running.get((id(client), key))
                leading = flight is None
                if flight is None:
                    flight = self._running[(id(client), key)] = concurrent.futures.Future()
            if not leading:
                # Why shield: cancelling this waiter must not cancel the shared future.
                if await asyncio.shield(asyncio.wrap_future(flight)):
                    return
                continue  # its caller was cancelled before the work was done: take over
            await self._lead(client, key, flight, work)
            return

    async def _lead(
        self,
        client: Any,
        key: Hashable,
        flight: concurrent.futures.Future[bool],
        work: Callable[[], Awaitable[object]],
    ) -> None:
        try:
            await work()
        except BaseException as exc:
            with self._guard:
                del self._running[(id(client), key)]
            if isinstance(exc, Exception):
                flight.set_exception(exc)
            else:  # cancelled (or the process is stopping): another caller takes over
                flight.set_result(False)
            raise
        self.mark_done(client, key)
        with self._guard:
            del self._running[(id(client), key)]
        flight.set_result(True)

    def _forget(self, client_id: int) -> None:
        # Why no lock: the garbage collector calls this from whatever code allocates,
        # possibly while this very thread holds the guard (a deadlock with a plain Lock);
        # one dict.pop is atomic on its own.
        self._done.pop(client_id, None)
