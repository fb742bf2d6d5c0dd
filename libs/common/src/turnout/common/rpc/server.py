"""RPC server: competing consumers on each method's queue.

Every replica pops from the same list, so each request is handled exactly once. A request
carries its budget (ms); the server's deadline is that budget on its own monotonic clock from
the pop, and a request past it is dropped without a reply (the caller has given up). Each
replica has its own heartbeat key (refreshed every second, 3 s TTL) and is a member of the
method's replica set; it only beats while its consumer completes pops, so a consumer stuck
on a dead link stops looking alive. Losing Redis is survived: the loop reconnects with
jittered back-off, and a link that stops answering is dropped after its command timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from turnout.common.aio import cancel_and_wait, raise_if_cancelling
from turnout.common.errors import MalformedRequest, MethodNotFound, RemoteError
from turnout.common.keys import Keys
from turnout.common.links import DEFAULT_LINK, LinkOptions, first_to_answer, make_redis
from turnout.common.logging import request_id_var
from turnout.common.metrics import rpc_metrics
from turnout.common.rpc.contract import Rep, Req, RpcMethod
from turnout.common.rpc.envelope import decode_request, encode_reply_error, encode_reply_ok
from turnout.common.rpc.resp import RespConnection, RespLink
from turnout.common.rpc.transport import BatchPop, Publisher, PushExpire

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_TTL_MS = 3000
REPLICA_SET_TTL_S = 60
POP_TIMEOUT_S = 1
REPLY_TTL_S = 60
REPLY_TIMEOUT_S = 5.0
SERVE_BATCH = 8
"""Requests one replica takes per round trip when several wait (small, so replicas share work)."""


@dataclass(frozen=True, slots=True)
class RpcContext:
    call_id: str
    request_id: str | None
    deadline: float
    """``time.monotonic()`` by which the caller wants its reply (this host's clock)."""

    @property
    def remaining(self) -> float:
        """Seconds left before the caller's deadline (negative once past)."""
        return self.deadline - time.monotonic()


Handler = Callable[[Any, RpcContext], Awaitable[BaseModel | bytes]]


@dataclass(frozen=True, slots=True)
class _Replies:
    push: PushExpire  # reply_via "list"
    publish: Publisher  # reply_via "channel"


class RpcServer:
    def __init__(
        self,
        redis_url: str,
        keys: Keys,
        *,
        replica_id: str,
        max_concurrency: int = 256,
        registry: CollectorRegistry = REGISTRY,
        link: LinkOptions = DEFAULT_LINK,
    ) -> None:
        self._url = redis_url
        self._link_opts = link
        self._last_pop = 0.0  # monotonic time the consumer last completed a pop
        self._keys = keys
        self.replica_id = replica_id
        self._handlers: dict[str, tuple[RpcMethod[Any, Any], Handler]] = {}
        self._max_concurrency = max_concurrency
        self._room = asyncio.Event()  # set when a handler ends while the consumer waits for room
        self._metrics = rpc_metrics(registry)
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._replying: set[asyncio.Future[Any]] = set()
        self._unblock: tuple[Redis, int] | None = None
        self.connected = False
        self.handled = 0

    def register(
        self, method: RpcMethod[Req, Rep], handler: Callable[[Req, RpcContext], Awaitable[Rep | bytes]]
    ) -> None:
        """Serve ``method`` with ``handler`` (before :meth:`serve`). A handler may answer with its
        reply's JSON bytes already encoded (a hot reply built with no model); they are sent as they are."""
        self._handlers[self._keys.rpc_queue(method.name, method.version)] = (method, handler)

    async def serve(self) -> None:
        """Run until :meth:`stop`. Survives Redis restarts."""
        if not self._handlers:
            raise RuntimeError("no RPC handlers registered")
        backoff = self._link_opts.backoff()
        while not self._stopping.is_set():
            raise_if_cancelling()  # one dropped by redis-py (the handshake, the last beat) ends it too
            reader: RespConnection | None = None
            writer: Redis | None = None
            beat: asyncio.Task[None] | None = None
            link = RespLink(self._url, link=self._link_opts)
            lost = False
            tried_at = time.monotonic()
            try:
                reader, reader_id = await self._open_reader()
                # the heartbeat's client comes after the popping link answered: its connections go
                # the way that works now, not into a path that was dead a moment ago
                writer = make_redis(self._url, self._link_opts)
                await self._handshake(writer, reader_id)
                beat = asyncio.create_task(self._heartbeat(writer), name="rpc-heartbeat")
                self.connected = True
                backoff.reset()
                log.info("RPC server %s serving %s", self.replica_id, ", ".join(self._handlers))
                await self._consume(reader, _Replies(PushExpire(link), Publisher(link)))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected:
                    log.warning("RPC server lost Redis: %s", exc)
                else:
                    log.debug("RPC server cannot reach Redis: %s", exc)
                self.connected = False
                lost = True
            finally:
                self._unblock = None
                if beat is not None:
                    beat.cancel()
                try:
                    if lost:
                        await self._abandon()
                    else:  # stopping: what was taken is finished, then the heartbeat goes
                        await self._drain()
                        if writer is not None:
                            with contextlib.suppress(RedisError, OSError):
                                await self._clear_heartbeat(writer)
                finally:  # even when cancelled while draining: every connection is closed
                    if reader is not None:
                        reader.close()
                    link.close()
                    if beat is not None:
                        await cancel_and_wait([beat])
                    if writer is not None:
                        with contextlib.suppress(RedisError, OSError):
                            await writer.aclose()
            if lost:  # counted from the try: hedged attempts that waited out 2 s need no more
                await asyncio.sleep(max(0.0, backoff.next() - (time.monotonic() - tried_at)))
        self.connected = False

    async def _open_reader(self) -> tuple[RespConnection, int]:
        """The popping link and its client id, from the first of hedged attempts to answer
        (:func:`~turnout.common.links.first_to_answer`): while one attempt has not answered for
        ``hedge_s`` (0.25 s), another starts alongside, for the connect timeout (2 s) in all. A
        reconnect tried during a black hole is accepted and then never answered; alone, it sat out
        its 2 s after the path healed (measured: "serving" 0.2-2.0 s after the heal, then the
        gateways' heartbeat poll). With the hedge, an attempt started after the heal answers."""

        async def attempt() -> tuple[RespConnection, int]:
            conn = await RespConnection.open(self._url, link=self._link_opts)
            try:
                return conn, int(await conn.execute("CLIENT", "ID"))
            except BaseException:
                conn.close()
                raise

        try:
            return await first_to_answer(
                attempt,
                hedge_s=self._link_opts.hedge_s,
                timeout_s=self._link_opts.connect_timeout_s,
                discard=lambda got: got[0].close(),
            )
        except TimeoutError as exc:
            raise RedisTimeoutError(
                f"Redis did not answer a new link within {self._link_opts.connect_timeout_s}s"
            ) from exc

    async def _handshake(self, writer: Redis, reader_id: int) -> None:
        """The first beat, bounded by the connect timeout rather than the command timeout: clients
        see this replica alive as soon as it serves."""
        try:
            async with asyncio.timeout(self._link_opts.connect_timeout_s):
                self._unblock = (writer, reader_id)
                self._last_pop = time.monotonic()
                await self._beat(writer, alive=True)
        except TimeoutError as exc:
            raise RedisTimeoutError(
                f"Redis did not answer a new link within {self._link_opts.connect_timeout_s}s"
            ) from exc

    async def stop(self) -> None:
        """Stop taking work now; what is in flight is finished. The blocking pop is ended by
        ``CLIENT UNBLOCK … TIMEOUT`` (it returns empty, as if it had timed out), so that nothing
        already popped is lost on the way, as it could be by closing the connection under it."""
        self._stopping.set()
        if self._unblock is not None:
            writer, reader_id = self._unblock
            with contextlib.suppress(RedisError, OSError):
                await writer.client_unblock(reader_id)  # as a timeout, not an error

    async def _consume(self, reader: RespConnection, replies: _Replies) -> None:
        queues = list(self._handlers)
        popper = BatchPop(SERVE_BATCH)
        while not self._stopping.is_set():
            raise_if_cancelling()
            room = self._max_concurrency - len(self._inflight)
            if room <= 0:  # as many handlers running as allowed: pop nothing until one ends
                self._room.clear()
                await self._room.wait()
                continue
            # the replies of the handlers that finished since the last pop go in the same write
            queue, raws = await popper.pop(
                reader, queues, timeout=POP_TIMEOUT_S, replies=replies.publish, count=min(SERVE_BATCH, room)
            )
            self._last_pop = time.monotonic()
            for raw in raws:
                assert queue is not None
                task = asyncio.create_task(self._handle(replies, queue.decode(), raw, self._last_pop))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            # let the handlers start (and reply) before the next BLMPOP is written
            await asyncio.sleep(0)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._room.set()

    async def _abandon(self) -> None:
        """The link was lost: nothing more reaches Redis through it. The handlers in flight are
        cancelled (their callers' deadlines, 100 ms by default, passed while the link hung for the
        command timeout) and their replies are not waited for: :meth:`serve` closes the link, which
        fails them at once. Draining here instead — each reply waiting out its own timeout on a link
        that kept reopening into the same dead path — held the reconnect back by up to 10 s after a
        half-open link healed. The heartbeat is not cleared (Redis is unreachable): it expires, or
        the next connection rewrites it."""
        await cancel_and_wait(list(self._inflight))

    async def _drain(self) -> None:
        """Let the handlers in flight finish and their replies reach Redis (5 s at most each)."""
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=REPLY_TIMEOUT_S)
        if self._replying:
            await asyncio.wait(set(self._replying), timeout=REPLY_TIMEOUT_S)

    async def _handle(self, replies: _Replies, queue: str, raw: bytes, popped: float) -> None:
        start = time.perf_counter()
        entry = self._handlers.get(queue)
        label = entry[0].label if entry else queue
        try:
            env = decode_request(raw)
        except MalformedRequest as exc:
            self._metrics.child(self._metrics.served, label, "malformed").inc()
            log.warning("dropping malformed RPC request on %s: %s", queue, exc)
            return  # no reply_to we can trust
        call_id, reply_to = env["id"], env["reply_to"]
        deadline = popped + env["budget_ms"] / 1000
        if deadline < time.monotonic():
            self._metrics.child(self._metrics.dropped, label).inc()
            return
        token = request_id_var.set(env.get("request_id"))
        outcome = "ok"
        try:
            if entry is None or entry[0].name != env["method"]:
                raise MethodNotFound(f"method {env['method']!r} v{env.get('mv')} is not served on {queue}")
            method, handler = entry
            try:
                body = method.request.model_validate(env.get("body") or {})
            except ValidationError as exc:
                raise MalformedRequest(f"invalid {method.label} body: {exc.error_count()} error(s): {exc}") from exc
            ctx = RpcContext(call_id=call_id, request_id=env.get("request_id"), deadline=deadline)
            result = await handler(body, ctx)
            wire = result if isinstance(result, bytes) else result.model_dump_json().encode()
            payload = encode_reply_ok(call_id, wire)
        except RemoteError as exc:
            outcome = exc.type_name
            payload = encode_reply_error(call_id, exc)
        except Exception as exc:
            outcome = "error"
            log.exception("RPC handler for %s failed", label)
            payload = encode_reply_error(call_id, exc)
        finally:
            request_id_var.reset(token)
        self.handled += 1
        self._metrics.child(self._metrics.served, label, outcome).inc()
        self._metrics.child(self._metrics.handle_duration, label).observe(time.perf_counter() - start)
        # the reply is handed over, not awaited: the task ends here, and the sender settles it
        # (a task woken by every reply's acknowledgement cost the server ~10 % of its CPU)
        if env["reply_via"] == "channel":
            sent: asyncio.Future[Any] = replies.publish.submit(reply_to, payload)
        else:
            sent = replies.push.submit(reply_to, payload, REPLY_TTL_S)
        self._replying.add(sent)
        sent.add_done_callback(partial(self._replied, reply_to))

    def _replied(self, reply_to: str, sent: asyncio.Future[Any]) -> None:
        self._replying.discard(sent)
        if sent.cancelled():
            return
        exc = sent.exception()
        if exc is not None:
            log.warning("could not send RPC reply: %s", exc)
        elif sent.result() == 0:  # PUBLISH reached no subscriber
            log.debug("nobody listens on %s any more (its caller is gone)", reply_to)

    def consuming(self) -> bool:
        """The consumer completed a pop lately (a pop blocks ``POP_TIMEOUT_S`` at most)."""
        stale_after = POP_TIMEOUT_S + self._link_opts.command_timeout_s + 1.0
        return self.connected and time.monotonic() - self._last_pop < stale_after

    async def _heartbeat(self, writer: Redis) -> None:
        while True:
            raise_if_cancelling()  # redis-py can drop the cancellation that serve() sent
            try:
                await self._beat(writer, alive=self.consuming())
            except (RedisError, OSError) as exc:
                log.debug("heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT_EVERY_S)

    async def _beat(self, writer: Redis, *, alive: bool) -> None:
        async with writer.pipeline(transaction=False) as pipe:
            for m, _ in self._handlers.values():
                mine = self._keys.rpc_alive_replica(m.name, m.version, self.replica_id)
                if alive:
                    pipe.set(mine, self.replica_id, px=HEARTBEAT_TTL_MS)
                    pipe.sadd(self._keys.rpc_alive(m.name, m.version), self.replica_id)
                    pipe.expire(self._keys.rpc_alive(m.name, m.version), REPLICA_SET_TTL_S)
                else:  # not connected, or the pops stopped coming back: do not look alive
                    pipe.delete(mine)
            await pipe.execute()

    async def _clear_heartbeat(self, writer: Redis) -> None:
        """On shutdown, drop this replica's heartbeat (its own key: no other replica's is
        touched), so that clients fall back at once when it was the last one."""
        async with writer.pipeline(transaction=False) as pipe:
            for m, _ in self._handlers.values():
                pipe.delete(self._keys.rpc_alive_replica(m.name, m.version, self.replica_id))
                pipe.srem(self._keys.rpc_alive(m.name, m.version), self.replica_id)
            await pipe.execute()
