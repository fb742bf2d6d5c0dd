"""Prometheus helpers shared by services: RPC metrics and a tiny ops HTTP server.

Metric objects are created per registry (cached), never at import, so that tests can build
several in one process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

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


@cache
def dead_letters(registry: CollectorRegistry = REGISTRY) -> Counter:
    """``turnout_jobs_dead_letters_total{task}``: arq jobs that failed their last try and were
    written to the ``dead_letters`` table (the workers' alertable failure count). The label is
    ``task``, not ``job``, which Prometheus reserves for the scrape target."""
    return Counter(
        "dead_letters",
        "arq jobs recorded as dead letters after their last try, by job function",
        ["task"],
        namespace="turnout",
        subsystem="jobs",
        registry=registry,
    )


def queue_depth_gauge(subsystem: str, registry: CollectorRegistry = REGISTRY) -> Gauge:
    """``turnout_<subsystem>_queue_depth{queue}``: jobs due in a worker's arq queue, read from Redis
    on every scrape (:class:`QueueDepths`); KEDA scales the workers on it."""
    return Gauge(
        "queue_depth",
        "Jobs due in the arq queue (retries waiting out their back-off excluded), read at scrape",
        ["queue"],
        namespace="turnout",
        subsystem=subsystem,
        registry=registry,
    )


@dataclass(frozen=True)
class QueueDepths:
    """Waiting work per Redis queue, read on every scrape (``build_ops_app(refresh=[...])``) into
    ``gauge{queue}``: the queue-depth metric autoscalers (KEDA's Prometheus trigger) and alerts use.

    * ``arq``: label → arq queue key. An arq queue is a sorted set scored by the time a job is due
      (ms), so KEDA's Redis *list* scaler cannot read it; the depth is ``ZCOUNT -inf now``: jobs
      due now, not retries deferred into their back-off.
    * ``lists``: label → list key (an RPC request queue): ``LLEN``.

    ``redis`` returns the client to read with, or ``None`` while there is none yet (a worker
    before its pool exists); then, and when Redis fails, the gauge keeps its last value and the
    service's ``/ready`` shows the Redis check failing.
    """

    gauge: Gauge
    redis: Callable[[], Redis | None]
    arq: Mapping[str, str] = field(default_factory=dict)
    lists: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label in (*self.arq, *self.lists):
            self.gauge.labels(label)

    async def refresh(self) -> None:
        redis = self.redis()
        if redis is None:
            return
        now_ms = int(time.time() * 1000)
        pipe = redis.pipeline(transaction=False)
        for key in self.arq.values():
            pipe.zcount(key, "-inf", now_ms)
        for key in self.lists.values():
            pipe.llen(key)
        try:
            depths = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.debug("queue depths not read: %s", exc)
            return
        for label, depth in zip((*self.arq, *self.lists), depths, strict=True):
            self.gauge.labels(label).set(int(depth))
