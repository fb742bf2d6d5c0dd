"""In-process A/B of the ``scorer.route`` reply's encoding: the validated model and its
``model_dump_json`` (before) against the direct orjson bytes (``Answer.wire``), alternating in
blocks on one engine, CPU by the thread's clock. Prints µs per decision (p50 of each side) for
the greeting, code and named-model prompts of ``scorer_decision.py``, repeat pass (memo hits).

    .venv/bin/python bench/reply_encoding_ab.py [--models 100] [--rounds 20] [--block 200]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import asyncio
import statistics
import time

from scorer_decision import PROMPTS, snapshot

from turnout.embeddings.static import default_embedder
from turnout.scorer.engine import Answer, RoutingEngine
from turnout.scorer.fleet import FleetState


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=200)
    args = ap.parse_args()
    snap = snapshot(args.models, 4)
    engine = RoutingEngine(embedder=default_embedder())
    engine.set_catalog(snap)
    engine.set_fleet(
        FleetState(resident=frozenset((r.backend, r.upstream_model) for m in snap.models[::10] for r in m.replicas))
    )
    print(f"{args.models} models; {args.rounds} rounds x {args.block} decisions per side; cpu p50 µs")
    for label in ("greeting", "hard-code+tools", "named model"):
        reqs = [PROMPTS[label].model_copy(update={"text": f"{PROMPTS[label].text} @{i}"}) for i in range(50)]
        for r in reqs:
            await engine.route(r)  # the memo holds them: the repeat pass
        cpu: dict[str, list[int]] = {"model": [], "direct": []}
        for _ in range(args.rounds):
            for side in ("model", "direct"):
                for i in range(args.block):
                    req = reqs[i % len(reqs)]
                    c0 = time.thread_time_ns()
                    out = await engine.route_answer(req)
                    assert isinstance(out, Answer)
                    out.reply().model_dump_json().encode() if side == "model" else out.wire()
                    cpu[side].append(time.thread_time_ns() - c0)
        before, after = (statistics.median(cpu[s]) / 1000 for s in ("model", "direct"))
        print(
            f"{label:<18}model {before:7.1f}  direct {after:7.1f}  "
            f"saved {before - after:5.1f} µs ({1 - after / before:.1%})"
        )


if __name__ == "__main__":
    asyncio.run(main())
