"""A simulated GPU for an agent watching a ``tools/fakefleet`` Ollama listener (dev stack, e2e
tests): the listener's ``vram_total_bytes`` (``GET /_fleet/config``) is the GPU's memory, and
what ``/api/ps`` lists is what is used. The agent then publishes the same shape of state for a
simulated host as for a real one, so VRAM management can be exercised without a GPU.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from turnout.common.schemas.fleet import GpuStateV1
from turnout.gpu_agent.errors import GpuReadError

Fetch = Callable[[str], Any]


def fetch_json(url: str, *, timeout_s: float = 2.0) -> Any:
    """GET ``url`` as JSON; failures are ``GpuReadError``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return json.loads(r.read())
    except (OSError, ValueError) as exc:
        raise GpuReadError(f"GET {url}: {exc}") from exc


class SimulatedReader:
    """The GPUs the simulated fleet gives this agent's backend."""

    source = "simulated"
    vendor = "simulated"

    def __init__(self, backend_url: str, *, fetch: Fetch = fetch_json) -> None:
        self._url = backend_url.rstrip("/")
        self._port = urlsplit(self._url).port
        self._fetch = fetch

    def read(self) -> list[GpuStateV1]:
        """This backend's simulated GPU from the fleet's config and what it has loaded."""
        config = self._fetch(f"{self._url}/_fleet/config")
        listener = next(
            (li for li in config.get("listeners", []) if li.get("port") == self._port),
            None,
        )
        if listener is None:
            raise GpuReadError(f"no fakefleet listener on port {self._port}")
        total = listener.get("vram_total_bytes")
        if not total:
            return []  # unlimited: nothing to budget
        ps = self._fetch(f"{self._url}/api/ps")
        used = sum(int(m.get("size_vram") or 0) for m in ps.get("models", []))
        return [
            GpuStateV1(
                index=0,
                uuid=f"sim-{listener.get('name', self._port)}",
                name=f"simulated GPU ({listener.get('name', '?')})",
                vendor="simulated",
                memory_total_bytes=int(total),
                memory_used_bytes=min(used, int(total)),
                memory_free_bytes=max(int(total) - used, 0),
            )
        ]
