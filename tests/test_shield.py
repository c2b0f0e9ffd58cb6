"""``shielded``: a write runs to its end whatever cancels its caller, and the caller
still learns of the cancellation once the write is done.

Generated writes wait in every way a driver call does (a bare yield, a future another
task completes, a timer), end in a result or an error, and are cancelled after every
number of event-loop steps, once or repeatedly.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatkit_mongo._driver import shielded

Wait = Literal["yield", "future", "timer", "failed future", "cancelled future"]
WAITS = st.lists(
    st.sampled_from(["yield", "future", "timer", "failed future", "cancelled future"]),
    max_size=6,
)
"""How a driver call waits: a bare yield, a future another callback completes, a timer,
and futures of its own that fail or that something else cancels, which it handles."""


class WriteFailed(Exception):
    """The write's own error."""


class Write:
    """A write that waits as listed, records each step, and ends as told."""

    def __init__(self, waits: list[Wait], fails: bool) -> None:
        self.waits, self.fails = waits, fails
        self.steps_done = 0
        self.started = False
        self.finished = False
        self.own_futures: list[asyncio.Future[int]] = []

    async def run(self) -> str:
        loop = asyncio.get_running_loop()
        for wait in self.waits:
            if wait == "yield":
                await asyncio.sleep(0)
            elif wait == "timer":
                await asyncio.sleep(0.0005)
            elif wait == "future":
                future: asyncio.Future[int] = loop.create_future()
                self.own_futures.append(future)
                loop.call_soon(future.set_result, 7)
                assert await future == 7
            elif wait == "failed future":
                failing: asyncio.Future[int] = loop.create_future()
                loop.call_soon(failing.set_exception, ConnectionResetError("one read failed"))
                with pytest.raises(ConnectionResetError):
                    await failing
            else:  # the driver cancels a future of its own (a timeout) and carries on
                abandoned: asyncio.Future[int] = loop.create_future()
                loop.call_soon(abandoned.cancel)
                with pytest.raises(asyncio.CancelledError):
                    await abandoned
            self.steps_done += 1
        self.finished = True
        if self.fails:
            raise WriteFailed("refused")
        return "written"


async def _cancelled_after(write: Write, steps: int, repeat: bool) -> BaseException | str:
    async def caller() -> str:
        write.started = True
        return await shielded(write.run())

    task = asyncio.ensure_future(caller())
    for _ in range(steps):
        await asyncio.sleep(0)
    task.cancel()
    while repeat and not task.done():
        await asyncio.sleep(0)
        task.cancel()
    try:
        return await task
    except BaseException as exc:
        return exc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(waits=WAITS, fails=st.booleans(), steps=st.integers(0, 12), repeat=st.booleans())
def test_a_cancelled_write_finishes_then_the_cancellation_is_raised(
    waits: list[Wait], fails: bool, steps: int, repeat: bool
) -> None:
    write = Write(waits, fails)
    outcome = asyncio.run(_cancelled_after(write, steps, repeat))

    if not write.started:  # cancelled before the caller ran: nothing was begun
        assert isinstance(outcome, asyncio.CancelledError)
        assert write.steps_done == 0
        return
    assert write.finished
    assert write.steps_done == len(waits)
    assert not any(future.cancelled() for future in write.own_futures)
    if isinstance(outcome, asyncio.CancelledError):
        assert isinstance(outcome.__cause__, WriteFailed) == fails
    elif fails:  # finished before the cancel came: the write's own error
        assert isinstance(outcome, WriteFailed)
    else:
        assert outcome == "written"


@settings(max_examples=30, deadline=None)
@given(waits=WAITS, fails=st.booleans())
def test_an_uncancelled_write_gives_its_result_or_its_own_error(
    waits: list[Wait], fails: bool
) -> None:
    write = Write(waits, fails)

    async def run() -> Any:
        return await shielded(write.run())

    if fails:
        with pytest.raises(WriteFailed, match="refused"):
            asyncio.run(run())
    else:
        assert asyncio.run(run()) == "written"
    assert write.steps_done == len(waits)


async def test_the_write_outlives_a_cancel_that_comes_while_it_waits_on_the_network() -> None:
    """Cancelled while a driver future is pending: that future is not cancelled, and the
    caller's CancelledError comes only after it completed and the write went on."""
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()
    log: list[str] = []

    async def write() -> None:
        log.append(await reply)
        log.append("acknowledged")

    task = asyncio.ensure_future(shielded(write()))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0)
    assert not task.done()
    assert not reply.cancelled()
    reply.set_result("reply")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["reply", "acknowledged"]


async def test_a_timeout_inside_the_write_is_the_writes_own() -> None:
    """PyMongo wraps its socket reads in ``asyncio.wait_for``, which since Python 3.12
    times out by cancelling the task it runs in: that must reach the write as its own
    ``TimeoutError``, never its caller as a cancellation (nor leave it waiting)."""
    loop = asyncio.get_running_loop()

    async def write() -> str:
        try:
            await asyncio.wait_for(loop.create_future(), timeout=0.01)
        except TimeoutError:
            return "timed out"
        return "answered"

    task = asyncio.ensure_future(shielded(write()))
    done, _ = await asyncio.wait({task}, timeout=5)  # waits without cancelling it
    assert done, "the write's own timeout never reached it"
    assert task.result() == "timed out"
