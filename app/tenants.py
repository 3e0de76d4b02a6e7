"""Namespaces (tenants): names, namespace-scoped ids, and each namespace's signing secrets.

Every API key belongs to a namespace, and every workflow to the namespace of the
key that created it. A workflow's public id is unique within its namespace only,
so the database keys a workflow by a *scoped id*: the public id itself in the
``default`` namespace (so databases from before namespaces need no rewrite), and
``<namespace>/<id>`` in any other (public ids cannot contain ``/``). Every row
that points at a workflow (steps, deliveries, attempts, events) uses that key,
and everything a user sees (documents, events, request bodies, headers, callback
tokens) shows the public id.

Idempotency-Keys are scoped the same way, with a separator that no key can
contain (the API refuses control characters in them).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence

from starlette.datastructures import Secret

from baton.signing import InvalidSecret, Signer, decode_secret

log = logging.getLogger("baton.tenants")

DEFAULT_NAMESPACE = "default"
#: Lower-case letters, digits, ``_`` and ``-``; starts with a letter or digit; 1-63 long.
NAMESPACE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MAX_NAMESPACE_LENGTH = 63
#: Between the namespace and the public id in a scoped workflow id.
ID_SEPARATOR = "/"
#: Between the namespace and an Idempotency-Key (ASCII unit separator).
KEY_SEPARATOR = "\x1f"
#: How long a process signs with the namespace secrets it last read (seconds).
SECRETS_REFRESH_SECONDS = 10.0
#: After a failed read of the secrets, how long until the next try (seconds).
SECRETS_RETRY_SECONDS = 1.0

_NAMESPACE = re.compile(NAMESPACE_PATTERN)


def is_namespace(name: str) -> bool:
    return bool(_NAMESPACE.fullmatch(name))


def check_namespace(name: str) -> str:
    """Return ``name`` if it is a valid namespace name; ValueError (saying why) if not."""
    if not is_namespace(name):
        raise ValueError(
            f"a namespace is 1 to {MAX_NAMESPACE_LENGTH} lower-case letters, digits, "
            "'_' or '-', starting with a letter or digit"
        )
    return name


def scoped_id(namespace: str, workflow_id: str) -> str:
    """The database key of workflow ``workflow_id`` of ``namespace``."""
    if namespace == DEFAULT_NAMESPACE:
        return workflow_id
    return f"{namespace}{ID_SEPARATOR}{workflow_id}"


def public_id(scoped: str) -> str:
    """The id users see, from a scoped workflow id."""
    return scoped.rpartition(ID_SEPARATOR)[2]


def namespace_of(scoped: str) -> str:
    """The namespace a scoped workflow id belongs to."""
    namespace, separator, _ = scoped.rpartition(ID_SEPARATOR)
    return namespace if separator else DEFAULT_NAMESPACE


def scoped_idempotency_key(namespace: str, key: str) -> str:
    """The stored form of an Idempotency-Key sent by a key of ``namespace``."""
    if namespace == DEFAULT_NAMESPACE:
        return key
    return f"{namespace}{KEY_SEPARATOR}{key}"


SecretsLoader = Callable[[str], Awaitable[Sequence[Secret]]]


class NamespaceSigners:
    """Which secrets sign the requests of a workflow: its namespace's own, or the global ones.

    A namespace's secrets are read from the database the first time this process
    signs for it, then at most once every ``refresh`` seconds, and kept as a
    decoded signer: sending a request adds no query. A namespace given secrets
    before its first workflow runs is therefore always signed with them; a change
    to a namespace already in use (a rotation) reaches every process within
    ``refresh`` seconds. A namespace without secrets of its own, and the
    ``default`` namespace, sign with the global ``BATON_SIGNING_SECRETS``.
    """

    def __init__(
        self,
        default: Signer,
        load: SecretsLoader,
        *,
        refresh: float = SECRETS_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default = default
        self._load = load
        self._refresh_every = refresh
        self._clock = clock
        #: namespace -> (its signer, until when it is used without reading again)
        self._entries: dict[str, tuple[Signer, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"<NamespaceSigners for {len(self._entries)} namespaces>"

    async def for_workflow(self, workflow_id: str) -> Signer:
        """The signer for requests of the workflow with this scoped id."""
        if ID_SEPARATOR not in workflow_id:
            return self.default
        namespace = namespace_of(workflow_id)
        entry = self._entries.get(namespace)
        if entry is not None and self._clock() < entry[1]:
            return entry[0]
        return await self._read(namespace)

    async def _read(self, namespace: str) -> Signer:
        """Read a namespace's secrets (once, however many sends are waiting for them).

        When the database cannot be read, the secrets read last stay in use; if none
        were read yet the error propagates (the request is not sent, and is sent again
        once its lease runs out).
        """
        lock = self._locks.setdefault(namespace, asyncio.Lock())
        async with lock:
            entry = self._entries.get(namespace)
            if entry is not None and self._clock() < entry[1]:
                return entry[0]
            try:
                secrets = await self._load(namespace)
            except Exception:
                if entry is None:
                    raise
                log.warning(
                    "could not read the signing secrets of namespace %s; using the last read",
                    namespace,
                )
                self._entries[namespace] = (entry[0], self._clock() + SECRETS_RETRY_SECONDS)
                return entry[0]
            signer = self._signer(namespace, secrets)
            self._entries[namespace] = (signer, self._clock() + self._refresh_every)
            return signer

    def _signer(self, namespace: str, secrets: Sequence[Secret]) -> Signer:
        valid = []
        for secret in secrets:
            try:
                decode_secret(str(secret))
            except InvalidSecret:
                # Never name the secret: only the namespace it belongs to.
                log.error("namespace %s has a malformed signing secret; skipped", namespace)
                continue
            valid.append(str(secret))
        # Two operators adding the same secret at once may store it twice: sign once.
        return Signer(list(dict.fromkeys(valid))) if valid else self.default
