"""The sync worker's exceptions.

A source fetches everything first and returns its rows; a source that fails half-way raises a
:class:`SourceError` and the previous data stays untouched.

Errors::

    TurnoutError (turnout.common.errors)
    └── SourceError                 the source gave nothing usable this run
        ├── SourceUnavailable       connection failure, timeout, HTTP 429/5xx after retries
        │   └── SourceTransient     one transient failure, retried (honouring ``retry_after_s``)
        ├── SourceAuthError         HTTP 401/403 (a missing or wrong API key)
        └── SourceFormatError       the response is not in the documented format
"""

from __future__ import annotations

from turnout.common.errors import TurnoutError


class SourceError(TurnoutError):
    """The source gave nothing usable this run; previous data stays."""


class SourceUnavailable(SourceError):
    """The source could not be reached, timed out or kept answering 429/5xx."""


class SourceTransient(SourceUnavailable):
    """One transient failure, retried; ``retry_after_s`` is the server's ``Retry-After`` when sent."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceAuthError(SourceError):
    """The source refused our credentials (HTTP 401/403)."""


class SourceFormatError(SourceError):
    """The response is not in the format the source documents."""
