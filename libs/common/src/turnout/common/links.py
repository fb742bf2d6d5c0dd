"""How every Redis connection of the project behaves when the network does not.

* :class:`LinkOptions` — one set of bounds for every link: connect timeout, per-command timeout
  (a command unanswered that long drops its connection, which is reopened, never reused), TCP
  keepalive (a peer that vanished is noticed by the kernel within
  ``keepalive_idle_s + keepalive_interval_s * keepalive_count``), and the reconnect back-off.
* :func:`make_redis` — the one place a redis-py client is built: keepalive, a socket timeout
  (redis-py disconnects a connection whose read timed out, so the next command gets a fresh one),
  a health-check ``PING`` on connections idle for a while, and retries of connection errors with
  jittered exponential back-off. Two things redis-py's default pool does not do, which a
  half-open link showed: a new connection's handshake (``CLIENT SETINFO``, read with the socket
  timeout) runs *outside* the pool's lock (:class:`~redis.asyncio.BlockingConnectionPool`), so
  one connection opened into a dead path no longer holds every other command of the process
  for 5 s; and a command that timed out disconnects the pool's *idle* connections too — they
  went the same way, and after the path heals each would otherwise hold its next command for
  the full timeout before being dropped.
* :func:`first_to_answer` — "happy eyeballs" for opening a link: while an attempt has not
  answered, another starts every ``hedge_s``; the first that answers wins. A reconnect tried
  just before a black hole ended answers at once through a later attempt instead of sitting out
  its connect timeout.
* :class:`Backoff` — jittered exponential delays ("full jitter": uniform in ``[d/2, d]``, ``d``
  doubling up to a cap) for the reconnect loops, so that replicas that lost Redis together do
  not come back in lock-step.
* :func:`set_keepalive` — the same keepalive on a raw socket (the RPC's own RESP connections).
"""

from __future__ import annotations

import asyncio
import random
import socket
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LinkOptions:
    connect_timeout_s: float = 2.0
    command_timeout_s: float = 5.0
    """A command (or a blocking pop, past its own block time) unanswered this long drops the link."""
    keepalive_idle_s: int = 10
    keepalive_interval_s: int = 3
    keepalive_count: int = 3
    health_check_s: float = 15.0
    """redis-py: a connection idle this long is PINGed before it is used again."""
    backoff_base_s: float = 0.05
    backoff_max_s: float = 2.0
    hedge_s: float = 0.25
    """Opening a link: while an attempt has not answered this long, another starts alongside."""
    max_connections: int = 4096
    """redis-py: connections one client may hold (past it, a command waits ``command_timeout_s``)."""
    retries: int = 1
    """redis-py: a command that failed to reach Redis (a pooled connection found dead after a
    restart) is retried this many times on a fresh connection. Timeouts are not retried: the
    command may have run, and the hot path would rather fall back than wait."""

    def keepalive_options(self) -> dict[int, int]:
        opts: dict[int, int] = {}
        for name, value in (
            ("TCP_KEEPIDLE", self.keepalive_idle_s),
            ("TCP_KEEPINTVL", self.keepalive_interval_s),
            ("TCP_KEEPCNT", self.keepalive_count),
        ):
            if hasattr(socket, name):  # Linux; macOS names TCP_KEEPIDLE differently
                opts[getattr(socket, name)] = value
        return opts

    def backoff(self) -> Backoff:
        return Backoff(self.backoff_base_s, self.backoff_max_s)


DEFAULT_LINK = LinkOptions()


class Backoff:
    """``await asyncio.sleep(backoff.next())`` after each failure, ``reset()`` after a success."""

    def __init__(self, base_s: float = 0.05, max_s: float = 2.0, *, rng: random.Random | None = None) -> None:
        self._base = base_s
        self._max = max_s
        self._rng = rng or random.Random()
        self.failures = 0

    def next(self) -> float:
        ceiling = min(self._max, self._base * 2**self.failures)
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0


def set_keepalive(sock: socket.socket | None, opts: LinkOptions = DEFAULT_LINK) -> None:
    """TCP keepalive on ``sock`` (no-op for a Unix socket or none)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in opts.keepalive_options().items():
        sock.setsockopt(socket.IPPROTO_TCP, opt, value)


class _Pool(BlockingConnectionPool):
    def take_idle(self) -> list[AbstractConnection]:
        """The idle connections, out of the pool: nobody can take one while it is being closed.
        (redis-py's ``disconnect(inuse_connections=False)`` closes them *in* the pool, waiting
        up to the connect timeout on each: one taken meanwhile could lose its socket mid-command.)"""
        idle, self._available_connections = self._available_connections, []
        return idle


class _IdleDropper:
    """Tells a pool to close its idle connections. Every connection holds a deep copy of the
    client's :class:`Retry`; this part of it stays one shared object (``__deepcopy__``), and holds
    the pool weakly."""

    def __init__(self) -> None:
        self.pool: weakref.ref[_Pool] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.drops = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> _IdleDropper:
        return self

    def __call__(self) -> None:
        pool = self.pool() if self.pool is not None else None
        if pool is None:
            return
        idle = pool.take_idle()
        if not idle:
            return
        self.drops += 1
        task = asyncio.get_running_loop().create_task(_disconnect(idle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _disconnect(connections: list[AbstractConnection]) -> None:
    # nowait: a socket into a dead path is closed without waiting for its peer
    await asyncio.gather(*(c.disconnect(nowait=True) for c in connections), return_exceptions=True)


class _Retry(Retry):
    """redis-py's retry, plus: a command (or connect) that timed out disconnects the pool's idle
    connections (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_timeout = _IdleDropper()

    async def call_with_retry(self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]) -> T:
        try:
            return await super().call_with_retry(do, fail)
        except (RedisTimeoutError, TimeoutError):  # not retried (``supported_errors``)
            self.on_timeout()
            raise


def make_redis(url: str, opts: LinkOptions = DEFAULT_LINK, *, block_s: float = 0.0, **extra: Any) -> Redis:
    """A redis-py client with the bounds of ``opts``. ``block_s``: the longest server-side block
    its callers ask for (``XREADGROUP BLOCK``, ``BLPOP`` timeout, pub/sub waits); its reads are
    bounded by that plus the command timeout."""
    unix = url.startswith("unix://")
    retry = _Retry(
        ExponentialWithJitterBackoff(base=opts.backoff_base_s, cap=opts.backoff_max_s),
        opts.retries,
        supported_errors=(RedisConnectionError,),  # redis-py's default retries timeouts too
    )
    pool = _Pool.from_url(
        url,
        max_connections=opts.max_connections,
        timeout=opts.command_timeout_s,
        socket_connect_timeout=opts.connect_timeout_s,
        socket_timeout=opts.command_timeout_s + block_s,
        socket_keepalive=not unix,
        socket_keepalive_options=None if unix else opts.keepalive_options(),
        health_check_interval=opts.health_check_s,
        retry=retry,
        retry_on_error=[RedisConnectionError],
        **extra,
    )
    retry.on_timeout.pool = weakref.ref(pool)
    return Redis.from_pool(pool)


async def first_to_answer(
    attempt: Callable[[], Awaitable[T]],
    *,
    hedge_s: float,
    timeout_s: float,
    discard: Callable[[T], object] = lambda _: None,
) -> T:
    """``await attempt()``, hedged: while no attempt has answered for ``hedge_s``, another starts
    alongside; the first to answer wins. Past ``timeout_s`` in all, the attempts still pending are
    cancelled and :class:`TimeoutError` is raised (the first attempt gets the whole ``timeout_s``,
    so a Redis that is merely slow is still reached). Losers are cancelled; one that answered
    anyway is handed to ``discard`` (close it). An attempt that *fails* starts no other: when
    every attempt failed, the last error is raised (Redis refusing connections is for the
    caller's back-off, not for more attempts) — except one that failed by *timing out*
    (:func:`_went_silent`): it found the path silent, as an unanswered attempt does, so another
    starts in its place at once. Before, a heal that came while the pending attempts were all
    inside the black hole waited for each to time out, then for the caller's back-off (the
    link test's recovery missed its 1.0 s bound by up to 0.5 s under CPU load)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending: set[asyncio.Task[T]] = {loop.create_task(_awaited(attempt))}
    last: BaseException | None = None
    try:
        while pending:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"no answer within {timeout_s}s")
            done, pending = await asyncio.wait(pending, timeout=min(hedge_s, left), return_when=asyncio.FIRST_COMPLETED)
            winners = [t for t in done if t.exception() is None]
            if winners:
                for extra in winners[1:]:
                    discard(extra.result())
                return winners[0].result()
            time_left = deadline - loop.time() > 0
            for t in done:
                last = t.exception()
                if time_left and _went_silent(last):
                    pending.add(loop.create_task(_awaited(attempt)))
            if not done and time_left:
                pending.add(loop.create_task(_awaited(attempt)))
        assert last is not None
        raise last
    finally:
        for t in pending:
            t.cancel()
        if pending:
            for result in await asyncio.gather(*pending, return_exceptions=True):
                if not isinstance(result, BaseException):
                    discard(result)  # answered while being cancelled


def _went_silent(exc: BaseException | None) -> bool:
    """An attempt's error says the path went silent (a timeout: the connect, the handshake or a
    command unanswered), not that Redis answered with a refusal or an error."""
    return isinstance(exc, (TimeoutError, RedisTimeoutError)) or isinstance(
        getattr(exc, "__cause__", None), TimeoutError
    )


async def _awaited(attempt: Callable[[], Awaitable[T]]) -> T:
    return await attempt()


__all__ = ["DEFAULT_LINK", "Backoff", "LinkOptions", "first_to_answer", "make_redis", "set_keepalive"]
