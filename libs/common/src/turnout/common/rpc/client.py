"""RPC client: pushes requests onto the method's queue and resolves replies from its own channel.

One reader task per client subscribes to its own channel ``rpc:reply:<client_id>`` over a
dedicated connection (requests say ``reply_via: "channel"``); each reply is pushed to it and
resolves the pending future by call id (nameko's ReplyListener pattern). If
the reader loses Redis, every call in flight fails at once with :class:`RpcUnavailable` and
the reader reconnects with jittered back-off. A background task watches each method's
replica heartbeats (the replica set, then ``EXISTS`` over each replica's own key: alive when any
is) so that ``call`` fails fast when no server is alive, instead of waiting out the deadline.
A request carries its budget (``budget_ms``), never an absolute time: see docs/rpc.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from functools import partial
from typing import Any, Generic

import orjson
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from turnout.common.aio import cancel_and_wait, raise_if_cancelling
from turnout.common.errors import RemoteError, RpcError, RpcTimeout, RpcUnavailable
from turnout.common.keys import Keys
from turnout.common.links import DEFAULT_LINK, LinkOptions, first_to_answer, make_redis
from turnout.common.logging import request_id_var
from turnout.common.metrics import rpc_metrics
from turnout.common.rpc.contract import Rep, Req, RpcMethod
from turnout.common.rpc.envelope import encode_request, error_from_reply, reply_call_id, reply_ok_body
from turnout.common.rpc.resp import RespConnection, RespLink
from turnout.common.rpc.transport import PushExpire

log = logging.getLogger(__name__)

QUEUE_TTL_S = 60
READER_PING_S = 5.0
"""The reply reader's subscription is checked with a ``PING`` after this long without loss."""


class RpcClient:
    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        *,
        client_id: str | None = None,
        watch: tuple[RpcMethod[Any, Any], ...] = (),
        registry: CollectorRegistry = REGISTRY,
        heartbeat_poll_s: float = 0.5,
        reader_ping_s: float = READER_PING_S,
        link: LinkOptions = DEFAULT_LINK,
    ) -> None:
        self._url = redis_url
        self._link_opts = link
        self._keys = keys
        self.client_id = client_id or uuid.uuid4().hex
        self._reply_key = keys.rpc_reply(self.client_id)
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._redis: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reader_up = asyncio.Event()
        self._alive: dict[str, bool] = {}
        self._watch = watch
        self._heartbeat_poll_s = heartbeat_poll_s
        self._reader_ping_s = reader_ping_s
        self._metrics = rpc_metrics(registry)
        self._closed = False

    async def start(self) -> None:
        """Connect, start the reply reader (and the heartbeat watch); waits up to 2 s for the reader."""
        self._redis = make_redis(self._url, self._link_opts)
        self._link = RespLink(self._url, link=self._link_opts)
        self._push = PushExpire(self._link, timeout_s=self._link_opts.command_timeout_s)
        self._tasks.append(asyncio.create_task(self._read_replies(), name="rpc-reply-reader"))
        if self._watch:
            await self._poll_heartbeats()
            self._tasks.append(asyncio.create_task(self._watch_heartbeats(), name="rpc-heartbeat-watch"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self._reader_up.wait()

    async def close(self) -> None:
        """Stop the background tasks, fail the calls in flight with RpcUnavailable, close Redis."""
        self._closed = True
        await cancel_and_wait(self._tasks)
        self._fail_pending(RpcUnavailable("RPC client closed"))
        if self._redis is not None:
            self._link.close()
            await self._redis.aclose()

    async def __aenter__(self) -> RpcClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def server_alive(self, method: RpcMethod[Any, Any]) -> bool:
        """Last known heartbeat state (True when the method is not watched)."""
        return self._alive.get(method.label, True)

    async def call(
        self, method: RpcMethod[Req, Rep], body: Req, *, timeout: float, request_id: str | None = None
    ) -> Rep:
        """Call ``method`` and wait up to ``timeout`` for its typed reply; raises an :class:`RpcError`."""
        return await self.send(method, body, timeout=timeout, request_id=request_id).reply()

    def send(
        self, method: RpcMethod[Req, Rep], body: Req, *, timeout: float, request_id: str | None = None
    ) -> PendingCall[Rep]:
        """Push the call now and return at once: the caller does other work while the server
        answers, then awaits :meth:`PendingCall.reply` (the ``timeout`` runs from now). A call
        that cannot be made (client not started, reader down, no live server) fails there."""
        pending: PendingCall[Rep] = PendingCall(self, method, timeout)
        try:
            pending.push(body, request_id or request_id_var.get())
        except RpcUnavailable as exc:
            pending.error = exc
        return pending

    def _check(self, method: RpcMethod[Any, Any]) -> None:
        if self._redis is None or self._closed:
            raise RpcUnavailable("RPC client is not started")
        if not self._reader_up.is_set():
            raise RpcUnavailable("RPC reply reader is disconnected from Redis")
        if not self._alive.get(method.label, True):
            raise RpcUnavailable(f"no live server for {method.label}")

    def _withdraw(self, queue: str, payload: bytes) -> None:
        """Take a timed-out request back off its queue if no server has popped it yet: the
        budget is measured from the pop (clock-free), so time spent queued is not counted, and
        work whose caller gave up must not be left for a server that comes back later."""
        conn = self._link.live()
        if conn is not None:
            conn.execute("LREM", queue, 1, payload).add_done_callback(_read_outcome)

    @staticmethod
    def _decode(method: RpcMethod[Req, Rep], raw: bytes) -> Rep:
        try:
            body = reply_ok_body(raw)
            if body is not None:
                return method.reply.model_validate_json(body)
            env = orjson.loads(raw)
            if env.get("ok"):
                return method.reply.model_validate(env.get("body") or {})
            raise error_from_reply(env.get("error") or {})
        except (orjson.JSONDecodeError, ValidationError, AttributeError) as exc:
            raise RemoteError(f"malformed reply for {method.label}: {exc}") from exc

    async def _read_replies(self) -> None:
        backoff = self._link_opts.backoff()
        while not self._closed:
            conn: RespConnection | None = None
            tried_at = time.monotonic()
            try:
                conn = await self._subscribe()
                self._reader_up.set()
                backoff.reset()
                # replies arrive by themselves; wait for the link to drop, checking it now and then
                lost = asyncio.ensure_future(conn.wait_lost())
                try:
                    while True:
                        done, _ = await asyncio.wait({lost}, timeout=self._reader_ping_s)
                        if done:
                            raise lost.result()
                        async with asyncio.timeout(self._reader_ping_s):  # a silent link times out: reconnect
                            await conn.execute("PING")
                finally:
                    lost.cancel()
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, OSError, RedisError) as exc:
                if self._reader_up.is_set():
                    log.warning("RPC reply reader lost Redis: %s", exc)
                self._reader_up.clear()
                self._fail_pending(RpcUnavailable(f"lost connection to Redis: {exc}"))
                # counted from the try: hedged attempts that waited out 2 s need no more
                await asyncio.sleep(max(0.0, backoff.next() - (time.monotonic() - tried_at)))
            finally:
                if conn is not None:
                    conn.close()

    async def _subscribe(self) -> RespConnection:
        """A new link subscribed to the reply channel, from hedged attempts
        (:func:`~turnout.common.links.first_to_answer`), each bounded by the connect timeout (2 s),
        not the command timeout: one opened into a half-open path is given up, and one started
        after the path healed answers alongside it."""

        async def attempt() -> RespConnection:
            conn = await RespConnection.open(self._url, on_message=self._on_reply, link=self._link_opts)
            try:
                await conn.execute("SUBSCRIBE", self._reply_key)
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            return await first_to_answer(
                attempt,
                hedge_s=self._link_opts.hedge_s,
                timeout_s=self._link_opts.connect_timeout_s,
                discard=lambda conn: conn.close(),
            )
        except TimeoutError as exc:
            within = self._link_opts.connect_timeout_s
            raise RedisTimeoutError(f"Redis did not answer a new link within {within}s") from exc

    def _on_reply(self, _channel: bytes, raw: bytes) -> None:
        self._resolve(raw)

    def _resolve(self, raw: bytes) -> None:
        call_id = reply_call_id(raw)
        if call_id is None:
            log.warning("dropping malformed RPC reply")
            return
        fut = self._pending.get(call_id)
        if fut is not None and not fut.done():
            fut.set_result(raw)

    def _fail_pending(self, exc: RpcError) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    async def _poll_heartbeats(self) -> None:
        assert self._redis is not None
        for m in self._watch:
            try:
                self._alive[m.label] = await self.alive_now(m)
            except (RedisError, OSError):
                self._alive[m.label] = False

    async def alive_now(self, method: RpcMethod[Any, Any]) -> bool:
        """Whether any replica of ``method`` has a live heartbeat, asked of Redis now; members
        whose heartbeat expired (a replica that died without a word) are removed from the set."""
        redis = self._redis
        if redis is None:
            raise RpcUnavailable("RPC client is not started")
        raw: set[bytes] = await redis.smembers(self._keys.rpc_alive(method.name, method.version))  # type: ignore[misc]
        members = sorted(m.decode() for m in raw)
        if not members:
            return False
        keys = [self._keys.rpc_alive_replica(method.name, method.version, r) for r in members]
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            found = await pipe.execute()
        dead = [r for r, n in zip(members, found, strict=True) if not n]
        if dead:
            # a replica that comes back re-adds itself with its next beat
            await redis.srem(self._keys.rpc_alive(method.name, method.version), *dead)  # type: ignore[misc]
        return len(dead) < len(members)

    async def _watch_heartbeats(self) -> None:
        while True:
            raise_if_cancelling()  # redis-py can drop the cancellation that close() sent
            await asyncio.sleep(self._heartbeat_poll_s)
            await self._poll_heartbeats()


class PendingCall(Generic[Rep]):
    """One call on its way (:meth:`RpcClient.send`): pushed, its reply awaited by :meth:`reply`."""

    __slots__ = (
        "_call_id",
        "_client",
        "_fut",
        "_method",
        "_payload",
        "_queue",
        "_start",
        "_timeout",
        "_timer",
        "error",
    )

    def __init__(self, client: RpcClient, method: RpcMethod[Any, Rep], timeout: float) -> None:
        self._client = client
        self._method = method
        self._timeout = timeout
        self._start = time.perf_counter()
        self._fut: asyncio.Future[bytes] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._call_id = self._queue = ""
        self._payload = b""
        self.error: RpcError | None = None
        """Why the call could not be made (raised by :meth:`reply`)."""

    def push(self, body: BaseModel, request_id: str | None) -> None:
        """Register the reply's future and push the request (raises RpcUnavailable when it cannot)."""
        client, method = self._client, self._method
        client._check(method)
        call_id = f"{random.getrandbits(64):016x}"  # unique among this client's pending calls
        payload = encode_request(
            call_id=call_id,
            method=method.name,
            mv=method.version,
            budget_ms=max(1, int(self._timeout * 1000)),
            request_id=request_id,
            reply_to=client._reply_key,
            reply_via="channel",
            body=body.model_dump_json(exclude_defaults=True).encode(),
        )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        client._pending[call_id] = fut
        queue = client._keys.rpc_queue(method.name, method.version)
        self._fut, self._call_id, self._queue, self._payload = fut, call_id, queue, payload
        # one wait for push and reply: a failed push fails the reply's future at once, and so
        # does the deadline (a timer, cheaper than a timeout context around the await)
        client._push.submit(queue, payload, QUEUE_TTL_S).add_done_callback(partial(_push_failed, fut, method.label))
        self._timer = loop.call_later(max(self._timeout, 0.001), _expire, fut, method.label, self._timeout)

    async def reply(self) -> Rep:
        """The typed reply, within the call's timeout; raises an :class:`RpcError`."""
        outcome = "error"
        try:
            reply = await self._reply()
            outcome = "ok"
            return reply
        except RpcTimeout:
            outcome = "timeout"
            raise
        except RpcUnavailable:
            outcome = "unavailable"
            raise
        finally:
            elapsed = time.perf_counter() - self._start
            metrics, label = self._client._metrics, self._method.label
            metrics.child(metrics.calls, label, outcome).inc()
            metrics.child(metrics.duration, label, outcome).observe(elapsed)

    async def _reply(self) -> Rep:
        if self.error is not None:
            raise self.error
        assert self._fut is not None
        try:
            raw = await self._fut
        except RpcTimeout:
            self._client._withdraw(self._queue, self._payload)
            raise
        finally:
            self._close()
        return self._client._decode(self._method, raw)

    def cancel(self) -> None:
        """Give the call up without awaiting its reply (the request it was for went no further)."""
        if self._fut is not None and not self._fut.done():
            self._fut.cancel()
        self._close()

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._client._pending.pop(self._call_id, None)


def _read_outcome(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()  # best effort: read, so that a failure is not reported as never retrieved


def _expire(reply: asyncio.Future[bytes], label: str, timeout: float) -> None:
    if not reply.done():
        reply.set_exception(RpcTimeout(f"{label}: no reply within {timeout:.3f}s"))


def _push_failed(reply: asyncio.Future[bytes], label: str, pushed: asyncio.Future[None]) -> None:
    if pushed.cancelled():
        return
    exc = pushed.exception()  # read even when the call is over: no "never retrieved" warning
    if exc is None or reply.done():
        return
    if isinstance(exc, TimeoutError):  # before OSError, its base class
        reply.set_exception(RpcTimeout(f"{label}: the push to Redis timed out"))
    else:
        reply.set_exception(RpcUnavailable(f"cannot push RPC request: {exc}"))


def new_client_id(service: str) -> str:
    """A new client id: ``<service>-`` and 12 random hex digits."""
    return f"{service}-{uuid.uuid4().hex[:12]}"


__all__ = ["PendingCall", "RpcClient", "new_client_id"]
