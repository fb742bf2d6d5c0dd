"""Micro-benchmark of one routing decision: prompt analysis + ranking over a 100-model catalog
(two replicas each, a fleet with some models resident), as the scorer's RPC handler runs it,
plus the reply's JSON encoding. No assertions; prints µs per decision.

    .venv/bin/python bench/scorer_ranking.py [--models 100] [--n 5000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from switchyard.common.backends.names import parse_model_name
from switchyard.common.catalog import derive_capabilities
from switchyard.common.schemas.catalog import CatalogModelV1, CatalogSnapshotV1, ReplicaV1
from switchyard.common.schemas.fleet import HostStateV1, LoadedModelV1
from switchyard.common.schemas.route import RequestKind, RouteRequestV1
from switchyard.scorer.index import CatalogIndex, FleetState, LiveIndex
from switchyard.scorer.ranking import RankingConfig, rank

FAMILIES = ["llama3.1", "qwen2.5", "mistral", "gemma2", "phi3", "qwen2.5-coder", "llava", "deepseek-r1", "nomic-embed"]
SIZES = ["0.5b", "1b", "3b", "7b", "8b", "14b", "32b", "70b"]

PROMPTS = {
    "greeting": RouteRequestV1(text="Hi there!"),
    "medium": RouteRequestV1(text="Analyze this quarterly report and list the key risks. " * 20, quality=0.7),
    "hard-code+tools": RouteRequestV1(
        text="Implement a lock-free queue in Rust and optimize it.\n```rust\n"
        + "fn f() { let x = 1; }\n" * 300
        + "```",
        has_tools=True,
    ),
    "vision": RouteRequestV1(text="What is in this picture?", has_images=True),
    "embedding": RouteRequestV1(kind=RequestKind.EMBEDDING, text="embed me"),
}


def catalog(n: int) -> LiveIndex:
    models = []
    for i in range(n):
        fam, size = FAMILIES[i % len(FAMILIES)], SIZES[(i // len(FAMILIES)) % len(SIZES)]
        name = f"{fam}:{size}-v{i}"
        info = parse_model_name(name)
        models.append(
            CatalogModelV1(
                name=name,
                family=info.family,
                params_b=info.params_b,
                active_params_b=info.active_params_b,
                context_length=32768,
                capabilities=derive_capabilities(name),
                coder=info.coder,
                replicas=[ReplicaV1(backend=f"gpu{j}", upstream_model=name) for j in (i % 4, (i + 1) % 4)],
                benchmark=0.5 if i % 3 == 0 else None,
            )
        )
    hosts = [
        HostStateV1(host=f"h{j}", backend=f"gpu{j}", loaded_models=[LoadedModelV1(name=m.name) for m in models[j::10]])
        for j in range(4)
    ]
    return LiveIndex.build(
        CatalogIndex.build(CatalogSnapshotV1(version="bench", models=models)), FleetState.from_hosts(hosts)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    live = catalog(args.models)
    cfg = RankingConfig()
    print(f"{args.models} models, {len(live.catalog.replicas)} replicas; µs per decision (p50 / p99), then with JSON")
    for label, req in PROMPTS.items():
        for _ in range(200):
            rank(req, live, cfg)
        times, with_json = [], []
        for _ in range(args.n):
            t0 = time.perf_counter()
            reply = rank(req, live, cfg)
            t1 = time.perf_counter()
            orjson.dumps(reply.model_dump(mode="json"))
            t2 = time.perf_counter()
            times.append((t1 - t0) * 1e6)
            with_json.append((t2 - t0) * 1e6)
        q = statistics.quantiles(times, n=100)
        qj = statistics.quantiles(with_json, n=100)
        print(f"  {label:16s} {q[49]:7.1f} / {q[98]:7.1f}    {qj[49]:7.1f} / {qj[98]:7.1f}")


if __name__ == "__main__":
    main()
