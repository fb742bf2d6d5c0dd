"""Shutdown that fits Kubernetes: stop being ready, keep serving, drain streams, end what is left.

On SIGTERM (:class:`DrainingServer`, the uvicorn server ``__main__`` runs):

1. at once ``/ready`` answers 503 (``draining``), so the endpoints controller takes the pod out
   of its Services; the gateway still accepts and serves new requests for
   ``prestop_delay_s`` (requests routed to it before the endpoint update reached every node);
2. then uvicorn stops accepting connections and waits for the requests in flight;
3. streams still open ``drain_grace_s`` later are ended by the gateway itself: each gets an
   error event (SSE ``data: {"error": …, "code": "shutdown"}`` / an NDJSON ``{"error": …}``
   line) and its request event says ``outcome: shutdown`` — never a silent cut, never a 499.

Set ``terminationGracePeriodSeconds`` above ``prestop_delay_s + drain_grace_s`` (+ a few
seconds): Kubernetes kills the pod when that runs out, whatever is still open. A second
SIGTERM or SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable
from types import FrameType

import uvicorn

log = logging.getLogger(__name__)

SHUTDOWN_MARGIN_S = 5.0
"""uvicorn waits this long after the grace for the error events to be written."""


class Drain:
    """The shutdown state the app reads (``/ready``) and the server moves."""

    def __init__(self, *, prestop_delay_s: float = 0.0, grace_s: float = 60.0) -> None:
        self.prestop_delay_s = prestop_delay_s
        self.grace_s = grace_s
        self.began: float | None = None
        """``time.monotonic()`` of the SIGTERM, ``None`` while serving normally."""

    @property
    def draining(self) -> bool:
        """Whether SIGTERM has begun the drain."""
        return self.began is not None

    def begin(self) -> None:
        """Start draining: ``/ready`` turns 503 while requests are still served for ``prestop_delay_s``."""
        if self.began is None:
            self.began = time.monotonic()
            log.info(
                "draining: /ready is 503; serving %.0fs more, then streams get %.0fs to finish",
                self.prestop_delay_s,
                self.grace_s,
            )

    def stop_accepting(self) -> bool:
        """Whether the pre-stop delay is over and the server should stop accepting."""
        return self.began is not None and time.monotonic() - self.began >= self.prestop_delay_s

    def cut_off(self) -> bool:
        """Whether the streams' grace is over too."""
        return self.began is not None and time.monotonic() - self.began >= self.prestop_delay_s + self.grace_s

    @property
    def server_timeout_s(self) -> int:
        """uvicorn's ``timeout_graceful_shutdown``: past the grace, by the margin."""
        return math.ceil(self.grace_s + SHUTDOWN_MARGIN_S)

    async def watch(self, end_streams: Callable[[], Awaitable[int]], *, poll_s: float = 0.1) -> None:
        """Background task: when the grace runs out, end the streams still open."""
        while not self.cut_off():
            await asyncio.sleep(poll_s)
        n = await end_streams()
        log.warning("drain grace over: %d stream(s) still open were ended with an error event", n)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a pre-stop phase: the first SIGTERM starts :class:`Drain` and the
    server keeps accepting until the pre-stop delay is over (checked on uvicorn's 0.1 s tick)."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """The first SIGTERM begins the drain instead of exiting; any other signal exits."""
        if sig == signal.SIGTERM and not self.drain.draining:
            self.drain.begin()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """Exit once the drain stops accepting."""
        if self.drain.stop_accepting():
            self.should_exit = True
        return await super().on_tick(counter)
