"""The audit log: every admin action (a ``POST``/``PUT``/``PATCH``/``DELETE`` under ``/admin``,
refused ones included) becomes one ``audit_log`` row.

A pure ASGI middleware inside the app, so that every admin route, present or future, is covered
without each one remembering to write it. The row is written when the response starts, before
the client sees it: an acknowledged action is always on record, in the order answered. Row:
``actor`` (``admin-key`` when the request carried the admin key, else
``anonymous@<address>``), ``action`` (``POST /admin/reprofile``) and
``detail`` (query parameters, status, client address, request id). Bodies are not stored (an
explain body is a prompt). Read-only POSTs (:data:`READ_ONLY`) are not actions. A failed write
is logged and counted, never turned into a failed request.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turnout.common.db.session import DB_UNAVAILABLE
from turnout.common.logging import request_id_var
from turnout.gateway.admin_queries import write_audit

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_ONLY = frozenset({"/admin/explain"})


def actor_of(scope: Scope, admin_key: str | None) -> str:
    """Who made an admin call: ``admin-key`` for the admin bearer key, else the client address."""
    headers = dict(scope.get("headers") or [])
    auth = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, given = auth.partition(" ")
    if admin_key and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), admin_key.encode()):
        return "admin-key"
    client = scope.get("client")
    return f"anonymous@{client[0] if client else 'unknown'}"


class AuditMiddleware:
    """Pure ASGI middleware that writes every mutating ``/admin`` call to the audit log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/admin") or scope.get("method") not in MUTATING or path in READ_ONLY:
            await self.app(scope, receive, send)
            return
        written = False

        async def send_status(message: Message) -> None:
            nonlocal written
            if message["type"] == "http.response.start" and not written:
                written = True  # recorded before the client hears the answer: in order, never after the fact
                await self._write(scope, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if not written:
                await self._write(scope, 500)

    async def _write(self, scope: Scope, status: int) -> None:
        gw = (scope.get("state") or {}).get("gw")
        if gw is None:
            return
        key = gw.settings.admin_key
        query = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        client = scope.get("client")
        detail: dict[str, Any] = {
            "status": status,
            "query": query,
            "client": client[0] if client else None,
            "request_id": request_id_var.get(),
        }
        try:
            await write_audit(
                gw.engine,
                actor=actor_of(scope, key.get_secret_value() if key is not None else None),
                action=f"{scope['method']} {scope['path']}",
                detail=detail,
            )
        except DB_UNAVAILABLE as exc:  # the action happened; its record failing must not fail it
            gw.metrics.audit_failed.inc()
            log.warning("audit log write failed for %s %s: %s", scope["method"], scope["path"], exc)
