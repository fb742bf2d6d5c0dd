"""One inference request's life on a listener, shared by both dialects.

``begin`` applies injected failures and ``error_rate``, loads the model (Ollama residency),
and returns a :class:`Job`; ``Job.write_stream`` paces the chunks a handler built (the first
after ``ttft_ms`` plus the prompt's prefill, ``prompt_tokens / prefill_tokens_per_s``, then one
token every ``1/tokens_per_s``); ``Job.wait_whole`` sleeps as long
as the whole reply would take for non-streamed answers; ``end`` releases the model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from turnout.fakefleet.config import Dialect, ModelSpec
from turnout.fakefleet.errors import Dropped, FleetError
from turnout.fakefleet.state import Failure, FleetState, ListenerState, OutOfMemory

log = logging.getLogger(__name__)

_UNSET = object()


@dataclass
class Job:
    fleet: FleetState
    listener: ListenerState
    model: ModelSpec
    request: web.Request
    keep_alive: float | None
    resident: bool
    cut: bool = False
    prompt_tokens: int = 0
    """The prompt's tokens, set by the handler before pacing: their prefill delays the first token."""
    started: float = field(default_factory=time.perf_counter)
    load_s: float = 0.0
    prompt_s: float = 0.0
    eval_s: float = 0.0

    # --- pacing ----------------------------------------------------------------------------

    @property
    def ttft_s(self) -> float:
        """Fixed ``ttft_ms`` plus the prompt's prefill at ``prefill_tokens_per_s`` (0: none), scaled."""
        rate = self.model.prefill_tokens_per_s
        prefill = self.prompt_tokens / rate if rate > 0 else 0.0
        return self.fleet.delay(self.model.ttft_ms / 1000 + prefill)

    @property
    def token_s(self) -> float:
        tps = self.model.tokens_per_s
        return self.fleet.delay(1 / tps) if tps > 0 else 0.0

    async def wait_whole(self, n_tokens: int) -> None:
        """A non-streamed answer arrives after the time the whole stream would take.

        ``cut`` (meant for streams) drops a non-streamed request like ``close``.
        """
        if self.cut:
            drop_connection(self.request)
            raise Dropped()
        t0 = time.perf_counter()
        if self.ttft_s > 0:
            await asyncio.sleep(self.ttft_s)
        t1 = time.perf_counter()
        if self.token_s > 0 and n_tokens > 1:
            await asyncio.sleep(self.token_s * (n_tokens - 1))
        t2 = time.perf_counter()
        self.prompt_s, self.eval_s = t1 - t0, t2 - t1

    async def write_stream(
        self,
        resp: web.StreamResponse,
        tokens: Sequence[bytes],
        *,
        head: bytes = b"",
        tail: Callable[[], bytes] | None = None,
    ) -> None:
        """Write ``head`` + the first token after TTFT, then a token per tick, then ``tail()``
        (built last, so that it can carry the timings).

        Every token is its own write (an HTTP chunk / SSE event), as real servers send them, also
        with no delays (the benchmark's zero-delay upstream). ``cut`` drops the connection after
        the first token.
        """
        t0 = time.perf_counter()
        if self.ttft_s == 0 and self.token_s == 0 and not self.cut:
            await resp.write(head + (tokens[0] if tokens else b""))
            for tok in tokens[1:]:
                await resp.write(tok)
            self.eval_s = time.perf_counter() - t0
            if tail:
                await resp.write(tail())
            return
        if self.ttft_s > 0:
            await asyncio.sleep(self.ttft_s)
        t1 = time.perf_counter()
        self.prompt_s = t1 - t0
        first = tokens[0] if tokens else b""
        await resp.write(head + first)
        if self.cut:
            drop_connection(self.request)
            raise Dropped()
        for i, tok in enumerate(tokens[1:], start=1):
            wait = t1 + i * self.token_s - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            await resp.write(tok)
        self.eval_s = time.perf_counter() - t1
        if tail:
            await resp.write(tail())

    # --- Ollama's timing fields (nanoseconds; never zero, clients divide by them) -------------
    # prompt_eval_duration is the time to the first token as paced (ttft_ms + the prefill), so
    # prompt_eval_count / prompt_eval_duration follows the prefill model: the profiler's slope
    # between a short and a long prompt gives back prefill_tokens_per_s (at time_scale 1).

    def timings(self, prompt_tokens: int, eval_tokens: int) -> dict[str, int]:
        total = time.perf_counter() - self.started
        return {
            "total_duration": max(1, int(total * 1e9)),
            "load_duration": max(1, int(self.load_s * 1e9)),
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": max(1, int(self.prompt_s * 1e9)),
            "eval_count": eval_tokens,
            "eval_duration": max(1, int(self.eval_s * 1e9)),
        }


async def begin(
    fleet: FleetState, listener: ListenerState, model: ModelSpec, request: web.Request, keep_alive: object = _UNSET
) -> Job:
    """Count the request, apply failures, load the model; the caller must ``end`` the job."""
    listener.requests[model.name] += 1
    failure = fleet.failures.match_model(listener.spec.name, model.name)
    cut = False
    if failure is not None:
        cut = failure.mode == "cut"
        if not cut:
            listener.errors[model.name] += 1
            await apply_failure(failure, request, ollama=_is_ollama_path(request))
    if model.error_rate > 0 and listener.rng.random() < model.error_rate:
        listener.errors[model.name] += 1
        raise server_error(_is_ollama_path(request))
    ka = listener.spec.keep_alive if keep_alive is _UNSET else keep_alive
    assert ka is None or isinstance(ka, float)
    resident = True
    wait = 0.0
    if listener.spec.dialect is Dialect.OLLAMA:
        resident = model.name in listener.residency.models
        try:
            wait = listener.residency.acquire(model, ka)
        except OutOfMemory as exc:
            listener.errors[model.name] += 1
            raise FleetError(500, str(exc)) from None
    job = Job(fleet, listener, model, request, keep_alive=ka, resident=resident, cut=cut)
    if wait > 0:
        try:
            await asyncio.sleep(wait)
        except BaseException:
            end(job)
            raise
    job.load_s = wait
    return job


def end(job: Job) -> None:
    if job.listener.spec.dialect is Dialect.OLLAMA:
        job.listener.residency.release(job.model.name, job.keep_alive)


def server_error(ollama: bool) -> FleetError:
    if ollama:
        return FleetError(500, "llama runner process has terminated: exit status 2 (simulated)")
    return FleetError(500, "The server had an error while processing your request (simulated).")


async def apply_failure(failure: Failure, request: web.Request, *, ollama: bool) -> None:
    """Carry out an injected failure mode before any byte of the answer went out."""
    if failure.mode in ("500", "error"):
        err = server_error(ollama)
        err.status = failure.status
        raise err
    if failure.mode == "close":
        drop_connection(request)
        raise Dropped()
    if failure.mode == "hang":
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.05)
        raise Dropped()
    if failure.mode == "cut":  # a request that streams nothing: drop it like `close`
        drop_connection(request)
        raise Dropped()


def drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _is_ollama_path(request: web.Request) -> bool:
    return request.path.startswith("/api/")
