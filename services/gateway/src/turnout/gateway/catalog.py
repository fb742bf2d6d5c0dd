"""What this gateway knows of the model catalog, for fallback routing and model lists.

The scorer writes the catalog it loaded to ``keys.catalog_snapshot`` (JSON of
:class:`CatalogSnapshotV1`); a background task re-reads it every ``catalog_refresh_s`` and
parses it only when it changed. With no snapshot at all (no scorer ever ran), the gateway
asks the configured backends for their model lists, cached for ``backend_models_ttl_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp
import orjson
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from turnout.common.aio import raise_if_cancelling
from turnout.common.backends.clients import client_for, gather_models
from turnout.common.backends.config import BackendConfig
from turnout.common.backends.names import parse_model_name
from turnout.common.keys import Keys
from turnout.common.schemas.catalog import CapabilitiesV1, CatalogModelV1, CatalogSnapshotV1, ReplicaV1

log = logging.getLogger(__name__)


class CatalogView:
    """The gateway's copy of the scorer's catalog snapshot, or of the backends' model lists without one."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        backends: list[BackendConfig],
        session: aiohttp.ClientSession,
        *,
        refresh_s: float = 2.0,
        backend_models_ttl_s: float = 30.0,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._backends = backends
        self._session = session
        self._refresh_s = refresh_s
        self._ttl_s = backend_models_ttl_s
        self._raw: bytes | None = None
        self.snapshot: CatalogSnapshotV1 | None = None
        self.by_name: dict[str, CatalogModelV1] = {}
        self._listed: list[CatalogModelV1] | None = None
        self._listed_at = 0.0
        self._list_lock = asyncio.Lock()
        self._hidden: frozenset[str] = frozenset()
        self.on_change: Callable[[dict[str, CatalogModelV1]], None] | None = None
        """Called with the new ``by_name`` when the snapshot changed (the forwarder's read bounds)."""

    # --- snapshot from Redis --------------------------------------------------------------

    async def refresh(self) -> bool:
        """Re-read the snapshot; True when it changed."""
        raw = await self._redis.get(self._keys.catalog_snapshot)
        if raw is None or raw == self._raw:
            return False
        try:
            snap = CatalogSnapshotV1.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            log.warning("ignoring a malformed catalog snapshot: %s", exc)
            return False
        self._raw = raw
        self.snapshot = snap
        self.by_name = {m.name: m for m in snap.models}
        self._hidden = frozenset(snap.hidden)
        if self.on_change is not None:
            self.on_change(self.by_name)
        log.info("catalog snapshot %s: %d models", snap.version or "?", len(snap.models))
        return True

    async def run(self) -> None:
        """Refresh loop, run as a background task for the app's lifetime."""
        while True:
            raise_if_cancelling()
            with contextlib.suppress(RedisError, OSError):
                await self.refresh()
            await asyncio.sleep(self._refresh_s)

    # --- models ----------------------------------------------------------------------------

    @property
    def hidden(self) -> frozenset[str]:
        """Models the operator's rules block (never listed; see ``CatalogSnapshotV1.hidden``)."""
        return self._hidden

    async def models(self) -> list[CatalogModelV1]:
        """The snapshot's models, or (no snapshot yet) what the backends list, cached."""
        if self.snapshot is not None:
            return self.snapshot.models
        return await self.backend_models()

    async def find(self, name: str) -> CatalogModelV1 | None:
        """The catalog model named ``name``, or ``None``."""
        if self.snapshot is not None:
            return self.by_name.get(name)
        return next((m for m in await self.backend_models() if m.name == name), None)

    async def backend_models(self) -> list[CatalogModelV1]:
        """The models the configured backends list, cached for ``backend_models_ttl_s``."""
        now = time.monotonic()
        if self._listed is not None and now - self._listed_at < self._ttl_s:
            return self._listed
        async with self._list_lock:
            if self._listed is not None and time.monotonic() - self._listed_at < self._ttl_s:
                return self._listed
            self._listed = await self._list_backends()
            self._listed_at = time.monotonic()
            return self._listed

    async def _list_backends(self) -> list[CatalogModelV1]:
        clients = [client_for(b, self._session, timeout_s=3.0) for b in self._backends]
        results = await gather_models(clients)
        by_name: dict[str, CatalogModelV1] = {}
        for backend in self._backends:
            listed = results.get(backend.name)
            if isinstance(listed, Exception) or listed is None:
                log.warning("backend %s did not list its models: %s", backend.name, listed)
                continue
            for um in listed:
                public = backend.public_name(um.name)
                model = by_name.get(public)
                if model is None:
                    model = by_name[public] = model_from_name(public, um.name, um.capabilities)
                model.replicas.append(
                    ReplicaV1(backend=backend.name, upstream_model=um.name, host=backend.host, kind=backend.kind.value)
                )
        return list(by_name.values())


def model_from_name(public: str, upstream: str, capabilities: tuple[str, ...] = ()) -> CatalogModelV1:
    """A catalog entry from what the name says (and the backend's capability list, when it gave one)."""
    info = parse_model_name(upstream)
    caps = set(capabilities)
    embedding = "embedding" in caps or (not caps and info.embedding)
    return CatalogModelV1(
        name=public,
        family=info.family,
        params_b=info.params_b,
        active_params_b=info.active_params_b,
        quant=info.quant,
        coder=info.coder,
        capabilities=CapabilitiesV1(
            chat=not embedding,
            completion=not embedding,
            vision="vision" in caps or info.vision,
            tools="tools" in caps or (not caps and info.tools_likely),
            embedding=embedding,
            json_mode=not embedding,
        ),
    )
