"""Prometheus helpers shared by services: RPC metrics and a tiny ops HTTP server.

Metric objects are created per registry (cached), never at import, so that tests can build
several in one process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(frozen=True)
class RpcMetrics:
    calls: Counter
    duration: Histogram
    served: Counter
    handle_duration: Histogram
    dropped: Counter


@cache
def rpc_metrics(registry: CollectorRegistry = REGISTRY) -> RpcMetrics:
    return RpcMetrics(
        calls=Counter(
            "calls",
            "RPC calls made, by method and outcome (ok, timeout, unavailable, error)",
            ["method", "outcome"],
            namespace="switchyard",
            subsystem="rpc",
            registry=registry,
        ),
        duration=Histogram(
            "call_duration_seconds",
            "RPC round trip as seen by the caller",
            ["method", "outcome"],
            namespace="switchyard",
            subsystem="rpc",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ),
        served=Counter(
            "served",
            "RPC requests handled by this server, by method and outcome",
            ["method", "outcome"],
            namespace="switchyard",
            subsystem="rpc",
            registry=registry,
        ),
        handle_duration=Histogram(
            "handle_duration_seconds",
            "Time a server spent handling one request",
            ["method"],
            namespace="switchyard",
            subsystem="rpc",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ),
        dropped=Counter(
            "dropped",
            "Requests a server dropped because their deadline had passed",
            ["method"],
            namespace="switchyard",
            subsystem="rpc",
            registry=registry,
        ),
    )
