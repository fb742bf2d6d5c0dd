"""Test controls under ``/_fleet/*``, served on every listener (any one controls the whole fleet).

* ``POST /_fleet/fail`` ``{"listener"?: name, "model"?: name, "mode": "500"|"error"|"hang"|"close"|"cut"|"ok",
  "status"?: 500, "times"?: n}`` — make a listener (every endpoint) or a model (its inference
  requests, on one listener or on all) fail until ``mode: "ok"``, or for the next ``times`` requests.
* ``GET /_fleet/stats`` — per listener: inference requests and errors by model, requests by path,
  loads/unloads, what is loaded and the VRAM used; plus the failures in force.
* ``POST /_fleet/reset`` — forget failures, counters and residency.
* ``GET /_fleet/config`` — listeners with their dialect, port and models.
"""

from __future__ import annotations

from aiohttp import web

from turnout.fakefleet.state import FAIL_MODES, Failure, FleetState
from turnout.fakefleet.wire import json_response, read_json


class AdminApi:
    def __init__(self, fleet: FleetState) -> None:
        self.fleet = fleet

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/_fleet/fail", self.fail),
            web.get("/_fleet/stats", self.stats),
            web.post("/_fleet/reset", self.reset),
            web.get("/_fleet/config", self.config),
        ]

    async def fail(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        listener, model = body.get("listener"), body.get("model")
        mode = str(body.get("mode", "500"))
        problems = []
        if mode not in FAIL_MODES:
            problems.append(f"mode must be one of {list(FAIL_MODES)}")
        if listener is None and model is None:
            problems.append("name a listener, a model, or both")
        if listener is not None and listener not in self.fleet.listeners:
            problems.append(f"no listener {listener!r}; listeners: {sorted(self.fleet.listeners)}")
        known = {m.name for li in self.fleet.listeners.values() for m in li.spec.models}
        if model is not None and model not in known:
            problems.append(f"no model {model!r}; models: {sorted(known)}")
        status, times = body.get("status", 500), body.get("times")
        if not isinstance(status, int) or not 400 <= status <= 599:
            problems.append("status must be an HTTP error status (400-599)")
        if times is not None and (not isinstance(times, int) or times < 1):
            problems.append("times must be a positive integer")
        if problems:
            return json_response({"error": "; ".join(problems)}, status=400)
        self.fleet.failures.set(listener, model, Failure(mode=mode, status=status, remaining=times))
        return json_response({"ok": True, "failures": self.fleet.failures.describe()})

    async def stats(self, _: web.Request) -> web.Response:
        return json_response(
            {
                "listeners": {name: li.stats() for name, li in self.fleet.listeners.items()},
                "failures": self.fleet.failures.describe(),
            }
        )

    async def reset(self, _: web.Request) -> web.Response:
        self.fleet.reset()
        return json_response({"ok": True})

    async def config(self, _: web.Request) -> web.Response:
        return json_response(
            {
                "time_scale": self.fleet.time_scale,
                "listeners": [
                    {
                        "name": li.spec.name,
                        "dialect": str(li.spec.dialect),
                        "port": li.port,
                        "host_label": li.spec.host_label,
                        "vram_total_bytes": li.spec.vram_total_bytes,
                        "models": [m.model_dump(mode="json") for m in li.spec.models],
                    }
                    for li in self.fleet.listeners.values()
                ],
            }
        )
