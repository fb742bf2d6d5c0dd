"""The alert rules (``deploy/k8s/alerts/turnout.rules.yaml``): valid for Prometheus
(``promtool check rules``), each one fires on the series it should and stays quiet beside them
(``promtool test rules tests/deploy/alerts_test.yaml``), every query reads metrics and labels the
services export, and every alert has its runbook entry in docs/deploy.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_dashboards import EXPORTED, TARGET_LABELS, _parse
from turnout.devstack.infra import promtool_bin

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "k8s" / "alerts" / "turnout.rules.yaml"
RULE_TESTS = Path(__file__).with_name("alerts_test.yaml")
RUNBOOK = REPO / "docs" / "deploy.md"
ALERTS = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


@pytest.fixture(scope="session")
def promtool() -> str:
    """Debian's ``prometheus`` package, installed with apt-get when missing (like Redis/Postgres)."""
    return promtool_bin()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_rules(promtool: str) -> None:
    r = _run(promtool, "check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in r.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    r = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_unit_tested() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert tested == {a["alert"] for a in ALERTS}


def test_the_issue_s_alerts_are_all_there() -> None:
    assert [a["alert"] for a in ALERTS] == [
        "TurnoutGatewayErrorRatioHigh",
        "TurnoutGatewayTtftP99High",
        "TurnoutGatewayLatencyP99High",
        "TurnoutFallbackRoutesHigh",
        "TurnoutNoLiveScorer",
        "TurnoutEventsDropped",
        "TurnoutBackendFailing",
        "TurnoutCircuitOpen",
        "TurnoutStreamsCutOnShutdown",
        "TurnoutGpuAgentStale",
        "TurnoutQueueBacklog",
        "TurnoutScorerBacklog",
        "TurnoutDeadLettersGrowing",
    ]


def alert_problems(alerts: list[dict[str, Any]]) -> list[str]:
    """Metrics the services do not export, labels they do not carry (the scrape adds namespace,
    pod and the like), in an alert's expression or in its annotations' {{ $labels.x }}."""
    out = []
    for alert in alerts:
        name, expr = alert["alert"], alert["expr"]
        query = _parse(expr)
        names = [n or "" for n, _ in query.selectors]
        unknown = [n for n in names if n not in EXPORTED]
        if unknown:
            out.append(f"{name}: not exported: {unknown}")
            continue
        for metric, matched in query.selectors:
            assert metric is not None
            out += [
                f"{name}: {metric} has no label {m!r}" for m in matched if m not in EXPORTED[metric] | TARGET_LABELS
            ]
        available = set().union(*(EXPORTED[n] for n in names)) | TARGET_LABELS
        # label_replace may add a label (the dead-letter alert's task="events")
        available |= set(re.findall(r'label_replace\([^"]*"([a-z_]+)"', expr, re.S))
        out += [f"{name}: grouping by unknown label {g!r}" for g in sorted(query.grouped - available)]
        for text in alert.get("annotations", {}).values():
            for label in re.findall(r"\$labels\.([a-zA-Z_]+)", text):
                if label not in (query.grouped or available):
                    out.append(f"{name}: annotation label {label!r} is not in the result")
    return out


def test_every_alert_reads_exported_metrics_and_labels() -> None:
    assert alert_problems(ALERTS) == []


def test_the_check_refuses_what_nobody_exports() -> None:
    bad: list[dict[str, Any]] = [
        {"alert": "Renamed", "expr": "rate(turnout_gateway_request_total[5m]) > 0"},
        {"alert": "Label", "expr": 'turnout_profiler_queue_depth{queues="x"} > 1'},
        {"alert": "Grouped", "expr": "sum by (model) (turnout_sync_queue_depth) > 1"},
        {
            "alert": "Annotation",
            "expr": "sum by (namespace) (turnout_sync_queue_depth) > 1",
            "annotations": {"summary": "{{ $labels.queue }}"},
        },
    ]
    assert alert_problems(bad) == [
        "Renamed: not exported: ['turnout_gateway_request_total']",
        "Label: turnout_profiler_queue_depth has no label 'queues'",
        "Grouped: grouping by unknown label 'model'",
        "Annotation: annotation label 'queue' is not in the result",
    ]


def test_every_alert_has_a_runbook_entry() -> None:
    runbook = RUNBOOK.read_text()
    headings = {m.lower() for m in re.findall(r"^#### (Turnout[A-Za-z0-9]+)$", runbook, re.M)}
    for alert in ALERTS:
        anchor = alert["annotations"]["runbook_url"]
        assert anchor == f"docs/deploy.md#{alert['alert'].lower()}"
        assert alert["alert"].lower() in headings, alert["alert"]
