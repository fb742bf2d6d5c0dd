"""Paired sampling: a configurable, cost-bounded share of live chat requests is also answered by
a second model and the two answers are judged pairwise — RouteLLM's preference data, from the
deployment's own traffic, for ``turnout.scorer.router_train``. Off by default.

After a successful non-streamed chat completion (never on the response path: a background
task), with probability ``share`` and while the per-minute budget (``max_per_minute``, a token
bucket) lasts: the same messages go to the reply's first other candidate of a different model
(``max_tokens`` capped), then both answers, in random order, to the judge (an OpenAI-compatible
model) which names the better one or a tie. Two feedback events follow on the request's
response id — the routed model's score and the second model's (+1 better / −1 worse / 0 tie),
each naming its model — and reach the learned index and the router prior's training like user
feedback. Any failure drops the sample (counted); nothing is retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field

from turnout.common.schemas.events import FeedbackEventV1
from turnout.common.schemas.route import CandidateV1, RequestKind
from turnout.gateway.forwarding import Exchange, Forwarder
from turnout.gateway.routing import Decision

log = logging.getLogger(__name__)

Json = dict[str, Any]
CLIENT = "paired-sampling"
JUDGE_PROMPT = (
    "You compare two answers to the same user request. Reply with JSON only: "
    '{"better": "A" | "B" | "tie"}. Judge correctness first, then helpfulness; ignore length.'
)


class PairedSamplingOptions(BaseModel):
    """How much traffic is also sent to a second model and judged, and which judge."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    share: float = Field(default=0.01, ge=0, le=1, description="Share of chat requests also sent to a second model")
    max_per_minute: float = Field(default=6.0, gt=0, description="Samples started per minute at most (token bucket)")
    max_tokens: int = Field(default=512, ge=1, description="Cap on the second model's answer")
    judge_base_url: str | None = Field(default=None, description="OpenAI-compatible base URL of the judge")
    judge_model: str = ""
    judge_api_key: str | None = None
    judge_timeout_s: float = Field(default=60.0, gt=0)
    max_in_flight: int = Field(default=4, ge=1)


class PairedSampler:
    """Starts paired samples in the background within the share and per-minute budget."""

    def __init__(
        self,
        opts: PairedSamplingOptions,
        forwarder: Forwarder,
        session: aiohttp.ClientSession,
        publish: Callable[[FeedbackEventV1], Awaitable[None]],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.opts = opts
        self._forwarder = forwarder
        self._session = session
        self._publish = publish
        self._rng = rng or random.Random()
        self._tokens = opts.max_per_minute
        self._refilled = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self.started = 0
        self.judged = 0
        self.failed = 0

    @property
    def active(self) -> bool:
        """Whether sampling is on and a judge is configured."""
        return self.opts.enabled and bool(self.opts.judge_base_url and self.opts.judge_model)

    def offer(self, ex: Exchange, answer: Json) -> bool:
        """Maybe start a sample for this finished request; True when one was started."""
        if not self.active or ex.kind is not RequestKind.CHAT or ex.stream or ex.chosen is None:
            return False
        if len(self._tasks) >= self.opts.max_in_flight or self._rng.random() >= self.opts.share:
            return False
        second = self._second(ex)
        if second is None or not self._take():
            return False
        self.started += 1
        task = asyncio.create_task(self._run(ex, answer, second), name="paired-sample")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def close(self) -> None:
        """Cancel the samples still running and wait for them."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _take(self) -> bool:
        now = time.monotonic()
        per_s = self.opts.max_per_minute / 60.0
        self._tokens = min(self.opts.max_per_minute, self._tokens + (now - self._refilled) * per_s)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    @staticmethod
    def _second(ex: Exchange) -> CandidateV1 | None:
        assert ex.chosen is not None
        for c in ex.decision.candidates if ex.decision is not None else []:
            if c.model != ex.chosen.model:
                return c
        return None

    async def _run(self, ex: Exchange, answer: Json, second: CandidateV1) -> None:
        assert ex.chosen is not None
        try:
            body = {
                **ex.body,
                "stream": False,
                "max_tokens": min(int(ex.body.get("max_tokens") or 10**9), self.opts.max_tokens),
            }
            other = Exchange(
                kind=RequestKind.CHAT,
                body=body,
                stream=False,
                request_id=f"paired-{uuid.uuid4().hex}",
                response_id=f"paired-{uuid.uuid4().hex}",
                client=CLIENT,
                requested_model=second.model,
            )
            other.decision = Decision([second], "paired", 0.0)
            try:
                data = await self._forwarder.complete(other)
            finally:
                self._forwarder.done(other)
            verdict = await self._judge(ex.body.get("messages") or [], _text(answer), _text(data))
            now = time.time()
            comment = f"paired sampling: {ex.chosen.model} vs {second.model}"
            for i, (model, score) in enumerate(((ex.chosen.model, verdict), (second.model, -verdict))):
                await self._publish(  # distinct times: the store de-duplicates on (response id, time, score)
                    FeedbackEventV1(
                        response_id=ex.response_id,
                        score=score,
                        comment=comment,
                        client=CLIENT,
                        ts=now + i * 1e-3,
                        model=model,
                    )
                )
            self.judged += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the task's boundary: a failed sample is dropped, never retried
            self.failed += 1
            log.warning("paired sample dropped (%s: %s)", type(exc).__name__, exc)

    async def _judge(self, messages: list[Any], first: str, second: str) -> float:
        """+1 when the routed model's answer is better, −1 when the second's, 0 for a tie."""
        swap = self._rng.random() < 0.5
        a, b = (second, first) if swap else (first, second)
        request = orjson.dumps(messages[-6:]).decode()[:8000]
        body = {
            "model": self.opts.judge_model,
            "messages": [
                {"role": "system", "content": JUDGE_PROMPT},
                {"role": "user", "content": f"Request (JSON messages): {request}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}"},
            ],
            "temperature": 0,
            "max_tokens": 20,
            "response_format": {"type": "json_object"},
        }
        headers = {"Content-Type": "application/json"}
        if self.opts.judge_api_key:
            headers["Authorization"] = f"Bearer {self.opts.judge_api_key}"
        url = str(self.opts.judge_base_url).rstrip("/") + "/chat/completions"
        async with asyncio.timeout(self.opts.judge_timeout_s):
            async with self._session.post(url, data=orjson.dumps(body), headers=headers) as resp:
                if resp.status != 200:
                    raise ValueError(f"judge answered HTTP {resp.status}")
                payload = orjson.loads(await resp.read())
        content = str(payload["choices"][0]["message"]["content"])
        start, end = content.find("{"), content.rfind("}")
        better = str(orjson.loads(content[start : end + 1]).get("better", "")).strip().upper() if start >= 0 else ""
        if better not in ("A", "B", "TIE"):
            raise ValueError(f"judge's answer out of vocabulary: {content[:80]!r}")
        if better == "TIE":
            return 0.0
        first_better = (better == "A") != swap
        return 1.0 if first_better else -1.0


def _text(answer: Json) -> str:
    try:
        return str(answer["choices"][0]["message"]["content"] or "")[:8000]
    except (KeyError, IndexError, TypeError):
        return ""
