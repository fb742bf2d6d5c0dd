"""The scorer's noted decisions (``scorer/notes.py``): expiry by their time, absorption by a read
taken ``lag_s`` after them or holding counts their gateway took ``margin_s`` after them, and the
live counts per replica that both keep."""

from __future__ import annotations

import numpy as np

from turnout.scorer.notes import Notes

A, B = ("a", "m"), ("b", "m")


def test_notes_expire_soonest_first_and_keep_their_counts() -> None:
    n = Notes()
    n.add(A, at=0.0, until=0.3)
    n.add(B, at=0.0, until=0.1)
    n.add(A, at=0.1, until=0.2)
    assert (len(n), n.count, n.next_expiry()) == (3, {A: 2, B: 1}, 0.1)
    assert n.expire(0.05) == []
    assert n.expire(0.2) == [B, A]  # soonest first, both at their time (until <= now)
    assert (n.count, n.next_expiry(), n.live(0.25)) == ({A: 1}, 0.3, 1)
    assert n.expire(1.0) == [A]
    assert (len(n), n.count, n.next_expiry(), n.live(1.0)) == (0, {}, float("inf"), 0)


def test_a_read_holds_the_notes_lag_old_and_drops_those_over() -> None:
    n = Notes()
    n.add(A, at=0.0, until=5.0)  # 0.4 s before the read: the read holds it
    n.add(A, at=0.3, until=5.0)  # 0.1 s before: it may not, so it stays on top
    n.add(B, at=0.35, until=0.38)  # its time is over at the read
    n.absorb(now=0.4, lag_s=0.35)
    assert (len(n), n.count) == (1, {A: 1})
    assert n.on_top_of({A: 3, B: 2}) == {A: 4, B: 2}
    n.absorb(now=0.7, lag_s=0.35)
    assert (len(n), n.count) == (0, {})
    read = {A: 3}
    assert n.on_top_of(read) is read  # nothing noted: the read as it is


def test_a_read_holds_the_notes_their_gateway_counted_after_them() -> None:
    n = Notes()
    n.add(A, at=0.0, until=5.0, gateway="g1", wall=100.0)  # g1 took its counts 0.06 s after: held
    n.add(A, at=0.1, until=5.0, gateway="g1", wall=100.1)  # 0.04 s before g1's time: not surely
    n.add(B, at=0.1, until=5.0, gateway="g2", wall=100.0)  # g2 wrote no time: the lag rule
    n.add(B, at=0.1, until=5.0)  # no gateway named: the lag rule
    n.absorb(now=0.2, lag_s=0.35, taken_at={"g1": 100.06}, margin_s=0.05)
    assert (len(n), n.count) == (3, {A: 1, B: 2})
    n.absorb(now=0.3, lag_s=0.35, taken_at={"g1": 100.15, "g2": 99.0}, margin_s=0.05)
    assert (len(n), n.count) == (2, {B: 2})  # g2's counts were taken before its note
    n.absorb(now=0.46, lag_s=0.35, taken_at={}, margin_s=0.05)
    assert (len(n), n.count) == (0, {})


def test_counts_match_the_live_notes_through_random_adds_expiries_and_reads() -> None:
    rng = np.random.default_rng(11)
    n = Notes()
    live: list[tuple[float, float, tuple[str, str], str | None]] = []  # (at, until, key, gateway): the reference
    gateways = ("g0", "g1", None)
    now = 0.0
    for _ in range(3000):
        now += float(rng.uniform(0.0, 0.05))
        op = rng.random()
        if op < 0.6:
            key = (str(rng.integers(0, 4)), "m")
            until = now + float(rng.uniform(0.0, 1.0))
            gw = gateways[int(rng.integers(0, 3))]
            n.add(key, now, until, gw, 1000.0 + now)  # the wall clock 1,000 s ahead of the monotonic one
            live.append((now, until, key, gw))
        elif op < 0.85:
            gone = n.expire(now)
            assert sorted(gone) == sorted(k for _, u, k, _ in live if u <= now)
            live = [x for x in live if x[1] > now]
        else:  # g0 took its counts up to 0.3 s ago; g1 writes no time
            taken = 1000.0 + now - float(rng.uniform(0.0, 0.3))
            n.absorb(now, 0.35, {"g0": taken}, 0.05)
            live = [
                x
                for x in live
                if x[1] > now and x[0] > now - 0.35 and not (x[3] == "g0" and 1000.0 + x[0] + 0.05 <= taken)
            ]
        want: dict[tuple[str, str], int] = {}
        for _, _, k, _ in live:
            want[k] = want.get(k, 0) + 1
        assert n.count == want
        assert len(n) == len(live)
        assert n.live(now) == sum(u > now for _, u, _, _ in live)
