"""The catalog snapshot the scorer loads from Postgres: only routable replicas, the latest
profile suite per model, benchmark averages shared between quantisations of one model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from turnout.common.catalog import load_snapshot
from turnout.common.db.models import Backend, Benchmark, Deployment, Model, Profile
from turnout.common.db.session import engine_scope, make_sessionmaker

pytestmark = pytest.mark.integration


def profile(model_id: int, suite: str, category: str, score: float, **kw: object) -> Profile:
    return Profile(model_id=model_id, suite_version=suite, category=category, score=score, **kw)


async def test_the_snapshot_holds_routable_models_with_profiles_and_benchmarks(db):
    now = datetime.now(UTC)
    async with engine_scope(db) as engine:
        async with make_sessionmaker(engine)() as s, s.begin():
            up = Backend(name="up", kind="ollama", url="http://up:11434", host="gpu-1")
            down = Backend(name="gone", kind="openai", url="http://gone/v1", active=False)
            caps = {"chat": True, "tools": True}
            q4 = Model(name="llama3.1:8b", family="llama3.1", params_b=8.0, capabilities=caps, details={"coder": False})
            q8 = Model(name="llama3.1:8b-instruct-q8_0", family="llama3.1", params_b=8.0, capabilities=caps, details={})
            orphan = Model(name="orphan:1b", params_b=1.0, capabilities={}, details={})
            retired = Model(name="old:7b", params_b=7.0, capabilities={}, details={}, active=False)
            s.add_all([up, down, q4, q8, orphan, retired])
            s.add_all(
                [
                    Deployment(model=q4, backend=up, upstream_name="llama3.1:8b"),
                    Deployment(model=q4, backend=down, upstream_name="llama-3.1-8b"),
                    Deployment(model=q8, backend=up, upstream_name="llama3.1:8b-instruct-q8_0"),
                    Deployment(model=orphan, backend=up, upstream_name="orphan:1b", active=False),
                    Deployment(model=retired, backend=up, upstream_name="old:7b"),
                ]
            )
            await s.flush()
            old, new = now - timedelta(days=2), now
            s.add_all(
                [
                    Profile(
                        model_id=q4.id,
                        suite_version="v1",
                        category="code",
                        score=0.1,
                        tokens_per_s=10.0,
                        updated_at=old,
                    ),
                    Profile(
                        model_id=q4.id,
                        suite_version="v2",
                        category="code",
                        score=0.5,
                        tokens_per_s=80.0,
                        ttft_ms=50.0,
                        updated_at=new,
                    ),
                    Profile(
                        model_id=q4.id,
                        suite_version="v2",
                        category="general",
                        score=0.7,
                        tokens_per_s=60.0,
                        updated_at=new,
                    ),
                    Benchmark(source="s", metric="mmlu", raw_model="a", model_id=q4.id, raw_value=0.6, score=0.6),
                    Benchmark(source="s", metric="gsm8k", raw_model="a", model_id=q4.id, raw_value=0.8, score=0.8),
                ]
            )
        async with make_sessionmaker(engine)() as s:
            snap = await load_snapshot(s)
            again = await load_snapshot(s)

    assert [m.name for m in snap.models] == ["llama3.1:8b", "llama3.1:8b-instruct-q8_0"]
    q4m, q8m = snap.models
    assert [(r.backend, r.upstream_model, r.host) for r in q4m.replicas] == [("up", "llama3.1:8b", "gpu-1")]
    assert q4m.quality == {"code": 0.5, "general": 0.7}  # the latest suite only
    assert (q4m.tokens_per_s, q4m.ttft_ms) == (70.0, 50.0)
    assert q4m.benchmark == pytest.approx(0.7)
    assert q8m.benchmark == pytest.approx(0.7)  # shared with its other quantisation
    assert q4m.capabilities.tools and not q4m.capabilities.vision
    assert snap.version == again.version and len(snap.version) == 16


async def test_capability_probes_settle_what_names_and_backends_claimed(db):
    async with engine_scope(db) as engine:
        async with make_sessionmaker(engine)() as s, s.begin():
            up = Backend(name="up", kind="openai", url="http://up/v1")
            claims_vision = Model(name="llava:7b", params_b=7.0, capabilities={"vision": True}, details={})
            quiet_tools = Model(name="qwen2.5:7b", params_b=7.0, capabilities={"tools": False}, details={})
            lazy_tools = Model(name="mistral:7b", params_b=7.0, capabilities={"tools": True}, details={})
            s.add_all([up, claims_vision, quiet_tools, lazy_tools])
            for m in (claims_vision, quiet_tools, lazy_tools):
                s.add(Deployment(model=m, backend=up, upstream_name=m.name))
            await s.flush()

            def probes(**caps: tuple[bool | None, str]) -> dict[str, object]:
                return {"capabilities": {k: {"confirmed": c, "detail": d} for k, (c, d) in caps.items()}}

            s.add_all(
                [
                    # the backend refused an image: llama.cpp without a projector, say
                    profile(
                        claims_vision.id, "v1", "general", 0.5, details=probes(vision=(False, "refused: HTTP 400"))
                    ),
                    # a real tool call where discovery knew of none
                    profile(quiet_tools.id, "v1", "general", 0.5, details=probes(tools=(True, "called get_weather"))),
                    # answering without the tool is not proof of no support
                    profile(
                        lazy_tools.id,
                        "v1",
                        "general",
                        0.5,
                        details=probes(tools=(False, "answered without a tool call")),
                    ),
                ]
            )
        async with make_sessionmaker(engine)() as s:
            snap = {m.name: m for m in (await load_snapshot(s)).models}
    assert snap["llava:7b"].capabilities.vision is False
    assert snap["qwen2.5:7b"].capabilities.tools is True
    assert snap["mistral:7b"].capabilities.tools is True
