"""The typed state the lifespan builds once per process and every request reads."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from switchyard.common.rpc import RpcClient
from switchyard.gateway.catalog import CatalogView
from switchyard.gateway.events import EventPublisher
from switchyard.gateway.inflight import InflightTracker
from switchyard.gateway.metrics import GatewayMetrics
from switchyard.gateway.pipeline import Pipeline
from switchyard.gateway.settings import GatewaySettings


@dataclass(slots=True)
class GatewayState:
    settings: GatewaySettings
    redis: Redis
    session: aiohttp.ClientSession
    rpc: RpcClient
    engine: AsyncEngine
    catalog: CatalogView
    inflight: InflightTracker
    events: EventPublisher
    pipeline: Pipeline
    metrics: GatewayMetrics
    registry: CollectorRegistry
    client_keys: dict[str, str]
    """API key -> client id (``key-<sha256 prefix>``); empty when no keys are configured."""
    started_at: int
    multiprocess: bool = False
    """uvicorn runs several workers: /metrics aggregates ``PROMETHEUS_MULTIPROC_DIR``."""
