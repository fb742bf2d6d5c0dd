"""Exceptions shared across Turnout packages.

TurnoutError
├── ConfigError                  invalid settings or config files
├── TranslationError             a request cannot be expressed in the other dialect (also a ValueError)
├── BackendError                 talking to a model backend failed
│   ├── BackendUnavailable       connection refused / reset / DNS / circuit open
│   ├── BackendTimeout           connect or read timeout
│   └── BackendStatusError       the backend answered with an HTTP error (status, body)
└── RpcError                     the scorer RPC failed
    ├── RpcTimeout               no reply before the deadline (raised client-side)
    ├── RpcUnavailable           no live server, or the Redis connection is down
    └── RemoteError              the server raised; ``type`` names the remote exception
        ├── MalformedRequest
        ├── MethodNotFound
        └── DeadlineExceeded
"""

from __future__ import annotations


class TurnoutError(Exception):
    """Base of every Turnout exception."""


class ConfigError(TurnoutError):
    """Settings or a config file are invalid."""


class TranslationError(TurnoutError, ValueError):
    """The request cannot be expressed in the other dialect (the message says why)."""


class BackendError(TurnoutError):
    """A model backend call failed."""

    def __init__(self, message: str, *, backend: str = "") -> None:
        super().__init__(message)
        self.backend = backend


class BackendUnavailable(BackendError):
    """The backend could not be reached."""


class BackendTimeout(BackendError):
    """The backend did not answer in time."""


class BackendStatusError(BackendError):
    """The backend answered with an HTTP error status."""

    def __init__(self, message: str, *, status: int, body: bytes = b"", backend: str = "") -> None:
        super().__init__(message, backend=backend)
        self.status = status
        self.body = body


class RpcError(TurnoutError):
    """An RPC call failed."""


class RpcTimeout(RpcError):
    """No reply arrived before the call's deadline."""


class RpcUnavailable(RpcError):
    """No server is alive for the method, or the transport is down."""


class RemoteError(RpcError):
    """The server failed while handling the call."""

    type_name = "RemoteError"

    def __init__(self, message: str, *, type_name: str | None = None) -> None:
        super().__init__(message)
        if type_name is not None:
            self.type_name = type_name


class MalformedRequest(RemoteError):
    type_name = "MalformedRequest"


class MethodNotFound(RemoteError):
    type_name = "MethodNotFound"


class DeadlineExceeded(RemoteError):
    type_name = "DeadlineExceeded"


KNOWN_REMOTE_ERRORS: dict[str, type[RemoteError]] = {
    cls.type_name: cls for cls in (MalformedRequest, MethodNotFound, DeadlineExceeded)
}
