"""How a settings mistake names what the user set.

A value given in code is named as written (``grace_seconds``), one read from the environment
or ``.env`` by its variable (``AUTH_REFRESH_GRACE_SECONDS``), and one an enclosing
``BaseSettings`` read for a nested field by *that* variable (``APP_JWT__ACCESS_SECRET``): it
arrives here as a value given in code, so the variable is found by its name's ending and its
value.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import ValidationError
from pydantic_settings import BaseSettings

__all__ = ["describe", "refuse_unknown"]


def refuse_unknown(cls: type[BaseSettings], given: Mapping[str, Any]) -> str | None:
    """The problem with names given in code that are no setting of ``cls`` (a typo), or None.

    The environment and a shared ``.env`` hold anyone's variables and are not checked."""
    known = set(cls.model_fields)
    known |= {field.alias for field in cls.model_fields.values() if field.alias}
    problems = []
    # pydantic-settings' own arguments (_env_file, _case_sensitive...) start with "_".
    for name in (name for name in given if name not in known and not name.startswith("_")):
        close = difflib.get_close_matches(name, cls.model_fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{name!r} is not a setting{hint}")
    return f"{cls.__name__}: " + "; ".join(problems) if problems else None


def describe(cls: type[BaseSettings], error: ValidationError, given: Mapping[str, Any]) -> str:
    """The ``ConfigurationError`` message of ``error``: each problem by the name the user set,
    never the input (it may be a secret)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names = {field: _name_set(cls, prefix, field, value) for field, value in given.items()}
    problems = []
    for problem in error.errors(include_input=False, include_url=False):
        location = [str(part) for part in problem["loc"]]
        message = problem["msg"].removeprefix("Value error, ")
        # Checks across fields name the variables (JWT_MODULE_ACCESS_SECRET): one an enclosing
        # settings read is named by its own variable.
        for field, name in names.items():
            if name != field:
                message = re.sub(rf"\b{re.escape(prefix + field.upper())}\b", name, message)
        if not location:
            problems.append(message)
            continue
        field, rest = location[0], location[1:]
        # A field read from a variable of its own (validation_alias) is named by it.
        name = names.get(field, prefix + field.upper() if field in cls.model_fields else field)
        if name == field:  # given in code: as the code wrote it
            problems.append(f"{'.'.join(location)}: {message}")
        else:
            problems.append(f"{'.'.join([name, *rest]).upper()} {message}")
    return f"{cls.__name__}: " + "; ".join(problems)


def _name_set(cls: type[BaseSettings], prefix: str, field: str, value: object) -> str:
    # A field given to ``cls``: by an enclosing settings' variable, or in code.
    variable = _enclosing_variable(prefix, field, value)
    if variable is not None:
        return variable
    if getattr(cls, "names_fields_given_in_code", True):
        return field
    return prefix + field.upper()


def _enclosing_variable(prefix: str, field: str, value: object) -> str | None:
    # An enclosing settings read ``value`` from a variable ending in the field's name
    # (APP_JWT__ACCESS_SECRET for access_secret), in the environment or in ./.env.
    if not isinstance(value, str):
        return None
    ending, own = "_" + field.upper(), (prefix + field).upper()
    dotenv = Path(".env")
    sources: list[Mapping[str, str | None]] = [os.environ]
    if dotenv.is_file():
        sources.append(dotenv_values(dotenv))
    for variables in sources:
        found = sorted(
            name
            for name, set_value in variables.items()
            if set_value == value and name.upper().endswith(ending) and name.upper() != own
        )
        if found:
            return found[0]
    return None
