"""The promises of issue 13 that links and workers deliver, at small scale, on a whole stack of
real processes (:class:`~turnout.devstack.faultstack.FaultStack`: private Redis and Postgres that
may be killed, the scorer's Redis link behind a black-hole proxy). For each fault, under mixed
streaming / non-streaming load from the ``openai`` client: 0 client errors, 0 lost decisions
(every answered request id is stored in Postgres), and routing by the scorer back within 2 s of
the fault's end. A model that answers 500: client errors only in its first second, then < 2 % of
the requests spend an attempt on it. A hung model (profiled: its bound 1 s to the first byte, 3.7 s
for a 16-token reply): no attempt on it longer than its bound, every request fails over, and ok
answers per second back within 10 s of the bound. ``bench/faults.py`` runs the same faults longer
and adds the others."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from turnout.devstack.faultstack import FLEET_MODELS, FaultStack, Measured
from turnout.gateway.settings import GatewayOptions
from turnout.gateway.upstream_limits import ReadBounds

RUN_DIR = Path(__file__).resolve().parents[2] / ".run" / "test"

pytestmark = pytest.mark.timeout(600)


# The profiler does not profile here, so that the hung model's bound cannot change during its test:
# every model gets the speed profile the profiler would have measured (FaultStack.profile_speeds),
# as in a fleet that has run a while. Unprofiled, the scorer saw the 4 s-TTFT slow-ttft-3b as fast as
# any 3B and the hung mid-8b at its size prior's speed (~3.6 s of expected wait per request ahead of
# it against the real 0.05 s), which sent more of the load to the 4 s model. At small scale the
# gateway's least bound is 1 s (the default, 10 s, is for real fleets)
READ_MIN_S = 1.0
HUNG = "mid-8b"
# the windows the hung model's throughput is compared over, before the fault and from 10 s after its
# bound (a half-open probe of the hung model holds one load thread for its bound)
WINDOW_S = 8.0


@pytest.fixture(scope="module")
def fs() -> Iterator[FaultStack]:
    stack = FaultStack(
        RUN_DIR / "faults",
        log=lambda _: None,
        gateway_env={
            "TURNOUT_GATEWAY__READ_MIN_S": str(READ_MIN_S),
            "TURNOUT_PROFILER__PROFILING__ENABLED": "false",
        },
    )
    try:
        stack.start(timeout=240)
        stack.profile_speeds(list(FLEET_MODELS))
        yield stack
    finally:
        stack.stop()


def held(r: Measured) -> tuple[dict[str, int], int, bool]:
    return r.failed, r.lost, r.recover_s <= 2.0


def test_redis_down_a_few_seconds(fs: FaultStack) -> None:
    def fault() -> tuple[float, float]:
        t0 = time.monotonic()
        fs.redis_down()
        time.sleep(3)
        fs.redis_up()
        return t0, time.monotonic()

    r = fs.measure("redis down", fault, concurrency=4, settle_s=3)
    assert r.sent >= 4  # every load thread got requests through
    assert held(r) == ({}, 0, True), r
    # the workers rode it out: nothing exited, nothing had to be restarted
    assert fs.stack is not None and fs.restarter is not None
    assert fs.stack.dead() == [] and fs.restarter.restarts == {}


def test_postgres_down_a_few_seconds(fs: FaultStack) -> None:
    def fault() -> tuple[float, float]:
        t0 = time.monotonic()
        fs.postgres_down()
        time.sleep(3)
        fs.postgres_up()
        return t0, time.monotonic()

    r = fs.measure("postgres down", fault, concurrency=4, settle_s=3)
    assert r.sent >= 4  # every load thread got requests through
    assert held(r) == ({}, 0, True), r
    assert fs.stack is not None and fs.stack.dead() == []


def test_half_open_redis_link_of_the_scorer(fs: FaultStack) -> None:
    assert fs.proxy is not None
    proxy = fs.proxy

    def fault() -> tuple[float, float]:
        t0 = time.monotonic()
        proxy.blackhole()
        time.sleep(8)  # past the 5 s command timeout: the scorer drops its dead links
        proxy.heal()
        return t0, time.monotonic()

    r = fs.measure("half-open", fault, concurrency=4, settle_s=4)
    assert r.sent >= 4  # every load thread got requests through
    assert held(r) == ({}, 0, True), r


def test_scorer_killed(fs: FaultStack) -> None:
    assert fs.stack is not None
    stack = fs.stack

    def fault() -> tuple[float, float]:
        t0 = time.monotonic()
        stack.procs["scorer"].signal_group(signal.SIGKILL)
        stack.procs["scorer"].popen.wait(timeout=10)
        end = time.monotonic() + 120
        while stack.procs["scorer"].returncode is not None and time.monotonic() < end:
            time.sleep(0.1)  # the devstack restarter brings it back
        stack.wait_service("scorer", timeout=120)
        return t0, time.monotonic()

    r = fs.measure("scorer kill -9", fault, concurrency=4, settle_s=3)
    assert r.sent >= 4  # every load thread got requests through
    assert held(r) == ({}, 0, True), r
    assert fs.restarter is not None and fs.restarter.restarts == {"scorer": 1}


def test_a_failing_model_is_avoided_after_its_first_second(fs: FaultStack) -> None:
    def fault() -> tuple[float, float]:
        t0 = time.monotonic()
        fs.fleet_fail(model=HUNG, listener="a", mode="500")
        time.sleep(10)  # long enough for ~100 requests after the first second even on a loaded box:
        # the one pick that may still land there after 1 s must be < 2 % of them
        fs.fleet_fail(model=HUNG, listener="a", mode="ok")
        return t0, time.monotonic()

    r = fs.measure("model answers 500", fault, concurrency=4, settle_s=2)
    hit, n = r.spent_on(fs.backend_of("a"), HUNG, skip_s=1.0)
    assert n >= 10, r  # the load kept flowing
    assert (r.client_errors_after(1.0), r.lost) == (0, 0), r
    assert hit / n < 0.02, (hit, n)  # its circuit is open: < 2 % spend an attempt on it


def test_a_hung_model_frees_its_slot_within_its_bound_and_fails_over(fs: FaultStack) -> None:
    opts = GatewayOptions(read_min_s=READ_MIN_S)
    bounds = ReadBounds(
        ttfb_factor=opts.ttfb_factor,
        gap_factor=opts.gap_factor,
        read_min_s=opts.read_min_s,
        read_max_s=opts.read_timeout_s,
        read_unprofiled_s=opts.read_unprofiled_s,
        unprofiled_min_tokens_per_s=opts.unprofiled_min_tokens_per_s,
    )
    model = fs.catalog_model(HUNG)
    assert model is not None and (model.ttft_ms, model.tokens_per_s) == (15.0, 300.0), model
    bound = bounds.read_timeout_s(model, stream=False, max_tokens=16)  # the load's non-streamed replies
    # its profiled bound: the first byte within ttfb_factor x 15 ms, raised to the least bound, then
    # 16 tokens at gap_factor / 300 tokens/s (a stream's: 1 s)
    assert bound == pytest.approx(READ_MIN_S + opts.gap_factor * 16 / 300), bound

    def fault() -> tuple[float, float]:
        t0 = time.monotonic()
        fs.fleet_fail(model=HUNG, listener="a", mode="hang")
        time.sleep(bound + 10 + WINDOW_S)
        fs.fleet_fail(model=HUNG, listener="a", mode="ok")
        return t0, time.monotonic()

    r = fs.measure("hung model", fault, concurrency=4, before_s=WINDOW_S, settle_s=2)
    backend = fs.backend_of("a")
    held_s = r.longest_attempt_s(backend, HUNG)
    timeouts = sum(o == "timeout" for a in r.attempts.values() for b, m, o, _ in a if (b, m) == (backend, HUNG))
    assert (r.failed, r.lost) == ({}, 0), r  # every request failed over
    assert timeouts >= 1 and 0 < held_s <= bound + 1.0, (timeouts, held_s, bound)  # no slot held past its bound
    before = r.ok_per_s(r.fault_start - WINDOW_S, r.fault_start)
    back = r.fault_start + bound + 10
    after = r.ok_per_s(back, r.fault_end)
    assert before > 0, before
    # where the load went in each window, (requests, mean seconds each) by backend/model, for the message
    windows = (r.served_by(r.fault_start - WINDOW_S, r.fault_start), r.served_by(back, r.fault_end))
    # throughput back within 10 s of the bound. It once failed here about one run in three: the
    # scorer counted every decision in flight until its next read of the gateways' counts, so ~30
    # req/s of 60 ms requests looked like 6-7 in flight on each mid-8b replica, and the busy and
    # wait terms sent a share of the load to the idle 4 s-TTFT model (30.8 -> 14.1 ok/s); a noted
    # decision now counts for its expected time only (scorer/notes.py)
    assert after >= 0.5 * before, (
        f"throughput not back within 10 s of the bound: {before:.1f} -> {after:.1f} ok/s {windows}"
    )
