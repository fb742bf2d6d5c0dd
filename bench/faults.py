"""The fault bench: a whole stack on private Redis and Postgres, mixed load, one fault at a time.

    python bench/faults.py [--quick] [--only NAME ...] [--concurrency 8]

Brings up its own stack (:class:`turnout.devstack.faultstack.FaultStack`: a simulated fleet of two
OpenAI-dialect backends, scorer, profiler, sync, gateway, the scorer's Redis link through a
black-hole proxy), drives streaming and non-streaming chat requests with the ``openai`` client,
and goes through every fault of issue 13. Per fault it prints requests sent / ok / failed by
status / lost decisions (answered, never stored in Postgres) / seconds to recover (from the end of
the fault to the start of the last request after it that failed or was not routed by the scorer),
and whether the fault's promise held; the last line is ``faults: N/M promises held``.
``--quick`` runs every fault at small scale (a few seconds each; under 5 minutes in all).

As in ``tests/integration/test_fault_promises.py``, the profiler does not profile here and every
model gets the speed profile the profiler would have measured (``FaultStack.profile_speeds``), as
in a fleet that has run a while: a profiler at work could profile the hung model during its fault
and move its read bound, which the hung-model promise is judged against.
"""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import openai

from turnout.devstack.faultstack import FLEET_MODELS, FaultStack, Measured, Outcome, send_chat
from turnout.gateway.settings import GatewayOptions
from turnout.gateway.upstream_limits import ReadBounds

REPO = Path(__file__).resolve().parents[1]


Result = Measured
HUNG_MODEL = "mid-8b"
Promise = Callable[[Measured, list[Outcome]], bool]


@dataclass
class Scale:
    redis_s: float
    postgres_s: float
    fault_s: float
    settle_s: float


QUICK = Scale(redis_s=5, postgres_s=6, fault_s=5, settle_s=4)
FULL = Scale(redis_s=15, postgres_s=30, fault_s=15, settle_s=8)


class Bench:
    def __init__(self, fs: FaultStack, scale: Scale, concurrency: int) -> None:
        self.fs = fs
        self.scale = scale
        self.concurrency = concurrency

    def measure(
        self,
        name: str,
        fault: Callable[[], tuple[float, float]],
        promise: Promise,
        *,
        urls: list[str] | None = None,
        background: bool = True,
    ) -> Result:
        concurrency = self.concurrency if background else 0
        r = self.fs.measure(name, fault, urls=urls, concurrency=concurrency, before_s=3.0, settle_s=self.scale.settle_s)
        r.held = promise(r, r.outcomes)
        try:  # the next fault starts from a healthy stack
            self.fs.wait_scorer_routes(timeout=45)
        except TimeoutError:
            r.held = False
            r.note = f"{r.note} no routing by the scorer 45 s after the fault; scorer restarted to go on".strip()
            assert self.fs.stack is not None
            self.fs.stack.restart("scorer", timeout=120)
            self.fs.wait_scorer_routes(timeout=60)
        return r


def nothing_lost(r: Result, _: list[Outcome]) -> bool:
    """0 client errors, 0 lost decisions, routing by the scorer back within 2 s."""
    return r.lost == 0 and not r.failed and r.recover_s <= 2.0


def avoided(fs: FaultStack, listener: str, model: str | None = None) -> Promise:
    """A failing backend or model: client errors only within its first second, then < 2 % of the
    requests spend an attempt on it (its circuit is open); the share goes in the note."""

    def promise(r: Result, _: list[Outcome]) -> bool:
        hit, n = r.spent_on(fs.backend_of(listener), model, skip_s=1.0)
        share = hit / n if n else 1.0
        late = r.client_errors_after(1.0)
        r.note = f"{r.note} attempts on it after 1 s: {hit}/{n} = {share:.1%}; client errors after 1 s: {late}".strip()
        return r.lost == 0 and late == 0 and n > 0 and share < 0.02

    return promise


class Faults:
    """One method per fault: each returns (fault start, fault end) on the monotonic clock."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.fs = bench.fs
        self.scale = bench.scale
        assert self.fs.stack is not None and self.fs.proxy is not None
        self.stack = self.fs.stack
        self.proxy = self.fs.proxy
        self.side: list[str] = []  # outcomes of a fault's own requests (slow model, long streams)
        self.bound_s = 0.0

    def scorer_kill(self) -> tuple[float, float]:
        t0 = time.monotonic()
        self.stack.procs["scorer"].signal_group(signal.SIGKILL)  # unexpected: devstack restarts it
        self.stack.procs["scorer"].popen.wait(timeout=10)
        deadline = time.monotonic() + 120
        while self.stack.procs["scorer"].returncode is not None and time.monotonic() < deadline:
            time.sleep(0.1)  # the restarter brings it back
        self.stack.wait_service("scorer", timeout=120)
        return t0, time.monotonic()

    def redis_down(self) -> tuple[float, float]:
        t0 = time.monotonic()
        self.fs.redis_down()
        time.sleep(self.scale.redis_s)
        self.fs.redis_up()
        return t0, time.monotonic()

    def postgres_down(self) -> tuple[float, float]:
        t0 = time.monotonic()
        self.fs.postgres_down()
        time.sleep(self.scale.postgres_s)
        self.fs.postgres_up()
        return t0, time.monotonic()

    def half_open(self) -> tuple[float, float]:
        t0 = time.monotonic()
        self.proxy.blackhole()
        time.sleep(self.scale.fault_s + 3)
        self.proxy.heal()
        return t0, time.monotonic()

    def fleet(self, **body: object) -> Callable[[], tuple[float, float]]:
        def run() -> tuple[float, float]:
            t0 = time.monotonic()
            self.fs.fleet_fail(**body)
            time.sleep(self.scale.fault_s)
            self.fs.fleet_fail(**{**body, "mode": "ok"})
            return t0, time.monotonic()

        return run

    def _side_requests(self, model: str, n: int, *, stream_all: bool, max_tokens: Callable[[int], int]) -> None:
        client = openai.OpenAI(base_url=f"{self.fs.gateway_url}/v1", api_key="b", max_retries=0, timeout=120)

        def one(i: int) -> None:
            rid = f"side-{uuid.uuid4().hex[:12]}"
            self.side.append(send_chat(client, rid, stream=stream_all or i % 2 == 0, model=model,
                                       max_tokens=max_tokens(i)))  # fmt: skip

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        self._threads = threads

    def hung_bound_s(self) -> float:
        """The gateway's read bound for the hung model as its catalog has it now (profiled or not),
        a non-streamed reply of the load's 16 tokens (the larger of the two)."""
        opts = GatewayOptions()
        bounds = ReadBounds(ttfb_factor=opts.ttfb_factor, gap_factor=opts.gap_factor, read_min_s=opts.read_min_s,
                            read_max_s=opts.read_timeout_s, read_unprofiled_s=opts.read_unprofiled_s,
                            unprofiled_min_tokens_per_s=opts.unprofiled_min_tokens_per_s)  # fmt: skip
        return bounds.read_timeout_s(self.fs.catalog_model(HUNG_MODEL), stream=False, max_tokens=16)

    def hung(self) -> tuple[float, float]:
        """The model hangs for its read bound + 10 s + the fault time: long enough to see the slots
        freed at the bound and the throughput back after it."""
        self.bound_s = self.hung_bound_s()
        t0 = time.monotonic()
        self.fs.fleet_fail(model=HUNG_MODEL, listener="a", mode="hang")
        time.sleep(self.bound_s + 10 + self.scale.fault_s)
        self.fs.fleet_fail(model=HUNG_MODEL, listener="a", mode="ok")
        return t0, time.monotonic()

    def hung_bounded(self, r: Result, _: list[Outcome]) -> bool:
        """No slot held longer than its bound (+1 s of scheduling slack); within 10 s after the bound,
        ok answers per second back to >= half the rate before the fault; no client errors."""
        held = r.longest_attempt_s(self.fs.backend_of("a"), HUNG_MODEL)
        before = r.ok_per_s(r.fault_start - 3.0, r.fault_start)
        back_from = r.fault_start + self.bound_s + 10.0
        after = r.ok_per_s(back_from, r.fault_end)
        hit, n = r.spent_on(self.fs.backend_of("a"), HUNG_MODEL, skip_s=self.bound_s + 10.0)
        r.note = (f"{r.note} bound {self.bound_s:.1f}s, longest attempt on it {held:.1f}s; ok/s before "
                  f"{before:.1f}, from bound+10s {after:.1f}; attempts on it then {hit}/{n}").strip()  # fmt: skip
        return r.lost == 0 and not r.failed and 0 < held <= self.bound_s + 1.0 and after >= 0.5 * before > 0

    def slow_ttft(self) -> tuple[float, float]:
        t0 = time.monotonic()
        self._side_requests("slow-ttft-3b", 4, stream_all=False, max_tokens=lambda _: 8)
        for t in self._threads:
            t.join()
        return t0, time.monotonic()

    def sigterm_gateway(self) -> tuple[float, float]:
        self._side_requests("long-1b", 4, stream_all=True, max_tokens=lambda i: 600 + 200 * i)
        time.sleep(2.0)
        t0 = time.monotonic()
        gw = self.stack.procs["gateway"]
        gw.expected_exit = True
        gw.signal_group(signal.SIGTERM)
        for t in self._threads:
            t.join()
        gw.popen.wait(timeout=120)
        self.stack.start_service("gateway")
        self.stack.wait_service("gateway", timeout=120)
        return t0, time.monotonic()

    def two_gateways(self) -> tuple[float, float]:
        t0 = time.monotonic()
        time.sleep(self.scale.fault_s)
        return t0, time.monotonic()

    def side_ok(self, r: Result, o: list[Outcome]) -> bool:
        return nothing_lost(r, o) and self.side.count("ok") == len(self.side) > 0

    def streams_end_cleanly(self, _: Result, __: list[Outcome]) -> bool:
        return len(self.side) > 0 and all(s in ("ok", "stream-error") for s in self.side)

    def plan(self) -> list[tuple[str, Callable[[], tuple[float, float]], Promise, Callable[[], list[str]] | None]]:
        s = self.scale
        return [
            ("scorer kill -9", self.scorer_kill, nothing_lost, None),
            (f"redis down {s.redis_s:.0f}s", self.redis_down, nothing_lost, None),
            (f"postgres down {s.postgres_s:.0f}s", self.postgres_down, nothing_lost, None),
            ("half-open redis link", self.half_open, nothing_lost, None),
            ("backend answers 500", self.fleet(listener="b", mode="500"), avoided(self.fs, "b"), None),
            ("backend killed (conns dropped)", self.fleet(listener="b", mode="close"), avoided(self.fs, "b"), None),
            ("model answers 500", self.fleet(model=HUNG_MODEL, listener="a", mode="500"),
             avoided(self.fs, "a", HUNG_MODEL), None),
            ("hung model", self.hung, self.hung_bounded, None),
            ("slow first token", self.slow_ttft, self.side_ok, None),
            ("SIGTERM gateway, long streams", self.sigterm_gateway, self.streams_end_cleanly, None),
            ("two gateways, one scorer", self.two_gateways, nothing_lost,
             lambda: [self.fs.gateway_url, self.fs.start_second_gateway()]),
        ]  # fmt: skip


def run_faults(bench: Bench, only: set[str]) -> list[Result]:
    faults = Faults(bench)
    results = []
    for name, fault, promise, urls in faults.plan():
        if only and not any(o in name for o in only):
            continue
        print(f"-- {name} ...", flush=True)
        faults.side = []
        try:
            # a gateway that is stopped refuses connections until it is back: that fault is measured
            # on its own long streams only, not on a background load hammering a closed port
            r = bench.measure(name, fault, promise, urls=urls() if urls else None, background="SIGTERM" not in name)
        except Exception as exc:  # a fault the stack did not survive is a broken promise, not a crash
            r = Result(name, 0, 0, {}, 0, 0.0, note=f"bench error: {type(exc).__name__}: {exc}")
        if faults.side:
            r.note = f"{r.note} own requests: {dict(collections.Counter(faults.side))}".strip()
        results.append(r)
        print_row(r)
    return results


def print_row(r: Result) -> None:
    failed = ", ".join(f"{n}x{s}" for s, n in sorted(r.failed.items())) or "0"
    print(f"| {r.name:<30} | {r.sent:>5} | {r.ok:>5} | {failed:<22} | {r.lost:>4} | {r.recover_s:>6.1f} | "
          f"{'held' if r.held else 'BROKEN':<6} | {r.note}", flush=True)  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="every fault at small scale (under 5 minutes)")
    ap.add_argument("--only", nargs="*", help="run the faults whose name contains one of these")
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    run_dir = REPO / ".run" / f"faults-{uuid.uuid4().hex[:6]}"
    fs = FaultStack(
        run_dir, log=lambda m: print(m, flush=True), gateway_env={"TURNOUT_PROFILER__PROFILING__ENABLED": "false"}
    )
    t0 = time.monotonic()
    try:
        fs.start()
        fs.profile_speeds(list(FLEET_MODELS))
        print(f"stack up in {time.monotonic() - t0:.0f}s (logs in {run_dir}/logs)", flush=True)
        print("| fault | sent | ok | failed by status | lost decisions | s to recover | promise | note |")
        print("|---|---|---|---|---|---|---|---|")
        results = run_faults(Bench(fs, QUICK if args.quick else FULL, args.concurrency), set(args.only or []))
    finally:
        fs.stop()
    held = sum(r.held for r in results)
    print(f"(total {time.monotonic() - t0:.0f}s)")
    print(f"faults: {held}/{len(results)} promises held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
