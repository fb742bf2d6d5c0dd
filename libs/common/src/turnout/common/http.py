"""One pooled aiohttp session per process (aiohttp measures ~3x faster than httpx on the hot path)."""

from __future__ import annotations

import aiohttp


def make_session(
    *, limit: int = 512, limit_per_host: int = 256, connect_timeout_s: float = 5.0
) -> aiohttp.ClientSession:
    """The process's aiohttp session: pooled, no total timeout (streams), no cookie jar."""
    connector = aiohttp.TCPConnector(
        limit=limit, limit_per_host=limit_per_host, ttl_dns_cache=300, keepalive_timeout=30
    )
    # total=None: streams may last long; connect and per-read timeouts bound every call instead.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=300)
    # no cookie jar: one session carries every client's requests, so a cookie a backend sets on
    # one reply (a load balancer's, say) must not ride along on other clients' requests
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=True,
        raise_for_status=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )
