"""Settings from a ``.env`` in the working directory, a ``.env`` shared with other programs,
and nested in the application's own ``BaseSettings`` (issue 23, item 6): other variables are
ignored, names given in code are still checked, and a mistake names the variable set."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from auth_refresh import (
    AuthLocalSettings,
    AuthRefreshSettings,
    ConfigurationError,
    JwtModule,
    JwtSettings,
)
from auth_refresh.settings import build_settings

SHARED_ENV = """\
# The application's and other libraries' variables beside ours.
DATABASE_URL=postgresql://db.internal/app
AUTH_REFRESH_GRACE_SECONDS=0
AUTH_REFRESH_SOMETHING_ELSE=1
JWT_MODULE_ACCESS_EXPIRES_IN=15m
JWT_MODULE_UNRELATED=x
AUTH_LOCAL_HASH_WAIT_SECONDS=5
SENTRY_DSN=https://key@sentry.example/1
"""


@pytest.fixture
def shared_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    dotenv = tmp_path / ".env"
    dotenv.write_text(SHARED_ENV)
    return dotenv


@pytest.mark.usefixtures("shared_env")
def test_a_shared_dotenv_in_the_working_directory_is_read_and_the_rest_ignored() -> None:
    assert JwtSettings().access_expires_in == 15 * 60
    assert AuthRefreshSettings().grace_seconds == 0
    assert AuthLocalSettings().hash_wait_seconds == 5
    assert JwtModule.for_root().settings.access_expires_in == 15 * 60


@pytest.mark.usefixtures("shared_env")
def test_the_environment_wins_over_dotenv_and_code_over_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUTH_REFRESH_GRACE_SECONDS", "3")
    assert AuthRefreshSettings().grace_seconds == 3
    assert build_settings(AuthRefreshSettings, {"grace_seconds": 9}).grace_seconds == 9


def test_unknown_variables_in_the_environment_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_REFRESH_GRACE_SECOND", "0")  # not ours to judge: anyone's
    monkeypatch.setenv("JWT_MODULE_DATABASE_URL", "x")
    assert AuthRefreshSettings().grace_seconds == 5
    JwtSettings()


def test_a_subclass_with_its_own_env_file_ignores_the_other_variables(tmp_path: Path) -> None:
    dotenv = tmp_path / "auth.env"
    dotenv.write_text(SHARED_ENV)

    class MySettings(AuthRefreshSettings):
        model_config = SettingsConfigDict(env_file=dotenv)

    assert MySettings().grace_seconds == 0


@pytest.mark.usefixtures("shared_env")
def test_a_typo_in_code_is_still_refused() -> None:
    with pytest.raises(ConfigurationError) as raised:
        build_settings(AuthRefreshSettings, {"grace_second": 0})
    assert raised.value.message == (
        "AuthRefreshSettings: 'grace_second' is not a setting (did you mean 'grace_seconds'?)"
    )
    with pytest.raises(ConfigurationError, match="'acess_secret' is not a setting"):
        JwtModule.for_root({"acess_secret": "s" * 32})


@pytest.mark.usefixtures("shared_env")
def test_an_invalid_value_in_dotenv_names_its_variable(shared_env: Path) -> None:
    shared_env.write_text(SHARED_ENV + "AUTH_REFRESH_ABSOLUTE_LIFETIME=forever\n")
    with pytest.raises(ConfigurationError) as raised:
        AuthRefreshSettings()
    assert raised.value.message.startswith(
        "AuthRefreshSettings: AUTH_REFRESH_ABSOLUTE_LIFETIME must be a number of seconds"
    )


class AppSettings(BaseSettings):
    """An application's own settings, with the JWT settings nested (APP_JWT__*)."""

    model_config = SettingsConfigDict(env_prefix="APP_", env_nested_delimiter="__")

    jwt: JwtSettings


def test_a_nested_settings_mistake_names_the_variable_the_user_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_JWT__ACCESS_SECRET", "short")
    monkeypatch.setenv("APP_JWT__REFRESH_SECRET", "r" * 40)
    with pytest.raises(ConfigurationError) as raised:
        AppSettings()
    assert raised.value.message == (
        "JwtSettings: APP_JWT__ACCESS_SECRET must be at least 32 bytes long (it is 5 bytes)"
    )
    # A check across fields names it too.
    monkeypatch.setenv("APP_JWT__ACCESS_SECRET", "a" * 40)
    monkeypatch.setenv("APP_JWT__ALGORITHM", "HS512")
    with pytest.raises(ConfigurationError) as raised:
        AppSettings()
    assert "APP_JWT__ACCESS_SECRET must be at least 64 bytes long for HS512" in str(raised.value)
    assert "JWT_MODULE_ACCESS_SECRET" not in str(raised.value)


def test_a_nested_settings_mistake_in_dotenv_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("APP_JWT__ACCESS_SECRET=short\n")

    class DotenvAppSettings(AppSettings):
        model_config = SettingsConfigDict(env_file=".env")

    with pytest.raises(ConfigurationError, match="APP_JWT__ACCESS_SECRET must be at least 32"):
        DotenvAppSettings()


def test_nested_settings_that_are_valid_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_JWT__ACCESS_EXPIRES_IN", "10m")
    assert AppSettings().jwt.access_expires_in == 600
