"""The profiler's exceptions.

Errors::

    TurnoutError (turnout.common.errors)
    ├── ProfilingFailed      the model could not be profiled at all (warm-up failed, no slot, VRAM lock
    │                        held); the arq job retries, then records a dead letter
    └── JudgeError           the LLM judge gave no usable verdict (after retries, or a non-retryable error)
        └── JudgeRetryable   a transient judge failure (429/5xx, timeout, connection, unreadable verdict);
                             retried by tenacity, honouring ``retry_after_s``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from turnout.common.errors import TurnoutError

if TYPE_CHECKING:
    from turnout.profiler.runner import ProfileResult


class ProfilingFailed(TurnoutError):
    """The model could not be profiled at all (warm-up failed); the job retries."""

    def __init__(self, message: str, result: ProfileResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class JudgeError(TurnoutError):
    """The judge gave no usable verdict (after retries, or a non-retryable error)."""


class JudgeRetryable(JudgeError):
    """A transient judge failure; ``retry_after_s`` is the server's ``Retry-After`` when it sent one."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
