"""Rendering the chart offline with Helm v4 (helm-python-sdk: Helm's Go SDK as a library, no
helm binary), once per value file of ``deploy/k8s/ci``."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "k8s"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "tn", "llm"


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (on top of the defaults), hooks included."""
    manifests = chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


@cache
def render_file(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(yaml.safe_load((CHART / "ci" / name).read_text()) or {}))


def values_of(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text()) or {}
    return loaded


def find(
    objects: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str, name: str | None = None
) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


WORKLOAD_KINDS = ("Deployment", "DaemonSet", "Job")


def pod_specs(objects: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in WORKLOAD_KINDS
    ]
