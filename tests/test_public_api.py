"""The public names: one alphabetized ``__all__`` that lists every exported name."""

import auth_refresh
from auth_refresh import exceptions


def test_all_is_alphabetized_and_unique() -> None:
    assert auth_refresh.__all__ == sorted(set(auth_refresh.__all__))


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name in vars(auth_refresh)
        if not name.startswith("_")
        and not isinstance(getattr(auth_refresh, name), type(auth_refresh))
    }
    assert set(auth_refresh.__all__) == public


def test_every_error_is_exported_and_under_one_root() -> None:
    for name in exceptions.__all__:
        error = getattr(exceptions, name)
        assert issubclass(error, auth_refresh.AuthRefreshError)
        assert getattr(auth_refresh, name) is error
        assert error.__doc__
        assert "\n" not in error.__doc__.strip()
