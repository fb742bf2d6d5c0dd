"""What can go wrong when preparing or running a llama.cpp fleet.

::

    LlamaFleetError
    ├── LlamaUnavailable   the llama.cpp runtime cannot be installed here (venv, PyPI, import)
    │   └── WheelUnbuildable   no cached wheel and it cannot be built (no compiler, build failed)
    ├── ModelUnavailable   a model file cannot be fetched or written
    └── ServerError        a llama.cpp server did not start or did not become ready
"""

from __future__ import annotations


class LlamaFleetError(RuntimeError):
    """Base class of this package's errors."""


class LlamaUnavailable(LlamaFleetError):
    """The llama.cpp runtime cannot be had here; the message says why (tests turn it into a skip)."""


class WheelUnbuildable(LlamaUnavailable):
    """No llama-cpp-python wheel is cached and none can be built here (the e2e tier skips on this)."""


class ModelUnavailable(LlamaFleetError):
    """A model file could not be fetched, unpacked or generated."""


class ServerError(LlamaFleetError):
    """A server process exited or did not answer in time; the message carries its last log lines."""
