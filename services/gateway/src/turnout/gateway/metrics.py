"""Gateway metrics (``turnout_gateway_*``), built per registry, never at import.

Labels are bounded: model and backend names come from configuration and the catalog, status is
an HTTP status, outcome and reason are small fixed sets. With several uvicorn workers,
``PROMETHEUS_MULTIPROC_DIR`` is set by ``__main__`` and the gauges sum over live processes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from turnout.common.metrics import LATENCY_BUCKETS, LabelledChildren

NS, SUB = "turnout", "gateway"
RATE_LIMITS = ("requests_per_key", "tokens_per_key", "requests_per_ip", "tokens_per_ip")
FALLBACK_REASONS = ("timeout", "unavailable", "remote_error", "no_candidates")
ATTEMPT_OUTCOMES = (
    "ok",
    "unavailable",
    "timeout",
    "status_4xx",
    "status_5xx",
    "status_429",
    "broken",
    "unsupported",
    "unknown_backend",
    "circuit_open",
    "no_slot",
    "cancelled",
)
PATHS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/feedback",
    "/v1/responses",
    "/v1/messages",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/tags",
    "/api/show",
    "/api/ps",
    "/api/version",
    "/health",
    "/ready",
    "/metrics",
    "/admin/circuits",
)
_SLOW_BUCKETS = (*LATENCY_BUCKETS, 60.0, 120.0, 300.0)


@dataclass(frozen=True, slots=True)
class GatewayMetrics(LabelledChildren):
    """The gateway's Prometheus series (requests, latency, time to first token, fallbacks, attempts)."""

    requests: Counter
    request_duration: Histogram
    ttft: Histogram
    fallback_routes: Counter
    upstream_attempts: Counter
    in_flight: Gauge
    http_requests: Counter
    http_duration: Histogram
    events_dropped: Counter
    circuit_state: Gauge
    rate_limited: Counter
    shutdown_streams: Counter
    audit_failed: Counter
    _children: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def init_backends(self, backends: Iterable[str]) -> None:
        """Pre-initialise label values known at start (backend names from configuration)."""
        for b in backends:
            for outcome in ATTEMPT_OUTCOMES:
                self.upstream_attempts.labels(b, outcome)
            self.circuit_state.labels(b, "*").set(0)


def build_metrics(registry: CollectorRegistry = REGISTRY) -> GatewayMetrics:
    """Register the gateway's series in ``registry`` with their label values pre-set."""
    m = GatewayMetrics(
        requests=Counter(
            "requests", "Finished model requests by public model, backend and HTTP status",
            ["model", "backend", "status"], namespace=NS, subsystem=SUB, registry=registry,
        ),
        request_duration=Histogram(
            "request_duration_seconds", "Model request duration, arrival to last byte",
            ["kind", "stream"], namespace=NS, subsystem=SUB, registry=registry, buckets=_SLOW_BUCKETS,
        ),
        ttft=Histogram(
            "ttft_seconds", "Time from arrival to the first streamed chunk sent to the client",
            ["model"], namespace=NS, subsystem=SUB, registry=registry, buckets=_SLOW_BUCKETS,
        ),
        fallback_routes=Counter(
            "fallback_routes", "Requests routed by the local fallback, by why the scorer was not used",
            ["reason"], namespace=NS, subsystem=SUB, registry=registry,
        ),
        upstream_attempts=Counter(
            "upstream_attempts", "Attempts on backends by outcome",
            ["backend", "outcome"], namespace=NS, subsystem=SUB, registry=registry,
        ),
        in_flight=Gauge(
            "in_flight", "Model requests in flight in this gateway",
            namespace=NS, subsystem=SUB, registry=registry, multiprocess_mode="livesum",
        ),
        http_requests=Counter(
            "http_requests", "HTTP requests by method, path and status (access metrics)",
            ["method", "path", "status"], namespace=NS, subsystem=SUB, registry=registry,
        ),
        http_duration=Histogram(
            "http_request_duration_seconds", "HTTP request duration by path",
            ["path"], namespace=NS, subsystem=SUB, registry=registry, buckets=_SLOW_BUCKETS,
        ),
        events_dropped=Counter(
            "events_dropped", "Request events dropped: buffer full while Redis was away, unencodable, refused",
            namespace=NS, subsystem=SUB, registry=registry,
        ),
        circuit_state=Gauge(
            "circuit_state", "Circuit breaker per backend (model '*') and per (backend, upstream model): "
            "0 closed, 1 half-open, 2 open", ["backend", "model"], namespace=NS, subsystem=SUB, registry=registry,
            multiprocess_mode="max",
        ),
        rate_limited=Counter(
            "rate_limited", "Requests refused with 429 by the gateway's own limits, by limit",
            ["limit"], namespace=NS, subsystem=SUB, registry=registry,
        ),
        shutdown_streams=Counter(
            "shutdown_streams", "Streams still open when the drain grace ran out, ended with an error event",
            namespace=NS, subsystem=SUB, registry=registry,
        ),
        audit_failed=Counter(
            "audit_writes_failed", "Admin actions whose audit-log row could not be written",
            namespace=NS, subsystem=SUB, registry=registry,
        ),
    )  # fmt: skip
    for reason in FALLBACK_REASONS:
        m.fallback_routes.labels(reason)
    for path in PATHS:
        m.http_duration.labels(path)
    for limit in RATE_LIMITS:
        m.rate_limited.labels(limit)
    return m
