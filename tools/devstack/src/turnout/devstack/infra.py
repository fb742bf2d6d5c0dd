"""Make Redis and PostgreSQL available: use running ones when they answer, else start private
instances from the system binaries (data under the repo's ignored ``.run/``, free ports),
installing ``redis-server`` / ``postgresql`` with apt-get when they are missing.

Used by ``make run`` (through the launcher) and by the test suite's fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import asyncpg


class InfraError(RuntimeError):
    """Redis or Postgres cannot be made available; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_port(host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise InfraError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        time.sleep(0.05)
    raise InfraError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def _log(msg: str) -> None:
    print(f"[devstack] {msg}", file=sys.stderr, flush=True)


# --- system packages ---------------------------------------------------------------------


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InfraError(
            f"{', '.join(packages)} not found and cannot be installed here (need root and apt-get). "
            f"Install {' and '.join(packages)} yourself, or point TURNOUT_REDIS_URL / TURNOUT_DATABASE_URL "
            "at running servers"
        )
    _log(f"installing {' '.join(packages)} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=900"]  # others may be running apt on the same machine
    subprocess.run(["apt-get", *lock, "update", "-qq"], check=False, env=env, stdout=subprocess.DEVNULL)
    r = subprocess.run(
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    if r.returncode != 0:
        raise InfraError(
            f"apt-get install {' '.join(packages)} failed (exit {r.returncode}); install them yourself, or point "
            "TURNOUT_REDIS_URL / TURNOUT_DATABASE_URL at running servers"
        )


def redis_server_bin() -> str:
    found = shutil.which("redis-server")
    if found is None:
        _apt_install("redis-server")
        found = shutil.which("redis-server")
    if found is None:
        raise InfraError("redis-server is still missing after apt-get install")
    return found


def chromium_bins() -> tuple[str, str]:
    """Debian's ``chromium`` and its ``chromedriver`` (the dashboard's browser tests), installed
    with apt-get when missing."""

    def find() -> tuple[str | None, str | None]:
        return shutil.which("chromium"), shutil.which("chromedriver")

    browser, driver = find()
    if browser is None or driver is None:
        _apt_install("chromium", "chromium-driver")
        browser, driver = find()
    if browser is None or driver is None:
        raise InfraError("chromium / chromedriver are still missing after apt-get install")
    return browser, driver


def promtool_bin() -> str:
    """``promtool`` (Debian's ``prometheus`` package), for the alert rule tests."""
    found = shutil.which("promtool")
    if found is None:
        _apt_install("prometheus")
        found = shutil.which("promtool")
    if found is None:
        raise InfraError("promtool is still missing after apt-get install prometheus")
    return found


def postgres_bin_dir() -> Path:
    def find() -> Path | None:
        for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
            if Path(d, "initdb").exists() and Path(d, "postgres").exists():
                return Path(d)
        initdb = shutil.which("initdb")
        return Path(initdb).resolve().parent if initdb else None

    found = find()
    if found is None:
        _apt_install("postgresql")
        found = find()
    if found is None:
        raise InfraError("PostgreSQL binaries (initdb, postgres) are still missing after apt-get install")
    return found


# --- private instances -------------------------------------------------------------------


def _no_orphans() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGTERM the child when the parent dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def orphan_guard() -> Callable[[], None] | None:
    """``preexec_fn`` for children that must not outlive us. Only from the main thread: Linux
    sends the signal when the *thread* that forked exits, and worker threads come and go."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    return _no_orphans


@dataclass
class Instance:
    """A Redis or Postgres server: one we started (``private``) or one that was already running."""

    url: str
    proc: subprocess.Popen[bytes] | None = None
    data_dir: Path | None = None
    cleanup: list[Path] = field(default_factory=list)
    stop_cmd: list[str] | None = None

    @property
    def private(self) -> bool:
        return self.proc is not None or self.stop_cmd is not None

    @property
    def port(self) -> int:
        return urlparse(self.url.replace("+asyncpg", "")).port or 0

    def stop(self) -> None:
        if self.stop_cmd is not None:
            subprocess.run(self.stop_cmd, check=False, capture_output=True)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for p in self.cleanup:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def start_redis(run_dir: Path, *, port: int | None = None, ephemeral: bool = True, aof: bool = False) -> Instance:
    """A private ``redis-server`` on ``port`` (a free one by default). No persistence unless
    ``aof``: then an append-only file (``appendfsync everysec``) in ``run_dir/redis-<port>``, which
    a restart on the same port loads again — what Turnout's event stream needs in production
    (docs/deploy.md): a ``kill -9`` loses nothing Redis acknowledged, since Redis writes the AOF to
    the kernel before it replies; only a crash of the host loses up to the last second."""
    port = port or free_port()
    data = run_dir.resolve() / f"redis-{port}"
    data.mkdir(parents=True, exist_ok=True)
    persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    proc = subprocess.Popen(
        [redis_server_bin(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence,
         "--dir", str(data), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=orphan_guard(),
    )  # fmt: skip
    wait_port("127.0.0.1", port, proc=proc)
    return Instance(url=f"redis://127.0.0.1:{port}/0", proc=proc, data_dir=data, cleanup=[data] if ephemeral else [])


def _as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the 'postgres' user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return ["runuser", "-u", "postgres", "--"]


def _stop_stale_postgres(bindir: Path, data: Path, prefix: list[str]) -> None:
    """A previous run killed hard may have left its private postgres running on this data dir."""
    pidfile = data / "postmaster.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except (ValueError, OSError):
        return  # stale file of a dead server: postgres removes it itself
    _log(f"stopping a private postgres left running by an earlier run (pid {pid})")
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "stop", "-m", "fast", "-w"],
                   check=False, capture_output=True)  # fmt: skip


def start_postgres(run_dir: Path, *, port: int | None = None, ephemeral: bool = True) -> Instance:
    """A private PostgreSQL cluster on ``port`` (a free one by default), trust auth, no fsync.

    ``ephemeral=False`` keeps the cluster in ``run_dir/pgdata`` between runs (``make run``).
    """
    bindir = postgres_bin_dir()
    run_dir = run_dir.resolve()
    port = port or free_port()
    data = run_dir / f"pg-{port}" if ephemeral else run_dir / "pgdata"
    sock_dir = run_dir / "pgsock"
    prefix = _as_postgres_user()
    for d in (run_dir, sock_dir):
        d.mkdir(parents=True, exist_ok=True)
    if prefix:
        subprocess.run(["chown", "postgres", str(run_dir), str(sock_dir)], check=True)
        # postgres must traverse the path down to the data dir
        for parent in run_dir.resolve().parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if prefix:
            subprocess.run(["chown", "postgres", str(data)], check=True)
        r = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
             "--no-sync"],
            capture_output=True,
        )  # fmt: skip
        if r.returncode != 0:
            raise InfraError(f"initdb failed: {r.stderr.decode(errors='replace')[-800:]}")
    else:
        _stop_stale_postgres(bindir, data, prefix)
    log_file = run_dir / f"postgres-{port}.log"
    with log_file.open("wb") as log_out:
        proc = subprocess.Popen(
            [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
             "-k", str(sock_dir), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=300"],
            stdout=log_out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=orphan_guard(),
        )  # fmt: skip
    try:
        wait_port("127.0.0.1", port, timeout=30, proc=proc)
        _wait_pg_accepts(f"postgresql://postgres@127.0.0.1:{port}/postgres", proc)
    except InfraError as exc:
        tail = log_file.read_text(errors="replace")[-1200:] if log_file.exists() else ""
        with contextlib.suppress(Exception):
            proc.kill()
        raise InfraError(f"private postgres did not start: {exc}\n{tail}") from exc
    return Instance(
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        proc=proc,
        data_dir=data,
        cleanup=[data, log_file] if ephemeral else [log_file],
    )


def _wait_pg_accepts(url: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """The port opens before the cluster accepts connections ("the database system is starting up")."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, last = postgres_check(url)
        if ok:
            return
        if proc.poll() is not None:
            raise InfraError(f"postgres exited with {proc.returncode}")
        time.sleep(0.1)
    raise InfraError(f"postgres does not accept connections after {timeout:.0f}s: {last}")


# --- use a running server, or start one ----------------------------------------------------


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    u = urlparse(url.replace("+asyncpg", ""))
    return u.hostname or "127.0.0.1", u.port or default_port


def plain_pg_url(url: str) -> str:
    """``postgresql+asyncpg://`` -> ``postgresql://`` (what asyncpg itself accepts)."""
    for scheme in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql://" + url[len(scheme) :]
    return url


def with_database(url: str, database: str) -> str:
    u = urlparse(url)
    return urlunparse(u._replace(path=f"/{database}"))


def database_name(url: str) -> str:
    return urlparse(url).path.lstrip("/") or "postgres"


def redis_answers(url: str) -> bool:
    host, port = _host_port(url, 6379)
    if not port_open(host, port):
        return False
    try:
        with socket.create_connection((host, port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


def postgres_answers(url: str) -> bool:
    host, port = _host_port(url, 5432)
    return port_open(host, port)


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _pg_check(url: str) -> tuple[bool, str]:
    try:
        conn = await asyncpg.connect(plain_pg_url(url), timeout=3)
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    await conn.close()
    return True, "ok"


def postgres_check(url: str) -> tuple[bool, str]:
    """Whether we can log in at ``url`` (and why not)."""
    return _run(_pg_check(url))  # type: ignore[return-value]


async def _ensure_database(url: str) -> None:
    admin = with_database(plain_pg_url(url), "postgres")
    name = database_name(url)
    conn = await asyncpg.connect(admin, timeout=5)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            _log(f"creating database {name!r}")
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` on its server when it does not exist yet."""
    try:
        _run(_ensure_database(url))
    except Exception as exc:
        raise InfraError(f"cannot create database {database_name(url)!r} at {_redacted(url)}: {exc}") from exc


def _redacted(url: str) -> str:
    u = urlparse(url)
    if u.password:
        u = u._replace(netloc=u.netloc.replace(f":{u.password}@", ":***@"))
    return urlunparse(u)


def ensure_redis(url: str | None, run_dir: Path, *, explicit: bool) -> Instance:
    """Use ``url`` when it answers; if it was set explicitly and does not answer, fail; else start one."""
    if url and redis_answers(url):
        return Instance(url=url)
    if explicit:
        raise InfraError(f"TURNOUT_REDIS_URL={_redacted(url or '')} does not answer; start that Redis or unset it")
    _log("no Redis answers on the default URL: starting a private redis-server (AOF on)")
    return start_redis(run_dir, ephemeral=True, aof=True)


def ensure_postgres(url: str, run_dir: Path, *, explicit: bool) -> Instance:
    """Use the server at ``url`` when we can log in (creating its database if missing), else — unless
    the URL was set explicitly — a private cluster under ``run_dir`` with the same database name.

    The returned instance's URL names the database to use.
    """
    if postgres_answers(url):
        ok, why = postgres_check(with_database(plain_pg_url(url), "postgres"))
        if ok:
            ensure_database(url)
            return Instance(url=url)
        if explicit:
            raise InfraError(f"cannot log in to TURNOUT_DATABASE_URL={_redacted(url)}: {why}")
        _log(f"the local PostgreSQL does not accept us ({why}): starting a private one")
    elif explicit:
        raise InfraError(f"TURNOUT_DATABASE_URL={_redacted(url)} does not answer; start that PostgreSQL or unset it")
    else:
        _log("no PostgreSQL answers on the default URL: starting a private one")
    inst = start_postgres(run_dir, ephemeral=False)
    inst.url = with_database(inst.url, database_name(plain_pg_url(url)))
    ensure_database(inst.url)
    return inst
