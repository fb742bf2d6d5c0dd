"""Circuit breakers shared through Redis, over a real socket: a failing model or backend stops
getting traffic, every gateway sees it, one probe closes it again, and /admin and /metrics show it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.integration import test_gateway_fakes as fakes
from tests.integration.test_gateway_fakes import FakeScorer, Fleet, fixed, run_gateway
from tests.integration.test_gateway_resilience import wait_events
from turnout.common.circuits import CircuitPolicy, CircuitState, CircuitStore
from turnout.devstack.infra import free_port

pytestmark = pytest.mark.integration

fleet = fakes.fleet
make_settings = fakes.make_settings

CHAT = {"model": "turnout/auto", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(("status_failures", "sent"), [(None, 1), (3, 3)])
async def test_a_failing_model_opens_its_circuit_and_traffic_goes_elsewhere(
    redis_url, keys, redis, fleet: Fleet, make_settings, status_failures: int | None, sent: int, caplog
):
    caplog.set_level("WARNING", logger="turnout.gateway.circuits")
    fleet.alpha.mode = "status"  # alpha's model answers 500
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up"), ("m", "beta", "up")))
    given = {} if status_failures is None else {"circuit_status_failures": status_failures}
    settings = make_settings(circuit_failures=3, circuit_cooldown_s=60, **given)
    told = redis.pubsub(ignore_subscribe_messages=True)
    await told.subscribe(keys.fleet_changed)
    async with scorer.running(), run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        replies = [await http.post("/v1/chat/completions", json=CHAT) for _ in range(10)]
        admin = (await http.get("/admin/circuits")).json()
        metrics = (await http.get("/metrics")).text
    message = await next_message(told, 1.0)
    await told.aclose()
    assert [r.status_code for r in replies] == [200] * 10
    assert [r.headers["x-turnout-backend"] for r in replies] == ["beta"] * 10
    # a model that answers 5xx opens its circuit at its first failure by default (three when
    # configured so); then nothing more was sent
    assert len(fleet.alpha.received) == sent
    [circuit] = admin["circuits"]
    assert (circuit["backend"], circuit["model"], circuit["state"], circuit["failures"], circuit["trips"]) == (
        "alpha",
        "up",
        "open",
        sent,
        1,
    )
    assert (circuit["cooldown_s"], circuit["blocking"], circuit["last_error"]) == (60.0, True, "BackendStatusError")
    assert admin["policy"]["status_failure_threshold"] == (status_failures or 1)
    assert 'turnout_gateway_circuit_state{backend="alpha",model="up"} 2.0' in metrics
    assert 'turnout_gateway_circuit_state{backend="beta",model="*"} 0.0' in metrics
    assert f'turnout_gateway_upstream_attempts_total{{backend="alpha",outcome="circuit_open"}} {10 - sent}.0' in metrics
    # the scorer is told at once (it re-reads the circuits on fleet_changed)
    assert message is not None and message["data"] == b"alpha\tup"
    opened = [r.getMessage() for r in caplog.records if r.name == "turnout.gateway.circuits"]
    assert len(opened) == 1 and opened[0].startswith("circuit alpha/up open for "), opened  # once, not per request


async def test_after_the_cooldown_one_probe_closes_it_or_reopens_it_for_longer(redis, keys):
    store = CircuitStore(redis, keys, CircuitPolicy(failure_threshold=2, base_cooldown_s=10, max_cooldown_s=25))
    t = 1000.0
    assert await store.failure("b", "m", "X", now=t) == (CircuitState.CLOSED, 0.0)
    assert await store.failure("b", "m", "X", now=t) == (CircuitState.OPEN, t + 10)
    assert await store.probe("b", "m", now=t + 5) is False  # cooling down
    assert await store.probe("b", "m", now=t + 10) is True  # the one probe
    assert await store.probe("b", "m", now=t + 10.5) is False  # the lease is taken
    assert await store.failure("b", "m", "X", now=t + 11) == (CircuitState.OPEN, t + 31)  # the probe failed
    [c] = await store.read_all()
    assert (c.state, c.trips, c.cooldown_s, c.until) == ("open", 2, 20.0, t + 31)
    assert await store.failure("b", "m", "X", now=t + 12) == (CircuitState.OPEN, t + 31)  # open: no new trip
    assert await store.probe("b", "m", now=t + 31) is True
    assert await store.failure("b", "m", "X", now=t + 32) == (CircuitState.OPEN, t + 57)
    [c] = await store.read_all()
    assert (c.trips, c.cooldown_s) == (3, 25.0)  # doubled, capped
    await store.success("b", "m")  # a stale success while open changes nothing
    assert [x.state for x in await store.read_all()] == ["open"]
    assert await store.probe("b", "m", now=t + 57) is True
    await store.success("b", "m")  # the probe's success closes it and forgets the trips
    assert await store.read_all() == []


async def next_message(pubsub: Any, timeout: float) -> dict[str, Any] | None:
    """The next published message (the subscription's confirmation is skipped), or None."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        message = await pubsub.get_message(timeout=max(0.01, end - time.monotonic()))
        if message is not None:
            return dict(message)
    return None


async def test_a_lower_threshold_opens_it_sooner_and_only_opening_tells_the_scorer(redis, keys):
    store = CircuitStore(redis, keys, CircuitPolicy(failure_threshold=3, base_cooldown_s=10))
    told = redis.pubsub(ignore_subscribe_messages=True)
    await told.subscribe(keys.fleet_changed)
    t = 1000.0
    assert await store.failure("b", "timeouts", "X", now=t) == (CircuitState.CLOSED, 0.0)
    assert await store.failure("b", "answers-500", "X", now=t, threshold=1) == (CircuitState.OPEN, t + 10)
    assert await store.failure("b", "answers-500", "X", now=t + 1, threshold=1) == (CircuitState.OPEN, t + 10)
    got = [await next_message(told, 0.5) for _ in range(2)]
    await told.aclose()
    assert [m["data"] if m else None for m in got] == [b"b\tanswers-500", None]  # one trip, one message


async def test_the_probe_after_the_cooldown_closes_the_circuit_for_every_gateway(
    redis_url, keys, fleet: Fleet, make_settings
):
    fleet.alpha.mode = "status"
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up"), ("m", "beta", "up")))
    # a cooldown long enough that it cannot run out while b's requests go by on a loaded box
    settings = make_settings(circuit_failures=1, circuit_cooldown_s=2.0, circuit_refresh_s=0.05)
    async with scorer.running(), run_gateway(settings) as one, run_gateway(settings) as two:
        async with httpx.AsyncClient(base_url=one.url) as a, httpx.AsyncClient(base_url=two.url) as b:
            first = await a.post("/v1/chat/completions", json=CHAT)  # opens it
            opened_at = time.monotonic()
            await asyncio.sleep(0.2)  # the other gateway's view refreshes (every 0.05 s)
            during = [await b.post("/v1/chat/completions", json=CHAT) for _ in range(5)]
            sent_while_open = len(fleet.alpha.received)
            fleet.alpha.mode = "ok"
            await asyncio.sleep(max(0.0, opened_at + 2.1 - time.monotonic()))  # cooldown over
            probe = await b.post("/v1/chat/completions", json=CHAT)
            await asyncio.sleep(0.2)
            after = await a.post("/v1/chat/completions", json=CHAT)
            circuits = (await a.get("/admin/circuits")).json()["circuits"]
    assert first.headers["x-turnout-backend"] == "beta"
    assert [r.headers["x-turnout-backend"] for r in during] == ["beta"] * 5
    assert sent_while_open == 1
    assert (probe.headers["x-turnout-backend"], after.headers["x-turnout-backend"]) == ("alpha", "alpha")
    assert circuits == []


async def test_an_unreachable_backend_opens_the_backend_wide_circuit_and_retries_go_to_another_backend(
    redis_url, keys, fleet: Fleet, make_settings
):
    dead = {"name": "gone", "kind": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"}
    # two models on the dead backend first: the retry after the first failure skips the second
    decide = fixed(("m", "gone", "a"), ("m2", "gone", "b"), ("m", "beta", "up"))
    scorer = FakeScorer(redis_url, keys, decide)
    settings = make_settings(backends=[*fleet.backends(), dead], circuit_failures=2, circuit_cooldown_s=60)
    async with scorer.running(), run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        replies = [await http.post("/v1/chat/completions", json=CHAT) for _ in range(4)]
        circuits = (await http.get("/admin/circuits")).json()["circuits"]
        events = await wait_events(gw.app_state().redis, keys, 4)
    assert [r.headers["x-turnout-backend"] for r in replies] == ["beta"] * 4
    assert [(c["backend"], c["model"], c["state"]) for c in circuits] == [("gone", "", "open")]
    assert [[(a.backend, a.outcome) for a in e.attempts] for e in events] == [
        [("gone", "unavailable"), ("beta", "ok")],
        [("gone", "unavailable"), ("beta", "ok")],
        [("gone", "circuit_open"), ("gone", "circuit_open"), ("beta", "ok")],
        [("gone", "circuit_open"), ("gone", "circuit_open"), ("beta", "ok")],
    ]


async def test_when_every_candidate_is_cooling_down_the_client_gets_503_with_retry_after(
    redis_url, keys, fleet: Fleet, make_settings
):
    fleet.alpha.mode = "status"
    scorer = FakeScorer(redis_url, keys, fixed(("m", "alpha", "up")))
    settings = make_settings(circuit_failures=1, circuit_cooldown_s=30)
    async with scorer.running(), run_gateway(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        failed = await http.post("/v1/chat/completions", json=CHAT)
        t0 = time.monotonic()
        refused = await http.post("/v1/chat/completions", json=CHAT)
        elapsed = time.monotonic() - t0
    assert failed.status_code == 502
    assert (refused.status_code, refused.json()["error"]) == (
        503,
        {
            "message": "every candidate is cooling down after failures (alpha)",
            "type": "service_unavailable",
            "param": None,
            "code": "circuit_open",
        },
    )
    assert int(refused.headers["retry-after"]) in (29, 30)
    assert elapsed < 0.5
    assert len(fleet.alpha.received) == 1
