"""Ending background tasks without hiding how they ended, and without waiting forever.

``contextlib.suppress(asyncio.CancelledError, Exception)`` around ``await task`` at shutdown
swallows a task's crash: the traceback is retrieved and dropped, so nobody ever sees it. These
helpers cancel (or wait for) tasks, treat cancellation as the normal end, and log any other
exception once, with its traceback.

A cancellation can be lost on the way. On CPython 3.11 (our image's), ``asyncio.wait_for`` drops
a ``cancel()`` that arrives while the awaitable it wraps has just finished: it returns the result
instead (gh-86296, fixed in 3.12 by reimplementing ``wait_for`` on ``asyncio.timeout``). redis-py
writes every command through ``wait_for`` when a socket timeout is set (always, for our clients:
:func:`~turnout.common.links.make_redis`), so a loop that sends commands now and then, cancelled
at the wrong moment, carries on as if nothing happened — and an unbounded ``await`` for it to end
hangs the shutdown (measured: ``RpcClient.close`` hung in 1 of 60 runs of a link test under CPU
load; a loop of ``SMEMBERS`` cancelled at 40 offsets kept running at 7 of them). Hence:

* :func:`raise_if_cancelling` — a loop calls it once per round: the task's ``cancelling()``
  count still says it was asked to stop, so it stops, at once;
* :func:`cancel_and_wait` is bounded: a task still running ``grace_s`` after its cancellation is
  cancelled again, every ``RECANCEL_EVERY_S`` (a dropped cancellation is delivered at its next
  ``await``), and one still running ``grace_s`` after that is logged with its stack and left
  behind rather than waited for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

CANCEL_GRACE_S = 5.0
"""How long a cancelled task may take to end (its cleanup included) before it is cancelled again."""
RECANCEL_EVERY_S = 0.05


def report_crash(task: asyncio.Task[Any]) -> None:
    """Log ``task``'s exception with its traceback, if it ended with one (not when cancelled)."""
    if not task.done() or task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)


def raise_if_cancelling() -> None:
    """Raise :class:`asyncio.CancelledError` if the current task was asked to stop and is still
    running: its cancellation was dropped by a library on the way (see the module docstring).
    For loops that must not outlive a ``cancel()``; call it once per round, outside ``finally``."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError("cancelled earlier; the cancellation was dropped on the way")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, grace_s: float = CANCEL_GRACE_S) -> None:
    """Cancel ``tasks``, wait until each has ended, and log those that had crashed. Bounded by
    ``2 * grace_s``: after ``grace_s`` the tasks still running are cancelled again, every
    ``RECANCEL_EVERY_S``, for up to ``grace_s`` more; any still running then is logged (ERROR,
    with where it is stuck) and not waited for."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    pending = {t for t in tasks if not t.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=grace_s)
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + grace_s
    while pending and loop.time() < give_up_at:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, max(0.0, give_up_at - loop.time())))
    for t in pending:
        log.error(
            "background task %s still running %.1fs after it was cancelled; not waiting for it:\n%s",
            t.get_name(),
            2 * grace_s,
            _stack(t),
        )
    for t in tasks:
        report_crash(t)


async def wait_or_cancel(task: asyncio.Task[Any], timeout_s: float, *, grace_s: float = CANCEL_GRACE_S) -> None:
    """Let ``task`` finish for up to ``timeout_s``, then cancel it (:func:`cancel_and_wait`);
    log it if it crashed."""
    await asyncio.wait([task], timeout=timeout_s)
    await cancel_and_wait([task], grace_s=grace_s)


def _stack(task: asyncio.Task[Any]) -> str:
    """Where ``task`` waits: each coroutine of its ``await`` chain, outermost first, then what the
    innermost one awaits (``Task.print_stack`` shows only the outermost frame of a suspended task)."""
    lines: list[str] = []
    step: Any = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        if frame is None:  # not a coroutine: the future (or other awaitable) it waits on
            lines.append(f"  awaiting {step!r}")
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        step = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
    return "\n".join(lines)


__all__ = ["CANCEL_GRACE_S", "cancel_and_wait", "raise_if_cancelling", "report_crash", "wait_or_cancel"]
