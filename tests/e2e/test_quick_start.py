"""The README's quick start on a fresh clone: ``PORT=<port> make run``, then stop it.

The repository is cloned into a temporary directory (its committed state), and
``make run`` creates the virtualenv there, installs the runtime only, and serves
on ``PORT``. The start-up log must name the public URL derived from that port,
an async step's callback must reach the server through it, and SIGTERM — what a
terminal's Ctrl-C or a process manager sends to the whole process group — must
stop it without ``make`` reporting an error. The install itself must print no
setuptools warning. pip's cache is the user's, as for any newcomer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from harness import PROJECT_ROOT, BatonClient, HandlerClient, free_port, tail

#: Creating the virtualenv and installing the runtime (from pip's cache, or not).
INSTALL_TIMEOUT = 600.0


@pytest.mark.slow
def test_make_run_on_a_fresh_clone_with_port_set(tmp_path: Path, handler: HandlerClient) -> None:
    clone = tmp_path / "baton"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True)
    assert not (clone / ".venv").exists()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATON_", "VIRTUAL_ENV"))}
    env["PORT"] = str(port)
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        make = subprocess.Popen(
            ["make", "run"],
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, make, log_path)
        text = log_path.read_text(errors="replace")
        assert f"public URL {url} (BATON_PUBLIC_URL" in text, tail(log_path)
        # The runtime only: no test toolchain in a virtualenv made by `make run`.
        assert (clone / ".venv" / "bin" / "uvicorn").exists()
        assert not (clone / ".venv" / "bin" / "pytest").exists()
        assert not (clone / ".venv" / "bin" / "mypy").exists()
        for warning in ("SetuptoolsDeprecationWarning", "project.license", "Editable installation"):
            assert warning not in text, tail(log_path)

        # An async step calls back through the public URL the port gave.
        key = (clone / "data" / "api-key").read_text().strip()
        handler.script(
            job=[
                {
                    "status": 202,
                    "json": {"async": True},
                    "then": [{"json": {"success": True, "result": "called back"}}],
                }
            ]
        )
        with BatonClient(url, key) as api:
            document = api.create({"steps": [{"id": "job", "url": handler.step_url("job")}]})
            done = api.wait_status(document["id"], "completed", timeout=30)
        assert done["results"]["job"] == "called back"
        [request] = handler.requests("job")
        assert request["json"]["callbackUrl"].startswith(f"{url}/v1/callbacks/")
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    text = log_path.read_text(errors="replace")
    assert "Application shutdown complete" in text, tail(log_path)
    assert "make: ***" not in text, tail(log_path)
    assert "Error 1" not in text, tail(log_path)


def _wait_ready(url: str, make: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + INSTALL_TIMEOUT
    with httpx.Client(base_url=url, timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if make.poll() is not None:
                raise AssertionError(f"make run exited with {make.returncode}\n{tail(log_path)}")
            try:
                if client.get("/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise AssertionError(f"make run did not answer /readyz in time\n{tail(log_path)}")
