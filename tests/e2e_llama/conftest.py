"""The whole stack in front of real llama.cpp servers with real (and random-weight) models.

One fleet and one stack per test session:

* :class:`~turnout.llamafleet.servers.LlamaFleet` ``e2e``: SmolLM2-135M-Instruct twice
  (backends ``llama-smol`` and ``llama-smol-b``: two replicas of one model), a 6M and a 600M
  random-weight llama, one ``python -m llama_cpp.server`` each on free ports. The first run on
  a machine installs ``.run/llama/venv`` from the cached wheel and fetches/generates the
  models (about 30 s); without a cached wheel it compiles llama.cpp once (about 8 minutes).
  Where no wheel can be built the whole tier skips, saying why.
* the five services (:class:`turnout.devstack.stack.Stack`) with
  ``TURNOUT_BACKENDS`` pointing at the fleet, on the run's Redis (own key prefix) and a
  database of their own (the simulated-fleet tier's catalog must not see these backends).
  The profiler profiles the models once discovered, with the tier's own three-prompt suite
  (``turnout.llamafleet.SPEED_SUITE``; the shipped one takes minutes on these CPUs); the fixture waits for
  those profiles (bounded) so that no profiling runs beside the tests' own measurements.

Logs: services under ``.run/test/e2e-llama-<id>/``, servers under ``.run/llama/logs/``.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import openai
import pytest

from tests.conftest import migrated_database
from turnout.common.keys import Keys
from turnout.devstack.infra import free_port
from turnout.devstack.stack import Stack, StackConfig, StackUrls, file_sink
from turnout.llamafleet import SPEED_SUITE
from turnout.llamafleet.errors import WheelUnbuildable
from turnout.llamafleet.servers import FLEETS, LlamaFleet, LlamaServer

REPO = Path(__file__).resolve().parents[2]
PROFILES_WAIT_S = 180.0


@dataclass
class LlamaE2E:
    fleet: LlamaFleet
    stack: Stack
    urls: StackUrls
    keys: Keys
    database_url: str
    log_dir: Path
    models: list[str]
    profiled: dict[str, tuple[float | None, float | None]]
    """Model → (tokens/s, TTFT ms) the profiler stored before the tests ran."""

    @property
    def gateway(self) -> str:
        return self.urls.gateway

    def server(self, backend: str) -> LlamaServer:
        return self.fleet.servers[backend]

    def direct(self, backend: str) -> openai.OpenAI:
        """An OpenAI client talking to one llama.cpp server, bypassing the gateway."""
        return openai.OpenAI(base_url=self.server(backend).url, api_key="unused", max_retries=0, timeout=60)


def _visible(config: pytest.Config) -> Callable[[str], None]:
    """Progress lines that get past pytest's capture (a first run installs and generates for a while)."""
    capman = config.pluginmanager.getplugin("capturemanager")

    def say(msg: str) -> None:
        with capman.global_and_fixture_disabled():
            sys.stderr.write(f"\nllamafleet: {msg}\n")
            sys.stderr.flush()

    return say


@pytest.fixture(scope="package")
def llama_fleet(pytestconfig: pytest.Config) -> Iterator[LlamaFleet]:
    fleet = LlamaFleet(FLEETS["e2e"], progress=_visible(pytestconfig))
    try:
        fleet.prepare()
    except WheelUnbuildable as exc:
        pytest.skip(str(exc))
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="package")
def llama_database_url(pg_admin_url: str) -> Iterator[str]:
    """A database of this tier's own, migrated to head."""
    with migrated_database(pg_admin_url, "llama") as url:
        yield url


def db_fetch(database_url: str, sql: str) -> list[asyncpg.Record]:
    async def q() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"), timeout=5)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(q())


PROFILES_SQL = (
    "SELECT m.name, avg(p.tokens_per_s) AS tps, avg(p.ttft_ms) AS ttft FROM profiles p "
    "JOIN models m ON m.id = p.model_id GROUP BY m.name"
)


def wait_profiles(database_url: str, n_models: int, timeout: float) -> dict[str, tuple[float | None, float | None]]:
    """The profiles the profiler stored, once there is one per model (or what is there after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = db_fetch(database_url, PROFILES_SQL)
        if len(rows) >= n_models or time.monotonic() > deadline:
            return {r["name"]: (r["tps"], r["ttft"]) for r in rows}
        time.sleep(1.0)


@pytest.fixture(scope="package")
def llama(llama_fleet: LlamaFleet, redis_url: str, llama_database_url: str) -> Iterator[LlamaE2E]:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"syllama-{run_id}"
    log_dir = REPO / ".run" / "test" / f"e2e-llama-{run_id}"
    stack = Stack(
        StackConfig(
            redis_url=redis_url,
            database_url=llama_database_url,
            key_prefix=prefix,
            backends=llama_fleet.backends_value,
            gateway_host="127.0.0.1",
            gateway_port=free_port(),
            free_ports=True,
            environment="test",
            log_level="INFO",
            log_json=True,
            inherit_turnout_env=False,
            extra_env={
                "TURNOUT_MIGRATE_ON_START": "false",  # the fixture migrated the database already
                "TURNOUT_GATEWAY__ROUTE_TIMEOUT_S": "0.5",
                "TURNOUT_PROFILER__PROFILING__SUITE_PATH": str(SPEED_SUITE),
                "TURNOUT_PROFILER__PROFILING__RUNNER__PROBE_VISION": "false",
                "TURNOUT_PROFILER__PROFILING__RUNNER__PROBE_TOOLS": "false",
            },
            cwd=REPO,
        ),
        sink=file_sink(log_dir),
    )
    try:
        stack.start_services()
        urls = stack.wait_ready(timeout=90)
        distinct = len({m.model.alias for m in llama_fleet.members})
        models = stack.wait_models(min_models=distinct, timeout=90)
        profiled = wait_profiles(llama_database_url, distinct, timeout=PROFILES_WAIT_S)
        yield LlamaE2E(llama_fleet, stack, urls, Keys(prefix), llama_database_url, log_dir, models, profiled)
    finally:
        stack.stop()
    dead = stack.dead()
    assert not dead, f"services died during the llama e2e run: {dead} (logs in {log_dir})"


@pytest.fixture
def client(llama: LlamaE2E) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llama.urls.openai_base, api_key="unused", max_retries=0, timeout=60) as c:
        yield c
