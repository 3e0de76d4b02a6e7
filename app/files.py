"""Files private to the server's user: the data folder, key files, the SQLite database.

The SQLite database holds the callback-token key and the namespaces' signing
secrets in clear, as the key files do; all of them are readable by the server's
user only. A folder Baton creates is 0700; a database file is created 0600 before
SQLite opens it, and SQLite gives its ``-wal`` and ``-shm`` files the mode of the
database file. A database found with wider permissions (made by an older version)
is narrowed at start-up, with a warning.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("baton.files")

#: Mode of a folder Baton creates (the data folder).
PRIVATE_DIRECTORY = 0o700
#: Mode of the files Baton writes: key files, the database and its -wal and -shm.
PRIVATE_FILE = 0o600
#: What SQLite adds to a database's name for its write-ahead log and shared memory.
SQLITE_COMPANIONS = ("-wal", "-shm")


def private_directory(path: Path) -> None:
    """Create ``path`` (and missing parents) if needed; a folder created here is 0700.

    An existing folder is left as it is: it may be the user's own.
    """
    if path.is_dir():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIRECTORY)
    except FileExistsError:
        return
    # mkdir's mode is masked by the umask; a umask never adds bits, but say it plainly.
    os.chmod(path, PRIVATE_DIRECTORY)


def private_sqlite_file(path: Path) -> None:
    """Make sure the database at ``path`` and its companions are 0600 before SQLite opens it.

    A missing database is created empty (SQLite takes an empty file as a new
    database); an existing one, its ``-wal`` and its ``-shm`` lose any permission
    for the group and others.
    """
    private_directory(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
        _narrow(file)


def _narrow(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & 0o077:
        os.chmod(path, mode & ~0o077)
        log.warning(
            "%s was readable by other users (mode %04o); it is now %04o",
            path,
            mode,
            mode & ~0o077,
        )
