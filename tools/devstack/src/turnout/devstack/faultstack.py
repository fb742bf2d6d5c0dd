"""A whole stack on private Redis and Postgres that may be killed: the fault bench's and the
fault tests' harness.

:class:`FaultStack` starts a private ``redis-server`` and Postgres cluster, a simulated fleet
(two OpenAI-dialect listeners serving the same models, so that requests can fail over, and a
model slow to its first token), and every service as a real process (:class:`Stack`). The
scorer talks to Redis through a :class:`~turnout.devstack.blackhole.BlackHoleProxy`, so that its
link can be made half-open. :meth:`redis_down` / :meth:`redis_up`, :meth:`postgres_down` /
:meth:`postgres_up` kill and restart the stores on the same ports (Postgres keeps its data; Redis
runs with its append-only file, as production must (docs/deploy.md), so the request events not yet
consumed survive the restart). A second gateway (``gateway2``) can join the same scorer.

:class:`Load` drives mixed streaming / non-streaming chat requests with the ``openai`` client from
threads, each with its own ``X-Request-ID``; :meth:`FaultStack.decisions` reads back what reached
Postgres, so that "lost decisions" are request ids the gateway answered but never stored.

It needs the workspace's dev group (``openai``, ``httpx``): it is a test and bench harness, not
part of ``make run``.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import orjson
import redis as redis_sync
from openai.types.chat import ChatCompletionMessageParam

from turnout.common.keys import Keys
from turnout.common.schemas.catalog import CatalogModelV1, CatalogSnapshotV1
from turnout.devstack.blackhole import BlackHoleProxy
from turnout.devstack.infra import Instance, free_port, start_postgres, start_redis, wait_port, with_database
from turnout.devstack.restart import Restarter
from turnout.devstack.stack import FLEET, FLEET_MODULE, SERVICES, Stack, StackConfig, file_sink

FLEET_YAML = """\
seed: 0
time_scale: 1.0
listeners:
  - name: a
    dialect: openai
    port: 0
    models:
      - {name: fast-1b, params: 1B, tokens_per_s: 400, ttft_ms: 10, capabilities: [completion]}
      - {name: mid-8b, params: 8B, tokens_per_s: 300, ttft_ms: 15, capabilities: [completion]}
      - {name: slow-ttft-3b, params: 3B, tokens_per_s: 300, ttft_ms: 4000, capabilities: [completion]}
      - {name: long-1b, params: 1B, tokens_per_s: 100, ttft_ms: 10, reply_tokens: 4000, capabilities: [completion]}
  - name: b
    dialect: openai
    port: 0
    models:
      - {name: fast-1b, params: 1B, tokens_per_s: 400, ttft_ms: 10, capabilities: [completion]}
      - {name: mid-8b, params: 8B, tokens_per_s: 300, ttft_ms: 15, capabilities: [completion]}
"""
FLEET_MODELS = ("fast-1b", "mid-8b", "slow-ttft-3b", "long-1b")
"""Every model of :data:`FLEET_YAML`."""
KEYS = Keys("faults")
SERVICES_RUN = ("scorer", "profiler", "sync", "gateway")
SKIPPED = frozenset({"circuit_open", "no_slot"})
"""Attempt outcomes of a candidate the gateway skipped without sending it anything."""


@dataclass
class Outcome:
    request_id: str
    started: float
    ended: float
    stream: bool
    status: str  # "ok", an HTTP status, or "cut" (a stream that ended without [DONE] or an error)
    gateway: str


@dataclass
class Load:
    """``concurrency`` threads sending chat requests (every other one streaming) to ``urls``."""

    urls: list[str]
    concurrency: int = 8
    model: str = "turnout/auto"
    max_tokens: int = 16
    timeout_s: float = 60.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for i in range(self.concurrency):
            t = threading.Thread(target=self._run, args=(i,), daemon=True, name=f"load-{i}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.timeout_s + 5)
        return self.outcomes

    def _run(self, worker: int) -> None:
        clients = [openai.OpenAI(base_url=f"{u}/v1", api_key="bench", max_retries=0, timeout=self.timeout_s)
                   for u in self.urls]  # fmt: skip
        try:
            n = 0
            while not self._stop.is_set():
                n += 1
                which = (worker + n) % len(clients)
                stream = (worker + n) % 2 == 0
                rid = f"fault-{uuid.uuid4().hex[:16]}"
                started = time.monotonic()
                status = send_chat(clients[which], rid, stream=stream, model=self.model, max_tokens=self.max_tokens)
                with self._lock:
                    self.outcomes.append(Outcome(rid, started, time.monotonic(), stream, status, self.urls[which]))
                if status != "ok":
                    time.sleep(0.05)  # no hot loop against a gateway that is away
        finally:
            for client in clients:  # their pooled connections
                client.close()


def send_chat(client: openai.OpenAI, rid: str, *, stream: bool, model: str, max_tokens: int) -> str:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"Say hello to {rid[-4:]}"}]
    headers = {"X-Request-ID": rid}
    started = False
    try:
        if not stream:
            client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, extra_headers=headers)
            return "ok"
        finished = False
        with client.chat.completions.create(
            model=model, messages=messages, max_tokens=max_tokens, stream=True, extra_headers=headers
        ) as chunks:
            for chunk in chunks:
                started = True
                if chunk.choices and chunk.choices[0].finish_reason:
                    finished = True
        return "ok" if finished else "cut"
    except openai.APIStatusError as exc:
        return str(exc.status_code)
    except openai.APIConnectionError:  # includes timeouts
        return "cut" if started else "conn"
    except openai.APIError:  # an SSE error event: the stream ended, and said why
        return "stream-error" if started else "error"
    except httpx.HTTPError:  # the connection dropped (or never opened)
        return "cut" if started else "conn"


@dataclass
class Measured:
    """What one fault did to the load: requests sent, ok, failed by status, lost decisions
    (answered but never stored in Postgres), and seconds from the fault's end to the start of the
    last request that failed or was not routed by the scorer (0: none after the end)."""

    name: str
    sent: int
    ok: int
    failed: dict[str, int]
    lost: int
    recover_s: float
    outcomes: list[Outcome] = field(default_factory=list, repr=False)
    held: bool = False
    fault_start: float = 0.0
    fault_end: float = 0.0
    attempts: dict[str, list[tuple[str, str, str, float]]] = field(default_factory=dict, repr=False)
    """request id -> its attempts as the gateway recorded them: (backend, model, outcome, latency_ms)."""

    def spent_on(self, backend: str, model: str | None = None, *, skip_s: float = 1.0) -> tuple[int, int]:
        """(requests that spent an attempt on ``backend`` (and ``model``), requests) among those stored
        that started during the fault, ``skip_s`` after its start. A candidate the gateway skipped
        without sending it anything (circuit open, no free slot) is listed among the attempts with
        outcome ``circuit_open`` / ``no_slot``: that spent nothing on it."""
        started = {o.request_id for o in self.outcomes if self.fault_start + skip_s <= o.started <= self.fault_end}
        stored = [self.attempts[i] for i in started if i in self.attempts]
        hit = sum(1 for a in stored if any(b == backend and (model is None or m == model) and o not in SKIPPED
                                           for b, m, o, _ in a))  # fmt: skip
        return hit, len(stored)

    def longest_attempt_s(self, backend: str, model: str | None = None) -> float:
        """The longest attempt on ``backend`` (and ``model``): how long it held its slot."""
        return max((ms / 1000 for a in self.attempts.values() for b, m, o, ms in a
                    if b == backend and (model is None or m == model) and o not in SKIPPED), default=0.0)  # fmt: skip

    def client_errors_after(self, skip_s: float) -> int:
        return sum(1 for o in self.outcomes if o.status != "ok" and o.started >= self.fault_start + skip_s)

    def ok_per_s(self, a: float, b: float) -> float:
        """Requests answered ok per second, by their end, in [a, b) (monotonic clock)."""
        return sum(1 for o in self.outcomes if o.status == "ok" and a <= o.ended < b) / max(b - a, 1e-9)

    def served_by(self, a: float, b: float) -> dict[str, tuple[int, float]]:
        """Requests answered ok that ended in [a, b), by where their last attempt went
        (``backend/model``): (count, mean seconds from the request's start to its end). What a
        throughput figure is made of, for an assertion's message."""
        spread: dict[str, list[float]] = collections.defaultdict(list)
        for o in self.outcomes:
            if o.status == "ok" and a <= o.ended < b:
                tried = self.attempts.get(o.request_id) or []
                last = next((f"{t[0]}/{t[1]}" for t in reversed(tried) if t[2] not in SKIPPED), "?")
                spread[last].append(o.ended - o.started)
        return {k: (len(v), round(sum(v) / len(v), 3)) for k, v in sorted(spread.items())}

    note: str = ""


class FaultStack:
    def __init__(self, run_dir: Path, *, log: Callable[[str], None] = print, gateway_env: dict[str, str] | None = None):
        self.run_dir = run_dir.resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.redis: Instance | None = None
        self.pg: Instance | None = None
        self.proxy: BlackHoleProxy | None = None
        self.stack: Stack | None = None
        self.restarter: Restarter | None = None
        self.gateway_env = gateway_env or {}
        self._watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self.database = "turnout_faults"
        self.fleet_info: dict[str, Any] = {}

    # --- up and down -------------------------------------------------------------------------

    def start(self, *, timeout: float = 180.0) -> None:
        self.redis = start_redis(self.run_dir, ephemeral=True, aof=True)
        self.pg = start_postgres(self.run_dir, ephemeral=True)
        _sql(self.pg.url, f'CREATE DATABASE "{self.database}"')
        self.proxy = BlackHoleProxy("127.0.0.1", self.redis.port)
        self.proxy.start()
        fleet_file = self.run_dir / "fleet.yaml"
        fleet_file.write_text(FLEET_YAML)
        self.stack = Stack(
            StackConfig(
                redis_url=self.redis.url,
                database_url=with_database(self.pg.url, self.database),
                key_prefix=KEYS.prefix,
                gateway_port=free_port(),
                ops_host="127.0.0.1",
                free_ports=True,
                environment="test",
                inherit_turnout_env=False,
                extra_env={
                    "TURNOUT_GATEWAY__ROUTE_TIMEOUT_S": "0.5",
                    "TURNOUT_SYNC__PUBLIC__AT_STARTUP": "false",
                    **self.gateway_env,
                },
                cwd=Path.cwd(),
            ),
            sink=file_sink(self.run_dir / "logs"),
        )
        self.stack.start_service = self._start_service  # type: ignore[method-assign]
        self._start_fleet(fleet_file)
        self.stack.start_services(SERVICES_RUN)
        self.stack.wait_ready(timeout=timeout)
        self.stack.wait_models(min_models=3, timeout=timeout)
        self.wait_scorer_routes(timeout=timeout)
        self.restarter = Restarter(self.stack, lambda m: self.log(f"  [devstack] {m}"), base_s=0.5, max_s=5.0)
        self._watcher = threading.Thread(target=self._watch_loop, daemon=True, name="restarter")
        self._watcher.start()

    def _start_fleet(self, config: Path) -> None:
        """The fleet of two OpenAI-dialect listeners (``Stack.start_fleet`` assumes the default
        fleet's Ollama + OpenAI pair); its start-up line gives ``TURNOUT_BACKENDS``."""
        assert self.stack is not None
        argv = [self.stack.config.python, "-m", FLEET_MODULE, "--config", str(config), "--host", "127.0.0.1"]
        proc = self.stack._spawn(FLEET, argv, {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1"})
        info = proc.wait_json(60)
        if info is None:
            raise RuntimeError(f"the simulated fleet did not start:\n{proc.last_lines()}")
        self.fleet_info = info
        self.stack.config.backends = str(info["backends"])

    def _start_service(self, name: str) -> Any:
        """As :meth:`Stack.start_service`, but the scorer reaches Redis through the proxy."""
        assert self.stack is not None and self.proxy is not None
        env = self.stack.env_for(name)
        if name == "scorer":
            env["TURNOUT_REDIS_URL"] = f"redis://{self.proxy.url_host_port}/0"
        return self.stack._spawn(name, [self.stack.config.python, "-m", SERVICES[name].module], env)

    def _watch_loop(self) -> None:
        while not self._watch.wait(0.2):
            assert self.restarter is not None
            self.restarter.tick()

    def stop(self) -> None:
        self._watch.set()
        if self.stack is not None:
            self.stack.stop()
        if self.proxy is not None:
            self.proxy.stop()
        for inst in (self.redis, self.pg):
            if inst is not None:
                inst.stop()

    def redis_down(self) -> None:
        assert self.redis is not None and self.redis.proc is not None
        self.redis.proc.kill()
        self.redis.proc.wait(timeout=10)

    def redis_up(self) -> None:
        assert self.redis is not None
        old = self.redis
        self.redis = start_redis(self.run_dir, port=old.port, ephemeral=True, aof=True)

    def postgres_down(self) -> None:
        assert self.pg is not None and self.pg.proc is not None
        # fast shutdown (connections are cut at once), to the group: postgres may run under runuser
        os.killpg(self.pg.proc.pid, signal.SIGINT)
        self.pg.proc.wait(timeout=60)

    def postgres_up(self) -> None:
        assert self.pg is not None
        self.pg = start_postgres(self.run_dir, port=self.pg.port, ephemeral=True)

    # --- reading what happened --------------------------------------------------------------

    @property
    def gateway_url(self) -> str:
        assert self.stack is not None
        return self.stack.urls().gateway

    @property
    def fleet_admin(self) -> str:
        return str(self.fleet_info["urls"]["admin"])

    def profile_speeds(self, names: list[str], *, timeout: float = 60.0) -> None:
        """Give ``names`` the speed profile the profiler would measure (TTFT and tokens/s as the
        fleet configures them; no quality scores) and wait until the catalog has it. The stack runs
        with profiling off, so that a fault's model keeps its unprofiled bound: the models it does
        not concern are profiled this way, as they would be in a fleet that has run a while (an
        unprofiled 4 s-TTFT model looks as fast as its size to the scorer)."""
        assert self.pg is not None and self.redis is not None
        config = httpx.get(f"{self.fleet_admin}/_fleet/config", timeout=5).raise_for_status().json()
        speeds = {m["name"]: (float(m["ttft_ms"]), float(m["tokens_per_s"]))
                  for li in config["listeners"] for m in li["models"] if m["name"] in names}  # fmt: skip
        assert set(speeds) == set(names), (names, sorted(speeds))
        url = with_database(self.pg.url, self.database)
        deadline = time.monotonic() + timeout
        ids: dict[str, int] = {}
        while set(ids) != set(names):  # discovery writes the models rows
            assert time.monotonic() < deadline, f"models not discovered: {sorted(set(names) - set(ids))}"
            ids = {
                r["name"]: r["id"] for r in _sql(url, "SELECT id, name FROM models WHERE name = ANY($1::text[])", names)
            }
            time.sleep(0.2)
        for name, (ttft_ms, tps) in speeds.items():
            _sql(
                url,
                "INSERT INTO profiles (model_id, suite_version, category, n_prompts, errors, timeouts, ttft_ms, "
                "tokens_per_s, details) VALUES ($1, 'fleet-config', 'general', 0, 0, 0, $2, $3, $4::json) "
                "ON CONFLICT (model_id, suite_version, category) DO UPDATE SET ttft_ms = $2, tokens_per_s = $3",
                ids[name], ttft_ms, tps, orjson.dumps({"speed_source": "fleet configuration"}).decode(),
            )  # fmt: skip
        with redis_sync.Redis.from_url(self.redis.url) as r:
            r.publish(KEYS.catalog_changed, orjson.dumps({"source": "faultstack", "ts": time.time()}))
        while True:
            got = {n: (m.ttft_ms, m.tokens_per_s) for n in names if (m := self.catalog_model(n)) is not None}
            if got == speeds:
                return
            assert time.monotonic() < deadline, f"catalog has {got}, not {speeds}"
            time.sleep(0.2)

    def fleet_fail(self, **body: Any) -> None:
        httpx.post(f"{self.fleet_admin}/_fleet/fail", json=body, timeout=5).raise_for_status()

    def decisions(self, request_ids: list[str]) -> dict[str, str]:
        """request id -> route_source, for those stored in Postgres."""
        assert self.pg is not None
        rows = _sql(
            with_database(self.pg.url, self.database),
            "SELECT request_id, route_source FROM routing_decisions WHERE request_id = ANY($1::text[])",
            request_ids,
        )
        return {r["request_id"]: r["route_source"] for r in rows}

    def settled_decisions(self, request_ids: list[str], *, wait_s: float = 30.0) -> dict[str, str]:
        """Wait until every id is stored, or the count stops growing for 8 s (longer than the sync
        consumer's longest back-off, 5 s, after Postgres was away)."""
        end = time.monotonic() + wait_s
        last, since = -1, time.monotonic()
        while True:
            try:
                got = self.decisions(request_ids)
            except (OSError, asyncpg.PostgresError):
                got = {}
            if len(got) == len(request_ids) or time.monotonic() > end:
                return got
            if len(got) != last:
                last, since = len(got), time.monotonic()
            elif time.monotonic() - since > 8.0:
                return got
            time.sleep(0.3)

    def wait_scorer_routes(self, timeout: float = 60.0) -> float:
        """Send probes until one is routed by the scorer; seconds it took."""
        t0 = time.monotonic()
        with openai.OpenAI(base_url=f"{self.gateway_url}/v1", api_key="bench", max_retries=0, timeout=10) as client:
            while time.monotonic() - t0 < timeout:
                rid = f"probe-{uuid.uuid4().hex[:12]}"
                if send_chat(client, rid, stream=False, model="turnout/auto", max_tokens=4) == "ok":
                    got = self.settled_decisions([rid], wait_s=5)
                    if got.get(rid) == "scorer":
                        return time.monotonic() - t0
                time.sleep(0.2)
        raise TimeoutError("the gateway never routed by the scorer")

    def measure(
        self,
        name: str,
        fault: Callable[[], tuple[float, float]],
        *,
        urls: list[str] | None = None,
        concurrency: int = 8,
        before_s: float = 1.0,
        settle_s: float = 4.0,
    ) -> Measured:
        """Load ``before_s`` before, during and ``settle_s`` after ``fault`` (which returns the
        fault's start and end on the monotonic clock); what the clients saw, what reached Postgres."""
        load = Load(urls or [self.gateway_url], concurrency=concurrency).start()
        time.sleep(before_s)
        start, end = fault()
        time.sleep(settle_s)
        outcomes = load.stop()
        ids = [o.request_id for o in outcomes if o.status != "conn"]
        stored = self.settled_decisions(ids)
        failed = collections.Counter(o.status for o in outcomes if o.status != "ok")
        bad_after = [o.started - end for o in outcomes
                     if o.started >= end and (o.status != "ok" or stored.get(o.request_id) != "scorer")]  # fmt: skip
        return Measured(
            name=name,
            sent=len(outcomes),
            ok=len(outcomes) - sum(failed.values()),
            failed=dict(failed),
            lost=sum(1 for i in ids if i not in stored),
            recover_s=max(bad_after, default=0.0),
            outcomes=outcomes,
            fault_start=start,
            fault_end=end,
            attempts=self.attempts(ids),
        )

    def attempts(self, request_ids: list[str]) -> dict[str, list[tuple[str, str, str, float]]]:
        """request id -> the attempts its stored decision lists."""
        assert self.pg is not None
        try:
            rows = _sql(
                with_database(self.pg.url, self.database),
                "SELECT request_id, attempts FROM routing_decisions WHERE request_id = ANY($1::text[])",
                request_ids,
            )
        except (OSError, asyncpg.PostgresError):
            return {}
        out: dict[str, list[tuple[str, str, str, float]]] = {}
        for r in rows:
            raw = r["attempts"]
            items = orjson.loads(raw) if isinstance(raw, (str, bytes)) else (raw or [])
            out[r["request_id"]] = [
                (str(a["backend"]), str(a["model"]), str(a["outcome"]), float(a.get("latency_ms") or 0.0))
                for a in items
            ]
        return out

    def backend_of(self, listener: str) -> str:
        """The backend name the gateway gives the fleet's ``listener``."""
        for item in str(self.fleet_info["backends"]).split(","):
            name = item.split(":", 1)[0]
            if name == f"fleet-{listener}" or name == listener:
                return name
        raise KeyError(listener)

    def catalog_model(self, name: str) -> CatalogModelV1 | None:
        """The model as the gateway's catalog snapshot has it now (its profile, if any)."""
        assert self.redis is not None
        with redis_sync.Redis.from_url(self.redis.url) as r:
            raw = r.get(KEYS.catalog_snapshot)
        if raw is None:
            return None
        snap = CatalogSnapshotV1.model_validate(orjson.loads(raw))
        return next((m for m in snap.models if m.name == name), None)

    def start_second_gateway(self) -> str:
        assert self.stack is not None
        port = free_port()
        env = self.stack.env_for("gateway") | {"TURNOUT_GATEWAY__PORT": str(port)}
        self.stack._spawn("gateway2", [self.stack.config.python, "-m", "turnout.gateway"], env)
        wait_port("127.0.0.1", port, timeout=60)
        return f"http://127.0.0.1:{port}"


def _sql(url: str, query: str, *args: Any) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


__all__ = ["FaultStack", "Load", "Measured", "Outcome", "send_chat"]
