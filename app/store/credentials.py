"""Credentials: API keys (stored hashed) and namespaces' signing secrets, and the
secrets the server processes share (the callback-token key).

Keys are looked up by their SHA-256 on every request — no cache — so a revoked
key is refused at once by every process.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from starlette.datastructures import Secret
from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from app.errors import StoreError
from app.keys import generate_api_key, hash_api_key, key_prefix, new_key_id
from app.models import ApiKey, NamespaceSecret, ServerSecret
from app.store.rows import utcnow
from app.store.session import StoreCore
from app.store.sql import UNAVAILABLE
from app.tenants import DEFAULT_NAMESPACE, check_namespace
from baton.signing import decode_secret

log = logging.getLogger("baton.store")

#: A key's last_used_at is written at most this often (seconds) by one process.
KEY_USE_RESOLUTION = 60.0


class Credentials(StoreCore):
    """API keys, namespace signing secrets and server secrets."""

    def __init__(self, *, owner: str | None = None) -> None:
        super().__init__(owner=owner)
        #: API key id -> when this process last wrote its last_used_at (monotonic).
        self._key_use: dict[str, float] = {}

    async def server_secret(self, name: str, new_value: str | None = None) -> str:
        """A secret shared by every process on this database, created on first use.

        ``new_value`` is stored if there is none yet (a random one when None); the
        caller can so hide it from logs before the insert is logged.
        """
        row = await ServerSecret.get_or_none(name=name)
        if row is None:
            try:
                row = await ServerSecret.create(
                    name=name,
                    value=new_value or secrets.token_urlsafe(32),
                    created_at=utcnow(),
                )
            except IntegrityError:
                row = await ServerSecret.get(name=name)
        return row.value

    async def authenticate(self, key: str) -> str | None:
        """The namespace of a stored, unrevoked API key, or None; looked up by its hash.

        Asked on every request (no cache), so a revoked key is refused at once by
        every process. Raises StoreError when the database cannot answer.
        """
        try:
            row = (
                await ApiKey.filter(key_hash=hash_api_key(key), revoked_at__isnull=True)
                .first()
                .values_list("id", "namespace")
            )
        except UNAVAILABLE as exc:
            raise StoreError(f"could not check the API key: {type(exc).__name__}") from exc
        if row is None:
            return None
        key_id, namespace = row
        await self._note_key_use(str(key_id))
        return str(namespace)

    async def _note_key_use(self, key_id: str) -> None:
        now = time.monotonic()
        if now - self._key_use.get(key_id, float("-inf")) < KEY_USE_RESOLUTION:
            return
        self._key_use[key_id] = now
        try:
            await ApiKey.filter(id=key_id).update(last_used_at=utcnow())
        except UNAVAILABLE as exc:
            # Bookkeeping only: never fail the request over it.
            log.warning("could not record the use of API key %s: %s", key_id, exc)

    async def create_api_key(
        self, namespace: str, *, signing_secrets: Sequence[Secret] = ()
    ) -> tuple[ApiKeyInfo, Secret]:
        """A new API key of ``namespace``: its record, and the key itself (shown once).

        Only the key's hash is stored. ``signing_secrets`` are added to the namespace's
        own secrets in the same transaction. ValueError for an invalid namespace name or
        secrets that ``set_namespace_secrets`` refuses.
        """
        _check_secrets(namespace, signing_secrets)
        key = generate_api_key()
        row = ApiKey(
            id=new_key_id(),
            namespace=namespace,
            key_hash=hash_api_key(key),
            prefix=key_prefix(key),
            created_at=utcnow(),
        )
        new_secrets = await self._new_secret_rows(namespace, signing_secrets, replace=False)
        async with in_transaction():
            await row.save()
            if new_secrets:
                await NamespaceSecret.bulk_create(new_secrets)
        return _key_info(row), Secret(key)

    async def list_api_keys(self, namespace: str | None = None) -> list[ApiKeyInfo]:
        """Every stored key (of one namespace, if given), oldest first, without hashes."""
        query = ApiKey.all() if namespace is None else ApiKey.filter(namespace=namespace)
        return [_key_info(row) for row in await query.order_by("created_at", "id")]

    async def revoke_api_key(self, key_id: str) -> tuple[ApiKeyInfo, bool] | None:
        """Revoke a key: (its record, whether this call revoked it), or None if unknown."""
        revoked = await ApiKey.filter(id=key_id, revoked_at__isnull=True).update(
            revoked_at=utcnow()
        )
        row = await ApiKey.get_or_none(id=key_id)
        if row is None:
            return None
        return _key_info(row), bool(revoked)

    async def namespace_signing_secrets(self, namespace: str) -> list[Secret]:
        """A namespace's own signing secrets, oldest first (empty: it uses the global ones)."""
        rows = (
            await NamespaceSecret.filter(namespace=namespace)
            .order_by("id")
            .values_list("secret", flat=True)
        )
        return [Secret(str(secret)) for secret in rows]

    async def namespace_secret_info(self, namespace: str) -> list[SecretInfo]:
        """A namespace's signing secrets as fingerprints and creation times (never the secret)."""
        rows = await NamespaceSecret.filter(namespace=namespace).order_by("id")
        return [_secret_info(row) for row in rows]

    async def set_namespace_secrets(
        self, namespace: str, secrets_: Sequence[Secret], *, replace: bool
    ) -> list[SecretInfo]:
        """Add signing secrets to a namespace, or ``replace`` its secrets with them (an empty
        list then clears them: the namespace signs with the global secrets again).

        ValueError for an invalid namespace name, the default namespace (it signs with
        BATON_SIGNING_SECRETS), or a malformed secret.
        """
        _check_secrets(namespace, secrets_)
        new_secrets = await self._new_secret_rows(namespace, secrets_, replace=replace)
        # Writes only inside the transaction: on SQLite a transaction that reads before
        # writing fails when a server process writes in between.
        async with in_transaction():
            if replace:
                await NamespaceSecret.filter(namespace=namespace).delete()
            if new_secrets:
                await NamespaceSecret.bulk_create(new_secrets)
        return await self.namespace_secret_info(namespace)

    async def _new_secret_rows(
        self, namespace: str, secrets_: Sequence[Secret], *, replace: bool
    ) -> list[NamespaceSecret]:
        """Rows for the secrets the namespace does not have yet (all of them on replace)."""
        known: set[str] = set()
        if not replace and secrets_:
            stored = await NamespaceSecret.filter(namespace=namespace).values_list(
                "secret", flat=True
            )
            known = {str(value) for value in stored}
        now = utcnow()
        rows = []
        for secret in secrets_:
            value = str(secret)
            if value not in known:
                known.add(value)
                rows.append(NamespaceSecret(namespace=namespace, secret=value, created_at=now))
        return rows


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What may be shown about a stored API key: never the key, never its hash."""

    id: str
    namespace: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """What may be shown about a namespace's signing secret: a fingerprint, not the secret."""

    fingerprint: str
    created_at: datetime


def _check_secrets(namespace: str, secrets_: Sequence[Secret]) -> None:
    check_namespace(namespace)
    if namespace == DEFAULT_NAMESPACE and secrets_:
        raise ValueError("the default namespace signs with BATON_SIGNING_SECRETS")
    for secret in secrets_:
        decode_secret(str(secret))  # InvalidSecret is a ValueError, and names no secret


def _key_info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        namespace=row.namespace,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def secret_fingerprint(secret: str) -> str:
    """A short, one-way name for a secret, to tell secrets apart during a rotation."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def _secret_info(row: NamespaceSecret) -> SecretInfo:
    return SecretInfo(fingerprint=secret_fingerprint(row.secret), created_at=row.created_at)
