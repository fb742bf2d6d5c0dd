"""``turnout_scorer_*`` metrics, built per registry (never at import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from turnout.common.metrics import LabelledChildren
from turnout.scorer.prompt_analysis import CORE_CATEGORIES


@dataclass(frozen=True)
class ScorerMetrics(LabelledChildren):
    """The scorer's Prometheus series (decisions, catalog, fleet, VRAM orders, ...)."""

    decisions: Counter
    unservable: Counter
    catalog_models: Gauge
    catalog_reloads: Counter
    fleet_hosts: Gauge
    vram_orders: Counter
    rpc_backlog: Gauge
    inflight_read: Gauge
    inflight_noted: Gauge
    _children: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    @classmethod
    def create(cls, registry: CollectorRegistry = REGISTRY) -> ScorerMetrics:
        """Register the scorer's series in ``registry``."""

        def counter(name: str, doc: str, labels: list[str]) -> Counter:
            return Counter(name, doc, labels, namespace="turnout", subsystem="scorer", registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, namespace="turnout", subsystem="scorer", registry=registry)

        m = cls(
            decisions=counter("decisions", "Route decisions made, by prompt category", ["category"]),
            unservable=counter("unservable", "Route requests no model could serve, by code", ["code"]),
            catalog_models=gauge("catalog_models", "Routable models in the loaded catalog"),
            catalog_reloads=counter("catalog_reloads", "Catalog loads from Postgres, by outcome", ["outcome"]),
            fleet_hosts=gauge("fleet_hosts", "Hosts with live gpu-agent state"),
            vram_orders=counter(
                "vram_orders",
                "VRAM orders this replica sent to gpu-agents, by action and outcome (ok, failed, skipped)",
                ["action", "outcome"],
            ),
            rpc_backlog=Gauge(
                "rpc_backlog",
                "Route/explain requests waiting in the RPC queue for a scorer replica, read at scrape",
                ["method"],
                namespace="turnout",
                subsystem="scorer",
                registry=registry,
            ),
            inflight_read=gauge(
                "inflight_read", "Requests in flight, as this scorer last read the gateways' counts (summed), at scrape"
            ),
            inflight_noted=gauge(
                "inflight_noted",
                "Decisions this scorer counts in flight on top of that read: handed out since, their expected time "
                "not over (scorer/notes.py), at scrape",
            ),
        )
        for c in CORE_CATEGORIES:
            m.decisions.labels(c)
        for code in ("model_not_found", "unservable"):
            m.unservable.labels(code)
        for outcome in ("ok", "error"):
            m.catalog_reloads.labels(outcome)
        for action in ("load", "unload"):
            for outcome in ("ok", "failed", "skipped"):
                m.vram_orders.labels(action, outcome)
        return m
