"""The typed state the lifespan builds once per process and every request reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from turnout.common.ops import CheckRunner
from turnout.common.rpc import RpcClient
from turnout.common.supervise import Supervisor
from turnout.gateway.auth import AdminGuard
from turnout.gateway.catalog import CatalogView
from turnout.gateway.circuits import Breakers
from turnout.gateway.drain import Drain
from turnout.gateway.events import EventPublisher
from turnout.gateway.inflight import InflightTracker
from turnout.gateway.metrics import GatewayMetrics
from turnout.gateway.pipeline import Pipeline
from turnout.gateway.settings import GatewaySettings


@dataclass(slots=True)
class GatewayState:
    """Everything the app's lifespan built and the routes share (``request.state.gw``)."""

    settings: GatewaySettings
    redis: Redis
    session: aiohttp.ClientSession
    rpc: RpcClient
    engine: AsyncEngine
    catalog: CatalogView
    inflight: InflightTracker
    events: EventPublisher
    pipeline: Pipeline
    breakers: Breakers
    drain: Drain
    metrics: GatewayMetrics
    registry: CollectorRegistry
    client_keys: dict[str, str]
    """SHA-256 of an API key -> client id (``key-<sha256 prefix>``); empty when no keys are configured."""
    admin_guard: AdminGuard
    started_at: int
    supervisor: Supervisor | None = None
    """The background loops (their state is in ``/ready``'s body)."""
    multiprocess: bool = False
    """uvicorn runs several workers: /metrics aggregates ``PROMETHEUS_MULTIPROC_DIR``."""
    checks: CheckRunner = field(default_factory=CheckRunner)
    """Runs ``/ready``'s checks (logs each kind of failure once, with its traceback)."""
