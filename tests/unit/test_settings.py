"""Settings: their repr and every configuration error keep secrets out."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.datastructures import Secret

from app.db import open_database, tortoise_config
from app.errors import ConfigurationError
from app.main import create_app
from app.settings import Settings
from baton.signing import generate_secret

API_KEY = "bk_an-api-key-nobody-may-see"
SIGNING_SECRET = generate_secret()
PASSWORD = "db-pass%2Fword"
DECODED_PASSWORD = "db-pass/word"
DATABASE_URL = f"postgres://baton:{PASSWORD}@db.internal:5432/baton"


def secret_forms() -> list[str]:
    encoded = SIGNING_SECRET.removeprefix("whsec_")
    return [API_KEY, SIGNING_SECRET, encoded, encoded.rstrip("="), PASSWORD, DECODED_PASSWORD]


def assert_no_secret(text: str) -> None:
    for form in secret_forms():
        assert form not in text, f"{form[:6]}… in {text!r}"


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def assert_no_secret_in_error(exc: BaseException) -> None:
    for link in chain(exc):
        assert_no_secret(str(link))
        assert_no_secret(repr(link))


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": DATABASE_URL,
        "api_keys": (Secret(API_KEY),),
        "signing_secrets": (Secret(SIGNING_SECRET),),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


ENV = {
    "BATON_DATABASE_URL": DATABASE_URL,
    "BATON_API_KEYS": f"{API_KEY},bk_another-key-of-length",
    "BATON_SIGNING_SECRETS": SIGNING_SECRET,
}


def test_the_repr_hides_every_secret_and_shows_the_rest() -> None:
    configured = settings(public_url="https://baton.example")
    for text in (repr(configured), str(configured), f"{configured}", f"{configured!r}"):
        assert_no_secret(text)
        assert "postgres://baton:***@db.internal:5432/baton" in text
        assert "https://baton.example" in text
        assert "max_concurrency=256" in text
        assert "Secret('**********')" in text


def test_the_repr_of_settings_from_the_environment_hides_every_secret() -> None:
    configured = Settings.from_env(ENV, env_file=None)
    assert configured.database_url == DATABASE_URL
    assert str(configured.api_keys[0]) == API_KEY
    assert_no_secret(repr(configured))
    assert_no_secret(repr(configured.api_keys))
    assert_no_secret(repr(configured.signing_secrets))


def test_console_sessions_last_twelve_hours_unless_configured() -> None:
    assert Settings.from_env(ENV, env_file=None).ui_session_hours == 12
    configured = Settings.from_env({**ENV, "BATON_UI_SESSION_HOURS": "0.5"}, env_file=None)
    assert configured.ui_session_hours == 0.5


def test_a_url_without_a_password_is_shown_whole() -> None:
    assert "postgres://baton@db/baton" in repr(settings(database_url="postgres://baton@db/baton"))


def test_secret_values_name_every_form_of_every_secret() -> None:
    values = settings().secret_values()
    for form in secret_forms():
        assert form in values


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BATON_LOG_LEVEL": "loud"}, "BATON_LOG_LEVEL"),
        ({"BATON_MAX_CONCURRENCY": "many"}, "BATON_MAX_CONCURRENCY"),
        ({"BATON_LEASE_SECONDS": "-1"}, "BATON_LEASE_SECONDS"),
        ({"BATON_ALLOW_PRIVATE_NETWORKS": "perhaps"}, "BATON_ALLOW_PRIVATE_NETWORKS"),
        ({"BATON_PUBLIC_URL": "ftp://x"}, "BATON_PUBLIC_URL"),
        ({"BATON_UI_SESSION_HOURS": "0"}, "BATON_UI_SESSION_HOURS"),
        ({"BATON_UI_SESSION_HOURS": "745"}, "BATON_UI_SESSION_HOURS"),
        ({"BATON_UI_SESSION_HOURS": "a day"}, "BATON_UI_SESSION_HOURS"),
    ],
)
def test_a_bad_setting_beside_secrets_names_only_the_setting(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        Settings.from_env({**ENV, **env}, env_file=None)
    assert_no_secret_in_error(raised.value)


def test_a_malformed_signing_secret_is_refused_without_showing_it(tmp_path: Path) -> None:
    bad = "whsec_this*is*secret*material"
    with pytest.raises(ConfigurationError, match="signing secret #2") as raised:
        create_app(
            settings(
                database_url=f"sqlite://{tmp_path}/db.sqlite3",
                data_dir=tmp_path,
                signing_secrets=(Secret(SIGNING_SECRET), Secret(bad)),
            )
        )
    assert_no_secret_in_error(raised.value)
    for link in chain(raised.value):
        assert "secret*material" not in str(link)


def test_an_unknown_database_scheme_is_refused_without_the_password() -> None:
    with pytest.raises(ConfigurationError, match="BATON_DATABASE_URL") as raised:
        tortoise_config(f"mysql://baton:{PASSWORD}@db/baton")
    assert_no_secret_in_error(raised.value)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        f"postgres://baton:{PASSWORD}@127.0.0.1:{_closed_port()}/baton",
        f"postgres://baton:{PASSWORD}@127.0.0.1:notaport/baton",
    ],
)
async def test_a_database_that_cannot_be_opened_is_named_without_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="BATON_DATABASE_URL") as raised:
        await open_database(url)
    assert "postgres://baton:***@127.0.0.1" in str(raised.value)
    assert_no_secret_in_error(raised.value)
