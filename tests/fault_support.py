"""Fault injection shared by the Store and attachment fault suites: the driver errors a
write may meet, a collection that fails once, and the cancel-at-every-step driver."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal, TypeVar

import pytest
from pymongo.errors import AutoReconnect, NetworkTimeout, NotPrimaryError

_Prepared = TypeVar("_Prepared")

FAULTS: Final[dict[str, Exception]] = {
    "connection reset": AutoReconnect("connection reset by peer"),
    "timeout": NetworkTimeout("timed out waiting for the reply"),
    "not primary": NotPrimaryError("not primary", {"code": 10107}),
}
Timing = Literal["request lost", "reply lost"]
"""Whether the server never saw the write, or applied it and the reply was lost."""


class Faulty:
    """A collection whose ``method`` fails once with ``error``; everything else passes."""

    def __init__(self, inner: Any, method: str, error: Exception, timing: Timing) -> None:
        self._inner = inner
        self._method = method
        self._error: Exception | None = error
        self._timing = timing

    @property
    def fired(self) -> bool:
        """Whether the fault was injected (the method was called)."""
        return self._error is None

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name != self._method or self._error is None:
            return target

        async def failing(*args: Any, **kwargs: Any) -> Any:
            error, self._error = self._error, None
            assert error is not None
            if self._timing == "reply lost":
                await target(*args, **kwargs)
            raise error

        return failing


class Recording:
    """A collection that notes each method called on it, in order."""

    def __init__(self, inner: Any, handle: str, calls: list[tuple[str, str]]) -> None:
        self._inner, self._handle, self._calls = inner, handle, calls

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name in {"find", "aggregate"} or not callable(target):
            return target

        def noting(*args: Any, **kwargs: Any) -> Any:
            self._calls.append((self._handle, name))
            return target(*args, **kwargs)

        return noting


class FaultyNth(Faulty):
    """Lets ``earlier`` calls of the method through, then fails one."""

    def __init__(self, inner: Any, method: str, error: Exception, timing: Timing, earlier: int):
        super().__init__(inner, method, error, timing)
        self._earlier = earlier

    def __getattr__(self, name: str) -> Any:
        if name == self._method and self._earlier:
            self._earlier -= 1
            return getattr(self._inner, name)
        return super().__getattr__(name)


class Switchable:
    """A collection handle whose target a test may swap while the store runs: handed to
    the store by its public ``wrap_collection`` seam, never by patching its attributes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Switchboard:
    """``wrap_collection`` for a store under test: one :class:`Switchable` per kind."""

    def __init__(self) -> None:
        self.handles: dict[str, Switchable] = {}

    def wrap(self, kind: str, collection: Any) -> Switchable:
        handle = Switchable(collection)
        self.handles[kind] = handle
        return handle

    def __getitem__(self, kind: str) -> Switchable:
        return self.handles[kind]


async def cancel_at_every_step(
    prepare: Callable[[], Awaitable[_Prepared]],
    operation: Callable[[_Prepared], Awaitable[Any]],
    check: Callable[[_Prepared, int], Awaitable[None]],
) -> int:
    """Run ``operation`` on a fresh ``prepare()``, cancelled after 0, 1, 2... event-loop
    steps, calling ``check(prepared, steps)`` after each cancelled run; stop at the first
    run that finishes uncancelled and return how many runs were cancelled.

    Every await of the operation is thereby a cancellation point once, without knowing
    where the awaits are; the caller's ``check`` says what must hold there."""
    steps = 0
    while True:
        prepared = await prepare()
        task = asyncio.ensure_future(operation(prepared))
        for _ in range(steps):
            await asyncio.sleep(0)
        if task.done():
            await task
            return steps
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await check(prepared, steps)
        steps += 1
