"""Bounds on request headers, which uvicorn's httptools protocol does not have.

uvicorn bounds the headers only with its h11 protocol (``h11_max_incomplete_event_size``), and
has no bound on how long a client may take to send them (``timeout_keep_alive`` runs only
between requests). Measured on the unguarded gateway: 64 MB of headers were read and parsed
before any auth (RSS 113 -> 372 MB with four such requests), and a connection with a
half-sent header stayed open 45 s and more. Switching to h11 would bound the size but not the
time, and costs the hot path the pure-Python parser.

:class:`HeaderLimits` adds both to the httptools protocol, through the parser callbacks uvicorn
itself defines (``on_message_begin``, ``on_headers_complete``) and ``data_received``:

* **size** — bytes received while a request's headers are incomplete are counted; past
  ``max_header_bytes`` the connection gets ``431 Request Header Fields Too Large`` and is
  closed, before the rest is read;
* **time** — from the connection's start (and from the first byte of each later request on a
  kept-alive connection) the headers must be complete within ``header_timeout_s``, else
  ``408 Request Timeout`` and the connection is closed.

Written for uvicorn 0.30-0.54 (``HttpToolsProtocol`` and its callbacks; the dependency is
pinned to that range, and ``tests/integration/test_gateway_header_limits.py`` proves over a
real socket that the bounds hold).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from turnout.gateway.head_with_body import HeadWithBody

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT_S = 10.0
LINGER_S = 1.0
LINGER_BYTES = 1024 * 1024
PROTOCOL = "turnout.gateway.header_guard:GuardedHttpToolsProtocol"
"""For uvicorn's ``http`` option, with the default bounds (a string: worker processes import it)."""


def _reply(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class HeaderLimits:
    """Mixin for uvicorn's httptools protocol (listed before it in the bases)."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _header_bytes: int = 0
    _in_headers: bool = True
    _header_timer: asyncio.TimerHandle | None = None
    _refused: bool = False
    _discarded: int = 0

    def connection_made(self, transport: asyncio.Transport) -> None:
        """A new connection: the header clock starts."""
        super().connection_made(transport)  # type: ignore[misc]
        self._in_headers = True
        self._header_bytes = 0
        self._arm()

    def on_message_begin(self) -> None:
        """A further request on a kept-alive connection: the header clock starts again."""
        super().on_message_begin()  # type: ignore[misc]
        if not self._in_headers:  # a later request on a kept-alive connection
            self._in_headers = True
            self._header_bytes = 0
            self._arm()

    def on_headers_complete(self) -> None:
        """The headers are in: the clock stops."""
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()  # type: ignore[misc]

    def data_received(self, data: bytes) -> None:
        """Count header bytes (refusing past the limit); after a refusal, read and drop."""
        if self._refused:  # lingering close: read and drop, so that the client can read the reply
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.transport.abort()
            return
        super().data_received(data)  # type: ignore[misc]
        if self._in_headers and not self.transport.is_closing():
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(b"431 Request Header Fields Too Large")

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the header clock."""
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._refuse, b"408 Request Timeout")

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refuse(self, status: bytes) -> None:
        """Answer ``status`` and close. Closing a socket with unread input makes the kernel send
        a reset, which can destroy the reply before the client reads it; so the write side is
        shut first and what still arrives is read and dropped for a short while (as nginx's
        ``lingering_close``), bounded in time and bytes."""
        self._disarm()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self.transport.write(_reply(status))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


class GuardedHttpToolsProtocol(HeaderLimits, HeadWithBody, HttpToolsProtocol):  # type: ignore[misc]
    """The gateway's protocol: header bounds around uvicorn's httptools protocol, and each
    response's head sent with its body (:mod:`turnout.gateway.head_with_body`)."""


def guarded_protocol(max_header_bytes: int, header_timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with configured bounds (one uvicorn worker; several use the defaults,
    as each imports :data:`PROTOCOL` by name)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
    )
