"""Operator rules: a YAML file, validated with pydantic, hot-reloaded.

.. code-block:: yaml

    aliases:                      # requested name -> catalog model; exact, or /regex/ (full match)
      gpt-4: llama3.3:70b
      '/gpt-3\\.5-turbo(-\\d+)?/': llama3.1:8b   # single quotes: YAML keeps backslashes
      '/local-(.+)/': '\\1'          # capture groups expand into the target
    clients:                      # first match wins; every field given must match (key and ip together too)
      - match: {ip: 10.1.0.0/16}
        backends: [gpu-box-2]     # only replicas on these backends
        quality: 0.2              # default quality preference for this client
      - match: {key: key-3f2a9c01d4}    # an API key id (the gateway's key-<sha256 prefix>)
        model: llama3.3:70b       # always this model (unless the request names one)
      - match: {key: key-77aa01b2c3, ip: 192.168.0.0/16}   # this key, from this network only
        quality: 0.9
    allow: ["llama*", "qwen*"]    # fnmatch globs on model names; empty = everything
    block: ["*:405b"]
    tiers: {"qwen2.5:14b": medium}  # tier overrides for the tiers policy
    pins: {coding: qwen2.5-coder:32b}  # ranked first for this category when it passes the filters

Reloading: :meth:`RulesStore.maybe_reload` compares the file's mtime and size (cheap; the
scorer polls it every ``poll_s``) and :meth:`RulesStore.reload` reloads on demand
(``POST /admin/reload``). A file that does not parse or validate is logged and the previous
rules stay in force; a missing file means no rules.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from turnout.common.backends.names import untagged_match
from turnout.scorer.catalog import ModelTable
from turnout.scorer.errors import RulesError
from turnout.scorer.filters import Constraints
from turnout.scorer.scoring_config import TIERS

log = logging.getLogger(__name__)

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientMatch(BaseModel):
    """Which clients a client rule applies to: API key id, client string or address/network."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = Field(default=None, description="API key id")
    client: str | None = Field(default=None, description="exact client string")
    ip: str | None = Field(default=None, description="an address or a CIDR network")

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str | None) -> str | None:
        if v is not None:
            ipaddress.ip_network(v, strict=False)
        return v

    @model_validator(mode="after")
    def _some(self) -> ClientMatch:
        if self.key is None and self.client is None and self.ip is None:
            raise ValueError("a client match needs at least one of key, client, ip")
        return self


class ClientRuleModel(BaseModel):
    """A client rule as written: its match and the backends, model or quality it imposes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: ClientMatch
    backends: list[str] | None = None
    model: str | None = None
    quality: float | None = Field(default=None, ge=0.0, le=1.0)


class RulesFile(BaseModel):
    """The operator's rules file: aliases, client rules, allow and block lists, tiers, pins."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aliases: dict[str, str] = Field(default_factory=dict)
    clients: list[ClientRuleModel] = Field(default_factory=list)
    allow: list[str] = Field(default_factory=list)
    block: list[str] = Field(default_factory=list)
    tiers: dict[str, str] = Field(default_factory=dict)
    pins: dict[str, str] = Field(default_factory=dict)

    @field_validator("aliases")
    @classmethod
    def _regexes(cls, v: dict[str, str]) -> dict[str, str]:
        for pattern in v:
            if _is_regex(pattern):
                try:
                    re.compile(pattern[1:-1])
                except re.error as exc:
                    raise ValueError(f"alias {pattern}: {exc}") from exc
        return v

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: dict[str, str]) -> dict[str, str]:
        for model, tier in v.items():
            if tier not in TIERS:
                raise ValueError(f"tier of {model}: {tier!r} is not one of {', '.join(TIERS)}")
        return v


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text:
        return None
    try:
        return ipaddress.ip_address(text.removeprefix("ip:"))
    except ValueError:
        return None


def _is_regex(s: str) -> bool:
    return len(s) >= 2 and s.startswith("/") and s.endswith("/")


@dataclass(frozen=True, slots=True)
class ClientRule:
    """A compiled client rule."""

    key: str | None
    client: str | None
    network: IpNetwork | None
    backends: frozenset[str] | None
    model: str | None
    quality: float | None

    def matches(self, client: str | None, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        """Every field the rule gives must match: the key id, the exact client, the network."""
        if self.key is not None and client != self.key and client != f"key:{self.key}":
            return False
        if self.client is not None and client != self.client:
            return False
        return self.network is None or (ip is not None and ip in self.network)


@dataclass(frozen=True, slots=True)
class Rules:
    """Compiled rules; immutable, swapped whole on reload."""

    exact: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    patterns: tuple[tuple[re.Pattern[str], str], ...] = ()
    clients: tuple[ClientRule, ...] = ()
    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    tiers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    pins: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    version: str = "none"
    _masks: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = field(default_factory=dict, compare=False)

    @classmethod
    def compile(cls, f: RulesFile, version: str = "") -> Rules:
        """Compile a rules file (regex aliases, networks) for the hot path."""
        exact = {k: v for k, v in f.aliases.items() if not _is_regex(k)}
        patterns = tuple((re.compile(k[1:-1]), v) for k, v in f.aliases.items() if _is_regex(k))
        clients = tuple(
            ClientRule(
                key=c.match.key,
                client=c.match.client,
                network=ipaddress.ip_network(c.match.ip, strict=False) if c.match.ip else None,
                backends=frozenset(c.backends) if c.backends is not None else None,
                model=c.model,
                quality=c.quality,
            )
            for c in f.clients
        )
        return cls(
            exact=MappingProxyType(exact),
            patterns=patterns,
            clients=clients,
            allow=tuple(f.allow),
            block=tuple(f.block),
            tiers=MappingProxyType(dict(f.tiers)),
            pins=MappingProxyType(dict(f.pins)),
            version=version or hashlib.blake2b(f.model_dump_json().encode(), digest_size=6).hexdigest(),
        )

    @classmethod
    def parse(cls, text: str, version: str = "") -> Rules:
        """YAML text → rules; raises :class:`RulesError` (a ``ValueError``) with a readable message when invalid."""
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise RulesError(f"rules file is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise RulesError("rules file must be a mapping")
        try:
            f = RulesFile.model_validate(data)
        except ValidationError as exc:
            raise RulesError(f"invalid rules: {exc}") from exc
        return cls.compile(f, version or hashlib.blake2b(text.encode(), digest_size=6).hexdigest())

    def with_default_aliases(self, aliases: Mapping[str, str]) -> Rules:
        """These rules plus aliases from settings (the file's own aliases win)."""
        if not aliases:
            return self
        exact = {k: v for k, v in aliases.items() if not _is_regex(k)}
        extra = tuple((re.compile(k[1:-1]), v) for k, v in aliases.items() if _is_regex(k))
        return replace(
            self,
            exact=MappingProxyType({**exact, **self.exact}),
            patterns=self.patterns + extra,
            _masks={},
        )

    # --- lookups (hot path) ----------------------------------------------------------------

    def resolve_alias(self, name: str) -> str | None:
        """The model an alias names (exact first, then ``/regex/`` aliases), or ``None``."""
        target = self.exact.get(name)
        if target is not None:
            return target
        for rx, tmpl in self.patterns:
            m = rx.fullmatch(name)
            if m is not None:
                return m.expand(tmpl)
        return None

    def client_rule(self, client: str | None, client_ip: str | None = None) -> ClientRule | None:
        """The first rule matching the client (key id or address) and its address. The gateway
        sends both: with API keys set, ``client`` is the key id and ``client_ip`` the address."""
        if (not client and not client_ip) or not self.clients:
            return None
        ip = _address(client_ip) or _address(client)
        for rule in self.clients:
            if rule.matches(client, ip):
                return rule
        return None

    def is_allowed(self, name: str) -> bool:
        """Whether ``name`` passes the block list and, when there is one, the allow list."""
        if any(fnmatch.fnmatchcase(name, g) for g in self.block):
            return False
        return not self.allow or any(fnmatch.fnmatchcase(name, g) for g in self.allow)

    def masks(self, table: ModelTable) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(allowed, blocked) masks over a table, cached per table version."""
        hit = self._masks.get(table.version)
        if hit is not None and (hit[0] is None or hit[0].shape[0] == table.size):
            return hit
        names = [s.name for s in table.specs]
        allowed = np.array([any(fnmatch.fnmatchcase(n, g) for g in self.allow) for n in names]) if self.allow else None
        blocked = np.array([any(fnmatch.fnmatchcase(n, g) for g in self.block) for n in names]) if self.block else None
        if len(self._masks) > 8:
            self._masks.clear()
        self._masks[table.version] = (allowed, blocked)
        return allowed, blocked

    def constraints(
        self,
        requested: str | None,
        client: str | None,
        category: str,
        table: ModelTable,
        client_ip: str | None = None,
    ) -> Constraints:
        """What the rules impose on one request; ``requested`` is a concrete name or None (route for me)."""
        notes: list[str] = []
        how = ""
        rule = self.client_rule(client, client_ip)
        if requested is None and rule is not None and rule.model is not None:
            requested, how = rule.model, f"client rule: always {rule.model}"
        if requested is not None and requested not in table.index:
            target = self.resolve_alias(requested)
            if target is not None:
                how = f"alias '{requested}' -> {target}"
                requested = target
            elif (tagged := untagged_match(requested, table.index)) is not None:
                how = f"'{requested}' is '{tagged}'"
                requested = tagged
        elif requested is not None and not how:
            how = "requested model"
        if requested is not None and not self.is_allowed(requested):
            notes.append(f"requested model {requested} is outside the allow/block lists (honoured: named explicitly)")
        allowed, blocked = self.masks(table)
        if rule is not None and rule.backends is not None:
            notes.append("client rule: backends " + ", ".join(sorted(rule.backends)))
        return Constraints(
            requested=requested,
            requested_how=how,
            pinned=self.pins.get(category),
            allowed=allowed,
            blocked=blocked,
            backends=rule.backends if rule is not None else None,
            quality=rule.quality if rule is not None else None,
            notes=tuple(notes),
        )


class RulesStore:
    """The current rules from a file, reloaded when it changes (mtime poll) or on demand."""

    def __init__(
        self, path: Path | None, *, poll_s: float = 2.0, default_aliases: Mapping[str, str] | None = None
    ) -> None:
        self.path = path
        self.poll_s = poll_s
        self._defaults = dict(default_aliases or {})
        self.current = Rules().with_default_aliases(self._defaults)
        self.last_error: str | None = None
        self.reloads = 0
        self._stamp: tuple[float, int] | None = None
        if path is not None:
            self.reload()

    def _stat(self) -> tuple[float, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime, st.st_size)

    def reload(self) -> bool:
        """Load the file now; on any error keep the previous rules, log, and return False."""
        if self.path is None:
            return True
        stamp = self._stat()
        self._stamp = stamp
        if stamp is None:
            if self.current.version != "none":
                log.warning("rules file %s is gone: running without rules", self.path)
            self.current = Rules().with_default_aliases(self._defaults)
            self.last_error = None
            return True
        try:
            text = self.path.read_text()
            rules = Rules.parse(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            self.last_error = str(exc)
            log.error("rules file %s rejected, keeping rules %s: %s", self.path, self.current.version, exc)
            return False
        self.current = rules.with_default_aliases(self._defaults)
        self.last_error = None
        self.reloads += 1
        log.info("rules %s loaded from %s", rules.version, self.path)
        return True

    def maybe_reload(self) -> bool:
        """Reload when the file's mtime or size changed; True when it was reloaded successfully."""
        if self.path is None or self._stat() == self._stamp:
            return False
        return self.reload()

    async def watch(self) -> None:
        """Poll the file every ``poll_s`` (run as a task; cancel to stop)."""
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                self.maybe_reload()
            except Exception:  # never let the watcher die
                log.exception("rules watcher failed")
