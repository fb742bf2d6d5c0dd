"""What the VRAM planner changes in a ``scorer.route`` reply, kept apart from the reply itself.

The planner reads four fields of each candidate (:class:`~turnout.scorer.scoring.Ranked`: a wire
``CandidateV1`` or the ranking's :class:`~turnout.scorer.scoring.Scored`, whichever the handler
holds) and answers with a :class:`Rework`: each candidate's expected load and slot wait, then
the re-orderings that put its choice first, each with the reason added to that candidate's
``reasons``. A rework is applied to a validated reply (:meth:`Rework.on_reply`: a cached reply,
``scorer.explain``) or to the reply's plain values before they are encoded straight to JSON
(:meth:`Rework.on_fields`: a decision made now, no model built); both give the same bytes
(``tests/unit/test_decision_equivalence.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from turnout.common.schemas.route import RouteReplyV1
from turnout.scorer.scoring import Ranked
from turnout.scorer.vram import HostVram, Option, VramConfig

__all__ = ["Ranked", "Rework", "attempt_order", "load_estimates", "wait_estimates", "with_load_estimates"]


@dataclass(frozen=True, slots=True)
class Rework:
    """The planner's changes to a reply's candidates, in the reply's order: ``loads`` and
    ``waits`` become each candidate's ``load_s`` and ``wait_s``; then each of ``steps``
    re-orders the candidates (``order``: positions in the list as it stands) and adds
    ``reason`` to the ``reasons`` of the one it puts first."""

    loads: tuple[float | None, ...]
    waits: tuple[float | None, ...]
    steps: tuple[tuple[tuple[int, ...], str], ...] = ()

    def then(self, order: Sequence[int], reason: str) -> Rework:
        """This rework followed by one more re-ordering of its result."""
        return Rework(self.loads, self.waits, (*self.steps, (tuple(order), reason)))

    def order(self) -> list[int]:
        """The candidates' positions in the reply as given, in the order of the result."""
        out = list(range(len(self.loads)))
        for order, _ in self.steps:
            out = [out[i] for i in order]
        return out

    def on_reply(self, reply: RouteReplyV1) -> RouteReplyV1:
        """The validated reply with the changes (models copied, none validated again)."""
        reply = _with_estimates(reply, self.loads, self.waits)
        for order, reason in self.steps:
            cands = [reply.candidates[i] for i in order]
            cands[0] = cands[0].model_copy(update={"reasons": [*cands[0].reasons, reason]})
            reply = reply.model_copy(update={"candidates": cands})
        return reply

    def on_fields(self, fields: dict[str, object]) -> dict[str, object]:
        """The reply's plain values (:meth:`~turnout.scorer.scoring.Ranking.reply_fields`, whose
        candidate dicts are its own: changed in place) with the changes; encoded by orjson, the
        bytes of :meth:`on_reply`'s ``model_dump_json``."""
        cands: list[dict[str, object]] = fields["candidates"]  # type: ignore[assignment]
        for c, load, wait in zip(cands, self.loads, self.waits, strict=True):
            c["load_s"] = load
            c["wait_s"] = wait
        for order, reason in self.steps:
            cands = [cands[i] for i in order]
            first = cands[0]
            first["reasons"] = (*first["reasons"], reason)  # type: ignore[misc]
        fields["candidates"] = cands
        return fields


def attempt_order(options: Sequence[Option], hosts: Mapping[str, HostVram], choice: int) -> list[int]:
    """The order the gateway tries the candidates in: the planner's choice, then the others with
    the models loaded on their host first (score order within each group). A next candidate is
    tried after the first failed or kept the client waiting past its first-byte bound: a cold
    load then would add its load time, and on a host at its model limit hold up every request
    there (Ollama serves its queue in order) — a loaded one answers at once."""

    def loaded(i: int) -> bool:
        o = options[i]
        h = hosts.get(o.host) if o.host is not None else None
        return h is not None and h.serves(o.model)

    rest = [i for i in range(len(options)) if i != choice]
    return [choice, *sorted(rest, key=lambda i: not loaded(i))]


def load_estimates(options: Sequence[Option], hosts: Mapping[str, HostVram], cfg: VramConfig) -> list[float | None]:
    """Per candidate, the seconds its backend is expected to spend loading the model before the
    first byte (``VramConfig.load_s`` of its need) when the model is not loaded there — a load
    needed or one still under way (counted whole: when it started is not known); ``None`` when
    it is loaded, or its host has no known budget. The gateway adds it, capped, to the attempt's
    first-byte bound (``upstream_limits.py``): a cold load must not count as a hung backend."""
    out: list[float | None] = []
    for o in options:
        h = hosts.get(o.host) if o.host is not None else None
        out.append(None if h is None or h.serves(o.model) else round(cfg.load_s(o.need_bytes), 2))
    return out


def wait_estimates(waits: Sequence[float] | None, n: int) -> list[float | None]:
    """Each of ``n`` candidates' ``wait_s``: its expected wait for a slot
    (:meth:`~turnout.scorer.engine.RoutingEngine.expected_waits`) where above 0, else ``None``."""
    return [round(w, 2) if w > 0 else None for w in waits] if waits is not None else [None] * n


def with_load_estimates(
    reply: RouteReplyV1, loads: Sequence[float | None], waits: Sequence[float] | None = None
) -> RouteReplyV1:
    """The reply with each candidate's ``load_s`` set, and ``wait_s`` where ``waits`` (its expected
    wait for a slot, :meth:`~turnout.scorer.engine.RoutingEngine.expected_waits`) is above 0 (in
    the candidates' order): the gateway adds both, capped, to the attempt's first-byte bound."""
    return _with_estimates(reply, loads, wait_estimates(waits, len(loads)))


def _with_estimates(reply: RouteReplyV1, loads: Sequence[float | None], slots: Sequence[float | None]) -> RouteReplyV1:
    unset = all(c.load_s is None and c.wait_s is None for c in reply.candidates)
    if unset and all(x is None for x in (*loads, *slots)):
        return reply
    cands = [
        c if (c.load_s, c.wait_s) == (x, w) else c.model_copy(update={"load_s": x, "wait_s": w})
        for c, x, w in zip(reply.candidates, loads, slots, strict=True)
    ]
    return reply.model_copy(update={"candidates": cands})
