"""A loopback TCP proxy that can turn into a black hole: a half-open link, on demand.

``proxy = BlackHoleProxy("127.0.0.1", redis_port); proxy.start()`` forwards
``127.0.0.1:proxy.port`` to the target. ``proxy.blackhole()`` makes every connection open now,
and every one accepted until :meth:`heal`, silently swallow what either side sends: nothing is
closed, nothing is refused, nothing arrives — what a peer behind a dead NAT entry or a pulled
cable looks like. Those connections stay dead after ``heal()`` (a half-open TCP connection does
not come back); connections made afterwards work. It runs its own event loop in a thread, so
synchronous callers (the fault bench, tests) can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from turnout.devstack.infra import free_port


class _Pipe:
    __slots__ = ("dead",)

    def __init__(self, dead: bool) -> None:
        self.dead = dead


class BlackHoleProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._holed = False
        self._pipes: set[_Pipe] = set()
        # the loop holds tasks weakly: a connection whose sockets are both idle (a dead pipe) would
        # be collected while pending, its StreamWriters unclosed
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="blackhole-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self.connections = 0

    @property
    def url_host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    def blackhole(self) -> None:
        def hole() -> None:
            self._holed = True
            for pipe in self._pipes:
                pipe.dead = True

        self._loop.call_soon_threadsafe(hole)

    def heal(self) -> None:
        def heal() -> None:
            self._holed = False

        self._loop.call_soon_threadsafe(heal)

    def stop(self) -> None:
        """Close the listener and every connection, stop the loop's thread and close the loop."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # each closes its two writers
            if self._server is not None:
                await self._server.wait_closed()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        pipe = _Pipe(dead=self._holed)
        self._pipes.add(pipe)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._pipes.discard(pipe)
            await _close(writer)
            return
        pumps = asyncio.gather(self._pump(reader, up_writer, pipe), self._pump(up_reader, writer, pipe))
        try:
            await pumps
        except asyncio.CancelledError:  # stop(): close both sides, wait until they are closed
            pumps.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumps
            await asyncio.gather(_close(writer), _close(up_writer))
            # ends normally: asyncio's callback for a connection's task reads task.exception(),
            # which raises (and is logged, once per connection) for a task that ends cancelled
            return
        finally:
            # at once, whatever ended it (a coroutine closed by the GC must not await here)
            self._pipes.discard(pipe)
            writer.close()
            up_writer.close()
        await asyncio.gather(_close(writer), _close(up_writer))

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, pipe: _Pipe) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                if pipe.dead:
                    continue  # swallowed: the sender's kernel acknowledged it, nobody gets it
                dst.write(data)
                await dst.drain()
        if not pipe.dead:  # a clean close travels on a live link only
            await _close(dst)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close ``writer`` and wait until its socket is closed (a reset peer is closed too)."""
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


__all__ = ["BlackHoleProxy"]
