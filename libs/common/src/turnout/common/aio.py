"""Ending background tasks without hiding how they ended.

``contextlib.suppress(asyncio.CancelledError, Exception)`` around ``await task`` at shutdown
swallows a task's crash: the traceback is retrieved and dropped, so nobody ever sees it. These
helpers cancel (or wait for) tasks, treat cancellation as the normal end, and log any other
exception once, with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def report_crash(task: asyncio.Task[Any]) -> None:
    """Log ``task``'s exception with its traceback, if it ended with one (not when cancelled)."""
    if not task.done() or task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks``, wait until each has ended, and log those that had crashed."""
    pending = list(tasks)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending)
    for t in pending:
        report_crash(t)


async def wait_or_cancel(task: asyncio.Task[Any], timeout_s: float) -> None:
    """Let ``task`` finish for up to ``timeout_s``, then cancel it; log it if it crashed."""
    await asyncio.wait([task], timeout=timeout_s)
    await cancel_and_wait([task])


__all__ = ["cancel_and_wait", "report_crash", "wait_or_cancel"]
