"""Retry waits for HTTP calls made with tenacity (the ``retry`` extra).

:func:`backoff_or_retry_after` is the wait of every outbound HTTP retry loop (the profiler's
judge, the sync sources): tenacity's exponential back-off with jitter, unless the failure
carries the server's ``Retry-After`` (an exception with a ``retry_after_s`` attribute), which is
honoured up to the same ceiling.
"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import RetryCallState
from tenacity.wait import wait_exponential_jitter


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the delay-seconds form; an HTTP date gives None)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def backoff_or_retry_after(initial_s: float, max_s: float) -> Callable[[RetryCallState], float]:
    """``initial · 2^(attempt-1)`` plus up to ``initial`` of jitter, capped at ``max_s``; or the
    failure's ``retry_after_s``, capped at ``max_s``."""
    backoff = wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(exc, "retry_after_s", None)
        if isinstance(retry_after, int | float):
            return min(float(retry_after), max_s)
        return float(backoff(state))

    return wait


__all__ = ["backoff_or_retry_after", "parse_retry_after"]
