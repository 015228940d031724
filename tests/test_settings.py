"""Settings: env names, durations, merging, and startup errors that name the env var."""

import pytest

from auth_refresh import AuthRefreshSettings, ConfigurationError, JwtModule, JwtSettings
from auth_refresh.settings import build_settings, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30),
        ("30", 30),
        ("45s", 45),
        ("30m", 1800),
        ("1h", 3600),
        ("7d", 604800),
        ("2w", 1209600),
        ("1y", 31557600),
        (" 2h ", 7200),
        (60.0, 60),
    ],
)
def test_durations(value: object, seconds: int) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "1x", "h", "1.5h", "-1h", True, 1.5, None, "1h30m"])
def test_invalid_durations(value: object) -> None:
    with pytest.raises(ValueError, match="must be a number of seconds"):
        parse_duration(value)


def test_defaults_follow_the_original() -> None:
    settings = JwtSettings()
    assert settings.access_expires_in == 3600
    assert settings.refresh_expires_in == 7 * 86400


def test_env_names_are_the_originals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_MODULE_ACCESS_EXPIRES_IN", "30m")
    monkeypatch.setenv("JWT_MODULE_REFRESH_EXPIRES_IN", "2d")
    settings = JwtSettings()
    assert (settings.access_expires_in, settings.refresh_expires_in) == (1800, 172800)


def test_code_settings_merge_over_env_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_MODULE_ACCESS_EXPIRES_IN", "30m")
    monkeypatch.setenv("JWT_MODULE_REFRESH_EXPIRES_IN", "2d")
    settings = build_settings(JwtSettings, {"refresh_expires_in": "1h"})
    assert settings.access_expires_in == 1800  # env kept
    assert settings.refresh_expires_in == 3600  # code wins
    assert settings.leeway == 5  # default kept


@pytest.mark.parametrize("name", ["JWT_MODULE_ACCESS_SECRET", "JWT_MODULE_REFRESH_SECRET"])
def test_a_missing_secret_names_the_env_var(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delenv(name)
    with pytest.raises(ConfigurationError, match=f"{name} is not set"):
        JwtModule.for_root()


@pytest.mark.parametrize("name", ["JWT_MODULE_ACCESS_SECRET", "JWT_MODULE_REFRESH_SECRET"])
def test_a_short_secret_names_the_env_var_and_not_the_secret(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "short-but-secret-value-31-bytes")
    with pytest.raises(ConfigurationError) as raised:
        JwtModule.for_root()
    assert f"{name} must be at least 32 bytes long (it is 31 bytes)" in raised.value.message
    assert "short-but-secret" not in str(raised.value)


def test_a_secret_counts_bytes_not_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_MODULE_ACCESS_SECRET", "é" * 16)  # 16 characters, 32 bytes
    assert JwtModule.for_root().settings.access_secret is not None


def test_an_invalid_duration_in_env_names_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_MODULE_ACCESS_EXPIRES_IN", "soon")
    with pytest.raises(ConfigurationError, match="JWT_MODULE_ACCESS_EXPIRES_IN"):
        JwtModule.for_root()


def test_secrets_need_an_hmac_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="JWT_MODULE_ALGORITHM must be one of HS256"):
        JwtModule.for_root({"algorithm": "RS256"})


def test_settings_errors_never_show_the_input() -> None:
    with pytest.raises(ConfigurationError) as raised:
        JwtSettings(access_secret="a-short-secret-value")
    assert "a-short-secret-value" not in str(raised.value)


def test_secrets_do_not_show_in_repr() -> None:
    from conftest import ACCESS_SECRET

    assert ACCESS_SECRET not in repr(JwtSettings())


def test_unknown_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="'paths' is not a setting"):
        build_settings(AuthRefreshSettings, {"paths": "/x"})
