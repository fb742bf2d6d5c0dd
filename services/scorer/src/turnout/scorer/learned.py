"""The learned term: graded outcomes of past prompts predict how each model will do on a new one.

Every graded outcome is ``(prompt embedding, model, score 0..1, source)`` with source
``profile`` (the profiler's graded prompts), ``judge`` (LLM-as-judge) or ``feedback`` (users).
They live in one bounded matrix of prompt embeddings (a ring buffer of ``capacity`` rows; the
same prompt — by key — is one row) and an outcome matrix of the same rows with one column per
model (NaN where that model was never graded on that prompt), so a lookup is one matrix-vector
product for all models:

1. cosine similarity of the new prompt to every stored prompt (unit vectors: a dot product);
   from ``screen_from`` rows on, the rows are first screened on an int8 copy of the matrix
   (a quarter of the bytes, NumKong's packed integer kernel) with a per-row bound on the quantisation
   error, and the exact float32 similarity is computed only for the rows whose upper bound can
   reach the floor and the ``k`` best — the same neighbours as the full product (the bound holds
   by construction; ``test_decision_equivalence.py`` checks it). On the loaded 2-core box the
   full product over 5,000 × 128 float32 rows (2.5 MB) costs 65 µs with the matrix in cache and
   ~175-280 µs when other work has evicted it; the screen ~30 / ~70-90 µs;
2. the ``k`` most similar rows (``argpartition``);
3. kernel weights ``w = ((s − floor) / (1 − floor))₊ ^ power`` (neighbours below ``floor`` count
   nothing) times the outcome's source weight;
4. per model: ``p = (Σ w·score + m·mean) / (Σ w + m)`` over the neighbours it was graded on
   (``m = prior_mass`` pseudo-neighbours at the model's overall mean) and ``n_eff = Σ w``,
   scaled by ``min(1, rows / (full_at · k))``: an index with fewer rows than that is a global
   average rather than a local one (a fresh deployment's 31 profiling prompts per model), and
   counting its neighbours in full lowered APGR on MMLU left out from 0.58 to 0.55
   (``bench/routing_quality.py``, lodo; 0.585 with the scaling).

The scorer blends ``p`` with its static capability by ``n_eff`` (``scoring.py``): with no close
neighbours the learned term vanishes. The index does no I/O: a loader (Postgres profiles and
feedback joined to routing decisions) calls :meth:`LearnedIndex.add` / :meth:`add_batch` and
bumps ``version``; readers may cache on it.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numkong
import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

SOURCES = ("profile", "judge", "feedback")


def encode_embedding(v: np.ndarray) -> str:
    """A prompt embedding as it travels in a decision's analysis: base64 of float16 (256 bytes
    for the 128-dim static model)."""
    return base64.b64encode(np.asarray(v, dtype=np.float16).tobytes()).decode()


def decode_embedding(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=np.float16).astype(np.float32)


@dataclass(frozen=True, slots=True)
class LearnedConfig:
    capacity: int = 20_000
    """Stored prompts (rows); the oldest is overwritten first."""
    k: int = 48
    floor: float = 0.5
    power: float = 2.0
    prior_mass: float = 0.5
    full_at: float = 4.0
    """The neighbour mass counts in full from ``full_at · k`` stored prompts (scaled below)."""
    screen_from: int = 1024
    """Rows from which a lookup screens on the int8 copy first (module docstring); 0 = never."""
    source_weights: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"profile": 1.0, "judge": 0.8, "feedback": 0.6})
    )


def _int8(v: F) -> tuple[float, npt.NDArray[np.int8]]:
    """``v ≈ scale · q8`` with ``q8`` in −127..127."""
    top = float(np.abs(v).max()) if v.size else 0.0
    scale = float(np.float32(top / 127.0)) if top > 0 else 1.0  # as the float32 copy holds it
    # |v / scale| ≤ 127·(1 + 2⁻²⁴) (the float32 rounding of top / 127): rint is within −127..127
    return scale, np.rint(v / scale).astype(np.int8)


def prompt_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class LearnedIndex:
    """Bounded k-NN index of graded outcomes (see the module docstring)."""

    def __init__(self, dims: int, cfg: LearnedConfig | None = None) -> None:
        self.cfg = cfg or LearnedConfig()
        self.dims = dims
        cap = self.cfg.capacity
        self._emb = np.zeros((cap, dims), dtype=np.float32)
        # the int8 copy for screening: row ≈ scale · q8, with the error bounds' per-row parts
        self._q8 = np.zeros((cap, dims), dtype=np.int8)
        self._q8_scale = np.zeros(cap, dtype=np.float32)
        self._q8_err = 0.0
        """The largest ‖row − scale·q8‖ written so far (an upper bound for every row)."""
        self._q8_norm = 0.0
        """The largest ‖scale·q8‖ written so far."""
        self._q8_packed: numkong.PackedMatrix | None = None
        """The int8 copy's rows in use, packed for NumKong's matrix kernel (:meth:`prepare`)."""
        self._sum = np.zeros((cap, 0), dtype=np.float64)  # Σ weight·score per (row, model)
        self._wsum = np.zeros((cap, 0), dtype=np.float64)  # Σ weight
        self._keys: list[bytes | None] = [None] * cap
        self._row_of: dict[bytes, int] = {}
        self._models: list[str] = []
        self._col: dict[str, int] = {}
        self._next = 0
        self._rows = 0
        self.version = 0
        self._means: F | None = None
        self._prior: tuple[F, npt.NDArray[np.bool_]] | None = None
        """Per model and one sentinel column: the prior (0.5 where ungraded) and whether ungraded."""
        self._terms: F | None = None
        """Per row: ``[min(wsum, 1)·graded | 0 | min(wsum, 1)·graded·mean score | 0]`` (rows ×
        2·(models + 1)), so that one lookup is one gather and one vector-matrix product
        (:meth:`estimate_one`); the zero columns give the sentinel model of :meth:`aligned`."""
        self._aligned_for: tuple[Sequence[str], int] | None = None
        self._aligned_cols: npt.NDArray[np.intp] = np.zeros(0, dtype=np.intp)

    # --- writing -------------------------------------------------------------------------

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._models)

    def __len__(self) -> int:
        return self._rows

    def _column(self, model: str) -> int:
        col = self._col.get(model)
        if col is None:
            col = len(self._models)
            self._models.append(model)
            self._col[model] = col
            pad = np.zeros((self.cfg.capacity, 1))
            self._sum = np.hstack([self._sum, pad])
            self._wsum = np.hstack([self._wsum, pad])
        return col

    def _row(self, key: bytes | None, embedding: npt.ArrayLike) -> int:
        if key is not None:
            row = self._row_of.get(key)
            if row is not None:
                return row
        row = self._next
        old = self._keys[row]
        if old is not None:
            self._row_of.pop(old, None)
        self._next = (row + 1) % self.cfg.capacity
        self._rows = min(self._rows + 1, self.cfg.capacity)
        v = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.dims:
            raise ValueError(f"embedding has {v.shape[0]} dims, the index {self.dims}")
        norm = float(np.linalg.norm(v))
        self._emb[row] = v / norm if norm > 0 else v
        self._quantise(row)
        self._sum[row] = 0.0
        self._wsum[row] = 0.0
        self._keys[row] = key
        if key is not None:
            self._row_of[key] = row
        return row

    def _quantise(self, row: int) -> None:
        e = self._emb[row].astype(np.float64)
        scale, q8 = _int8(e)
        back = scale * q8.astype(np.float64)
        self._q8[row] = q8
        self._q8_scale[row] = scale
        self._q8_err = max(self._q8_err, float(np.linalg.norm(e - back)))
        self._q8_norm = max(self._q8_norm, float(np.linalg.norm(back)))

    def add(
        self,
        embedding: npt.ArrayLike,
        model: str,
        score: float,
        *,
        source: str = "profile",
        key: bytes | str | None = None,
        weight: float = 1.0,
    ) -> None:
        """One graded outcome; outcomes for the same ``key`` (a prompt hash or id) share a row."""
        if not 0.0 <= score <= 1.0:
            raise ValueError("score must be within 0..1")
        w = weight * self.cfg.source_weights.get(source, 1.0)
        col = self._column(model)
        row = self._row(key.encode() if isinstance(key, str) else key, embedding)
        self._sum[row, col] += w * score
        self._wsum[row, col] += w
        self._changed()

    def add_batch(
        self,
        embeddings: npt.ArrayLike,
        models: Sequence[str],
        scores: npt.ArrayLike,
        *,
        source: str = "profile",
        keys: Sequence[bytes | str | None] | None = None,
    ) -> None:
        """Rows of ``scores`` (prompts × ``models``, NaN = not graded) for the prompts in ``embeddings``."""
        e = np.asarray(embeddings, dtype=np.float32)
        s = np.asarray(scores, dtype=np.float64)
        cols = [self._column(m) for m in models]
        w = self.cfg.source_weights.get(source, 1.0)
        for i in range(e.shape[0]):
            key = keys[i] if keys is not None else None
            row = self._row(key.encode() if isinstance(key, str) else key, e[i])
            graded = ~np.isnan(s[i])
            idx = np.asarray(cols)[graded]
            self._sum[row, idx] += w * s[i, graded]
            self._wsum[row, idx] += w
        self._changed()

    def clear(self) -> None:
        self.__init__(self.dims, self.cfg)  # type: ignore[misc]

    def _changed(self) -> None:
        self.version += 1
        self._means = None
        self._prior = None
        self._terms = None
        self._q8_packed = None

    def prepare(self) -> None:
        """Build what a lookup reads and a write dropped (the screen's packed int8 rows: ~0.5 ms
        at 5,000 rows, ~2 ms at 20,000), so that the first lookup after a load does not pay it."""
        if self.cfg.screen_from and self._rows >= self.cfg.screen_from:
            self._packed()

    def _packed(self) -> numkong.PackedMatrix:
        if self._q8_packed is None:
            self._q8_packed = numkong.dots_pack(self._q8[: self._rows])
        return self._q8_packed

    # --- reading -------------------------------------------------------------------------

    def model_means(self) -> F:
        if self._means is None:
            n = self._rows
            ws = self._wsum[:n].sum(axis=0)
            self._means = np.where(ws > 0, self._sum[:n].sum(axis=0) / np.maximum(ws, 1e-12), np.nan)
        return self._means

    def estimate_batch(self, queries: npt.ArrayLike) -> tuple[F, F]:
        """``(p, n_eff)``, each (queries × :attr:`models`); ``p`` is NaN where a model has no data."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        m = len(self._models)
        n = self._rows
        if n == 0 or m == 0:
            return np.full((q.shape[0], m), np.nan), np.zeros((q.shape[0], m))
        cfg = self.cfg
        sims = q @ self._emb[:n].T  # (queries, rows)
        k = min(cfg.k, n)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < n else np.broadcast_to(np.arange(n), (q.shape[0], n))
        s = np.take_along_axis(sims, top, axis=1).astype(np.float64)
        kern = np.clip((s - cfg.floor) / (1.0 - cfg.floor), 0.0, None) ** cfg.power  # (queries, k)
        wsum = self._wsum[top]  # (queries, k, models)
        ssum = self._sum[top]
        graded = wsum > 0
        mean_score = np.where(graded, ssum / np.maximum(wsum, 1e-12), 0.0)
        kw = kern[:, :, None] * np.minimum(wsum, 1.0) * graded
        n_eff = kw.sum(axis=1) * min(1.0, n / max(cfg.full_at * cfg.k, 1.0))
        prior = np.nan_to_num(self.model_means(), nan=0.5)
        pm = cfg.prior_mass
        p = ((kw * mean_score).sum(axis=1) + pm * prior) / (kw.sum(axis=1) + pm)
        p = np.where(np.isnan(self.model_means())[None, :], np.nan, p)
        return p, n_eff

    def estimate(self, embedding: npt.ArrayLike) -> dict[str, tuple[float, float]]:
        """Model -> (estimated success probability, effective number of close neighbours)."""
        p, n = self.estimate_batch(embedding)
        return {name: (float(p[0, j]), float(n[0, j])) for j, name in enumerate(self._models) if not np.isnan(p[0, j])}

    def _row_terms(self) -> F:
        if self._terms is None:
            n = self._rows
            wsum = self._wsum[:n]
            graded = wsum > 0
            weight = np.minimum(wsum, 1.0) * graded
            mean_score = np.where(graded, self._sum[:n] / np.maximum(wsum, 1e-12), 0.0)
            zero = np.zeros((n, 1))
            self._terms = np.ascontiguousarray(np.hstack([weight, zero, weight * mean_score, zero]))
        return self._terms

    def _prior_of(self) -> tuple[F, npt.NDArray[np.bool_]]:
        if self._prior is None:
            means = np.append(self.model_means(), np.nan)
            self._prior = (np.nan_to_num(means, nan=0.5), np.isnan(means))
        return self._prior

    def estimate_one(self, query: npt.ArrayLike) -> tuple[F, F]:
        """``(p, n_eff)`` per model for one query, as :meth:`estimate_batch`, searching only the
        rows above the kernel's ``floor`` (the others weigh nothing): no full partial sort. The
        per-row weights and weighted scores are kept per :attr:`version`, so the neighbours' sums
        are one product; the similarities come from :meth:`_neighbours` (module docstring).
        Measured in a loop at 5,000 prompts (warm caches): 107 → 63 µs."""
        m = len(self._models)
        p, n_eff = self._estimate(np.asarray(query, dtype=np.float32).reshape(-1))
        return p[:m], n_eff[:m]

    def _estimate(self, q: F32) -> tuple[F, F]:
        """:meth:`estimate_one` with one more model at the end that has no data (NaN / 0)."""
        m, n = len(self._models), self._rows
        if n == 0 or m == 0:
            return np.full(m + 1, np.nan), np.zeros(m + 1)
        cfg = self.cfg
        near, sims_near = self._neighbours(q)
        prior, ungraded = self._prior_of()
        if near.size == 0:
            return np.where(ungraded, np.nan, prior), np.zeros(m + 1)
        kern = ((sims_near.astype(np.float64) - cfg.floor) / (1.0 - cfg.floor)) ** cfg.power
        sums = kern @ self._row_terms()[near]
        n_eff = sums[: m + 1]
        pm = cfg.prior_mass
        if pm > 0:
            p = (sums[m + 1 :] + pm * prior) / (n_eff + pm)
        else:  # the sentinel (and a model without neighbours) is 0 / 0: NaN, as set below
            with np.errstate(invalid="ignore"):
                p = sums[m + 1 :] / n_eff
        p[ungraded] = np.nan
        return p, n_eff

    def _neighbours(self, q: F32) -> tuple[npt.NDArray[np.intp], F32]:
        """The rows above ``floor`` (the ``k`` most similar when more) and their similarities."""
        cfg, n = self.cfg, self._rows
        if cfg.screen_from and n >= cfg.screen_from:
            rows = self._screen(q)
            sims = self._emb[rows] @ q
            keep = sims > cfg.floor
            rows, sims = rows[keep], sims[keep]
        else:
            sims = self._emb[:n] @ q
            rows = (sims > cfg.floor).nonzero()[0]
            sims = sims[rows]
        if rows.size > cfg.k:
            top = np.argpartition(-sims, cfg.k - 1)[: cfg.k]
            rows, sims = rows[top], sims[top]
        return rows, sims

    def _screen(self, q: F32) -> npt.NDArray[np.intp]:
        """Rows that may be above ``floor`` and among the ``k`` most similar, from the int8 copy.
        With ``row ≈ s·q8_row`` and ``q ≈ t·q8_q``:
        ``row·q − s·t·(q8_row·q8_q) = (row − s·q8_row)·q + s·q8_row·(q − t·q8_q)``, so the true
        similarity is within ``B = max err·‖q‖ + max norm·‖q − t·q8_q‖`` of the estimate (plus a
        margin for float32 rounding, orders of magnitude above it). The integer dot products are
        exact in float32 (at most 127²·dims < 2²⁴).

        The integer dot products come from NumKong's packed matrix kernel (``dots_packed``, int32,
        exact) over the rows packed once per write (:meth:`prepare`). Measured at 5,000 × 128
        rows in a loop: 38 µs with SimSIMD 6.5's ``cdist`` (a kernel call per row), 15 µs packed;
        a greeting decision (``bench/scorer_decision.py``'s, paired in one process) ×0.93–0.94 of its CPU
        time, p99 ×0.90–0.97.
        A lookup leaves ``None``'s reference count alone (SimSIMD's ``cdist(..., out=...)`` did
        not: ``test_learned.py``)."""
        n, cfg = self._rows, self.cfg
        qd = q.astype(np.float64)
        t, q8 = _int8(qd)
        res = qd - t * q8.astype(np.float64)
        qn, qerr = math.sqrt(float(qd @ qd)), math.sqrt(float(res @ res))
        bound = (self._q8_err * qn + self._q8_norm * qerr + 1e-4 * max(1.0, qn)) / t
        dots = np.asarray(numkong.dots_packed(q8[None, :], self._packed()), dtype=np.float32)  # exact: < 2²⁴
        est = dots[0] * self._q8_scale[:n]  # similarity / t
        rows: npt.NDArray[np.intp] = (est > cfg.floor / t - bound).nonzero()[0]  # np.flatnonzero, without its wrapper
        if rows.size > cfg.k:
            kept = est[rows]
            kth = np.partition(kept, rows.size - cfg.k)[rows.size - cfg.k]  # the k-th best estimate
            rows = rows[kept >= kth - 2.0 * bound]
        return rows

    def aligned(self, embedding: npt.ArrayLike, names: Sequence[str]) -> tuple[F, F]:
        """``(p, n_eff)`` for ``names`` (a scoring table's order; NaN/0 for models without data).
        The column map is kept while ``names`` is the same object and no model was added."""
        p, n = self._estimate(np.asarray(embedding, dtype=np.float32).reshape(-1))
        if self._aligned_for is None or self._aligned_for[0] is not names or self._aligned_for[1] != len(self._models):
            m = len(self._models)  # a name without data reads the sentinel model m: NaN / 0
            self._aligned_cols = np.array([self._col.get(name, m) for name in names], dtype=np.intp)
            self._aligned_for = (names, m)
        cols = self._aligned_cols
        return p[cols], n[cols]
