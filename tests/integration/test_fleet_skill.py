"""The simulated fleet shows routing: profiled with the real suite, its models score by size and
category (bigger is better, coders best at code), so the scorer has something to choose from."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import yaml
from sqlalchemy import select

from tests.conftest import migrated_database
from tests.integration.test_profiling_fleet import run_burst
from turnout.common.arq import DISCOVER_MODELS
from turnout.common.db.models import Model, Profile
from turnout.common.db.session import engine_scope, make_sessionmaker
from turnout.profiler.settings import ProfilerSettings

pytestmark = pytest.mark.integration

MODELS = [
    {"name": "llama3.2:1b", "params": "1.2B", "capabilities": ["completion", "tools"], "vram_bytes": "2GiB"},
    {"name": "qwen2.5-coder:7b", "params": "7.6B", "capabilities": ["completion", "tools", "insert"],
     "vram_bytes": "5.6GiB"},
    {"name": "qwen3:30b", "params": "30.5B", "capabilities": ["completion", "tools"], "vram_bytes": "18GiB"},
]  # fmt: skip
FLEET = {
    "time_scale": 0,
    "listeners": [{"name": "ollama", "dialect": "ollama", "keep_alive": "5m", "models": MODELS}],
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    cfg = tmp_path_factory.mktemp("fleet") / "fleet.yaml"
    cfg.write_text(yaml.safe_dump(FLEET))
    argv = [sys.executable, "-m", "turnout.fakefleet", "--config", str(cfg), "--port", "ollama=0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line: dict[str, bytes] = {}
    reader = threading.Thread(target=lambda: line.update(v=proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(20)
    if not line.get("v"):
        proc.kill()
        raise RuntimeError(f"fakefleet did not start: {proc.communicate(timeout=5)[1].decode()}")
    try:
        yield orjson.loads(line["v"])
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reads and closes both pipes


@pytest.fixture(scope="module")
def db(pg_admin_url: str) -> Iterator[str]:
    with migrated_database(pg_admin_url, "skill") as url:
        yield url


async def test_profiles_differ_by_size_and_category(fleet: dict[str, Any], redis_url: str, db: str):
    for _ in (1,):
        settings = ProfilerSettings.load(
            environment="test",
            redis_url=redis_url,
            database_url=db,
            key_prefix=f"sytest-{uuid.uuid4().hex[:10]}",
            backends=f"fleet:ollama={fleet['urls']['ollama']}",
            profiler={"discover_on_schedule": False, "discover_at_startup": False, "max_jobs": 3},
        )
        await run_burst(settings, (DISCOVER_MODELS, {}))
        async with engine_scope(db) as engine, make_sessionmaker(engine)() as session:
            rows = (
                await session.execute(
                    select(Model.name, Profile.category, Profile.score).join(Model, Model.id == Profile.model_id)
                )
            ).all()
    scores = {(name, cat): round(score, 3) for name, cat, score in rows if score is not None}
    by_model = {m: {c: s for (n, c), s in scores.items() if n == m} for m in ("llama3.2:1b", "qwen2.5-coder:7b")}
    assert by_model["llama3.2:1b"] == {
        "code": 0.2, "creative": 0.803, "extraction": 0.5, "general": 1.0, "instruction": 0.5, "math": 0.167,
        "reasoning": 0.2,
    }  # fmt: skip
    assert by_model["qwen2.5-coder:7b"] == {
        "code": 1.0, "creative": 1.0, "extraction": 1.0, "general": 1.0, "instruction": 1.0, "math": 0.833,
        "reasoning": 0.8,
    }  # fmt: skip
    assert {c: s for (n, c), s in scores.items() if n == "qwen3:30b"} == dict.fromkeys(
        ("code", "creative", "extraction", "general", "instruction", "math", "reasoning"), 1.0
    )
