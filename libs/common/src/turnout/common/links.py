"""How every Redis connection of the project behaves when the network does not.

* :class:`LinkOptions` — one set of bounds for every link: connect timeout, per-command timeout
  (a command unanswered that long drops its connection, which is reopened, never reused), TCP
  keepalive (a peer that vanished is noticed by the kernel within
  ``keepalive_idle_s + keepalive_interval_s * keepalive_count``), and the reconnect back-off.
* :func:`make_redis` — the one place a redis-py client is built: keepalive, a socket timeout
  (redis-py disconnects a connection whose read timed out, so the next command gets a fresh one),
  a health-check ``PING`` on connections idle for a while, and retries of connection errors with
  jittered exponential back-off.
* :class:`Backoff` — jittered exponential delays ("full jitter": uniform in ``[d/2, d]``, ``d``
  doubling up to a cap) for the reconnect loops, so that replicas that lost Redis together do
  not come back in lock-step.
* :func:`set_keepalive` — the same keepalive on a raw socket (the RPC's own RESP connections).
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError


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


def make_redis(url: str, opts: LinkOptions = DEFAULT_LINK, *, block_s: float = 0.0, **extra: Any) -> Redis:
    """A redis-py client with the bounds of ``opts``. ``block_s``: the longest server-side block
    its callers ask for (``XREADGROUP BLOCK``, ``BLPOP`` timeout, pub/sub waits); its reads are
    bounded by that plus the command timeout."""
    unix = url.startswith("unix://")
    client: Redis = Redis.from_url(
        url,
        socket_connect_timeout=opts.connect_timeout_s,
        socket_timeout=opts.command_timeout_s + block_s,
        socket_keepalive=not unix,
        socket_keepalive_options=None if unix else opts.keepalive_options(),
        health_check_interval=opts.health_check_s,
        retry=Retry(ExponentialWithJitterBackoff(base=opts.backoff_base_s, cap=opts.backoff_max_s), opts.retries),
        retry_on_error=[RedisConnectionError],
        **extra,
    )
    return client


__all__ = ["DEFAULT_LINK", "Backoff", "LinkOptions", "make_redis", "set_keepalive"]
