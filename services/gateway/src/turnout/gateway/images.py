"""Remote image URLs for backends that only take inline images (Ollama): fetched once per request
and inlined as ``data:`` URLs, with a size cap, a timeout, and no way in to private networks.

SSRF guard: every address a URL's host resolves to must be global (``ipaddress.is_global``:
not private, loopback, link-local, CGNAT, reserved or multicast; IPv4-mapped IPv6 addresses are
checked as IPv4) unless ``allow_private`` is set. Hostnames are checked in the connector's
resolver, so the address checked is the address connected to (no DNS rebinding between check
and connect); IP literals, which aiohttp never resolves, are checked before the request.
Redirects are followed by hand (at most ``max_redirects``), each hop checked the same way.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from pydantic import BaseModel, ConfigDict, Field

from turnout.gateway.errors import ImageRefused

Json = dict[str, Any]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ImageOptions(BaseModel):
    """Whether and how the gateway fetches image URLs for backends that need inline images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fetch_remote: bool = Field(default=True, description="Fetch http(s) image URLs for Ollama backends")
    allow_private: bool = Field(
        default=False, description="Also fetch from private, loopback and link-local addresses (SSRF risk)"
    )
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Larger images are refused (400)")
    timeout_s: float = Field(default=10.0, gt=0, description="Whole fetch, redirects included")
    max_redirects: int = Field(default=3, ge=0, le=10)


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private: bool) -> bool:
    """Whether an image host's address may be fetched (public only, unless ``allow_private``)."""
    if allow_private:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class GuardedResolver(AbstractResolver):
    """Resolves with the default resolver, then refuses hosts with any non-global address."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve ``host`` and refuse it when any address is not allowed (SSRF guard)."""
        infos = await self._inner.resolve(host, port, family)
        for info in infos:
            if not address_allowed(ipaddress.ip_address(info["host"]), allow_private=self._allow_private):
                raise ImageRefused(f"image host {host} resolves to a non-public address ({info['host']})")
        return infos

    async def close(self) -> None:
        """Close the wrapped resolver."""
        await self._inner.close()


class ImageFetcher:
    """One session for image fetches (its own connector with the guarded resolver)."""

    def __init__(self, opts: ImageOptions) -> None:
        self.opts = opts
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_private=self.opts.allow_private), limit=16)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def close(self) -> None:
        """Close the fetcher's HTTP session."""
        if self._session is not None:
            await self._session.close()

    async def inline(self, body: Json) -> Json:
        """``body`` with every http(s) ``image_url`` replaced by a ``data:`` URL (a new dict)."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not has_remote_images(body):
            return body
        if not self.opts.fetch_remote:
            raise ImageRefused("this gateway does not fetch remote image URLs; send images as data: URLs")
        fetched: dict[str, str] = {}
        out = []
        for msg in messages:
            content = msg.get("content") if isinstance(msg, dict) else None
            if not isinstance(content, list):
                out.append(msg)
                continue
            parts = []
            for part in content:
                url = _remote_url(part)
                if url is None:
                    parts.append(part)
                    continue
                if url not in fetched:
                    fetched[url] = await self.fetch(url)
                parts.append({**part, "image_url": {**_image_obj(part), "url": fetched[url]}})
            out.append({**msg, "content": parts})
        return {**body, "messages": out}

    async def fetch(self, url: str) -> str:
        """The image at ``url`` as a ``data:`` URL; :class:`ImageRefused` (400) when it cannot be."""
        try:
            async with asyncio.timeout(self.opts.timeout_s):
                return await self._fetch(url)
        except TimeoutError:
            raise ImageRefused(f"image URL timed out after {self.opts.timeout_s:g} s: {_short(url)}") from None

    async def _fetch(self, url: str) -> str:
        for _ in range(self.opts.max_redirects + 1):
            self._check_url(url)
            try:
                async with self._client().get(url, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise ImageRefused(f"image URL answered HTTP {resp.status}: {_short(url)}")
                    mime = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    if not mime.startswith("image/"):
                        raise ImageRefused(f"image URL is not an image ({mime or 'no content type'}): {_short(url)}")
                    if resp.content_length is not None and resp.content_length > self.opts.max_bytes:
                        raise self._too_large(url)
                    data = bytearray()
                    async for chunk in resp.content.iter_chunked(64 * 1024):
                        data += chunk
                        if len(data) > self.opts.max_bytes:
                            raise self._too_large(url)
                    return f"data:{mime};base64,{base64.b64encode(bytes(data)).decode()}"
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, ImageRefused):
                    raise exc.os_error from None
                raise ImageRefused(f"image URL could not be fetched ({exc.os_error}): {_short(url)}") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise ImageRefused(f"image URL could not be fetched ({type(exc).__name__}): {_short(url)}") from None
        raise ImageRefused(f"image URL redirected more than {self.opts.max_redirects} times: {_short(url)}")

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageRefused(f"image URL must be http(s): {_short(url)}")
        try:
            ip = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        if not address_allowed(ip, allow_private=self.opts.allow_private):
            raise ImageRefused(f"image URL points to a non-public address ({ip})")

    def _too_large(self, url: str) -> ImageRefused:
        return ImageRefused(f"image is larger than {self.opts.max_bytes} bytes: {_short(url)}")


def has_remote_images(body: Json) -> bool:
    """Whether any message carries an image by http(s) URL."""
    for msg in body.get("messages") or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list) and any(_remote_url(p) is not None for p in content):
            return True
    return False


def _image_obj(part: Json) -> Json:
    image = part.get("image_url")
    return image if isinstance(image, dict) else {}


def _remote_url(part: Any) -> str | None:
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return None
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    return None


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:117] + "..."
