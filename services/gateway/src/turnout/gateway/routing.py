"""Where a request goes: its features for the scorer, the ``route`` RPC, and the local fallback.

The virtual model (or no model) means "route for me"; any other name goes to the scorer as
``requested_model``, which the scorer honours. When the scorer does not answer in time, is
not alive, or fails, the gateway routes by :mod:`turnout.gateway.fallback` over its last
catalog snapshot and counts it (``turnout_gateway_fallback_routes_total{reason}``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from turnout.common.errors import RemoteError, RpcTimeout, RpcUnavailable
from turnout.common.rpc import ROUTE_V1, RpcClient
from turnout.common.rpc.client import PendingCall
from turnout.common.schemas.route import (
    CandidateV1,
    PromptAnalysisV1,
    RequestKind,
    RouteReplyV1,
    RouteRequestV1,
)
from turnout.gateway.catalog import CatalogView
from turnout.gateway.errors import InvalidRequest, ModelNotFound
from turnout.gateway.fallback import fallback_candidates
from turnout.gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

Json = dict[str, Any]
QUALITY_HEADER = "x-turnout-quality"


@dataclass(slots=True)
class Decision:
    """Where a request goes: the ranked candidates, who decided, and how long it took."""

    candidates: list[CandidateV1]
    source: str
    """scorer | fallback (virtual model, local rules) | direct (named model, resolved locally)"""
    route_ms: float
    analysis: PromptAnalysisV1 | None = None
    request: RouteRequestV1 | None = None
    fallback_reason: str | None = None


# --- features ----------------------------------------------------------------------------------


def _text_of(content: Any) -> tuple[str, bool]:
    """Text of OpenAI message content, and whether it holds an image."""
    if content is None:
        return "", False
    if isinstance(content, str):
        return content, False
    texts = []
    image = False
    for part in content:
        if isinstance(part, dict):
            kind = part.get("type")
            if kind in ("text", "input_text"):
                texts.append(str(part.get("text") or ""))
            elif kind in ("image_url", "input_image", "image"):
                image = True
    return "\n".join(texts), image


def chat_features(body: Json, max_chars: int) -> Json:
    """A chat body's routing features: the last user text, sizes, images, tools, JSON mode."""
    messages: list[Json] = body.get("messages") or []
    last_user = ""
    system_chars = 0
    total_chars = 0
    images = False
    for msg in messages:
        text, has_image = _text_of(msg.get("content"))
        images = images or has_image
        total_chars += len(text)
        role = msg.get("role")
        if role == "user":
            last_user = text
        elif role in ("system", "developer"):
            system_chars += len(text)
    tools = body.get("tools")
    has_tools = bool(tools) and body.get("tool_choice") != "none"
    tool_chars = len(str(tools)) if has_tools else 0
    rf = body.get("response_format")
    json_mode = isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    return {
        "kind": RequestKind.CHAT,
        "text": last_user[-max_chars:] if len(last_user) > max_chars else last_user,
        "system_chars": system_chars,
        "n_messages": len(messages),
        "has_images": images,
        "has_tools": has_tools,
        "json_mode": json_mode,
        "est_prompt_tokens": (total_chars + tool_chars) // 4 + 4 * len(messages),
        "max_tokens": max_tokens,
    }


def completion_features(body: Json, max_chars: int) -> Json:
    """A completion body's routing features (its prompt as the text)."""
    prompt = body.get("prompt") or ""
    if isinstance(prompt, list):
        prompt = "\n".join(p for p in prompt if isinstance(p, str))
    return {
        "kind": RequestKind.COMPLETION,
        "text": prompt[-max_chars:],
        "est_prompt_tokens": len(prompt) // 4,
        "max_tokens": body.get("max_tokens"),
    }


def embedding_features(body: Json, max_chars: int) -> Json:
    """An embeddings body's routing features (the first input as the text)."""
    inputs = body.get("input") or ""
    texts = [inputs] if isinstance(inputs, str) else [t for t in inputs if isinstance(t, str)]
    chars = sum(len(t) for t in texts) if texts else len(inputs)
    if isinstance(inputs, list) and any(not isinstance(t, str) for t in inputs):  # token ids
        n_inputs, est_tokens, tokens = _token_inputs(inputs), _token_count(inputs), True
    else:
        n_inputs, est_tokens, tokens = max(len(texts), 1), chars // 4, False
    return {
        "kind": RequestKind.EMBEDDING,
        "text": (texts[0] if texts else "")[:max_chars],
        "n_messages": n_inputs,
        "est_prompt_tokens": est_tokens,
        "token_input": tokens,
    }


def _token_inputs(inputs: list[Any]) -> int:
    """How many inputs an ``input`` of token ids holds: one array of ids is one input."""
    return len(inputs) if any(isinstance(t, list) for t in inputs) else 1


def _token_count(inputs: list[Any]) -> int:
    """Token ids in an embeddings ``input`` given as ids: one array of ids, or arrays of them."""
    return sum(len(t) if isinstance(t, list) else 1 for t in inputs)


def parse_quality(header: str | None, body: Json) -> float | None:
    """``X-Turnout-Quality`` header, else ``turnout: {quality}`` in the body; 0 = fastest, 1 = best."""
    raw: Any = header
    param = "X-Turnout-Quality"
    if raw is None:
        opts = body.get("turnout")
        if opts is None:
            return None
        if not isinstance(opts, dict):
            raise InvalidRequest("'turnout' must be an object", param="turnout", code="invalid_value")
        raw = opts.get("quality")
        param = "turnout.quality"
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise InvalidRequest("quality must be a number between 0 and 1", param=param, code="invalid_value")
    try:
        q = float(raw)
    except ValueError:
        raise InvalidRequest("quality must be a number between 0 and 1", param=param, code="invalid_value") from None
    if not 0.0 <= q <= 1.0:
        raise InvalidRequest("quality must be a number between 0 and 1", param=param, code="invalid_value")
    return q


# --- the router --------------------------------------------------------------------------------


class Router:
    """Asks the scorer for a decision within the route timeout, falling back to local rules."""

    def __init__(
        self,
        rpc: RpcClient,
        catalog: CatalogView,
        metrics: GatewayMetrics,
        *,
        virtual_model: str,
        timeout_s: float,
        gateway_id: str | None = None,
    ) -> None:
        self._rpc = rpc
        self._catalog = catalog
        self._metrics = metrics
        self.virtual_model = virtual_model
        self._timeout_s = timeout_s
        self.gateway_id = gateway_id
        """This process's in-flight counts' id, sent in each route request (``RouteRequestV1.gateway_id``)."""

    def requested(self, model: Any) -> str | None:
        """The model a client named, or ``None`` for the virtual model or none."""
        return None if model is None or model == "" or model == self.virtual_model else str(model)

    async def route(
        self, features: Json, *, model: Any, stream: bool, client: str | None, quality: float | None
    ) -> Decision:
        """The decision for a request with these features."""
        return await self.begin(features, model=model, stream=stream, client=client, quality=quality).decision()

    def begin(
        self, features: Json, *, model: Any, stream: bool, client: str | None, quality: float | None
    ) -> PendingRoute:
        """Ask the scorer now and return at once: the caller does the rest of its set-up while the
        scorer decides, then awaits :meth:`PendingRoute.decision`."""
        start = time.perf_counter()
        features["requested_model"] = self.requested(model)
        features["stream"] = stream
        features["client"] = client
        features["quality"] = quality
        features["gateway_id"] = self.gateway_id
        try:
            req = RouteRequestV1.model_validate(features)  # pydantic-core: faster than model_construct
        except ValidationError as exc:  # raised where the decision is awaited, as before
            return PendingRoute(self, None, None, start, exc)
        return PendingRoute(self, req, self._rpc.send(ROUTE_V1, req, timeout=self._timeout_s), start)


class PendingRoute:
    """A decision on its way (:meth:`Router.begin`)."""

    __slots__ = ("_call", "_error", "_router", "_start", "req")

    def __init__(
        self,
        router: Router,
        req: RouteRequestV1 | None,
        call: PendingCall[RouteReplyV1] | None,
        start: float,
        error: Exception | None = None,
    ) -> None:
        self._router = router
        self.req = req
        self._call = call
        self._start = start
        self._error = error

    def cancel(self) -> None:
        """The request goes no further: give the scorer's reply up."""
        if self._call is not None:
            self._call.cancel()

    async def decision(self) -> Decision:
        """The scorer's decision, or the local fallback's when it does not answer in time, is not
        alive or fails."""
        if self._error is not None:
            raise self._error
        assert self.req is not None and self._call is not None
        req, router, start = self.req, self._router, self._start
        reason: str
        try:
            reply = await self._call.reply()
        except RpcTimeout:
            reason = "timeout"
        except RpcUnavailable:
            reason = "unavailable"
        except RemoteError as exc:
            reason = "remote_error"
            log.warning("scorer failed (%s): %s", exc.type_name, exc)
        else:
            if reply.candidates:
                ms = (time.perf_counter() - start) * 1000
                return Decision(reply.candidates, "scorer", ms, reply.analysis, req)
            if reply.unservable_code == "model_not_found":
                raise ModelNotFound(
                    reply.unservable or f"The model '{req.requested_model}' does not exist", param="model"
                )
            if reply.unservable:
                raise InvalidRequest(reply.unservable, code="unservable")
            reason = "no_candidates"  # the scorer's catalog has nothing routable yet
        router._metrics.fallback_routes.labels(reason).inc()
        candidates = fallback_candidates(await router._catalog.models(), req, router._catalog.hidden)
        source = "fallback" if req.requested_model is None else "direct"
        ms = (time.perf_counter() - start) * 1000
        return Decision(candidates, source, ms, None, req, fallback_reason=reason)
