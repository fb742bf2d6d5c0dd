"""Copy the Kubernetes definitions the chart's values pass through (securityContext, tolerations,
affinity, topology spread, NetworkPolicy peers, …) into ``deploy/k8s/values.schema.json`` ``$defs``,
from the strict schemas kubernetes-validate bundles (``additionalProperties: false`` at every
level), so that a typo inside them fails ``helm install`` like any other key.

    python scripts/chart_schema_k8s.py          # rewrite the $defs in place
    python scripts/chart_schema_k8s.py --check  # exit 1 when the checked-in $defs differ

Descriptions, ``x-kubernetes-*`` annotations and ``format`` are dropped (the API server checks
formats); ``$ref`` targets are rewritten to the local ``#/$defs/…``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "deploy" / "k8s" / "values.schema.json"
KUBERNETES = "1.37.0"
ROOTS = (
    "io.k8s.api.core.v1.SecurityContext",
    "io.k8s.api.core.v1.PodSecurityContext",
    "io.k8s.api.core.v1.Toleration",
    "io.k8s.api.core.v1.TopologySpreadConstraint",
    "io.k8s.api.core.v1.Affinity",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.networking.v1.NetworkPolicyPeer",
    "io.k8s.api.networking.v1.NetworkPolicyEgressRule",
    "io.k8s.api.apps.v1.DaemonSetUpdateStrategy",
)
_REF = re.compile(r"^.*#/\$defs/")


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("description", "format") or k.startswith("x-kubernetes-"):
                continue
            out[k] = _REF.sub("#/$defs/", v) if k == "$ref" else _clean(v)
        return out
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def k8s_defs() -> dict[str, Any]:
    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{KUBERNETES}-local-strict"
    every = json.loads((base / "_definitions.json").read_text())["$defs"]
    wanted: dict[str, Any] = {}

    def take(name: str) -> None:
        if name in wanted:
            return
        wanted[name] = _clean(every[name])
        for ref in re.findall(r"#/\$defs/([A-Za-z0-9_.-]+)", json.dumps(every[name])):
            take(ref)

    for root in ROOTS:
        take(root)
    return dict(sorted(wanted.items()))


def updated(schema: dict[str, Any]) -> dict[str, Any]:
    own = {k: v for k, v in schema["$defs"].items() if not k.startswith("io.k8s.")}
    return {**schema, "$defs": {**own, **k8s_defs()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    opts = parser.parse_args()
    schema = json.loads(SCHEMA.read_text())
    new = updated(schema)
    if opts.check:
        if new != schema:
            print(f"{SCHEMA} is out of date: run python scripts/chart_schema_k8s.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA.write_text(json.dumps(new, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
