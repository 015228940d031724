"""The API reference renders every registration option with its type, default and meaning:
mkdocstrings shows a TypedDict key's annotation and the docstring beneath it, so each key needs
one that gives its default; the route options both option sets inherit are listed for it."""

from __future__ import annotations

import ast
import re

import auth_refresh
from auth_refresh.registration import options
from servers import ROOT

OPTIONS = ROOT / "src" / "auth_refresh" / "registration" / "options.py"
API_PAGE = ROOT / "docs" / "reference" / "api.md"


def key_docstrings(class_name: str) -> dict[str, str]:
    tree = ast.parse(OPTIONS.read_text())
    [found] = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name
    ]
    documented: dict[str, str] = {}
    for statement, following in zip(found.body, found.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            documented[statement.target.id] = following.value.value
    return documented


def test_every_registration_option_has_a_docstring_with_its_default() -> None:
    route_options = key_docstrings("_RouteOptions")
    for option_set in (auth_refresh.RegistrationOptions, auth_refresh.AsyncRegistrationOptions):
        documented = {**route_options, **key_docstrings(option_set.__name__)}
        assert set(documented) == option_set.__optional_keys__
        for name, docstring in documented.items():
            assert re.search(r"\b(Default|No\s+default)\b", docstring), name


def test_the_reference_page_shows_the_inherited_route_options() -> None:
    listed = re.search(r"inherited_members: (\[.*\])", API_PAGE.read_text())
    assert listed is not None
    assert set(ast.literal_eval(listed.group(1))) == set(options._RouteOptions.__optional_keys__)
    assert "auth_refresh.RegistrationOptions" in API_PAGE.read_text()
