"""Engine and session factory (one per process, built in the lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncpg import PostgresError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

DB_UNAVAILABLE: tuple[type[BaseException], ...] = (SQLAlchemyError, PostgresError, OSError, TimeoutError)
"""What a database call raises when Postgres is down, restarting or slow; anything else is a bug.

``OSError`` covers a refused or reset connection (asyncpg raises it unwrapped while connecting),
``PostgresError`` what asyncpg raises before SQLAlchemy wraps it (``CannotConnectNowError`` while
Postgres starts), ``TimeoutError`` a call under ``asyncio.timeout``."""


def make_engine(database_url: str, *, connect_timeout_s: float = 5.0, pool_size: int = 5) -> AsyncEngine:
    """An asyncpg engine with a bounded pool, pre-ping and connect/command timeouts."""
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"timeout": connect_timeout_s, "command_timeout": 30},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def engine_scope(database_url: str, **kw: float | int) -> AsyncIterator[AsyncEngine]:
    """An engine for the duration of the context, disposed at the end."""
    engine = make_engine(database_url, **kw)  # type: ignore[arg-type]
    try:
        yield engine
    finally:
        await engine.dispose()
