"""A fault-injecting TCP proxy for the MongoDB wire protocol: asyncio, loopback only,
its choices drawn from a seeded random generator.

It sits between a driver and the server and passes every message through whole. When
``faulty`` is on, each reply to a command (not to the connection handshake or the
drivers' monitoring, which would only slow server discovery down) is, by the rates of
:class:`FaultRates`:

- **reset** mid-reply: part of it sent, then the connection aborted with a TCP RST;
- **dropped** after the server executed the command: never sent, the connection closed;
- **stalled** past the driver's socket timeout: held for ``stall_seconds``, then dropped;
- otherwise delivered, after 0 to ``max_latency`` seconds.

Every fault counts in :attr:`FaultProxy.counts`; ``faulty`` and the counts are plain
attributes, set and read from the test's thread while the proxy's loop runs in its own.
Why whole messages: a reset or a drop must land on a reply the server has produced,
i.e. after it executed the command, the case a driver cannot tell from a command that
never arrived. The seed fixes the
sequence of choices; which command meets which choice also depends on the order in
which concurrent replies arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

_HEADER: Final = struct.Struct("<iiii")
"""messageLength, requestID, responseTo, opCode."""
_OP_MSG: Final = 2013
_UNFAULTED: Final = frozenset(
    {"hello", "ismaster", "isMaster", "saslStart", "saslContinue", "ping", "endSessions"}
)
"""Commands whose replies always pass: the handshake and the monitors' checks."""


@dataclass(frozen=True)
class FaultRates:
    """The probability of each fault per command reply, and the latency range."""

    reset: float = 0.0
    drop: float = 0.0
    stall: float = 0.0
    max_latency: float = 0.0
    stall_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.reset + self.drop + self.stall <= 1:
            raise ValueError("the fault rates must add up to at most 1")
        if min(self.reset, self.drop, self.stall, self.max_latency, self.stall_seconds) < 0:
            raise ValueError("fault rates and times must not be negative")


def command_name(body: bytes) -> str | None:
    """The command an OP_MSG body (after the header) sends: the first field of its
    section of kind 0; None for a message that is no such command."""
    # flagBits (4 bytes), then the kind-0 section: kind (1), document length (4), then
    # the first element: its type (1) and its NUL-terminated name.
    if len(body) < 11 or body[4] != 0:
        return None
    end = body.find(b"\x00", 10)
    return body[10:end].decode("utf-8", "replace") if end > 0 else None


async def _message(reader: asyncio.StreamReader) -> tuple[tuple[int, int, int, int], bytes]:
    header = await reader.readexactly(_HEADER.size)
    fields = _HEADER.unpack(header)
    return fields, header + await reader.readexactly(fields[0] - _HEADER.size)


class FaultProxy:
    """Listens on a free loopback port and forwards each connection to ``upstream``."""

    def __init__(self, upstream: tuple[str, int], seed: int, rates: FaultRates) -> None:
        self.upstream = upstream
        self.rates = rates
        self.random = random.Random(seed)
        self.counts: Counter[str] = Counter()
        self.faulty = False
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._planned: list[Any] = []
        self._thread: threading.Thread | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        assert self._server is not None, "start the proxy first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    def lose_reply(self, command: str, after: int = 0) -> None:
        """Drop the reply to the next ``command`` but ``after`` of them (closing the
        connection), faulty or not: one lost reply exactly where a test wants it."""
        self._planned = [command, after]

    def start(self) -> None:
        """Serve from an event loop in a thread of its own, so that the proxy's work is
        never counted against the loop of the code under test."""
        started = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accepted, "127.0.0.1", 0)
            )
            started.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._closed())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        started.wait()

    def close(self) -> None:
        """Stop serving, cut every connection, and end the thread."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    async def _closed(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:  # closing: asyncio would log a cancelled handler
            pass
        finally:
            self._connections.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        names: dict[int, str] = {}
        requests = asyncio.ensure_future(self._requests(reader, up_writer, names))
        try:
            await self._replies(up_reader, writer, names)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            requests.cancel()
            with contextlib.suppress(BaseException):
                await requests
            for stream in (writer, up_writer):
                stream.close()

    async def _requests(
        self, reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter, names: dict[int, str]
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:
                (_, request_id, _, op_code), message = await _message(reader)
                if op_code == _OP_MSG:
                    names[request_id] = command_name(message[_HEADER.size :]) or ""
                up_writer.write(message)
                await up_writer.drain()
        up_writer.close()

    async def _replies(
        self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, names: dict[int, str]
    ) -> None:
        while True:
            (_, _, response_to, _), message = await _message(up_reader)
            name = names.pop(response_to, "")
            if self._planned and self._planned[0] == name:
                self._planned[1] -= 1
                if self._planned[1] < 0:
                    self._planned = []
                    self.counts["planned reply lost"] += 1
                    return
            if self.faulty and name and name not in _UNFAULTED:
                if not await self._deliver(name, message, writer):
                    return
            else:
                writer.write(message)
                await writer.drain()

    async def _deliver(self, name: str, message: bytes, writer: asyncio.StreamWriter) -> bool:
        """Deliver ``message`` (the reply to ``name``), or inject a fault; False once the
        connection is cut."""
        rates, draw = self.rates, self.random.random()
        if draw < rates.reset:
            self.counts["reset mid-reply"] += 1
            writer.write(message[: max(1, len(message) // 2)])
            await writer.drain()
            sock = writer.get_extra_info("socket")
            if sock is not None:  # linger 0: close() sends a RST, not a FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if draw < rates.reset + rates.drop:
            self.counts["reply dropped after execution"] += 1
            return False
        if draw < rates.reset + rates.drop + rates.stall:
            self.counts["stalled past the socket timeout"] += 1
            await asyncio.sleep(rates.stall_seconds)
            return False
        latency = self.random.uniform(0, rates.max_latency)
        self.counts["replies delayed"] += 1
        await asyncio.sleep(latency)
        writer.write(message)
        await writer.drain()
        return True
