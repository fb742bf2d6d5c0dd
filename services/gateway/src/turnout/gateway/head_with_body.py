"""A response's status line and headers in the same write as its body's first bytes.

uvicorn's httptools protocol writes the head on ``http.response.start`` and the body on the next
message: two ``send`` calls, two TCP segments, for every reply; on loopback each send also does
the receiving side's TCP work, and the head's send measured ~5-7 % of the gateway's CPU per
request (py-spy, the real stack at ``time_scale: 0``). :class:`HeadWithBody` gives each request's
cycle a view of the transport that holds the first write (the head) until the next write, and
sends both in one ``writelines`` (one ``writev``); a head still held when the event loop's
current pass ends is sent alone then (a stream whose first body comes later, an app that sends
only a head), so nothing waits longer than that pass.

Written for uvicorn 0.30-0.54, as :mod:`turnout.gateway.header_guard`: the cycle keeps the
transport as its ``transport`` attribute and writes only through ``write`` and ``close``.
"""

from __future__ import annotations

import asyncio
from typing import Any


class HeldHead:
    """One response cycle's transport: its first write held (see the module)."""

    __slots__ = ("_head", "_loop", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.writelines((head, data))
        elif self._started:
            self._transport.write(data)
        else:
            self._started = True
            self._head = bytes(data)
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadWithBody:
    """Mixin for uvicorn's httptools protocol (listed before it in the bases): each new request
    cycle writes through a :class:`HeldHead`."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()  # type: ignore[misc]
        cycle = self.cycle
        if cycle is not None and cycle is not before:  # the task that runs it has not started yet
            cycle.transport = HeldHead(self.transport, self.loop)
