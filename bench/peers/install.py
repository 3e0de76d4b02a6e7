"""Install the peers into ``bench/.peers/`` (ignored by git), each apart from Baton's own packages.

* ``bench/.peers/node``: ``npm ci`` of ``bench/peers/package.json`` and its
  ``package-lock.json`` (BullMQ and ioredis);
* ``bench/.peers/celery`` and ``bench/.peers/dbos``: a virtualenv each, made
  from the Python running this and filled with ``pip install -r
  bench/peers/requirements-<peer>.txt`` (every package pinned).

Each target records a stamp of what it was installed from (the manifest's
hash, plus the Python version for a virtualenv); when the stamp matches,
nothing is done, so a second run costs milliseconds. A changed manifest
reinstalls from scratch. A failed install raises :class:`InstallError` with the
installer's output and leaves no stamp, so the next run tries again::

    .venv/bin/python -m bench.peers.install          # install what is missing
    .venv/bin/python -m bench.peers.install --force  # reinstall everything
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PEERS_SRC = Path(__file__).resolve().parent
PEERS_HOME = PEERS_SRC.parent / ".peers"
NODE_HOME = PEERS_HOME / "node"
NODE_MODULES = NODE_HOME / "node_modules"
STAMP = ".installed"
#: BullMQ 6 and ioredis 6 need Node.js 20 or newer.
NODE_MAJOR = 20


class InstallError(RuntimeError):
    """A peer could not be installed; the message says which, and the installer's output."""


@dataclass(frozen=True)
class Venv:
    """A peer's own virtualenv under bench/.peers/."""

    name: str

    @property
    def home(self) -> Path:
        return PEERS_HOME / self.name

    @property
    def requirements(self) -> Path:
        return PEERS_SRC / f"requirements-{self.name}.txt"

    @property
    def python(self) -> Path:
        return self.home / "bin" / "python"

    def bin(self, script: str) -> Path:
        return self.home / "bin" / script


CELERY = Venv("celery")
DBOS = Venv("dbos")
VENVS = (CELERY, DBOS)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()


def _stamp_matches(home: Path, digest: str) -> bool:
    stamp = home / STAMP
    return stamp.is_file() and stamp.read_text().strip() == digest


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise InstallError(f"{what}: cannot run {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()[-30:]
        raise InstallError(
            f"{what}: `{' '.join(argv)}` exited with {done.returncode}:\n" + "\n".join(output)
        )


def _node_version() -> int:
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        raise InstallError(
            f"BullMQ peer: Node.js >= {NODE_MAJOR} with npm is required (node or npm not on PATH)"
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    text = version.stdout.strip().lstrip("v")
    try:
        return int(text.split(".")[0])
    except ValueError as exc:
        raise InstallError(f"BullMQ peer: cannot read the Node.js version from {text!r}") from exc


def install_node(force: bool = False) -> bool:
    """``npm ci`` the BullMQ peer into bench/.peers/node; True when something was installed."""
    major = _node_version()
    if major < NODE_MAJOR:
        raise InstallError(f"BullMQ peer: Node.js >= {NODE_MAJOR} is required, found {major}")
    manifest = (PEERS_SRC / "package.json").read_bytes()
    lock = (PEERS_SRC / "package-lock.json").read_bytes()
    digest = _digest(manifest, lock, str(major).encode())
    if not force and _stamp_matches(NODE_HOME, digest) and NODE_MODULES.is_dir():
        return False
    NODE_HOME.mkdir(parents=True, exist_ok=True)
    (NODE_HOME / STAMP).unlink(missing_ok=True)
    (NODE_HOME / "package.json").write_bytes(manifest)
    (NODE_HOME / "package-lock.json").write_bytes(lock)
    argv = ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    _run(argv, "BullMQ peer (npm ci)", cwd=NODE_HOME)
    (NODE_HOME / STAMP).write_text(digest + "\n")
    return True


def install_venv(venv: Venv, force: bool = False) -> bool:
    """A fresh virtualenv with the peer's pinned requirements; True when something was installed."""
    requirements = venv.requirements.read_bytes()
    digest = _digest(requirements, sys.version.encode())
    if not force and _stamp_matches(venv.home, digest) and venv.python.exists():
        return False
    if venv.home.exists():
        shutil.rmtree(venv.home)
    # The base interpreter, not Baton's virtualenv: the peer shares none of Baton's packages.
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(venv.home)], f"{venv.name} peer (venv)")
    pip = [str(venv.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "-r", str(venv.requirements)], f"{venv.name} peer (pip install)")
    (venv.home / STAMP).write_text(digest + "\n")
    return True


def ensure(force: bool = False, log: bool = True) -> None:
    """Install every peer that is missing or out of date; raise InstallError if one fails."""
    started = time.perf_counter()
    done = []
    if install_node(force):
        done.append("node (bullmq, ioredis)")
    for venv in VENVS:
        if install_venv(venv, force):
            done.append(f"{venv.name} venv")
    if log and done:
        took = time.perf_counter() - started
        print(f"   peers installed into {PEERS_HOME}: {', '.join(done)} ({took:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.install", description=__doc__)
    parser.add_argument("--force", action="store_true", help="reinstall every peer")
    args = parser.parse_args(argv)
    try:
        ensure(force=args.force)
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"peers ready in {PEERS_HOME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
