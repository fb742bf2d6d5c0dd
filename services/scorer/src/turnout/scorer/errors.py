"""The scorer's exceptions.

Errors::

    TurnoutError (turnout.common.errors)
    ├── ConfigError (common)
    │   └── RulesError           the operator's rules file is invalid (YAML, shape or values); a ValueError
    └── ClassifierError          the LLM classifier gave no usable answer (HTTP error, prose, an
                                 answer outside the vocabulary); a ValueError. The scorer then
                                 falls back to the heuristic prompt analysis.

The RPC errors a caller sees (``MalformedRequest``, ``DeadlineExceeded``, ``RemoteError``) are
in :mod:`turnout.common.errors`: the RPC server maps what a handler raises onto them.
"""

from __future__ import annotations

from turnout.common.errors import ConfigError, TurnoutError


class RulesError(ConfigError, ValueError):
    """The rules file is invalid; the message says where and why."""


class ClassifierError(TurnoutError, ValueError):
    """The LLM classifier's answer is unusable; the message says why."""
