"""Profile one model on one backend: warm-up, the suite, capability probes → a :class:`ProfileResult`.

The runner knows nothing about Redis, Postgres or arq: it gets a :class:`ChatFn` (usually a
:class:`turnout.profiler.chat.BackendChat`), a suite and a grader, and reports progress
through a callback. The worker decides what to profile, stores the result
(:meth:`ProfileResult.profile_rows`) and unloads the model.

Timeouts:

* warm-up (the first call loads the model): ``floor + warmup_s_per_gb × size in GB``, capped at
  the ceiling; the size is the backend's ``size_bytes``, else ``0.6 GB × params_b`` (about 4.5
  bits per weight), else the floor alone;
* each prompt: ``timeout_factor × (median TTFT + max_tokens / median tokens/s)`` from what was
  measured so far (``assumed_tokens_per_s`` before the first measurement), clamped to
  ``[prompt_timeout_floor_s, prompt_timeout_ceiling_s]``.

Prefill speed (prompt tokens per second): after the probes, one prompt of about
``prefill_probe_tokens`` (1,024) tokens, a fresh random line first so that no prompt cache holds
it, and 8 reply tokens at most (:mod:`turnout.profiler.prefill` reads it against the suite's
short prompts).

A prompt that times out or errors is recorded as such and is not graded: a category's score is
the mean over graded prompts only, and is ``None`` (never 0) when none could be graded. After
``max_consecutive_failures`` failed prompts in a row the model is taken as down and the rest is
skipped. Speeds are medians over the graded prompts, from the backend's own counters where it
gave them.
"""

from __future__ import annotations

import base64
import logging
import secrets
import statistics
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from turnout.common.errors import BackendError, BackendStatusError, BackendTimeout
from turnout.profiler.chat import ChatFn, ChatRequest, ChatResult, PrefillSample
from turnout.profiler.grading import Grader, graders_used
from turnout.profiler.prefill import prefill_probe_text, prefill_rate
from turnout.profiler.suite import Suite, SuitePrompt

log = logging.getLogger(__name__)

PromptStatus = Literal["ok", "error", "timeout", "skipped"]


class RunnerOptions(BaseModel):
    """Timeouts of a profiling run (warm-up by model size, prompts by expected speed) and its probes."""

    model_config = ConfigDict(extra="forbid")

    warmup_timeout_floor_s: float = Field(default=30.0, gt=0)
    warmup_s_per_gb: float = Field(default=15.0, ge=0, description="Load-time budget per GB of weights")
    warmup_timeout_ceiling_s: float = Field(default=900.0, gt=0)
    prompt_timeout_floor_s: float = Field(default=15.0, gt=0)
    prompt_timeout_ceiling_s: float = Field(default=300.0, gt=0)
    timeout_factor: float = Field(default=3.0, ge=1)
    assumed_tokens_per_s: float = Field(default=5.0, gt=0, description="Speed assumed before any is measured")
    max_consecutive_failures: int = Field(default=3, ge=1)
    probe_vision: bool = True
    probe_tools: bool = True
    probe_timeout_s: float = Field(default=60.0, gt=0)
    probe_prefill: bool = Field(default=True, description="Measure prefill speed with one long prompt")
    prefill_probe_tokens: int = Field(default=1024, ge=128, le=32768, description="About this long (tokens)")


class ModelUnderTest(BaseModel):
    """The model a run profiles: its name, backend, upstream name and size."""

    name: str
    backend: str
    upstream: str
    size_bytes: int | None = None
    params_b: float | None = None

    @property
    def size_gb(self) -> float | None:
        """Its weights in GB: the file size, else 0.6 GB per billion parameters, else ``None``."""
        if self.size_bytes:
            return self.size_bytes / 1e9
        if self.params_b:
            return 0.6 * self.params_b
        return None


class PromptOutcome(BaseModel):
    """One suite prompt's result: status, grade, latency, speed and detail."""

    id: str
    category: str
    status: PromptStatus
    prompt: str | None = None
    """The prompt's user text, as sent: the scorer embeds it to feed its learned index
    (``turnout.scorer.learned_loader``) without reading the profiler's suite file."""
    score: float | None = None
    grader: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    completion_tokens: int | None = None
    timeout_s: float | None = None
    detail: str = ""


class CategoryResult(BaseModel):
    """A category's score and how many of its prompts were graded, failed or timed out."""

    score: float | None = None
    n_prompts: int = 0
    """Prompts graded (the ones behind the score)."""
    total: int = 0
    errors: int = 0
    timeouts: int = 0
    skipped: int = 0
    grader: str | None = None


class CapabilityProbe(BaseModel):
    """Whether a capability (vision, tools) worked when tried."""

    confirmed: bool | None = None
    """True: it worked; False: the backend refused or ignored it; None: could not tell."""
    detail: str = ""


class ProgressEvent(BaseModel):
    """Where a run is: its phase, prompts done of total, the current one."""

    model: str
    backend: str
    phase: Literal["warmup", "prompts", "probes", "done"]
    done: int
    total: int
    current: str | None = None
    eta_s: float | None = None


class ProfileResult(BaseModel):
    """A whole profiling run: scores per category, speed, capabilities and every prompt's outcome."""

    model_config = ConfigDict(extra="forbid")

    model: str
    backend: str
    suite_version: str
    status: Literal["ok", "partial", "failed"]
    started_at: datetime
    finished_at: datetime
    load_ms: float | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    speed_source: str | None = None
    prefill_tokens_per_s: float | None = None
    """Prompt tokens processed per second (:func:`~turnout.profiler.prefill.prefill_rate`);
    ``None`` when not measured."""
    prefill_source: str | None = None
    """``backend`` (the server's counters) or ``timing`` (client-side times to first token)."""
    prefill_probe_tokens: int | None = None
    """Prompt tokens of the long prompt it was measured with."""
    vram_bytes: int | None = None
    context_length: int | None = None
    capabilities: dict[str, CapabilityProbe] = Field(default_factory=dict)
    categories: dict[str, CategoryResult] = Field(default_factory=dict)
    prompts: list[PromptOutcome] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """How long the run took."""
        return (self.finished_at - self.started_at).total_seconds()

    def profile_rows(self, model_id: int) -> list[dict[str, Any]]:
        """One ``profiles`` row per category (the table's whitelisted columns), for an upsert on
        ``(model_id, suite_version, category)``. Run-wide facts go into every row's ``details``."""
        common = {
            "status": self.status,
            "backend": self.backend,
            "speed_source": self.speed_source,
            "prefill_source": self.prefill_source,
            "prefill_probe_tokens": self.prefill_probe_tokens,
            "context_length": self.context_length,
            "capabilities": {k: v.model_dump() for k, v in self.capabilities.items()},
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "run_errors": self.errors[:10],
        }
        rows = []
        for cat, res in self.categories.items():
            rows.append(
                {
                    "model_id": model_id,
                    "suite_version": self.suite_version,
                    "category": cat,
                    "score": res.score,
                    "n_prompts": res.n_prompts,
                    "grader": res.grader,
                    "ttft_ms": self.ttft_ms,
                    "tokens_per_s": self.tokens_per_s,
                    "prefill_tokens_per_s": self.prefill_tokens_per_s,
                    "load_ms": self.load_ms,
                    "vram_bytes": self.vram_bytes,
                    "errors": res.errors,
                    "timeouts": res.timeouts,
                    "details": {
                        **common,
                        "total": res.total,
                        "skipped": res.skipped,
                        "prompts": [p.model_dump(exclude_none=True) for p in self.prompts if p.category == cat],
                    },
                }
            )
        return rows


ProgressFn = Callable[[ProgressEvent], Awaitable[None]]


def warmup_timeout_s(model: ModelUnderTest, opts: RunnerOptions) -> float:
    """How long the first (loading) request may take: a floor plus a budget per GB, capped."""
    gb = model.size_gb or 0.0
    return min(opts.warmup_timeout_ceiling_s, opts.warmup_timeout_floor_s + opts.warmup_s_per_gb * gb)


def prompt_timeout_s(max_tokens: int, ttft_s: float | None, tokens_per_s: float | None, opts: RunnerOptions) -> float:
    """How long one prompt may take: ``timeout_factor`` × the expected time, within floor and ceiling."""
    tps = tokens_per_s or opts.assumed_tokens_per_s
    expected = (ttft_s or 0.0) + max_tokens / tps
    return max(opts.prompt_timeout_floor_s, min(opts.prompt_timeout_ceiling_s, opts.timeout_factor * expected))


class ProfileRunner:
    """Runs the suite on one model: warm-up, every prompt graded, capability probes."""

    def __init__(
        self,
        chat: ChatFn,
        suite: Suite,
        grader: Grader,
        options: RunnerOptions | None = None,
        *,
        progress: ProgressFn | None = None,
        warmup_guard: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        """``warmup_guard``: entered around the warm-up (the load), e.g. to hold the host's VRAM
        lock (:func:`turnout.profiler.profiling.loading_on_host`); what it raises ends the run."""
        self.chat = chat
        self.warmup_guard = warmup_guard
        self.suite = suite
        self.grader = grader
        self.opts = options or RunnerOptions()
        self.progress = progress
        self._ttfts: list[float] = []
        self._speeds: list[float] = []
        self._speed_sources: set[str] = set()
        self._prefills: list[PrefillSample] = []

    async def run(self, model: ModelUnderTest) -> ProfileResult:
        """Profile ``model`` and return the result (``partial`` or ``failed`` when prompts failed)."""
        started = datetime.now(UTC)
        prompts = list(self.suite.prompts)
        total = len(prompts)
        errors: list[str] = []
        await self._report(model, "warmup", 0, total, None, None)
        if self.warmup_guard is not None:
            async with self.warmup_guard():
                load_ms, warm_error = await self._warmup(model)
        else:
            load_ms, warm_error = await self._warmup(model)
        outcomes: list[PromptOutcome] = []
        if warm_error is not None:
            errors.append(f"warm-up: {warm_error}")
            outcomes = [PromptOutcome(id=p.id, category=p.category, status="skipped") for p in prompts]
        else:
            outcomes = await self._prompts(model, prompts, errors)
        capabilities: dict[str, CapabilityProbe] = {}
        long: PrefillSample | None = None
        if warm_error is None:
            await self._report(model, "probes", total, total, None, 0.0)
            capabilities = await self._probes()
            if self.opts.probe_prefill and any(o.status == "ok" for o in outcomes):
                long = await self._prefill_probe()
        prefill = prefill_rate(self._prefills, long)
        result = ProfileResult(
            model=model.name,
            backend=model.backend,
            suite_version=self.suite.suite_version,
            status=_status(outcomes, warm_error),
            started_at=started,
            finished_at=datetime.now(UTC),
            load_ms=load_ms,
            ttft_ms=round(statistics.median(self._ttfts) * 1000, 2) if self._ttfts else None,
            tokens_per_s=round(statistics.median(self._speeds), 3) if self._speeds else None,
            speed_source="+".join(sorted(self._speed_sources)) or None,
            prefill_tokens_per_s=round(prefill[0], 1) if prefill else None,
            prefill_source=prefill[1] if prefill else None,
            prefill_probe_tokens=long.tokens if long is not None and prefill else None,
            capabilities=capabilities,
            categories=_categories(self.suite, outcomes),
            prompts=outcomes,
            errors=errors,
        )
        await self._report(model, "done", total, total, None, 0.0)
        return result

    async def _warmup(self, model: ModelUnderTest) -> tuple[float | None, str | None]:
        timeout = warmup_timeout_s(model, self.opts)
        request = ChatRequest(messages=[{"role": "user", "content": "Reply with the word OK."}], max_tokens=4)
        t0 = time.perf_counter()
        try:
            res = await self.chat(request, timeout_s=timeout)
        except BackendTimeout:
            return None, f"timed out after {timeout:.0f}s"
        except BackendError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        wall_ms = (time.perf_counter() - t0) * 1000
        load_ms = res.load_s * 1000 if res.load_s is not None else wall_ms
        return round(load_ms, 2), None

    async def _prompts(
        self, model: ModelUnderTest, prompts: list[SuitePrompt], errors: list[str]
    ) -> list[PromptOutcome]:
        outcomes: list[PromptOutcome] = []
        failures_in_row = 0
        durations: list[float] = []
        for i, prompt in enumerate(prompts):
            eta = statistics.mean(durations) * (len(prompts) - i) if durations else None
            await self._report(model, "prompts", i, len(prompts), prompt.id, eta)
            if failures_in_row >= self.opts.max_consecutive_failures:
                outcomes.append(PromptOutcome(id=prompt.id, category=prompt.category, status="skipped"))
                continue
            t0 = time.perf_counter()
            outcome = await self._one(prompt)
            durations.append(time.perf_counter() - t0)
            outcomes.append(outcome)
            if outcome.status in ("error", "timeout"):
                failures_in_row += 1
                errors.append(f"{prompt.id}: {outcome.status}: {outcome.detail}"[:300])
                if failures_in_row == self.opts.max_consecutive_failures:
                    errors.append(f"{failures_in_row} failures in a row: the rest of the suite was skipped")
            else:
                failures_in_row = 0
        return outcomes

    async def _one(self, prompt: SuitePrompt) -> PromptOutcome:
        ttft = statistics.median(self._ttfts) if self._ttfts else None
        speed = statistics.median(self._speeds) if self._speeds else None
        timeout = prompt_timeout_s(prompt.max_tokens, ttft, speed, self.opts)
        base = {"id": prompt.id, "category": prompt.category, "prompt": prompt.prompt, "timeout_s": round(timeout, 1)}
        request = ChatRequest(messages=prompt.messages(), max_tokens=prompt.max_tokens)
        try:
            res = await self.chat(request, timeout_s=timeout)
        except BackendTimeout as exc:
            return PromptOutcome(**base, status="timeout", detail=str(exc)[:300])
        except BackendError as exc:
            return PromptOutcome(**base, status="error", detail=f"{type(exc).__name__}: {exc}"[:300])
        self._measure(res)
        grade = await self.grader.grade(prompt, res.text)
        return PromptOutcome(
            **base,
            status="ok",
            score=grade.score,
            grader=grade.grader,
            latency_ms=round(res.total_s * 1000, 2),
            ttft_ms=round(res.time_to_first_token_s * 1000, 2) if res.time_to_first_token_s is not None else None,
            tokens_per_s=round(res.tokens_per_s, 3) if res.tokens_per_s else None,
            completion_tokens=res.completion_tokens,
            detail=grade.detail,
        )

    def _measure(self, res: ChatResult) -> None:
        if res.time_to_first_token_s is not None:
            self._ttfts.append(res.time_to_first_token_s)
        if res.tokens_per_s:
            self._speeds.append(res.tokens_per_s)
            self._speed_sources.add(res.speed_source)
        if res.prefill_sample is not None:
            self._prefills.append(res.prefill_sample)

    async def _prefill_probe(self) -> PrefillSample | None:
        """The long prompt's processing (``None``: it failed, or nothing measured it)."""
        text = prefill_probe_text(self.opts.prefill_probe_tokens, secrets.token_hex(8))
        request = ChatRequest(messages=[{"role": "user", "content": text}], max_tokens=8)
        try:
            res = await self.chat(request, timeout_s=self.opts.probe_timeout_s)
        except BackendError as exc:
            log.info("prefill probe failed: %s: %s", type(exc).__name__, exc)
            return None
        return res.prefill_sample

    async def _probes(self) -> dict[str, CapabilityProbe]:
        out: dict[str, CapabilityProbe] = {}
        if self.opts.probe_vision:
            out["vision"] = await self._probe(
                ChatRequest(
                    messages=[
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "What colour is this image? Answer with one word."},
                                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{RED_PNG_B64}"}},
                            ],
                        }
                    ],
                    max_tokens=16,
                ),
                lambda r: (bool(r.text.strip()), "answered" if r.text.strip() else "empty answer"),
            )
        if self.opts.probe_tools:
            out["tools"] = await self._probe(
                ChatRequest(
                    messages=[{"role": "user", "content": "What is the weather in Paris right now? Use the tool."}],
                    max_tokens=128,
                    tools=[WEATHER_TOOL],
                ),
                lambda r: (
                    bool(r.tool_calls),
                    "called " + ",".join(_tool_names(r.tool_calls)) if r.tool_calls else "answered without a tool call",
                ),
            )
        return out

    async def _probe(self, request: ChatRequest, judge: Callable[[ChatResult], tuple[bool, str]]) -> CapabilityProbe:
        try:
            res = await self.chat(request, timeout_s=self.opts.probe_timeout_s)
        except BackendStatusError as exc:
            if 400 <= exc.status < 500:
                return CapabilityProbe(confirmed=False, detail=f"refused: HTTP {exc.status}")
            return CapabilityProbe(confirmed=None, detail=f"HTTP {exc.status}")
        except BackendError as exc:
            return CapabilityProbe(confirmed=None, detail=f"{type(exc).__name__}"[:200])
        ok, detail = judge(res)
        return CapabilityProbe(confirmed=ok, detail=detail)

    async def _report(
        self, model: ModelUnderTest, phase: Any, done: int, total: int, current: str | None, eta: float | None
    ) -> None:
        if self.progress is None:
            return
        try:
            await self.progress(
                ProgressEvent(
                    model=model.name,
                    backend=model.backend,
                    phase=phase,
                    done=done,
                    total=total,
                    current=current,
                    eta_s=round(eta, 1) if eta is not None else None,
                )
            )
        except Exception:  # progress is best effort; profiling goes on
            log.warning("progress callback failed", exc_info=True)


def _status(outcomes: list[PromptOutcome], warm_error: str | None) -> Literal["ok", "partial", "failed"]:
    if warm_error is not None or not any(o.status == "ok" for o in outcomes):
        return "failed"
    return "ok" if all(o.status == "ok" for o in outcomes) else "partial"


def _categories(suite: Suite, outcomes: list[PromptOutcome]) -> dict[str, CategoryResult]:
    out: dict[str, CategoryResult] = {}
    for cat in suite.categories:
        mine = [o for o in outcomes if o.category == cat]
        graded = [o for o in mine if o.status == "ok" and o.score is not None]
        out[cat] = CategoryResult(
            score=round(statistics.mean(o.score for o in graded if o.score is not None), 4) if graded else None,
            n_prompts=len(graded),
            total=len(mine),
            errors=sum(o.status == "error" for o in mine),
            timeouts=sum(o.status == "timeout" for o in mine),
            skipped=sum(o.status == "skipped" for o in mine),
            grader=graders_used(o.grader or "" for o in graded) or None,
        )
    return out


def _tool_names(calls: list[dict[str, Any]]) -> list[str]:
    return [str((c.get("function") or {}).get("name", "?")) for c in calls]


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


RED_PNG_B64 = base64.b64encode(_png(16, 16, (220, 20, 20))).decode()
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
