"""Circuit breakers shared by every gateway through Redis (and read by the scorer).

One circuit per backend (``model == ""``: the backend cannot be reached) and one per
(backend, upstream model) (that model answers 5xx, a broken reply, or times out). Its state is
one Redis hash, ``keys.circuit(backend, model)``, changed only by the Lua scripts below, so that
every gateway sees and moves the same state:

* **closed** — requests pass. ``failures`` counts consecutive failures; a success resets it.
  ``failure_threshold`` consecutive failures open the circuit; the caller may name a lower
  threshold for a failure that says more (the gateway: a model that *answered* 5xx opens its
  circuit at its first, ``status_failure_threshold`` — as nginx's ``max_fails=1`` — while
  timeouts and lost connections, which one blip can cause, need ``failure_threshold`` in a row).
  Opening publishes ``keys.fleet_changed`` from the script, so the scorer re-reads the circuits at
  once instead of at its next poll.
* **open** — until ``until`` (unix s) nobody sends it anything. The cooldown is
  ``base_cooldown_s * 2 ** (trips - 1)``, at most ``max_cooldown_s``: it doubles each time the
  circuit opens again without a success in between (``trips``).
* **half_open** — the cooldown is over and *one* request (whoever wins :data:`PROBE`, a lease
  of ``probe_lease_s``) is let through as a probe: its success closes the circuit (and resets
  ``trips``), its failure opens it again for a longer cooldown. When the probe's lease runs out
  without an answer (its gateway died), the next caller probes.

``keys.circuits`` (sorted set ``backend<TAB>model`` -> last change) lists every circuit that is
not closed-and-clean, so that readers (the gateways' local view, the scorer's filter,
``/admin/circuits``) need no key scan. A hash that stays untouched for ``idle_ttl_s`` expires.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from turnout.common.keys import Keys
from turnout.common.schemas import WireModel

SEP = "\t"


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CircuitPolicy:
    failure_threshold: int = 3
    status_failure_threshold: int = 1
    """A model that answered 5xx: its (backend, model) circuit opens after this many in a row."""
    base_cooldown_s: float = 5.0
    max_cooldown_s: float = 300.0
    probe_lease_s: float = 30.0
    idle_ttl_s: float = 3600.0


class CircuitV1(WireModel):
    """One circuit's shared state, as ``/admin/circuits`` shows it."""

    backend: str
    model: str = ""
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    trips: int = 0
    cooldown_s: float = 0.0
    until: float = 0.0
    """Open until (unix s)."""
    probe_until: float = 0.0
    """Half-open: the probe's lease ends (unix s)."""
    last_error: str = ""
    updated_at: float = 0.0

    def blocks(self, now: float) -> bool:
        """Nothing may be sent now (open and cooling down, or half-open with a probe under way)."""
        if self.state is CircuitState.OPEN:
            return now < self.until
        if self.state is CircuitState.HALF_OPEN:
            return now < self.probe_until
        return False


# KEYS[1] circuit hash, KEYS[2] the listing zset, KEYS[3] the channel told when it opens;
# ARGV: member, now, threshold, base, max, idle_ttl, error
FAILURE = """
local h = KEYS[1]
local now = tonumber(ARGV[2])
local state = redis.call('HGET', h, 'state') or 'closed'
local failures = tonumber(redis.call('HGET', h, 'failures') or '0') + 1
local trips = tonumber(redis.call('HGET', h, 'trips') or '0')
redis.call('HSET', h, 'failures', failures, 'last_error', ARGV[7], 'updated_at', now)
if state ~= 'closed' or failures >= tonumber(ARGV[3]) then
  if state == 'open' and now < tonumber(redis.call('HGET', h, 'until') or '0') then
    -- already open: a request that was under way when it opened; no new trip
  else
    trips = trips + 1
    local cooldown = math.min(tonumber(ARGV[4]) * 2 ^ (trips - 1), tonumber(ARGV[5]))
    redis.call('HSET', h, 'state', 'open', 'trips', trips, 'cooldown_s', cooldown,
               'until', now + cooldown, 'probe_until', 0)
    state = 'open'
    redis.call('PUBLISH', KEYS[3], ARGV[1])
  end
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', h, math.floor(tonumber(ARGV[6]) * 1000))
return {state, redis.call('HGET', h, 'until') or '0'}
"""

# KEYS[1] circuit hash, KEYS[2] the listing zset; ARGV: member. An open circuit stays open (a
# request that started before it opened proves nothing); closed or half-open ones close.
SUCCESS = """
if redis.call('HGET', KEYS[1], 'state') == 'open' then
  return 'open'
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 'closed'
"""

# KEYS[1] circuit hash; ARGV: now, lease. Returns 1 when the caller is the probe.
PROBE = """
local h = KEYS[1]
local now = tonumber(ARGV[1])
local state = redis.call('HGET', h, 'state')
if state == 'open' and now >= tonumber(redis.call('HGET', h, 'until') or '0') then
elseif state == 'half_open' and now >= tonumber(redis.call('HGET', h, 'probe_until') or '0') then
else
  return 0
end
redis.call('HSET', h, 'state', 'half_open', 'probe_until', now + tonumber(ARGV[2]), 'updated_at', now)
return 1
"""


def member(backend: str, model: str) -> str:
    return f"{backend}{SEP}{model}"


class CircuitStore:
    """The scripts and the listing, over one Redis client."""

    def __init__(self, redis: Redis, keys: Keys, policy: CircuitPolicy | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.policy = policy or CircuitPolicy()
        self._failure = redis.register_script(FAILURE)
        self._success = redis.register_script(SUCCESS)
        self._probe = redis.register_script(PROBE)

    async def failure(
        self, backend: str, model: str, error: str, *, now: float | None = None, threshold: int | None = None
    ) -> tuple[CircuitState, float]:
        """Count a failure; the circuit's state after it, and until when it is open. ``threshold``:
        consecutive failures that open it (the policy's ``failure_threshold`` by default)."""
        p = self.policy
        now = time.time() if now is None else now
        args: list[str | float] = [
            member(backend, model),
            now,
            p.failure_threshold if threshold is None else threshold,
            p.base_cooldown_s,
            p.max_cooldown_s,
            p.idle_ttl_s,
        ]
        state, until = await self._failure(
            keys=[self.keys.circuit(backend, model), self.keys.circuits, self.keys.fleet_changed], args=[*args, error]
        )
        return CircuitState(_text(state)), float(_text(until))

    async def success(self, backend: str, model: str) -> None:
        keys = [self.keys.circuit(backend, model), self.keys.circuits]
        await self._success(keys=keys, args=[member(backend, model)])

    async def probe(self, backend: str, model: str, *, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        won = await self._probe(keys=[self.keys.circuit(backend, model)], args=[now, self.policy.probe_lease_s])
        return int(won) == 1

    async def read_all(self) -> list[CircuitV1]:
        """Every circuit that is not closed-and-clean (listing order: backend, model)."""
        members = await self.redis.zrange(self.keys.circuits, 0, -1)
        names = [(m.decode() if isinstance(m, bytes) else str(m)).partition(SEP) for m in members]
        pairs = [(b, m) for b, _, m in names]
        if not pairs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for b, m in pairs:
                pipe.hgetall(self.keys.circuit(b, m))
            raws = await pipe.execute()
        out: list[CircuitV1] = []
        gone: list[str] = []
        for (b, m), raw in zip(pairs, raws, strict=True):
            if not raw:
                gone.append(member(b, m))  # expired idle: drop it from the listing
                continue
            fields = {_text(k): _text(v) for k, v in raw.items()}
            out.append(CircuitV1.model_validate({**fields, "backend": b, "model": m}))
        if gone:
            await self.redis.zrem(self.keys.circuits, *gone)
        return sorted(out, key=lambda c: (c.backend, c.model))


def blocked(
    circuits: Iterable[CircuitV1], now: float | None = None
) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The backends and the (backend, upstream model) pairs nothing may be sent to right now."""
    now = time.time() if now is None else now
    backends: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for c in circuits:
        if c.blocks(now):
            if c.model:
                pairs.add((c.backend, c.model))
            else:
                backends.add(c.backend)
    return frozenset(backends), frozenset(pairs)


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
