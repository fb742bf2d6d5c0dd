"""``VramCoordinator.decide`` answers from what it worked out once per view, catalog and overlaid
hosts (each candidate's host, need, whether it serves, its load estimate; the overlaid hosts;
the planner's per-host answers), and decides a resident best candidate without ``plan``. On
random fleets, overlays and candidates, decision after decision on the same coordinator (its
reservations, unloads, loads awaiting room and expiries in between), it must answer what the
full planner answers from scratch: the hosts overlaid as the coordinator built them before,
each candidate's ``Option`` built anew, ``plan`` and the rework of ``load_estimates`` and
``attempt_order``."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pytest

from turnout.common.keys import Keys
from turnout.common.schemas.fleet import GpuStateV1, HostStateV1, LoadedModelV1
from turnout.scorer import vram_routing
from turnout.scorer.scoring import Scored
from turnout.scorer.vram import (
    DecisionKind,
    HostVram,
    Option,
    ResidentModel,
    VramOptions,
    host_vram,
    measured_sizes,
    plan,
)
from turnout.scorer.vram_reply import Rework, attempt_order, load_estimates, wait_estimates
from turnout.scorer.vram_routing import VramCoordinator, VramView

GiB = 1024**3
MODELS = [f"fam{k}:{size}b" for k, size in enumerate((1, 3, 7, 8, 14, 32, 3, 7, 70, 1))]
HOSTS = ["h0", "h1", "h2", "h3"]


def _states(rng: np.random.Generator) -> list[HostStateV1]:
    states = []
    for j, host in enumerate(HOSTS[:3]):  # h3: an agent that reports no host state (unmanaged)
        loaded = [
            LoadedModelV1(name=m, size_bytes=int(rng.integers(1, 12)) * GiB, vram_bytes=int(rng.integers(1, 12)) * GiB)
            for m in rng.choice(MODELS, size=int(rng.integers(0, 6)), replace=False)
        ]
        used = sum(max(m.size_bytes, m.vram_bytes) for m in loaded)
        gpus = int(rng.choice([0, 1, 1, 2]))
        total = used + int(rng.integers(0, 30)) * GiB
        states.append(
            HostStateV1(
                host=host,
                backend=f"b{j}",
                gpus=[
                    GpuStateV1(
                        index=k,
                        memory_total_bytes=total // gpus,
                        memory_used_bytes=used // gpus,
                        memory_free_bytes=(total - used) // gpus,
                    )
                    for k in range(gpus)
                ],
                loaded_models=loaded,
            )
        )
    return states


def _coordinator(rng: np.random.Generator) -> VramCoordinator:
    opts = VramOptions(
        score_margin=float(rng.choice([0.0, 0.05, 0.15, 0.4])),
        max_loaded_per_gpu=int(rng.integers(0, 4)),
        max_load_wait_s=float(rng.choice([0.0, 4.0, 8.0, 60.0])),
        admit_wait_s=float(rng.choice([0.0, 5.0])),
        pinned={"*": [str(rng.choice(MODELS))]},
    )
    coord = VramCoordinator(opts, redis=None, keys=Keys(), actions=None)  # type: ignore[arg-type]
    states = _states(rng)
    hosts: dict[str, HostVram] = {}
    for s in states:
        busy = {m.name for m in s.loaded_models if rng.random() < 0.3}
        pending = {str(m): int(rng.integers(1, 8)) * GiB for m in rng.choice(MODELS, size=int(rng.integers(0, 2)))}
        last_used = {m: float(rng.uniform(0, 100)) for m in MODELS}
        h = host_vram(s, coord.cfg, last_used=last_used, busy=busy, pending=pending)
        if h is not None and h.resident and rng.random() < 0.3:  # odd states the planner takes too
            odd = [
                ResidentModel(m.name, m.bytes, m.last_used, m.busy, bool(rng.random() < 0.5), awaiting_room=True)
                if rng.random() < 0.5
                else m
                for m in h.resident
            ]
            h = HostVram(h.host, h.budget_bytes, h.gpu_free_bytes, tuple(odd), h.pinned, h.max_models)
        if h is not None:
            hosts[s.host] = h
    coord.view = VramView(
        hosts=MappingProxyType(hosts),
        backend_host=MappingProxyType({s.backend: s.host for s in states} | {"b3": "h3"}),
        measured=MappingProxyType(measured_sizes(states)),
        states=tuple(states),
    )
    return coord


def _hosts_as_before(coord: VramCoordinator) -> Mapping[str, HostVram]:
    """The overlaid hosts as ``_hosts_now`` built them on every call before it kept them."""
    now = time.time()
    out = dict(coord.view.hosts)
    for host, h in coord.view.hosts.items():
        waiting = coord._awaiting_room.get(host, set())
        extra = [
            ResidentModel(m, b, now, busy=True, loading=True, awaiting_room=m in waiting)
            for m, (b, until) in coord._local_pending.get(host, {}).items()
            if until > now and not h.holds(m)
        ]
        leaving = coord._unloading.get(host, set())
        if not extra and not leaving and not waiting:
            continue
        resident = [
            ResidentModel(f"{m.name} (unloading)", m.bytes, m.last_used, busy=True)
            if m.name in leaving
            else ResidentModel(m.name, m.bytes, m.last_used, m.busy, m.loading, awaiting_room=True)
            if m.name in waiting and m.loading
            else m
            for m in h.resident
        ]
        gpu_free = h.gpu_free_bytes
        if gpu_free is not None:
            gpu_free = max(0, gpu_free - sum(r.bytes for r in extra))
        out[host] = HostVram(h.host, h.budget_bytes, gpu_free, (*resident, *extra), h.pinned, h.max_models)
    return out


def _seen(hosts: Mapping[str, HostVram]) -> dict[str, tuple[object, ...]]:
    """A host as a decision reads it (a reserved load's last use aside: it is busy, never evicted)."""
    return {
        k: (
            h.host,
            h.budget_bytes,
            h.gpu_free_bytes,
            h.pinned,
            h.max_models,
            tuple(
                (m.name, m.bytes, None if m.loading else m.last_used, m.busy, m.loading, m.awaiting_room)
                for m in h.resident
            ),
        )
        for k, h in hosts.items()
    }


def _full(coord: VramCoordinator, cands: list[Scored], waits: list[float]) -> tuple[Rework, object] | None:
    """What the full planner decides from scratch (as ``decide`` did before it kept anything)."""
    if not coord.view.hosts:  # no managed host: the reply as it is
        return None
    hosts = _hosts_as_before(coord)
    options = [
        Option(
            c.upstream_model,
            coord.view.backend_host.get(c.backend),
            c.score,
            *coord._need(c.model, c.upstream_model),
            w,
        )
        for c, w in zip(cands, waits, strict=True)
    ]
    decision = plan(options, hosts, coord.cfg)
    if decision is None:
        return None
    loads = load_estimates(options, hosts, coord.cfg)
    rework = Rework(tuple(loads), tuple(wait_estimates(waits, len(loads)))).then(
        attempt_order(options, hosts, decision.choice), f"vram: {decision.reason}"
    )
    return rework, decision


def _compare(seed: int, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Decision after decision on one coordinator: ``decide`` against the full planner; the
    decisions' kinds."""
    rng = np.random.default_rng(seed)
    clock = [1_000_000.0]
    monkeypatch.setattr(vram_routing.time, "time", lambda: clock[0])
    coord = _coordinator(rng)
    kinds: Counter[str] = Counter()
    cands: list[Scored] = []
    for _ in range(100):
        # the overlays change between decisions: reservations (some expire), unloads, loads awaiting room
        host = str(rng.choice(HOSTS))
        r = rng.random() if rng.random() < 0.5 else 1.0  # half the time the overlays stay as they are
        if r < 0.15:
            coord._reserve_local(host, str(rng.choice(MODELS)), int(rng.integers(1, 10)) * GiB)
        elif r < 0.25:
            coord._unloading.setdefault(host, set()).add(str(rng.choice(MODELS)))
            coord._overlays_changed()
        elif r < 0.35:
            model = str(rng.choice(MODELS))
            coord._reserve_local(host, model, int(rng.integers(1, 10)) * GiB)
            coord._awaiting_room.setdefault(host, set()).add(model)
            coord._overlays_changed()
        elif r < 0.45:
            for d in (coord._unloading, coord._awaiting_room):
                d.get(host, set()).clear()
            coord._overlays_changed()
        clock[0] += float(rng.choice([0.0, 0.0, 0.0, 0.01, 3.0, 11.0]))
        n = int(rng.integers(1, 7)) if not cands or rng.random() < 0.5 else len(cands)
        spread = float(rng.choice([0.02, 0.2, 1.0]))  # all within the margin, some, or few
        scores = sorted(rng.uniform(0, spread, n), reverse=True)
        if len(cands) == n:  # the same candidates again, with other scores and waits (decisions kept)
            cands = [
                Scored(c.model, c.backend, c.upstream_model, float(s), {}, ())
                for c, s in zip(cands, scores, strict=True)
            ]
        else:
            cands = [
                Scored(m, f"b{rng.integers(0, 4)}", m, float(s), {}, ())
                for m, s in zip(rng.choice(MODELS, size=n), scores, strict=True)
            ]
        waits = [float(rng.choice([0.0, 0.0, 2.0, 6.0, 30.0])) for _ in cands]
        expected = _full(coord, cands, waits)
        assert _seen(coord._hosts_now()) == _seen(_hosts_as_before(coord))
        rework, decision = coord.decide(cands, waits)
        assert (rework, decision) == (expected or (None, None))
        if decision is not None:
            kinds[decision.kind.value] += 1
    return kinds


@pytest.mark.parametrize("seed", range(40))
def test_decide_answers_what_the_full_planner_answers_from_scratch(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _compare(seed, monkeypatch)


def test_the_random_states_reach_every_rule_of_the_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Else the comparison above proves little: across the seeds, every kind of decision, the
    resident one (``decide``'s own fast path) most of all."""
    kinds: Counter[str] = Counter()
    for seed in range(40):
        kinds += _compare(seed, monkeypatch)
    assert set(kinds) == {k.value for k in DecisionKind}, kinds
    assert kinds[DecisionKind.RESIDENT.value] >= 100, kinds


def test_a_decision_kept_for_some_candidates_is_not_taken_when_the_margin_or_admission_differs() -> None:
    """The same candidates on the same hosts, decided again with other scores and waits: a
    fallback to a loaded model kept from the first decision must give way to the busy rule when
    that model's wait is past ``admit_wait_s``, and an unload to a resident model within the
    margin (the slow load ordered meanwhile)."""
    coord = VramCoordinator(VramOptions(score_margin=0.1), redis=None, keys=Keys(), actions=None)  # type: ignore[arg-type]
    full = HostVram("h0", 10 * GiB, None, (ResidentModel("fam0:1b", 9 * GiB, busy=True),))
    room = HostVram("h1", 40 * GiB, None, (ResidentModel("fam1:3b", 4 * GiB), ResidentModel("fam2:7b", 6 * GiB)))
    coord.view = VramView(
        hosts=MappingProxyType({"h0": full, "h1": room}),
        backend_host=MappingProxyType({"b0": "h0", "b1": "h1"}),
    )
    cands = [Scored("fam8:70b", "b0", "fam8:70b", 0.9, {}, ()), Scored("fam1:3b", "b1", "fam1:3b", 0.5, {}, ())]
    cands.append(Scored("fam2:7b", "b1", "fam2:7b", 0.4, {}, ()))
    seen = []
    for scores, waits in (((0.9, 0.5, 0.4), [0.0, 0.0, 0.0]), ((0.9, 0.5, 0.4), [0.0, 30.0, 0.0])):
        now = [Scored(c.model, c.backend, c.upstream_model, s, {}, ()) for c, s in zip(cands, scores, strict=True)]
        expected = _full(coord, now, waits)
        assert expected is not None
        assert coord.decide(now, waits) == expected
        seen.append(expected[1].kind)  # type: ignore[attr-defined]
    assert seen == [DecisionKind.FALLBACK, DecisionKind.BUSY]
    ranked = [Scored("fam8:70b", "b1", "fam8:70b", 0.9, {}, ()), *cands[1:]]
    room_full = HostVram("h1", 46 * GiB, None, room.resident)
    coord.view = VramView(hosts=MappingProxyType({"h1": room_full}), backend_host=MappingProxyType({"b1": "h1"}))
    kinds = []
    for scores in ((0.9, 0.5, 0.4), (0.9, 0.85, 0.4)):
        now = [Scored(c.model, c.backend, c.upstream_model, s, {}, ()) for c, s in zip(ranked, scores, strict=True)]
        expected = _full(coord, now, [0.0] * 3)
        assert expected is not None
        assert coord.decide(now, [0.0] * 3) == expected
        kinds.append(expected[1].kind)  # type: ignore[attr-defined]
    assert kinds == [DecisionKind.EVICT, DecisionKind.PRELOAD]  # the 70b is slow to load: ordered meanwhile
