"""Prometheus helpers shared by services: RPC metrics and a tiny ops HTTP server.

Metric objects are created per registry (cached), never at import, so that tests can build
several in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LabelledChildren:
    """``metric.labels(*labels)``, cached: ``labels()`` takes a lock and builds a key on every
    call, which shows on a per-request path. Mixed into the services' metric holders."""

    _children: dict[tuple[Any, ...], Any]

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the lookup costs a dict hit instead of a labels call."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found


@dataclass(frozen=True)
class RpcMetrics(LabelledChildren):
    calls: Counter
    duration: Histogram
    served: Counter
    handle_duration: Histogram
    dropped: Counter
    _children: dict[tuple[Any, ...], Any] = field(default_factory=dict)


@cache
def rpc_metrics(registry: CollectorRegistry = REGISTRY) -> RpcMetrics:
    """The RPC client and server metrics (``turnout_rpc_*``), registered once per registry."""
    return RpcMetrics(
        calls=Counter(
            "calls",
            "RPC calls made, by method and outcome (ok, timeout, unavailable, error)",
            ["method", "outcome"],
            namespace="turnout",
            subsystem="rpc",
            registry=registry,
        ),
        duration=Histogram(
            "call_duration_seconds",
            "RPC round trip as seen by the caller",
            ["method", "outcome"],
            namespace="turnout",
            subsystem="rpc",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ),
        served=Counter(
            "served",
            "RPC requests handled by this server, by method and outcome",
            ["method", "outcome"],
            namespace="turnout",
            subsystem="rpc",
            registry=registry,
        ),
        handle_duration=Histogram(
            "handle_duration_seconds",
            "Time a server spent handling one request",
            ["method"],
            namespace="turnout",
            subsystem="rpc",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        ),
        dropped=Counter(
            "dropped",
            "Requests a server dropped because their deadline had passed",
            ["method"],
            namespace="turnout",
            subsystem="rpc",
            registry=registry,
        ),
    )
