"""The RPC's own Redis connection (``rpc.resp``) against a real redis-server."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from turnout.common.rpc.resp import RespConnection, RespLink, _tls_context, pack_command
from turnout.devstack.infra import Instance, start_redis

pytestmark = pytest.mark.integration

RUN_DIR = Path(__file__).resolve().parents[2] / ".run" / "test"


@pytest.fixture
def own_redis() -> Iterator[Instance]:
    inst = start_redis(RUN_DIR, ephemeral=True)
    try:
        yield inst
    finally:
        inst.stop()


def test_commands_are_framed_as_resp_arrays_of_bulk_strings() -> None:
    assert pack_command(("SET", b"k\r\n", 12, 0.5)) == b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$2\r\n12\r\n$3\r\n0.5\r\n"


def test_tls_options_are_read_from_the_url_as_redis_py_reads_them() -> None:
    default = _tls_context({})
    assert (default.verify_mode, default.check_hostname) == (ssl.CERT_REQUIRED, True)
    relaxed = _tls_context({"ssl_cert_reqs": "none"})
    assert (relaxed.verify_mode, relaxed.check_hostname) == (ssl.CERT_NONE, False)
    no_host = _tls_context({"ssl_check_hostname": False})
    assert (no_host.verify_mode, no_host.check_hostname) == (ssl.CERT_REQUIRED, False)


async def test_pipelined_commands_get_their_own_replies_in_order(redis_url: str, redis: Redis) -> None:
    key = f"sytest-{uuid.uuid4().hex[:8]}:resp"
    conn = await RespConnection.open(redis_url)
    try:
        futs = [conn.execute("RPUSH", key, f"v{i}") for i in range(100)]
        futs.append(conn.execute("LRANGE", key, 0, 2))
        futs.append(conn.execute("GET", f"{key}:missing"))
        replies = await asyncio.gather(*futs)
        assert replies[:100] == list(range(1, 101))
        assert replies[100] == [b"v0", b"v1", b"v2"]
        assert replies[101] is None
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await conn.execute("GET", key)
        assert await conn.execute("PING") == b"PONG"  # an error reply does not shift later replies
    finally:
        conn.close()
        await redis.delete(key)


async def test_a_reply_whose_caller_gave_up_is_dropped_not_handed_to_the_next_command(
    redis_url: str, redis: Redis
) -> None:
    key = f"sytest-{uuid.uuid4().hex[:8]}:blocked"
    conn = await RespConnection.open(redis_url)
    try:
        blocked = conn.execute("BLPOP", key, 5)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await blocked
        pong = conn.execute("PING")  # queued behind the BLPOP on the server
        await redis.rpush(key, b"late")
        assert await asyncio.wait_for(pong, 2) == b"PONG"
        assert await redis.llen(key) == 0  # the BLPOP did take it; its reply went nowhere
    finally:
        conn.close()


async def test_a_subscribed_connection_hands_messages_to_its_callback_and_replies_to_waiters(
    redis_url: str, redis: Redis
) -> None:
    channel = f"sytest-{uuid.uuid4().hex[:8]}:replies"
    got: list[tuple[bytes, bytes]] = []
    conn = await RespConnection.open(redis_url, on_message=lambda ch, data: got.append((ch, data)))
    try:
        assert await conn.execute("SUBSCRIBE", channel) == [b"subscribe", channel.encode(), 1]
        assert await redis.publish(channel, b"one") == 1
        assert await redis.publish(channel, b"two") == 1
        assert await conn.execute("PING") == [b"pong", b""]  # after the two messages, in order
        assert got == [(channel.encode(), b"one"), (channel.encode(), b"two")]
    finally:
        conn.close()
    reason = await asyncio.wait_for(conn.wait_lost(), 1)
    assert isinstance(reason, RedisConnectionError)


async def test_the_url_password_and_database_are_used(own_redis: Instance) -> None:
    admin = Redis.from_url(own_redis.url)
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    base = f"127.0.0.1:{own_redis.port}"
    conn = await RespConnection.open(f"redis://:s3cret@{base}/3")
    try:
        await conn.execute("SET", "where", "db3")
    finally:
        conn.close()
    check = Redis.from_url(f"redis://:s3cret@{base}/3")
    assert await check.get("where") == b"db3"
    await check.aclose()
    with pytest.raises(ResponseError):
        await RespConnection.open(f"redis://:wrong@{base}/0")


async def test_losing_redis_fails_waiting_commands_and_a_link_reconnects(own_redis: Instance) -> None:
    link = RespLink(own_redis.url)
    blocked = asyncio.ensure_future(link.execute("BLPOP", "nothing", 0))
    await asyncio.sleep(0.1)
    own_redis.stop()
    with pytest.raises(RedisConnectionError):
        await asyncio.wait_for(blocked, 5)
    with pytest.raises(RedisConnectionError):
        await link.execute("PING")  # nothing listens: the reconnect fails with a clear error
    again = start_redis(RUN_DIR, port=own_redis.port, ephemeral=True)
    try:
        assert await link.execute("PING") == b"PONG"
    finally:
        link.close()
        again.stop()


async def test_connecting_to_nothing_is_a_connection_error() -> None:
    with pytest.raises(RedisConnectionError):
        await RespConnection.open("redis://127.0.0.1:1/0", connect_timeout_s=0.5)
