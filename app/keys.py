"""API keys and signing secrets: from the environment, or generated once under data/.

A generated value is written with mode 0600 and only its path is logged, never
the value itself.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from starlette.datastructures import Secret

from app.errors import ConfigurationError
from baton.signing import InvalidSecret, decode_secret, generate_secret

log = logging.getLogger("baton.keys")

API_KEY_FILE = "api-key"
SIGNING_SECRET_FILE = "signing-secret"


def generate_api_key() -> str:
    return f"bk_{secrets.token_urlsafe(32)}"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    value = generate()
    # O_EXCL + 0600: never widen permissions, never clobber a file another process wrote.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
