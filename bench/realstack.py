"""The real stack for the benches, started once: what ``bench/overhead_stack.py`` and
``bench/scaleout.py`` share.

:func:`real_stack` starts, as real processes (``turnout.devstack``, the launcher of ``make run``
and the e2e tests), a private ``redis-server`` and PostgreSQL under ``.run/<name>-*``, the
simulated fleet at ``time_scale: 0`` (no delays), the scorer, the profiler (discovery, then idle)
and the gateway, waits until the profiler has found the fleet's models, and stops it all after.
:meth:`RealStack.add_gateway` / :meth:`RealStack.add_scorer` start more replicas of either.

The load-independent counters the benches print beside wall-clock figures (on a shared 2-core
box the latencies are inflated by other people's work; these are not):

* :func:`proc_counters` — CPU time of a process tree from ``/proc/<pid>/task/<tid>/schedstat``
  (nanoseconds, unlike the 10 ms ticks of ``/proc/<pid>/stat``) and its voluntary context
  switches (a thread gave the CPU up to wait: for an asyncio process, a wake-up of its loop);
* :func:`redis_calls` — commands Redis ran so far, per command (``INFO commandstats``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from turnout.devstack.infra import Instance, free_port, start_postgres, start_redis, wait_port
from turnout.devstack.stack import FleetInfo, Stack, StackConfig, StackUrls, file_sink

REPO = Path(__file__).resolve().parents[1]
KEY_PREFIX = "bench"
RPC_QUEUE = f"{KEY_PREFIX}:rpc:scorer.route:v1"
SETTLE_S = 0.1
"""After a point, before reading the counters: what its requests queued off the path (request
events, sent within 10 ms) is counted to it."""
_OWN_CALLS = frozenset({"cmdstat_info", "cmdstat_client|setinfo"})


@dataclass
class RealStack:
    stack: Stack
    run: Path
    """This run's folder under ``.run`` (logs; removed at the end)."""
    redis: Instance
    fleet: FleetInfo
    urls: StackUrls
    named: str
    """A model the fleet's OpenAI listener serves (for a named-model target and the direct one)."""
    gateways: list[str] = field(default_factory=list)
    """Base URLs of the gateways started so far."""
    scorer_ops: list[str] = field(default_factory=list)
    """Base URLs of the ops listeners (``/metrics``) of the scorers :meth:`add_scorer` started."""

    @property
    def direct(self) -> str:
        """The fleet's own chat endpoint (the baseline)."""
        return f"{self.fleet.openai_url}/chat/completions"

    def pids(self, prefix: str) -> list[int]:
        """Process ids of the stack's processes whose name starts with ``prefix``."""
        return [p.pid for n, p in self.stack.procs.items() if n.startswith(prefix)]

    def add_gateway(self) -> str:
        """One more gateway on a free port; its base URL."""
        port = free_port()
        env = self.stack.env_for("gateway") | {"TURNOUT_GATEWAY__PORT": str(port)}
        self.stack._spawn(f"gateway{len(self.gateways) + 1}", [self.stack.config.python, "-m", "turnout.gateway"], env)
        wait_port("127.0.0.1", port, timeout=60)
        self.gateways.append(f"http://127.0.0.1:{port}")
        return self.gateways[-1]

    def add_scorer(self) -> None:
        """One more scorer on the same RPC queue (it loads the catalog before popping)."""
        n = len(self.pids("scorer")) + 1
        port = free_port()
        env = self.stack.env_for("scorer") | {"TURNOUT_SCORER__OPS_PORT": str(port)}
        self.stack._spawn(f"scorer{n}", [self.stack.config.python, "-m", "turnout.scorer"], env)
        self.scorer_ops.append(f"http://127.0.0.1:{port}")


@contextlib.contextmanager
def real_stack(name: str, *, route_timeout_s: float = 0.5) -> Iterator[RealStack]:
    run = REPO / ".run" / f"{name}-{uuid.uuid4().hex[:6]}"
    run.mkdir(parents=True)
    redis_inst = start_redis(run)
    pg = start_postgres(run)
    stack = Stack(
        StackConfig(
            redis_url=redis_inst.url,
            database_url=pg.url.replace("postgresql://", "postgresql+asyncpg://", 1),
            key_prefix=KEY_PREFIX,
            free_ports=True,
            gateway_port=None,
            ops_host="127.0.0.1",
            environment="test",
            log_level="WARNING",
            inherit_turnout_env=False,
            extra_env={"TURNOUT_GATEWAY__ROUTE_TIMEOUT_S": str(route_timeout_s)},
            cwd=REPO,
            python=sys.executable,
        ),
        sink=file_sink(run / "logs"),
    )
    try:
        fleet = stack.start_fleet(["--time-scale", "0"])
        stack.start_services(("scorer", "profiler", "gateway"))
        urls = stack.wait_ready(timeout=120)
        stack.wait_models(min_models=3, timeout=120)
        config = httpx.get(f"{fleet.admin_url}/_fleet/config", timeout=5).raise_for_status().json()
        named = next(m["name"] for li in config["listeners"] if li["name"] == "openai" for m in li["models"])
        yield RealStack(stack, run, redis_inst, fleet, urls, named, gateways=[urls.gateway])
    finally:
        stack.stop()
        pg.stop()
        redis_inst.stop()
        shutil.rmtree(run, ignore_errors=True)


# --- load-independent counters -----------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """A process and its descendants (the gateway runs under uvicorn in one process, but a
    launcher may sit above it)."""
    out = [pid]
    for p in out:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError), open(f"/proc/{p}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
    return out


@dataclass(frozen=True)
class Counters:
    cpu_s: float
    wakeups: int

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.cpu_s - other.cpu_s, self.wakeups - other.wakeups)


def proc_counters(pids: int | list[int]) -> Counters:
    """CPU seconds (every thread, ns resolution) and voluntary context switches of process trees."""
    cpu_ns = switches = 0
    for root in [pids] if isinstance(pids, int) else pids:
        for p in tree(root):
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{p}/task"):
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                            cpu_ns += int(f.read().split()[0])
                        with open(f"/proc/{p}/task/{tid}/status") as f:
                            for line in f:
                                if line.startswith("voluntary_ctxt_switches:"):
                                    switches += int(line.split()[1])
    return Counters(cpu_ns / 1e9, switches)


def redis_calls(url: str) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``), less what asking costs (``INFO``, the
    connection's ``CLIENT SETINFO``)."""
    with redis.Redis.from_url(url) as r:
        stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k not in _OWN_CALLS}


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
