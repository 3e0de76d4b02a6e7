"""Settings: one frozen object built from the environment (and an optional ``.env``).

No other module reads ``os.environ``. Secrets are wrapped in ``Secret`` so
they never show up in a repr or a log line; the database URL stays a plain
string (Tortoise and asyncpg take it as one) and its password is hidden in the
repr instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from starlette.config import Config, Environ, environ
from starlette.datastructures import CommaSeparatedStrings, Secret

from app.errors import ConfigurationError
from app.logs import redact_url, signing_secret_forms, url_password_forms

DEFAULT_DATABASE_URL = "sqlite://data/baton.sqlite3"
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
DEFAULT_MAX_CONCURRENCY = 256
DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_UI_SESSION_HOURS = 12.0
#: A console session lasts at most 31 days.
MAX_UI_SESSION_HOURS = 31 * 24.0
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True)
class Settings:
    """Everything the server can be configured with; see docs/configuration.md."""

    database_url: str = DEFAULT_DATABASE_URL
    #: Bearer tokens accepted by /v1; empty means "generate one under data_dir on first start".
    api_keys: tuple[Secret, ...] = ()
    #: ``whsec_<base64>`` secrets; every one signs each request. Empty means "generate".
    signing_secrets: tuple[Secret, ...] = ()
    allow_private_networks: bool = False
    public_url: str = DEFAULT_PUBLIC_URL
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    log_level: str = "info"
    #: text, or json for one JSON object per line.
    log_format: str = "text"
    #: Finished workflows older than this many days are deleted (None: kept forever).
    retention_days: float | None = None
    #: On SIGTERM, how long requests in flight may finish before their leases are released.
    shutdown_grace: float = 10.0
    #: Private hosts an operator allows even though private networks are refused.
    allowed_hosts: tuple[str, ...] = ()
    #: How long a console login (its session cookie) lasts.
    ui_session_hours: float = DEFAULT_UI_SESSION_HOURS
    #: Where generated keys and the default SQLite database live.
    data_dir: Path = field(default_factory=lambda: Path("data"))

    @classmethod
    def from_env(cls, env: Environ | None = None, env_file: str | None = ".env") -> Settings:
        """Build settings from the environment; raise ConfigurationError on bad values."""
        file = env_file if env_file and Path(env_file).is_file() else None
        config = Config(env_file=file, environ=env if env is not None else environ)
        try:
            data_dir = Path(config("BATON_DATA_DIR", default="data"))
            settings = cls(
                # The default database lives in the data directory, wherever that is.
                database_url=config(
                    "BATON_DATABASE_URL", default=f"sqlite://{data_dir}/baton.sqlite3"
                ),
                api_keys=_secrets(config("BATON_API_KEYS", cast=CommaSeparatedStrings, default="")),
                signing_secrets=_secrets(
                    config("BATON_SIGNING_SECRETS", cast=CommaSeparatedStrings, default="")
                ),
                allow_private_networks=config(
                    "BATON_ALLOW_PRIVATE_NETWORKS", cast=bool, default=False
                ),
                public_url=config("BATON_PUBLIC_URL", default=DEFAULT_PUBLIC_URL).rstrip("/"),
                max_concurrency=config(
                    "BATON_MAX_CONCURRENCY", cast=int, default=DEFAULT_MAX_CONCURRENCY
                ),
                lease_seconds=config(
                    "BATON_LEASE_SECONDS", cast=float, default=DEFAULT_LEASE_SECONDS
                ),
                log_level=config("BATON_LOG_LEVEL", default="info").lower(),
                log_format=config("BATON_LOG_FORMAT", default="text").lower(),
                retention_days=config("BATON_RETENTION_DAYS", cast=_optional_float, default=""),
                shutdown_grace=config("BATON_SHUTDOWN_GRACE", cast=float, default=10.0),
                allowed_hosts=tuple(
                    h
                    for h in config("BATON_ALLOWED_HOSTS", cast=CommaSeparatedStrings, default="")
                    if h
                ),
                ui_session_hours=config(
                    "BATON_UI_SESSION_HOURS", cast=float, default=DEFAULT_UI_SESSION_HOURS
                ),
                data_dir=data_dir,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid configuration: {exc}") from exc
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that cannot work, with a message that says which and why."""
        if self.max_concurrency < 1:
            raise ConfigurationError("BATON_MAX_CONCURRENCY must be at least 1")
        if self.lease_seconds <= 0:
            raise ConfigurationError("BATON_LEASE_SECONDS must be greater than 0")
        if not 0 < self.ui_session_hours <= MAX_UI_SESSION_HOURS:
            raise ConfigurationError(
                f"BATON_UI_SESSION_HOURS must be more than 0 and at most {MAX_UI_SESSION_HOURS:g}"
            )
        if self.log_format not in ("text", "json"):
            raise ConfigurationError("BATON_LOG_FORMAT must be text or json")
        if self.retention_days is not None and self.retention_days <= 0:
            raise ConfigurationError("BATON_RETENTION_DAYS must be greater than 0 (or unset)")
        if self.log_level not in LOG_LEVELS:
            raise ConfigurationError(f"BATON_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if not self.public_url.startswith(("http://", "https://")):
            raise ConfigurationError("BATON_PUBLIC_URL must be an http(s) URL")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def secret_values(self) -> list[str]:
        """Every configured secret, in each form a log line could show it."""
        values = [str(k) for k in self.api_keys]
        for secret in self.signing_secrets:
            values.extend(signing_secret_forms(str(secret)))
        values.extend(url_password_forms(self.database_url))
        return values

    def __repr__(self) -> str:
        # URL passwords (the database's) are hidden, as the Secret-wrapped keys are.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _optional_float(value: str) -> float | None:
    return float(value) if value.strip() else None


def _secrets(values: Sequence[str]) -> tuple[Secret, ...]:
    return tuple(Secret(v) for v in values if v)
