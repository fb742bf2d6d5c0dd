"""Redis key builders. Every key starts with the configured prefix so that several stacks
(or test runs) can share one Redis server without touching each other's data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "turnout"

    # --- RPC -------------------------------------------------------------------------
    def rpc_queue(self, method: str, version: int) -> str:
        """List of pending requests for one RPC method and version."""
        return f"{self.prefix}:rpc:{method}:v{version}"

    def rpc_reply(self, client_id: str) -> str:
        """Reply channel (or list, for older clients) of one client process."""
        return f"{self.prefix}:rpc:reply:{client_id}"

    def rpc_alive(self, method: str, version: int) -> str:
        """Set of the replica ids that serve the method (each with its own heartbeat key below);
        a member whose heartbeat expired is dead, and is removed by whoever notices."""
        return f"{self.prefix}:rpc:alive:{method}:v{version}"

    def rpc_alive_replica(self, method: str, version: int, replica: str) -> str:
        """One server replica's heartbeat (value: its replica id, with its own TTL)."""
        return f"{self.prefix}:rpc:alive:{method}:v{version}:{replica}"

    # --- catalog ---------------------------------------------------------------------
    @property
    def catalog_changed(self) -> str:
        """Pub/sub channel: the catalog in Postgres changed, reload it."""
        return f"{self.prefix}:catalog:changed"

    @property
    def scorer_control(self) -> str:
        """Pub/sub channel: JSON ``{"action": "reload" | "invalidate_cache"}`` for every scorer replica."""
        return f"{self.prefix}:scorer:control"

    @property
    def route_cache(self) -> str:
        """Prefix of the scorer's routing-cache keys (``<this>:<version>:x:<hash>``, ``…:sem``)."""
        return f"{self.prefix}:routecache"

    def response_cache(self, digest: str) -> str:
        """The gateway's response cache: one entry per exact request digest."""
        return f"{self.prefix}:respcache:{digest}"

    @property
    def catalog_snapshot(self) -> str:
        """Last catalog the scorer loaded (JSON), read by gateways for their fallback routing."""
        return f"{self.prefix}:catalog:snapshot"

    # --- fleet -----------------------------------------------------------------------
    def fleet_host(self, host: str) -> str:
        """String: one host's latest published state (JSON, with a TTL)."""
        return f"{self.prefix}:fleet:host:{host}"

    @property
    def fleet_hosts(self) -> str:
        """Sorted set host -> last publish time (unix seconds)."""
        return f"{self.prefix}:fleet:hosts"

    @property
    def fleet_changed(self) -> str:
        """Pub/sub channel: a host's state changed."""
        return f"{self.prefix}:fleet:changed"

    def inflight(self, gateway: str) -> str:
        """Hash ``backend<TAB>upstream model`` -> requests one gateway process has in flight there
        (absolute counts, with a TTL: a crashed gateway's counts expire), and ``@at`` -> when it took
        them. See :mod:`turnout.common.inflight`."""
        return f"{self.prefix}:inflight:gw:{gateway}"

    @property
    def inflight_gateways(self) -> str:
        """Sorted set gateway id -> expiry (unix s) of its in-flight hash: who to sum."""
        return f"{self.prefix}:inflight:gateways"

    def circuit(self, backend: str, model: str = "") -> str:
        """Hash: one circuit breaker's shared state (``model`` empty: the whole backend).
        See :mod:`turnout.common.circuits`."""
        return f"{self.prefix}:circuit:{backend}:{model}"

    @property
    def circuits(self) -> str:
        """Sorted set ``backend<TAB>model`` -> last change (unix s) of every circuit not closed, for listing."""
        return f"{self.prefix}:circuits"

    def ratelimit(self, scope: str) -> str:
        """Prefix of the shared rate-limit windows (``limits`` storage keys start with it)."""
        return f"{self.prefix}:ratelimit:{scope}"

    # --- VRAM management --------------------------------------------------------------
    def vram_lock(self, host: str) -> str:
        """String lock (``SET NX PX``, value = holder token): one load/unload sequence per host at a time."""
        return f"{self.prefix}:vram:lock:{host}"

    @property
    def vram_actions(self) -> str:
        """List of :class:`VramActionV1` JSON, newest first, capped (``LPUSH`` + ``LTRIM``)."""
        return f"{self.prefix}:vram:actions"

    @property
    def vram_status(self) -> str:
        """String: :class:`VramStatusV1` JSON of the last scorer replica that refreshed (short TTL)."""
        return f"{self.prefix}:vram:status"

    def vram_pending(self, host: str) -> str:
        """Hash upstream model -> "bytes:until" for loads the router made room for and the agent
        has not reported yet, so that concurrent plans count them (entries expire by ``until``)."""
        return f"{self.prefix}:vram:pending:{host}"

    def vram_last_used(self, host: str) -> str:
        """Hash upstream model -> last time (unix s) a request was routed to it on that host (LRU)."""
        return f"{self.prefix}:vram:last_used:{host}"

    # --- events ----------------------------------------------------------------------
    @property
    def request_events(self) -> str:
        """Stream of finished requests (gateway → sync)."""
        return f"{self.prefix}:events:requests"

    @property
    def feedback_events(self) -> str:
        """Stream of client feedback (gateway → sync)."""
        return f"{self.prefix}:events:feedback"

    # --- arq -------------------------------------------------------------------------
    @property
    def profiler_queue(self) -> str:
        """arq queue of the profiler."""
        return f"{self.prefix}:arq:profiler"

    @property
    def sync_queue(self) -> str:
        """arq queue of the sync worker."""
        return f"{self.prefix}:arq:sync"

    def service_status(self, service: str) -> str:
        """Hash: a worker's last job outcomes, shown by the admin API."""
        return f"{self.prefix}:status:{service}"

    # --- profiling and benchmark sync ------------------------------------------------------
    @property
    def profiling_active(self) -> str:
        """Sorted set model -> start time (unix s) of the profiles running now."""
        return f"{self.prefix}:profiling:active"

    def profiling_progress(self, model: str) -> str:
        """String: JSON progress of one model's profile (phase, done/total, ETA), with a TTL."""
        return f"{self.prefix}:profiling:progress:{model}"

    def profiling_slots(self, scope: str) -> str:
        """Sorted set lease token -> expiry: a counting semaphore (``backend:<name>``, ``host:<name>``)."""
        return f"{self.prefix}:profiling:slots:{scope}"

    def benchmark_sync_status(self, source: str) -> str:
        """String: JSON of a benchmark source's last sync run (outcome, counts, time)."""
        return f"{self.prefix}:sync:benchmarks:{source}"

    @property
    def router_priors(self) -> str:
        """Hash version -> router prior artefact (JSON, ``turnout.scorer.learned_prior``)."""
        return f"{self.prefix}:router:priors"

    @property
    def router_prior_active(self) -> str:
        """String: the version of the router prior every scorer uses (unset: the shipped one)."""
        return f"{self.prefix}:router:prior:active"

    @property
    def router_prior_history(self) -> str:
        """List: versions activated before, newest first (for rollback)."""
        return f"{self.prefix}:router:prior:history"
