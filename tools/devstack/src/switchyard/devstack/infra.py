"""Make Redis and PostgreSQL available: use running ones when they answer, else start private
instances from the system binaries (data under the repo's ignored ``.run/``, free ports),
installing ``redis-server`` / ``postgresql`` with apt-get when they are missing.

Used by ``make run`` (through the launcher) and by the test suite's fixtures.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse


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


# --- system packages ---------------------------------------------------------------------


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InfraError(
            f"{', '.join(packages)} not found and cannot be installed here (need root and apt-get); "
            "install them, or point SWITCHYARD_REDIS_URL / SWITCHYARD_DATABASE_URL at running servers"
        )
    print(f"[devstack] installing {' '.join(packages)} with apt-get ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env)
    if r.returncode != 0:
        raise InfraError(f"apt-get install {' '.join(packages)} failed (exit {r.returncode})")


def redis_server_bin() -> str:
    found = shutil.which("redis-server")
    if found is None:
        _apt_install("redis-server")
        found = shutil.which("redis-server")
    if found is None:
        raise InfraError("redis-server is still missing after apt-get install")
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


@dataclass
class Instance:
    url: str
    proc: subprocess.Popen[bytes] | None = None
    data_dir: Path | None = None
    cleanup: list[Path] = field(default_factory=list)
    stop_cmd: list[str] | None = None

    @property
    def private(self) -> bool:
        return self.proc is not None or self.stop_cmd is not None

    def stop(self) -> None:
        if self.stop_cmd is not None:
            subprocess.run(self.stop_cmd, check=False, capture_output=True)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for p in self.cleanup:
            shutil.rmtree(p, ignore_errors=True)


def start_redis(run_dir: Path, *, port: int | None = None, ephemeral: bool = True) -> Instance:
    port = port or free_port()
    data = run_dir / f"redis-{port}"
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [redis_server_bin(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(data), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
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


def start_postgres(run_dir: Path, *, port: int | None = None, ephemeral: bool = True) -> Instance:
    bindir = postgres_bin_dir()
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
        )
        if r.returncode != 0:
            raise InfraError(f"initdb failed: {r.stderr.decode(errors='replace')[-800:]}")
    proc = subprocess.Popen(
        [*prefix, str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
         "-k", str(sock_dir), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
         "-c", "max_connections=300"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    wait_port("127.0.0.1", port, timeout=30, proc=proc)
    return Instance(
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres", proc=proc, data_dir=data,
        cleanup=[data] if ephemeral else [],
    )


# --- use a running server, or start one ----------------------------------------------------


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    u = urlparse(url.replace("+asyncpg", ""))
    return u.hostname or "127.0.0.1", u.port or default_port


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


def ensure_redis(url: str | None, run_dir: Path, *, explicit: bool) -> Instance:
    """Use ``url`` when it answers; if it was set explicitly and does not answer, fail; else start one."""
    if url and redis_answers(url):
        return Instance(url=url)
    if explicit:
        raise InfraError(f"SWITCHYARD_REDIS_URL={url} does not answer")
    return start_redis(run_dir, ephemeral=False)


def ensure_postgres(url: str | None, run_dir: Path, *, explicit: bool) -> Instance:
    if url and postgres_answers(url):
        return Instance(url=url)
    if explicit:
        raise InfraError(f"SWITCHYARD_DATABASE_URL={url} does not answer")
    return start_postgres(run_dir, ephemeral=False)
