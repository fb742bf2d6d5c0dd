"""Who may call what: client keys for the model API, the admin key (or loopback) for ``/admin``.

Closed by default:

* **client keys** (``TURNOUT_GATEWAY__API_KEYS``): when set, ``/v1`` and ``/api`` need
  ``Authorization: Bearer <key>``. A key may be configured as ``sha256:<hex>`` (the SHA-256 of
  the key), so that the key itself is stored nowhere. Lookup hashes the presented key once and
  looks the digest up: no timing difference between keys reveals anything about a stored key.
* **admin** (``TURNOUT_ADMIN_KEY``): with a key, ``/admin`` needs ``Authorization: Bearer
  <admin key>``; without one only loopback clients are answered (``dev`` and ``test``: ``prod``
  refuses to start without a key, see :mod:`turnout.gateway.settings`). With
  ``admin_allow_cidrs`` set, clients outside those networks get 403 whatever key they send.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from pydantic import SecretStr

from turnout.gateway.errors import Forbidden, Unauthorized

if TYPE_CHECKING:
    from turnout.gateway.settings import GatewaySettings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def key_digest(key: str) -> str:
    """The SHA-256 hex digest a client key is stored and compared as."""
    return hashlib.sha256(key.encode()).hexdigest()


def client_key_ids(keys: Sequence[SecretStr] | None) -> dict[str, str]:
    """SHA-256 hex digest of each configured key -> the client id ``key-<digest prefix>``."""
    out: dict[str, str] = {}
    for k in keys or ():
        raw = k.get_secret_value()
        digest = raw.removeprefix("sha256:") if raw.startswith("sha256:") else key_digest(raw)
        out[digest] = "key-" + digest[:10]
    return out


def bearer(request: Request) -> str | None:
    """The bearer token of the ``Authorization`` header, or ``None``."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def client_by_key(request: Request, digests: dict[str, str]) -> str:
    """The client id of the request's key (401 without a valid one)."""
    key = bearer(request)
    if key is None:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'")
    found = digests.get(key_digest(key))
    if found is None:
        raise Unauthorized("Incorrect API key provided")
    return found


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is a loopback address (``False`` for no host or a name)."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class AdminGuard:
    """Who may call the admin API: the admin key and, when set, the allowed networks."""

    key: SecretStr | None
    networks: tuple[Network, ...] = ()

    @classmethod
    def of(cls, settings: GatewaySettings) -> AdminGuard:
        """The guard ``settings`` describe."""
        return cls(settings.admin_key, tuple(settings.gateway.admin_allow_cidrs))

    def check(self, request: Request) -> None:
        """Raise 403 or 401 unless ``request`` may use the admin API."""
        host = request.client.host if request.client else None
        if self.networks and not self._allowed(host):
            raise Forbidden("The admin API is not open to this address")
        if self.key is None:
            if not is_loopback(host):
                raise Forbidden(
                    "The admin API answers only loopback clients while no admin key is configured (TURNOUT_ADMIN_KEY)"
                )
            return
        given = bearer(request) or ""
        if not hmac.compare_digest(given.encode(), self.key.get_secret_value().encode()):
            raise Unauthorized("This endpoint needs the admin key: 'Authorization: Bearer <TURNOUT_ADMIN_KEY>'")

    def _allowed(self, host: str | None) -> bool:
        if not host:
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


async def require_admin(request: Request) -> None:
    """FastAPI dependency: the admin guard's check on this request."""
    guard: AdminGuard = request.state.gw.admin_guard
    guard.check(request)


AdminDep = Annotated[None, Depends(require_admin)]
