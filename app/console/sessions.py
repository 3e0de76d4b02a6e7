"""Console sessions: a signed cookie that stands for an API key, and its CSRF token.

Logging in with an API key gives a session cookie (``baton_session``: HttpOnly,
SameSite=Strict, Path=/, Secure over HTTPS) signed with itsdangerous under a
server secret shared by every process on the database. It carries:

- the key's **namespace**;
- a **reference** to the key, never the key: ``key:<id>`` for a key stored in
  the database, ``env:<HMAC of the key>`` for one of ``BATON_API_KEYS``;
- a random **CSRF token**, which the console's pages embed and send back with
  every action (form field ``csrf`` or header ``X-CSRF-Token``).

Every request re-checks the reference: a stored key must still exist, be
unrevoked and belong to the namespace; an environment key must still be
configured. So a revoked key's sessions stop at once, in every process. The
cookie's signature carries its issue time, and it is refused once older than
``BATON_UI_SESSION_HOURS``.

The login form has a CSRF token too (double submit: a random value in a
short-lived ``baton_login`` cookie and in the form), so another site cannot log
a browser in with a key of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import cookie_parser
from starlette.responses import Response
from starlette.types import Scope

from app.errors import Forbidden
from app.tenants import DEFAULT_NAMESPACE, is_namespace

SESSION_COOKIE = "baton_session"
LOGIN_COOKIE = "baton_login"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
#: The name of the server secret that signs session cookies.
SESSION_SECRET = "console-session"
SALT = "baton.console.session.v1"
#: How long a login form stays usable.
LOGIN_FORM_SECONDS = 3600
#: Methods that change nothing: no CSRF token needed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: A cookie longer than this is none of ours.
MAX_COOKIE = 1024

ENV_REF = "env:"
STORED_REF = "key:"


@dataclass(frozen=True, slots=True)
class Session:
    namespace: str
    #: ``key:<id>`` or ``env:<fingerprint>``.
    key_ref: str
    csrf: str


class Sessions:
    """Issues and checks session cookies.

    ``find_key(key)`` answers ``(id, namespace)`` of an unrevoked stored key;
    ``key_namespace(id)`` the namespace of a stored key while it is unrevoked.
    Both raise StoreError when the database cannot answer.
    """

    def __init__(
        self,
        *,
        env_keys: list[str],
        hours: float,
        find_key: Callable[[str], Awaitable[tuple[str, str] | None]],
        key_namespace: Callable[[str], Awaitable[str | None]],
    ) -> None:
        self._env_keys = [k.encode() for k in env_keys]
        self.max_age = int(hours * 3600)
        self._find_key = find_key
        self._key_namespace = key_namespace
        self._serializer: URLSafeTimedSerializer | None = None
        self._secret = b""

    def start(self, secret: str) -> None:
        """Use ``secret`` (from the database) from now on; until then nobody is logged in."""
        self._secret = secret.encode()
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)

    @property
    def started(self) -> bool:
        return self._serializer is not None

    def _fingerprint(self, key: bytes) -> str:
        return hmac.new(self._secret, key, hashlib.sha256).hexdigest()[:32]

    # ----------------------------------------------------------------- login

    async def login(self, key: str) -> Session | None:
        """A new session for ``key``, or None if it is no valid key."""
        if not self.started or not key or len(key) > 512:
            return None
        raw = key.encode()
        # Compare against every key so timing says nothing about which matched.
        if any([hmac.compare_digest(raw, k) for k in self._env_keys]):
            ref = ENV_REF + self._fingerprint(raw)
            return Session(DEFAULT_NAMESPACE, ref, secrets.token_urlsafe(24))
        found = await self._find_key(key)
        if found is None:
            return None
        key_id, namespace = found
        return Session(namespace, STORED_REF + key_id, secrets.token_urlsafe(24))

    def cookie_value(self, session: Session) -> str:
        assert self._serializer is not None, "sessions are not started"
        value: str = self._serializer.dumps([session.namespace, session.key_ref, session.csrf])
        return value

    # ----------------------------------------------------------------- checks

    async def load(self, value: str | None) -> Session | None:
        """The session a cookie value stands for, if it is still good."""
        if self._serializer is None or not value or len(value) > MAX_COOKIE:
            return None
        try:
            payload = self._serializer.loads(value, max_age=self.max_age)
            namespace, key_ref, csrf = payload
        except (BadSignature, ValueError, TypeError):
            return None
        if not all(isinstance(v, str) for v in payload) or not is_namespace(namespace):
            return None
        session = Session(namespace, key_ref, csrf)
        return session if await self._still_valid(session) else None

    async def _still_valid(self, session: Session) -> bool:
        if session.key_ref.startswith(ENV_REF):
            fingerprint = session.key_ref.removeprefix(ENV_REF)
            matches = [
                hmac.compare_digest(fingerprint, self._fingerprint(k)) for k in self._env_keys
            ]
            return session.namespace == DEFAULT_NAMESPACE and any(matches)
        if session.key_ref.startswith(STORED_REF):
            namespace = await self._key_namespace(session.key_ref.removeprefix(STORED_REF))
            return namespace == session.namespace
        return False

    async def from_scope(self, scope: Scope) -> Session | None:
        return await self.load(_cookie(scope, SESSION_COOKIE))

    async def namespace(self, scope: Scope) -> str | None:
        """For BearerAuth: the namespace of the request's session, if it has a good one.

        A request that changes something must carry the session's CSRF token in
        ``X-CSRF-Token``; without it the answer is a 403.
        """
        session = await self.from_scope(scope)
        if session is None:
            return None
        if scope.get("method", "GET") not in SAFE_METHODS:
            check_csrf(session, _header(scope, CSRF_HEADER))
        return session.namespace

    # ----------------------------------------------------------------- cookies

    def set_cookie(self, response: Response, session: Session, *, secure: bool) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self.cookie_value(session),
            max_age=self.max_age,
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/ui/login")

    @staticmethod
    def clear_cookie(response: Response, *, secure: bool) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="strict"
        )


def check_csrf(session: Session, token: str | None) -> None:
    """Raise Forbidden unless ``token`` is the session's CSRF token."""
    if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise Forbidden("this action needs the console's CSRF token (X-CSRF-Token)")


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def set_login_cookie(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=LOGIN_FORM_SECONDS,
        path="/ui/login",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def login_token_matches(scope: Scope, submitted: str | None) -> bool:
    expected = _cookie(scope, LOGIN_COOKIE)
    if not expected or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key == wanted:
            return bytes(value).decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    header = _header(scope, "cookie")
    if not header:
        return None
    return cookie_parser(header).get(name)
