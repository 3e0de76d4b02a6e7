"""Child processes and scratch databases of a benchmark run, and their removal.

Every process started with :func:`spawn` and every PostgreSQL database made
with :func:`database` is remembered until it is stopped or dropped;
:func:`cleanup_on_exit` removes whatever is left, also on Ctrl-C or SIGTERM.
Each child runs in its own process group and gets SIGTERM if the benchmark
process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


_children: list[subprocess.Popen[bytes]] = []
_databases: set[str] = set()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the benchmark process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(
    argv: list[str], env: dict[str, str], log: Path, stdout: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in ROOT; its output goes to ``log`` (stdout to ``stdout`` when given)."""
    with contextlib.ExitStack() as files:
        err = files.enter_context(log.open("wb"))
        out = files.enter_context(stdout.open("wb")) if stdout else err
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err if stdout else subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the benchmark, which stops them
            preexec_fn=_die_with_parent,
        )
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process (by its id); after ``grace``, SIGKILL its process group.

    The group is the one :func:`spawn` made for it, so this reaches the workers a
    child started itself (Celery's prefork pool) and nothing else.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    if proc in _children:
        _children.remove(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM of a live process: its peak resident set size."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=10
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def database(kind: str, label: str) -> Any:
    """A fresh database URL (``{data}`` stands for the server's data directory)."""
    if kind == "sqlite":
        yield "sqlite://{data}/baton.sqlite3"
        return
    name = f"baton_bench_{os.getpid()}_{label.lower()}_{secrets.token_hex(3)}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    _databases.add(name)
    try:
        yield f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        await drop_database(name)


async def drop_database(name: str) -> None:
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _databases.discard(name)


@contextlib.contextmanager
def cleanup_on_exit() -> Iterator[None]:
    """Whatever happens, stop every child and drop every database made here."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in list(_children):
            stop(proc, grace=5)
        if _databases:
            names = list(_databases)

            async def drop_all() -> None:
                for name in names:
                    with contextlib.suppress(Exception):
                        await drop_database(name)

            with contextlib.suppress(Exception):
                asyncio.run(drop_all())
        signal.signal(signal.SIGTERM, previous)
