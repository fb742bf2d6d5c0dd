"""A fixed catalog for the routing tests (scoring, rules, snapshots)."""

from __future__ import annotations

from turnout.common.schemas.route import RouteRequestV1
from turnout.scorer.prompt_analysis import Analyzer
from turnout.scorer.scoring import (
    Constraints,
    Learned,
    ModelSpec,
    ModelState,
    ModelTable,
    Ranking,
    ReplicaTable,
    ScoringConfig,
    rank,
)


def _rep(backend: str, name: str) -> tuple[tuple[str, str, None], ...]:
    return ((backend, name, None),)


SPECS = (
    ModelSpec("llama3.2:1b", 1.2, context_length=8192, replicas=_rep("ollama-a", "llama3.2:1b")),
    ModelSpec("llama3.1:8b", 8, context_length=32768, tools=True, replicas=_rep("ollama-a", "llama3.1:8b")),
    ModelSpec(
        "qwen2.5-coder:32b",
        32,
        context_length=32768,
        coder=True,
        tools=True,
        replicas=_rep("ollama-b", "qwen2.5-coder:32b"),
    ),
    ModelSpec("llama3.3:70b", 70, context_length=131072, tools=True, replicas=_rep("ollama-b", "llama3.3:70b")),
    ModelSpec("llava:7b", 7, vision=True, context_length=4096, replicas=_rep("ollama-a", "llava:7b")),
    ModelSpec(
        "nomic-embed-text",
        0.14,
        embedding=True,
        chat=False,
        completion=False,
        replicas=_rep("ollama-a", "nomic-embed-text"),
    ),
)


class Router:
    """Analysis + scoring over a fixed catalog, as the scorer wires them."""

    def __init__(self, specs: tuple[ModelSpec, ...] = SPECS, cfg: ScoringConfig | None = None, **fleet: object) -> None:
        self.cfg = cfg or ScoringConfig()
        self.table = ModelTable.build(specs, self.cfg, version="test-v1")
        self.reps = ReplicaTable.from_specs(self.table, **fleet)  # type: ignore[arg-type]
        self.analyzer = Analyzer()

    def route(
        self,
        text: str = "",
        *,
        cons: Constraints | None = None,
        state: ModelState | None = None,
        learned: Learned | None = None,
        limit: int | None = 8,
        **req: object,
    ) -> Ranking:
        r = RouteRequestV1(text=text, **req)  # type: ignore[arg-type]
        a = self.analyzer.analyze_request(r)
        return rank(r, a, self.table, self.reps, self.cfg, cons=cons, state=state, learned=learned, limit=limit)

    def top(self, text: str = "", **kw: object) -> str:
        ranking = self.route(text, **kw)  # type: ignore[arg-type]
        assert ranking.candidates, ranking.unservable
        return ranking.candidates[0].model
