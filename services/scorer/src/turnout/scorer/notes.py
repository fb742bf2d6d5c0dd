"""Decisions the scorer handed out that the gateways' in-flight counts do not hold yet.

The gateways publish their in-flight counts every ``inflight_publish_s`` (0.25 s) and the scorer
reads them every ``load_poll_s`` (0.25 s); between two reads, every decision it hands out would be
invisible to the next one, and a burst would all go to the replica that looked idle. So each
decision is *noted* on its replica and counted there on top of the last read — but only while it
can still be in flight and is not yet in what the scorer reads:

* **until its expected time is over** (``until``: its wait, a load if one is needed, its time to
  the first token and its reply at the model's speed): a 60 ms request counts for ~60 ms, not until
  the next read. Counting every note until the next read made 30 req/s of 60 ms requests look like
  6–7 in flight on a replica that held at most 2, and the busy and wait terms sent load to an
  idle model whose first byte takes 4 s (issue 17's closing note);
* **until a read holds it** (:meth:`Notes.absorb`), so that it does not count the request twice:
  * a read that holds counts its gateway took at least ``margin_s`` after the note (the route
    request names its gateway, and each gateway writes the wall time of its counts with them:
    ``turnout.common.inflight``). The margin covers the reply's way back to the gateway and the
    skew between the two hosts' clocks. A gateway writes again within ``inflight_publish_s`` of
    handing out a request, so a note is held by the next read or the one after, not only by a
    read ``lag_s`` after it;
  * else (a gateway that sends no id, or writes no time) a read taken at least ``lag_s`` after
    the note: by then every gateway has published a count that holds the request if it is still
    in flight (a gateway publishes within ``inflight_publish_s`` of a change, and an unchanged
    count is a current one).

  A note neither holds survives the read.

Measured on ``make run`` (8 clients, ~20 req/s of ~0.37 s requests, the scorer's gauges sampled
every 20 ms against the requests out): read + noted − out was 11.0–11.3 on average with the lag
rule alone and reads every 0.5 s, 8.0–8.4 with the gateways' times, 4.1–4.9 with both and reads
every 0.25 s (the lag rule with 0.25 s reads: 9.9–10.3). What is left is inherent to sampling:
between two reads a request that ends is still in the last one, and one that begins is noted.

Keyed by (backend, upstream model), not by table row, so that notes outlive a catalog rebuild.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Mapping

Key = tuple[str, str]

MAX_NOTE_S = 120.0
"""The longest a note counts (the gateways' default read bound): what notes can add while the
reads fail (Redis away) stays bounded, as it does for a model whose speed is not a number."""


Note = tuple[float, int, float, Key, str | None, float]
"""(until, sequence, noted at, key, gateway, wall time noted at)."""


class Notes:
    """The noted decisions, soonest expiry first, and how many are live per replica."""

    __slots__ = ("_heap", "_seq", "count")

    def __init__(self) -> None:
        self._heap: list[Note] = []
        """A heap on ``until``."""
        self._seq = itertools.count()
        self.count: dict[Key, int] = {}
        """Live notes per replica (no zero entries)."""

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, key: Key, at: float, until: float, gateway: str | None = None, wall: float = 0.0) -> None:
        """A decision for ``key`` noted at ``at``, in flight until ``until`` at the latest, for
        ``gateway`` (``None``: not known) at wall time ``wall``."""
        heapq.heappush(self._heap, (until, next(self._seq), at, key, gateway, wall))
        self.count[key] = self.count.get(key, 0) + 1

    def next_expiry(self) -> float:
        """When the soonest note expires (``inf`` with none): what a decision checks first."""
        return self._heap[0][0] if self._heap else float("inf")

    def live(self, now: float) -> int:
        """The notes whose time is not over at ``now`` (those over leave at the next decision)."""
        return sum(1 for n in self._heap if n[0] > now)

    def expire(self, now: float) -> list[Key]:
        """Drop the notes whose time is over at ``now``; their keys, one per note, soonest first."""
        out: list[Key] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            key = heapq.heappop(heap)[3]
            out.append(key)
            n = self.count[key] - 1
            if n:
                self.count[key] = n
            else:
                del self.count[key]
        return out

    def absorb(
        self, now: float, lag_s: float, taken_at: Mapping[str, float] | None = None, margin_s: float = 0.0
    ) -> None:
        """A read of the gateways' counts taken at ``now``, which each gateway of ``taken_at`` took
        at that wall time: it holds every note made ``lag_s`` or more before, and every note for
        one of those gateways made ``margin_s`` or more before its time (those still in flight are
        in it). They are dropped, as are those whose time is over."""
        seen = now - lag_s
        if taken_at:
            kept = [
                n
                for n in self._heap
                if n[0] > now and n[2] > seen and (n[4] is None or n[5] + margin_s > taken_at.get(n[4], -math.inf))
            ]
        else:
            kept = [n for n in self._heap if n[0] > now and n[2] > seen]
        if len(kept) == len(self._heap):
            return
        heapq.heapify(kept)
        self._heap = kept
        count: dict[Key, int] = {}
        for n in kept:
            count[n[3]] = count.get(n[3], 0) + 1
        self.count = count

    def on_top_of(self, read: Mapping[Key, int]) -> Mapping[Key, int]:
        """The counts as read plus the live notes."""
        if not self.count:
            return read
        out = dict(read)
        for k, n in self.count.items():
            out[k] = out.get(k, 0) + n
        return out
