"""The gpu-agent's exceptions.

Errors::

    TurnoutError (turnout.common.errors)
    ├── GpuUnavailable       a reader cannot read any GPU (no driver, no library, no device)
    └── GpuReadError         one read failed (tool missing, driver not loaded, malformed output)

A reader raises :class:`GpuReadError` from one read; :class:`GpuUnavailable` means the reader as a
whole has nothing to offer, and the agent then publishes the host without GPUs (with the reason).
"""

from __future__ import annotations

from turnout.common.errors import TurnoutError


class GpuUnavailable(TurnoutError):
    """The reader cannot read any GPU (no driver, no library, no device); the message says why."""


class GpuReadError(TurnoutError):
    """A reader could not read its GPUs (tool missing, driver not loaded, malformed output)."""
