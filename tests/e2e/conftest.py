"""The whole stack as real processes: the simulated fleet on free ports, the five services
(``python -m turnout.<svc>``) against the run's private Redis and per-run database.

One stack per test session (starting it costs seconds); tests that break something (kill
the scorer, fail a backend) put it back before they return. Each service's output goes to
``.run/test/e2e-<id>/<service>.log``; a failed start shows the last lines in the error.
"""

from __future__ import annotations

import importlib.util
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis as SyncRedis

from tests.e2e.support import eventually
from turnout.common.keys import Keys
from turnout.common.schemas.catalog import CatalogSnapshotV1
from turnout.devstack import demo
from turnout.devstack.infra import free_port
from turnout.devstack.stack import SERVICES, Stack, StackConfig, StackUrls, file_sink

REPO = Path(__file__).resolve().parents[2]
MAX_BODY_BYTES = 256 * 1024
# an operator alias the scorer is configured with (tests/e2e/test_routing.py)
ALIAS = "e2e-alias-big"
ALIAS_TARGET = "Qwen3-30B-A3B-Instruct-Q4_K_M"


def runnable_services() -> tuple[str, ...]:
    """Services that have a ``__main__`` (all five once the stack is complete;
    ``test_every_service_runs_as_a_process`` fails while one is missing)."""
    return tuple(n for n in SERVICES if importlib.util.find_spec(f"{SERVICES[n].module}.__main__") is not None)


@dataclass
class E2E:
    stack: Stack
    urls: StackUrls
    keys: Keys
    database_url: str
    log_dir: Path
    models: list[str]

    @property
    def gateway(self) -> str:
        return self.urls.gateway

    @property
    def fleet_admin(self) -> str:
        assert self.urls.fleet is not None
        return self.urls.fleet.admin_url


@pytest.fixture(scope="session")
def e2e(request: pytest.FixtureRequest, redis_url: str, database_url: str) -> Iterator[E2E]:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"sye2e-{run_id}"
    log_dir = REPO / ".run" / "test" / f"e2e-{run_id}"
    stack = Stack(
        StackConfig(
            redis_url=redis_url,
            database_url=database_url,
            key_prefix=prefix,
            gateway_host="127.0.0.1",
            gateway_port=free_port(),
            ops_host="127.0.0.1",
            free_ports=True,
            environment="test",
            log_level="INFO",
            log_json=True,
            inherit_turnout_env=False,
            extra_env={
                "TURNOUT_MIGRATE_ON_START": "false",  # the fixture migrated the database already
                "TURNOUT_GATEWAY__MAX_BODY_BYTES": str(MAX_BODY_BYTES),
                "TURNOUT_GATEWAY__ROUTE_TIMEOUT_S": "0.5",
                # a name no other test requests, so only test_routing sees it
                "TURNOUT_SCORER__ALIASES": f'{{"{ALIAS}": "{ALIAS_TARGET}"}}',
            },
            cwd=REPO,
        ),
        sink=file_sink(log_dir),
    )
    try:
        stack.start_fleet()
        stack.start_services(runnable_services())
        urls = stack.wait_ready(timeout=90)
        models = stack.wait_models(min_models=3, timeout=60)
        _wait_for_catalog(redis_url, Keys(prefix), n_models=_count_fleet_models(urls), timeout=60)
        # the simulated models differ by size and category once graded: routing tests need the grades
        assert demo.wait_profiled(urls.gateway, timeout=240), "the profiler did not grade every chat model"
        _idle_fleet(urls)
        yield E2E(stack, urls, Keys(prefix), database_url, log_dir, models)
    finally:
        stack.stop()
    dead = stack.dead()
    assert not dead, f"services died during the e2e run: {dead} (logs in {log_dir})"
    if request.session.testsfailed:
        print(f"\ne2e service logs: {log_dir}")
    else:
        shutil.rmtree(log_dir, ignore_errors=True)


def _idle_fleet(urls: StackUrls) -> None:
    """Unload what profiling left loaded, and wait until the router sees an idle fleet: the tests
    start from the residency of a fresh ``make run``, not from the profiler's last models (a
    resident model within the VRAM planner's score margin would take their requests), and from no
    load (an earlier request's note ending between an explanation and the route that follows it
    moved a candidate past a near-tie once)."""
    assert urls.fleet is not None
    httpx.post(f"{urls.fleet.admin_url}/_fleet/reset", timeout=5).raise_for_status()

    def idle() -> bool:
        hosts = httpx.get(f"{urls.gateway}/admin/vram", timeout=5).json()["hosts"]
        return bool(hosts) and all(not h["loaded_models"] for h in hosts)

    eventually(idle, timeout=30, what="an idle fleet after profiling")

    def unloaded() -> bool:  # and nothing in flight as the scorer counts it: read, or noted on top
        try:
            text = httpx.get(f"{urls.ops['scorer']}/metrics", timeout=5).raise_for_status().text
        except httpx.HTTPError:  # a scorer an earlier test restarted may not be listening yet
            return False
        seen = {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name in ("turnout_scorer_inflight_read", "turnout_scorer_inflight_noted")
        }
        return seen == {"turnout_scorer_inflight_read": 0.0, "turnout_scorer_inflight_noted": 0.0}

    eventually(unloaded, timeout=30, what="no request in flight as the scorer counts them")


def _count_fleet_models(urls: StackUrls) -> int:
    assert urls.fleet is not None
    config = httpx.get(f"{urls.fleet.admin_url}/_fleet/config", timeout=5).raise_for_status().json()
    return sum(len(li["models"]) for li in config["listeners"])


def _wait_for_catalog(redis_url: str, keys: Keys, *, n_models: int, timeout: float) -> None:
    """Discovery has run and the scorer has loaded every fleet model (so routing is the scorer's)."""
    r = SyncRedis.from_url(redis_url)
    try:

        def loaded() -> int:
            raw = r.get(keys.catalog_snapshot)
            return len(CatalogSnapshotV1.model_validate_json(raw).models) if raw else 0

        eventually(lambda: loaded() >= n_models, timeout=timeout, what=f"{n_models} models in the scorer's catalog")
    finally:
        r.close()


@pytest.fixture
def idle_fleet(e2e: E2E) -> None:
    """A test that compares routing choices starts from an idle fleet: what earlier tests left
    loaded would otherwise take requests whose best model scores within the VRAM planner's margin."""
    _idle_fleet(e2e.urls)


@pytest.fixture
def client(e2e: E2E) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=e2e.urls.openai_base, api_key="unused", max_retries=0, timeout=30) as c:
        yield c


@pytest.fixture
def http(e2e: E2E) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=e2e.gateway, timeout=30) as c:
        yield c


@pytest.fixture
def fleet(e2e: E2E) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=e2e.fleet_admin, timeout=10) as c:
        yield c
