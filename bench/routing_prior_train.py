"""Fit the router prior shipped with the scorer (``turnout/scorer/data/router_prior.json``) on
every public outcome set in ``../shared/datasets`` (all prompts; each set weighted equally).

    python bench/routing_prior_train.py            # writes the shipped artefact
    python bench/routing_prior_train.py --out x.json --sets mmlu,arena

Deterministic: the data, the static embedder and the fixed Adam schedule give the same weights
(rounded to 6 decimals in the artefact). ``bench/routing_quality.py`` measures what it is worth
(its ``lodo`` protocol refits it without the set under test).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import routing_data
from routing_quality import group_of, prepare

from turnout.embeddings.static import default_embedder
from turnout.scorer.learned_prior import SHIPPED, fit_prior


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(routing_data.LOADERS))
    ap.add_argument("--out", type=Path, default=SHIPPED)
    ap.add_argument("--iterations", type=int, default=400)
    args = ap.parse_args(argv)
    groups = []
    counts = {}
    for name in args.sets.split(","):
        p = prepare(routing_data.LOADERS[name]())
        groups.append(group_of(p, np.arange(len(p.ds.prompts))))
        counts[p.ds.name] = {"prompts": len(p.ds.prompts), "models": len(p.names)}
    prior = fit_prior(groups, embedder=default_embedder().name, iterations=args.iterations, version="shipped-1")
    prior = type(prior)(
        weights=prior.weights,
        embedder=prior.embedder,
        version=prior.version,
        created=0.0,
        trained_on=prior.trained_on,
        notes={"script": "bench/routing_prior_train.py", "iterations": args.iterations, "sets": counts},
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(prior.to_json())
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): trained on {', '.join(prior.trained_on)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
