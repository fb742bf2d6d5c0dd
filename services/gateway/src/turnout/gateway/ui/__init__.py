"""The dashboard's pieces that are not routes: templates, the performance scatter (inline SVG,
drawn on the server), and the admin-key cookie.

No build step: Jinja2 templates and one small vanilla JS and CSS file, committed under
``templates/`` and ``static/``.

**The admin-key cookie.** A browser cannot put ``Authorization: Bearer`` on a page load or on an
``EventSource``. ``/ui/login`` stores the admin key in an ``HttpOnly``, ``SameSite=Strict``
cookie; :class:`AdminCookie` turns that cookie into the ``Authorization`` header of ``GET`` and
``HEAD`` requests to ``/ui`` and ``/admin`` that carry none, so the dashboard is protected by
exactly the admin API's own check, whatever it is. Only reads get the header: a cross-site form
can never reach an admin action through the cookie. A ``401`` on a dashboard page becomes a
redirect to the login page.
"""

from __future__ import annotations

import math
from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
COOKIE = "turnout_admin"

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d", "#475569")


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.filters["ms"] = lambda v: "–" if v is None else (f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms")
    env.filters["gib"] = lambda v: "–" if v is None else f"{v / 2**30:.1f} GiB"
    env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.0f}%"
    env.filters["num"] = lambda v, d=1: "–" if v is None else f"{v:.{d}f}"
    return env


def color_of(model: str, models: list[str]) -> str:
    return PALETTE[models.index(model) % len(PALETTE)] if model in models else PALETTE[-1]


def _short(v: float) -> str:
    return f"{v / 1000:.0f}k" if v >= 10_000 else f"{v:.0f}"


def scatter_svg(points: list[dict[str, Any]], *, width: int = 640, height: int = 300) -> str:
    """Time to first token (x, log scale) against tokens/s (y), one colour per model, with a
    legend. ``points``: dicts with ``model``, ``ttft_ms``, ``tokens_per_s`` (and ``request_id``)."""
    if not points:
        return (
            f'<svg class="scatter" viewBox="0 0 {width} 60" role="img" aria-label="no data">'
            '<text x="10" y="35">No finished streamed requests yet.</text></svg>'
        )
    left, right, top, bottom = 56, 170, 12, 40
    pw, ph = width - left - right, height - top - bottom
    xs = [max(p["ttft_ms"], 0.1) for p in points]
    ys = [p["tokens_per_s"] for p in points]
    x_lo, x_hi = math.log10(min(xs)), math.log10(max(xs))
    if x_hi - x_lo < 1:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5
    y_hi = max(ys) * 1.1 or 1.0

    def px(v: float) -> float:
        return left + (math.log10(max(v, 0.1)) - x_lo) / (x_hi - x_lo) * pw

    def py(v: float) -> float:
        return top + ph - v / y_hi * ph

    models = sorted({p["model"] for p in points})
    out = [
        f'<svg class="scatter" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="time to first token against tokens per second, per model">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>',
    ]
    for e in range(math.floor(x_lo), math.ceil(x_hi) + 1):
        for m in (1, 2, 5):  # 1-2-5 ticks on the log axis
            v = m * 10.0**e
            if x_lo <= math.log10(v) <= x_hi:
                x = px(v)
                label = f"{v / 1000:g} s" if v >= 1000 else f"{v:g} ms"
                out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" class="grid"/>')
                out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{label}</text>')
    for i in range(5):
        v = y_hi * i / 4
        y = py(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_short(v)}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">time to first token</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})" text-anchor="middle">'
               "tokens/s</text>")  # fmt: skip
    by_model: defaultdict[str, int] = defaultdict(int)
    for p in points:
        by_model[p["model"]] += 1
        c = color_of(p["model"], models)
        title = escape(f"{p['model']}: {p['ttft_ms']:.0f} ms, {p['tokens_per_s']:.1f} tok/s")
        out.append(
            f'<circle cx="{px(p["ttft_ms"]):.1f}" cy="{py(p["tokens_per_s"]):.1f}" r="4" fill="{c}" '
            f'fill-opacity="0.7" data-model="{escape(p["model"])}"><title>{title}</title></circle>'
        )
    for i, m in enumerate(models):
        y = top + 8 + i * 18
        out.append(f'<circle cx="{width - right + 14}" cy="{y}" r="5" fill="{color_of(m, models)}"/>')
        out.append(f'<text x="{width - right + 24}" y="{y + 4}">{escape(m)} ({by_model[m]})</text>')
    out.append("</svg>")
    return "".join(out)


def _cookie(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == COOKIE and v:
                    return unquote(v)
    return None


class AdminCookie:
    """Pure ASGI: the admin-key cookie as the ``Authorization`` header of dashboard reads."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith("/ui") or path.startswith("/admin")) or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers") or [])
        key = _cookie(scope)
        if key and not any(n == b"authorization" for n, _ in headers):
            scope = {**scope, "headers": [*headers, (b"authorization", f"Bearer {key}".encode("latin-1"))]}
        if not path.startswith("/ui") or path.startswith("/ui/login") or path.startswith("/ui/static"):
            await self.app(scope, receive, send)
            return
        redirected = False

        async def to_login(message: Message) -> None:
            nonlocal redirected
            if message["type"] == "http.response.start" and message["status"] == 401:
                redirected = True
                await send({"type": "http.response.start", "status": 303, "headers": [(b"location", b"/ui/login")]})
                await send({"type": "http.response.body", "body": b""})
                return
            if not redirected:
                await send(message)

        await self.app(scope, receive, to_login)
