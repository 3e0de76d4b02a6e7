"""A server started on an empty data folder keeps everything in it private to its user.

The SQLite database holds the callback-token key and the namespaces' signing
secrets in clear, like the key files: under the usual umask (022), the folder
the server creates must be 0700 and every file in it 0600 — the database, its
``-wal`` and ``-shm``, the process lock, the generated key and secret.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from harness import BatonClient, BatonServer, HandlerClient


def test_the_data_folder_and_database_files_are_private(
    tmp_path: Path, handler: HandlerClient
) -> None:
    data = tmp_path / "data"
    server = BatonServer(
        tmp_path,
        database_url=f"sqlite://{data}/baton.sqlite3",
        # Nothing configured: the key and the secret are generated in the data folder.
        extra_env={"BATON_DATA_DIR": str(data), "BATON_API_KEYS": "", "BATON_SIGNING_SECRETS": ""},
    )
    previous = os.umask(0o022)  # inherited by the server process
    try:
        server.start()
    finally:
        os.umask(previous)
    try:
        key = (data / "api-key").read_text().strip()
        with BatonClient(server.url, key) as api:
            # Some writes, so that the write-ahead log and shared memory exist.
            api.create({"id": "w", "steps": [{"id": "a", "url": handler.step_url("a")}]})
            api.wait_status("w", "completed")
        names = sorted(p.name for p in data.iterdir())
        assert {
            "api-key",
            "signing-secret",
            "baton.sqlite3",
            "baton.sqlite3-wal",
            "baton.sqlite3-shm",
            "baton.sqlite3.lock",
        } <= set(names)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        modes = {name: oct(stat.S_IMODE((data / name).stat().st_mode)) for name in names}
        assert modes == dict.fromkeys(names, oct(0o600))
    finally:
        server.stop()
