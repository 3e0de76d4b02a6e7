"""API keys and signing secrets: from the environment, or generated once under data/.

A generated value is written with mode 0600 and only its path is logged, never
the value itself. Keys created with ``python -m app keys create`` live in the
database as their SHA-256 only (see :func:`hash_api_key`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from starlette.datastructures import Secret

from app.errors import ConfigurationError
from app.files import PRIVATE_FILE, private_directory
from baton.signing import InvalidSecret, decode_secret, generate_secret

log = logging.getLogger("baton.keys")

API_KEY_FILE = "api-key"
SIGNING_SECRET_FILE = "signing-secret"


#: How many leading characters of a stored key are kept to recognise it in a list.
KEY_PREFIX_LENGTH = 10


def generate_api_key() -> str:
    return f"bk_{secrets.token_urlsafe(32)}"


def new_key_id() -> str:
    """The public handle of a stored key, used to list and revoke it."""
    return f"key_{secrets.token_hex(8)}"


def hash_api_key(key: str | bytes) -> str:
    """Hex SHA-256 of a key: what the database keeps, and looks keys up by.

    Keys are 256-bit random tokens, so a fast hash is enough: there is nothing to
    guess by brute force that is easier than the key itself.
    """
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(raw).hexdigest()


def key_prefix(key: str) -> str:
    """The first characters of a key, shown in lists to tell keys apart."""
    return key[:KEY_PREFIX_LENGTH]


def load_or_create(
    configured: tuple[Secret, ...], path: Path, generate: Callable[[], str], what: str
) -> list[str]:
    """The configured values, or the ones stored at ``path``, or new ones written there."""
    if configured:
        return [str(s) for s in configured]
    if path.is_file():
        values = [v.strip() for v in path.read_text().replace(",", "\n").splitlines()]
        values = [v for v in values if v]
        if values:
            log.info("using the %s stored in %s", what, path)
            return values
    private_directory(path.parent)
    value = generate()
    # O_EXCL + 0600: never widen permissions, never clobber a file another process wrote.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return load_or_create(configured, path, generate, what)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    log.warning("generated a new %s and wrote it to %s (mode 0600)", what, path.resolve())
    return [value]


def api_keys(configured: tuple[Secret, ...], data_dir: Path) -> list[str]:
    return load_or_create(configured, data_dir / API_KEY_FILE, generate_api_key, "API key")


def signing_secrets(configured: tuple[Secret, ...], data_dir: Path) -> list[str]:
    values = load_or_create(
        configured, data_dir / SIGNING_SECRET_FILE, generate_secret, "signing secret"
    )
    for index, value in enumerate(values):
        try:
            decode_secret(value)
        except InvalidSecret as exc:
            raise ConfigurationError(
                f"signing secret #{index + 1} is not a valid whsec_<base64> secret: {exc}"
            ) from exc
    return values
