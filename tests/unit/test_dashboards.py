"""The Grafana dashboards under ``deploy/k8s/dashboards``: valid, and every query names metrics
and labels the services really export (a renamed metric or label fails here, not on a blank panel)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from turnout.common.metrics import dead_letters, rpc_metrics
from turnout.gateway.metrics import build_metrics
from turnout.gateway.response_cache import ResponseCacheMetrics
from turnout.gpu_agent.metrics import GpuAgentMetrics
from turnout.profiler.metrics import ProfilerMetrics
from turnout.profiler.metrics import queue_depth_gauge as profiler_queue_depth
from turnout.scorer.caches import DecisionMemoMetrics, RouteCacheMetrics
from turnout.scorer.metrics import ScorerMetrics
from turnout.sync.metrics import SyncMetrics
from turnout.sync.metrics import queue_depth_gauge as sync_queue_depth

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "dashboards").glob("*.json"))
TARGET_LABELS = {"job", "instance", "namespace", "pod", "container", "endpoint", "service"}
"""Labels Prometheus adds when it scrapes (PodMonitor / static config)."""

_LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*"}


def _exported() -> dict[str, set[str]]:
    """Every sample name the services export, with its label names."""
    registry = CollectorRegistry()
    holders: list[Any] = [
        rpc_metrics(registry),
        build_metrics(registry),
        ResponseCacheMetrics.create(registry),
        ScorerMetrics.create(registry),
        RouteCacheMetrics.create(registry),
        DecisionMemoMetrics.create(registry),
        ProfilerMetrics.create(registry=registry),
        SyncMetrics.create(registry),
        GpuAgentMetrics.create(registry),
    ]
    metrics: list[MetricWrapperBase] = [
        dead_letters(registry),
        profiler_queue_depth(registry),
        sync_queue_depth(registry),
    ]
    for holder in holders:
        for f in dataclasses.fields(holder):
            value = getattr(holder, f.name)
            value = getattr(value, "gauge", value)  # the gpu-agent's TrackedGauge
            if isinstance(value, MetricWrapperBase):
                metrics.append(value)
    samples: dict[str, set[str]] = {}
    for m in metrics:
        # prometheus_client keeps the declared labels only in these attributes
        name, labels, kind = m._name, set(m._labelnames), m._type
        if kind == "counter":
            samples[f"{name}_total"] = labels
        elif kind == "histogram":
            samples[f"{name}_bucket"] = labels | {"le"}
            samples[f"{name}_sum"] = samples[f"{name}_count"] = labels
        else:
            samples[name] = labels
    return samples


EXPORTED = _exported()


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, expr, legend) of every query, rows' nested panels included."""
    out = []
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"], target.get("legendFormat", "")))
    return out


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS, "no Grafana dashboard under deploy/k8s/dashboards"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = []
    stack = list(dashboard["panels"])
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]  # no data source hard-wired
            assert panel["targets"], panel["title"]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "job"}


@dataclasses.dataclass
class _Query:
    """What a parsed query reads: selectors (metric name, matched labels) and grouping labels."""

    selectors: list[tuple[str | None, list[str]]] = dataclasses.field(default_factory=list)
    grouped: set[str] = dataclasses.field(default_factory=set)

    def visit(self, node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            self.selectors.append((node.name, [m.name for m in node.matchers.matchers]))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            self.grouped.update(node.modifier.labels)


def _parse(expr: str) -> _Query:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    query = _Query()
    promql_parser.walk(promql_parser.parse(expr), pre_visit=query.visit)
    return query


def problems(dashboard: dict[str, Any]) -> list[str]:
    """What is wrong with the dashboard's queries: PromQL that does not parse, metrics the
    services do not export, labels matched, grouped by or shown in a legend that are not there."""
    out = []
    for title, expr, legend in _queries(dashboard):
        try:
            query = _parse(expr)
        except ValueError as exc:
            out.append(f"{title}: not PromQL ({exc}): {expr!r}")
            continue
        names = [name or "" for name, _ in query.selectors]
        if not any(n.startswith("turnout_") for n in names):
            out.append(f"{title}: no Turnout metric in {expr!r}")
        unknown = [n for n in names if n not in EXPORTED]
        if unknown:
            out.append(f"{title}: not exported: {unknown}")
            continue
        available = set().union(*(EXPORTED[n] for n in names)) | TARGET_LABELS
        for name, matched in query.selectors:
            assert name is not None
            out += [f"{title}: {name} has no label {m!r}" for m in matched if m not in EXPORTED[name] | TARGET_LABELS]
        out += [f"{title}: grouping by unknown label {g!r}" for g in sorted(query.grouped - available)]
        for label in _LEGEND.findall(legend):
            if label not in (query.grouped or available):
                out.append(f"{title}: legend label {label!r} is not in the result")
    return out


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_uses_exported_metrics_and_labels(path: Path) -> None:
    found = problems(json.loads(path.read_text()))
    assert not found, "\n".join(found)


def test_the_check_refuses_metrics_and_labels_nobody_exports() -> None:
    def panel(title: str, expr: str, legend: str = "") -> dict[str, Any]:
        return {"title": title, "targets": [{"expr": expr, "legendFormat": legend}]}

    bad = {
        "panels": [
            panel("renamed", "sum(rate(turnout_gateway_request_total[5m]))"),
            panel("matcher", 'sum(rate(turnout_gateway_requests_total{colour="red"}[5m]))'),
            panel("grouping", "sum by (colour) (rate(turnout_gateway_requests_total[5m]))"),
            panel("legend", "sum by (status) (rate(turnout_gateway_requests_total[5m]))", "{{model}}"),
            panel("syntax", "sum(rate(turnout_gateway_requests_total[5m])"),
            panel("fine", 'sum by (le) (rate(turnout_rpc_call_duration_seconds_bucket{method="m", job="j"}[5m]))'),
        ]
    }
    assert sorted(problems(bad)) == [
        "grouping: grouping by unknown label 'colour'",
        "legend: legend label 'model' is not in the result",
        "matcher: turnout_gateway_requests_total has no label 'colour'",
        "renamed: not exported: ['turnout_gateway_request_total']",
        "syntax: not PromQL (unclosed left parenthesis): 'sum(rate(turnout_gateway_requests_total[5m])'",
    ]
