"""A streaming ASGI response that notices a client disconnect at once and cancels the upstream.

Starlette's ``StreamingResponse`` only sees a disconnect on its next write when the server
speaks ASGI 2.4, so a slow upstream would keep running. Here the request task pumps the body
while a small task waits on ``receive()``; an ``http.disconnect`` cancels the pump, whose
generator closes the upstream response in its ``finally``. ``on_close`` runs in every case (also when the
body never started), so the upstream and the in-flight count are always released.

A body may end with a :class:`Last` chunk: it goes out with the response's end in one write (its
bytes and the chunked terminator), and the body is then run to its end, so that its bookkeeping
(closing the upstream, the metrics and the request event) comes after the client has the last byte.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Receive, Scope, Send


class Last(bytes):
    """A stream body's last bytes, sent with the end of the response (see the module)."""

    __slots__ = ()


class StreamResponse(Response):
    """A streaming response that cancels its body at once when the client disconnects."""

    def __init__(
        self,
        body: AsyncIterator[bytes],
        *,
        media_type: str,
        headers: list[tuple[bytes, bytes]],
        on_close: Callable[[], Awaitable[None]] | None = None,
        final_bytes: Callable[[], bytes] | None = None,
    ) -> None:
        self.body_iterator = body
        self.final_bytes = final_bytes
        self._task: asyncio.Task[object] | None = None
        self._ending = False
        self._started = False
        self._complete = False
        """The response's last byte is sent: a disconnect or the drain's end changes nothing now."""
        self.status_code = 200
        self.media_type = media_type
        self.background: BackgroundTask | None = None
        self.on_close = on_close
        self.raw_headers = [
            (b"content-type", media_type.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *headers,
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG002
        # The body is pumped in this task; a second one waits on receive() and, on a disconnect,
        # cancels this one (and the cancellation is taken back below). One extra task per stream,
        # started once the first chunk is written (not before the first byte: it could not run
        # before that write anyway, which follows the head in the same pass), and none for a
        # stream whose first chunk is its Last.
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        state = {"done": False, "disconnected": False}

        def on_disconnect(listener: asyncio.Future[None]) -> None:
            if state["done"] or self._complete or listener.cancelled() or listener.exception() is not None:
                return
            state["disconnected"] = True
            task.cancel()

        listen: asyncio.Future[None] | None = None

        def start_listening() -> None:
            nonlocal listen
            listen = asyncio.ensure_future(self._until_disconnect(receive))
            listen.add_done_callback(on_disconnect)

        try:
            await self._pump(send, start_listening)
        except asyncio.CancelledError:
            if not (state["disconnected"] or self._ending):
                raise
            task.uncancel()  # our own cancellation: the client went away, or the drain is over
            if self._ending and not state["disconnected"]:
                await self._send_final(send)
        except OSError:
            pass  # the client went away mid-write
        finally:
            state["done"] = True
            if listen is not None and not listen.done():
                listen.cancel()  # not waited for: it ends on the loop's next pass, ignored (done)
            if self.on_close is not None:
                await self.on_close()
        if self.background is not None:
            await self.background()

    def end_now(self) -> None:
        """End the stream from outside (the drain grace ran out): stop the body where it is and
        send ``final_bytes`` as its last write."""
        if self._task is not None and not self._task.done() and not self._ending and not self._complete:
            self._ending = True
            self._task.cancel()

    async def _send_final(self, send: Send) -> None:
        with contextlib.suppress(OSError):
            if not self._started:
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            last = self.final_bytes() if self.final_bytes is not None else b""
            await send({"type": "http.response.body", "body": last, "more_body": False})

    async def _pump(self, send: Send, first_written: Callable[[], None]) -> None:
        body = self.body_iterator
        first = True
        try:
            self._started = True
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in body:
                if self._complete:
                    raise RuntimeError("a stream body went on after its Last chunk")
                if type(chunk) is Last:
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    self._complete = True
                else:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if first:
                        first = False
                        first_written()
            if not self._complete:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                self._complete = True
        finally:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                await aclose()

    @staticmethod
    async def _until_disconnect(receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
