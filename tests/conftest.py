"""Shared fixtures: a private Redis server and a private database per run, a key prefix per test.

Isolation: Redis is always our own ``redis-server`` on a free port (nothing else uses it);
Postgres is the server at ``TURNOUT_TEST_PG_ADMIN_URL`` (default: the local one on 5432 if it
answers, else a private cluster started from the system binaries) with a database created
for this run and dropped at the end. Nothing the run did not create is flushed or dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from turnout.common.db.migrate import upgrade
from turnout.common.keys import Keys
from turnout.devstack.infra import Instance, postgres_answers, start_postgres, start_redis

REPO = Path(__file__).resolve().parents[1]
RUN_DIR = REPO / ".run" / "test"
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by directory, so that ``-m integration`` / ``-m e2e`` select whole levels even
    where a module forgot its ``pytestmark``."""
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(TESTS).parts
        if parts and parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
        elif parts and parts[0].startswith("e2e"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    inst = start_redis(RUN_DIR, ephemeral=True)
    try:
        yield inst.url
    finally:
        inst.stop()


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("TURNOUT_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    inst: Instance | None = None
    if not postgres_answers(url) or not asyncio.run(_can_create_db(url)):
        inst = start_postgres(RUN_DIR, ephemeral=True)
        url = inst.url
    try:
        yield url
    finally:
        if inst is not None:
            inst.stop()


async def _can_create_db(admin_url: str) -> bool:
    try:
        conn = await asyncpg.connect(admin_url, timeout=3)
    except Exception:
        return False
    try:
        return bool(await conn.fetchval("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"))
    finally:
        await conn.close()


@contextlib.contextmanager
def migrated_database(pg_admin_url: str, tag: str = "test") -> Iterator[str]:
    """A database created for the caller, migrated to head, dropped afterwards (asyncpg
    SQLAlchemy URL). Tests whose code reads a whole table (discovery, catalog loads, the learned
    index) take one of their own rather than the run's shared one."""
    name = f"sy_{tag}_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(pg_admin_url, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    base = pg_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    try:
        asyncio.run(upgrade(url))
        yield url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database for this run, migrated to head (asyncpg SQLAlchemy URL)."""
    with migrated_database(pg_admin_url) as url:
        yield url


@pytest.fixture
def db(pg_admin_url: str) -> Iterator[str]:
    """A database of this test's own (see :func:`migrated_database`)."""
    with migrated_database(pg_admin_url, "own") as url:
        yield url


@pytest.fixture
def key_prefix() -> str:
    return f"sytest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(key_prefix: str) -> Keys:
    return Keys(key_prefix)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def base_env(redis_url: str, database_url: str, key_prefix: str) -> dict[str, str]:
    """Environment for a service process under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
    env.update(
        TURNOUT_ENVIRONMENT="test",
        TURNOUT_REDIS_URL=redis_url,
        TURNOUT_DATABASE_URL=database_url,
        TURNOUT_KEY_PREFIX=key_prefix,
        TURNOUT_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    return env
