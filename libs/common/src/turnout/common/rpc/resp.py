"""A minimal pipelined Redis connection for the per-request Redis traffic: the RPC and request events.

Why not redis-py here: its asyncio command path (connection pool checkout, per-read timeout
context, ``pack_command``, response callbacks) measured ~160 µs of CPU per command on the
2-core dev box, against ~60 µs for the same round trip on this connection — and an RPC call is
two commands on each side (push, blocking pop), on every routed request. This module only
frames commands (RESP is a few lines) and writes them at once; parsing is hiredis's (the C
parser redis-py itself uses), so the hand-written part is small. The gateway's request events
(pipelined ``XADD``) use it too; everything else in the project (fleet state, caches,
heartbeats) stays on redis-py.

* :class:`RespConnection` — one asyncio protocol: :meth:`execute` writes a command and returns
  a future for its reply; replies resolve the futures in order (Redis answers in order), so any
  number of commands may be in flight. Error replies raise :class:`redis.exceptions.ResponseError`;
  a lost connection fails every waiting command with
  :class:`redis.exceptions.ConnectionError`. A cancelled waiter keeps its place in the queue,
  so a late reply is matched and dropped, never handed to the next command.
  With ``on_message``, the connection may also ``SUBSCRIBE``: pushed messages go to that
  callback as ``(channel, data)``, replies to commands still to their futures.
* :class:`RespLink` — a connection that (re)opens on first use after a loss, for senders that
  must survive Redis restarts without a loop of their own; after a failed open it refuses at once
  for a jittered, growing back-off instead of hammering a Redis that is away.

Links that heal (:class:`~turnout.common.links.LinkOptions`): TCP connections get keepalive,
and every command must be answered within ``command_timeout_s`` (plus its own block time, for
a blocking pop) — else the connection is aborted, every command waiting on it fails with
:class:`redis.exceptions.TimeoutError`, and the link opens a new one on next use. Replies come in
order, so one watchdog timer that looks at the oldest command suffices; it only runs while
commands are waiting, and re-arms once per ``command_timeout_s / 4`` rather than per command.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any, cast

import hiredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from turnout.common.links import DEFAULT_LINK, Backoff, LinkOptions, set_keepalive

log = logging.getLogger(__name__)

Arg = bytes | str | int | float
OnMessage = Callable[[bytes, bytes], None]


def pack_command(args: tuple[Arg, ...]) -> bytes:
    """One RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            raw = arg
        elif isinstance(arg, str):
            raw = arg.encode()
        elif isinstance(arg, int):
            raw = b"%d" % arg
        else:
            raw = repr(arg).encode()
        parts.append(b"$%d\r\n" % len(raw))
        parts.append(raw)
        parts.append(b"\r\n")
    return b"".join(parts)


class RespConnection(asyncio.Protocol):
    """See the module docstring. Open with :meth:`open`."""

    def __init__(self, on_message: OnMessage | None = None, *, command_timeout_s: float = 5.0) -> None:
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._due: collections.deque[float] = collections.deque()  # loop time by which each must be answered
        self._command_timeout_s = command_timeout_s
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._lost: Exception | None = None
        self._lost_event = asyncio.Event()
        self._on_message = on_message

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        connect_timeout_s: float | None = None,
        on_message: OnMessage | None = None,
        link: LinkOptions = DEFAULT_LINK,
    ) -> RespConnection:
        """Connect to ``redis://``, ``rediss://`` or ``unix://`` ``url``; authenticate and select
        its database. Raises :class:`redis.exceptions.ConnectionError` when that fails."""
        opts = parse_url(url)
        loop = asyncio.get_running_loop()
        connect_timeout_s = link.connect_timeout_s if connect_timeout_s is None else connect_timeout_s

        def factory() -> RespConnection:
            return cls(on_message, command_timeout_s=link.command_timeout_s)

        try:
            async with asyncio.timeout(connect_timeout_s):
                if opts.get("connection_class") is UnixDomainSocketConnection:
                    _, conn = await loop.create_unix_connection(factory, opts["path"])
                else:
                    tls = _tls_context(opts) if opts.get("connection_class") is SSLConnection else None
                    host, port = opts.get("host", "127.0.0.1"), opts.get("port", 6379)
                    transport, conn = await loop.create_connection(factory, host, port, ssl=tls)
                    set_keepalive(transport.get_extra_info("socket"), link)
        except TimeoutError as exc:
            raise RedisConnectionError(f"connecting to Redis timed out after {connect_timeout_s}s") from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        try:
            async with asyncio.timeout(connect_timeout_s):
                if opts.get("password"):
                    user = opts.get("username")
                    pw = opts["password"]
                    await (conn.execute("AUTH", user, pw) if user else conn.execute("AUTH", pw))
                if opts.get("db"):
                    await conn.execute("SELECT", opts["db"])
        except TimeoutError as exc:
            conn.close()
            raise RedisConnectionError(f"Redis did not answer AUTH/SELECT within {connect_timeout_s}s") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:  # a stream we cannot parse: nothing after it is safe
                self._fail(RedisConnectionError(f"Redis protocol error: {exc}"))
                if self._transport is not None:
                    self._transport.abort()
                return
            if reply is False:
                return
            if self._on_message is not None and type(reply) is list and reply and reply[0] == b"message":
                try:
                    self._on_message(reply[1], reply[2])
                except Exception:  # the callback's bug must not take the connection down with it
                    log.exception("pub/sub message handler failed")
                continue
            if not self._waiting:  # a reply nobody asked for (cannot happen with RESP2 commands)
                continue
            fut = self._waiting.popleft()
            self._due.popleft()
            if fut.done():  # its caller gave up (cancelled or timed out): drop the reply
                continue
            if isinstance(reply, ResponseError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"Connection to Redis lost: {exc}" if exc else "Connection closed by server."))

    # --- use -----------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """The connection was lost or is closing."""
        return self._lost is not None or self._transport is None or self._transport.is_closing()

    def execute(self, *args: Arg, block_s: float = 0.0) -> asyncio.Future[Any]:
        """Write one command now; the future resolves with its reply. ``block_s``: how long the
        command may block in Redis (a blocking pop's timeout), on top of the command timeout."""
        return self.execute_many([args], block_s=block_s)[0]

    def execute_many(self, commands: list[tuple[Arg, ...]], *, block_s: float = 0.0) -> list[asyncio.Future[Any]]:
        """Write several commands in one write; one future per command, in order (``block_s``
        applies to the last one)."""
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        if self._lost is not None or self._transport is None or self._transport.is_closing():
            for fut in futs:
                fut.set_exception(self._lost or RedisConnectionError("Connection to Redis is closed"))
            return futs
        due = loop.time() + self._command_timeout_s
        self._waiting.extend(futs)
        self._due.extend([due] * (len(futs) - 1))
        self._due.append(due + block_s)
        self._transport.write(b"".join(pack_command(args) for args in commands))
        if self._watchdog is None:
            self._arm(loop)
        return futs

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchdog = loop.call_later(max(self._command_timeout_s / 4, 0.01), self._watch)

    def _watch(self) -> None:
        """The oldest command waiting is overdue: the link is dead or Redis is stuck. Abort it
        (every waiter fails now; the link reconnects) rather than queue more behind it."""
        self._watchdog = None
        if not self._waiting or self._lost is not None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() > self._due[0]:
            log.warning("Redis left a command unanswered for %.1fs; dropping the connection", self._command_timeout_s)
            self._fail(RedisTimeoutError(f"Redis did not answer within {self._command_timeout_s}s; link dropped"))
            if self._transport is not None:
                self._transport.abort()
            return
        self._arm(loop)

    async def wait_lost(self) -> Exception:
        """Wait until the connection is lost or closed; the reason."""
        await self._lost_event.wait()
        assert self._lost is not None
        return self._lost

    def close(self) -> None:
        """Close the transport and fail every command still waiting."""
        if self._transport is not None:
            self._transport.close()
        self._fail(RedisConnectionError("Connection to Redis closed"))

    def _fail(self, exc: Exception) -> None:
        if self._lost is None:
            self._lost = exc
            self._lost_event.set()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._due.clear()
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)


def _tls_context(opts: Mapping[str, Any]) -> ssl.SSLContext:
    """TLS for ``rediss://`` as redis-py reads the URL: ``ssl_ca_certs``, ``ssl_cert_reqs``
    (``none`` / ``optional`` / ``required``, the default) and ``ssl_check_hostname``."""
    ctx = ssl.create_default_context(cafile=opts.get("ssl_ca_certs"))
    reqs = str(opts.get("ssl_cert_reqs") or "required").lower()
    check_hostname = opts.get("ssl_check_hostname")
    ctx.check_hostname = reqs == "required" and (check_hostname is None or bool(check_hostname))
    ctx.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(reqs, ssl.CERT_REQUIRED)
    return ctx


class RespLink:
    """A :class:`RespConnection` opened on first use and again after it was lost."""

    def __init__(self, url: str, *, link: LinkOptions = DEFAULT_LINK) -> None:
        self._url = url
        self._link = link
        self._conn: RespConnection | None = None
        self._opening: asyncio.Future[RespConnection] | None = None
        self._backoff = Backoff(link.backoff_base_s, link.backoff_max_s)
        self._retry_at = 0.0  # loop time before which a new open is not tried (after a failure)
        self._last_error: BaseException | None = None

    def live(self) -> RespConnection | None:
        """The open connection, or None when there is none now (:meth:`connection` opens one)."""
        conn = self._conn
        return conn if conn is not None and not conn.closed else None

    async def connection(self) -> RespConnection:
        """The open connection, reconnecting once for all concurrent callers when it is gone."""
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._opening is None:  # one connect at a time; concurrent callers share it
            loop = asyncio.get_running_loop()
            if loop.time() < self._retry_at:  # backing off after a failed open: refuse at once
                raise RedisConnectionError(f"Redis unavailable (retrying shortly): {self._last_error}")
            self._opening = asyncio.ensure_future(RespConnection.open(self._url, link=self._link))
            self._opening.add_done_callback(self._opened)
        opening = self._opening
        try:
            self._conn = await asyncio.shield(opening)
        finally:
            if self._opening is opening and opening.done():
                self._opening = None
        return self._conn

    def _opened(self, fut: asyncio.Future[RespConnection]) -> None:
        # its outcome is read here too: if every waiter gave up, nobody else would
        exc = None if fut.cancelled() else fut.exception()
        if exc is None:
            self._backoff.reset()
            self._retry_at = 0.0
        elif not fut.cancelled():
            self._last_error = exc
            self._retry_at = asyncio.get_running_loop().time() + self._backoff.next()

    async def execute(self, *args: Arg) -> Any:
        """Run one command on the link's connection and return its reply."""
        conn = await self.connection()
        return await conn.execute(*args)

    def close(self) -> None:
        """Close the connection (and cancel a connect in progress)."""
        if self._opening is not None:
            self._opening.cancel()
            self._opening = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
