"""Code in docs is run by tests.

The convention, for README.md and every page under docs/:

* Every ```python block runs. The blocks of one page run in order, in one namespace (a fresh
  module), with a fresh temporary directory as the working directory, so a later block may use
  what an earlier one defined. A block that cannot run on its own is made runnable by the
  blocks before it, not skipped.
* ```python no-run marks the rare block that must not run; it stays visible as such.
* Any other spelling of Python (```py, ```python3, ```pycon, unknown flags) is an error, so no
  block is left out silently.
* Every FastAPI application a page leaves in its namespace must start (its lifespan runs), and
  pages end with a block that drives their application or asserts what the page claims.
* The tutorial's shell steps (README.md and docs/getting-started.md: curl, with jq picking the
  tokens out) run verbatim in bash against the demo served as ``make demo`` serves it, and
  against the tutorial's own app.py served with the page's uvicorn command; only host:port is
  replaced.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic_settings import BaseSettings

from auth_refresh import AuthRefreshSettings, JwtSettings
from conftest import ACCESS_SECRET, REFRESH_SECRET
from servers import ROOT, Server, running_server

DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
TUTORIAL_PAGES = [ROOT / "README.md", DOCS / "getting-started.md"]
# Pages other tasks are writing; the index may link them before they exist.
REQUIRED_EXPLANATIONS = {DOCS / "security-model.md", DOCS / "rotation.md"}

DEMO_ORIGIN = "http://127.0.0.1:3000"
DEMO_USER = {"id": "user-1", "username": "user@example.com"}
SECRETS = {"JWT_MODULE_ACCESS_SECRET": ACCESS_SECRET, "JWT_MODULE_REFRESH_SECRET": REFRESH_SECRET}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")


def page_id(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # the line of the first line of code, 1-based
    language: str
    flags: tuple[str, ...]
    source: str

    @property
    def where(self) -> str:
        return f"{page_id(self.page)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, dedented by their fence's indentation."""
    blocks: list[Block] = []
    lines = page.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        fence, indent = opening["fence"], opening["indent"]
        info = opening["info"].split()
        start = index
        while index < len(lines) and lines[index].strip() != fence:
            index += 1
        if index == len(lines):
            raise AssertionError(f"{page_id(page)}:{start}: unclosed code fence")
        body = [line.removeprefix(indent) for line in lines[start:index]]
        index += 1
        language = info[0] if info else ""
        blocks.append(Block(page, start + 1, language, tuple(info[1:]), "\n".join(body) + "\n"))
    return blocks


def python_blocks(page: Path) -> list[Block]:
    """The blocks of ``page`` to run; raises on any Python block that would be left out."""
    runnable = []
    for block in fenced_blocks(page):
        if block.language == "python":
            unknown = set(block.flags) - {"no-run"}
            assert not unknown, f"{block.where}: unknown flags {sorted(unknown)}"
            if "no-run" not in block.flags:
                runnable.append(block)
        else:
            assert not block.language.lower().startswith("py"), (
                f"{block.where}: write ```python (run) or ```python no-run, not ```{block.language}"
            )
    return runnable


def test_the_documentation_has_the_pages_the_issue_asks_for() -> None:
    required = {
        "README.md",
        "docs/index.md",
        "docs/getting-started.md",
        "docs/how-to/register-synchronously.md",
        "docs/how-to/register-asynchronously.md",
        "docs/how-to/register-globally-async.md",
        "docs/how-to/custom-user-lookup.md",
        "docs/how-to/custom-token-verification.md",
        "docs/how-to/settings.md",
        "docs/how-to/companion-modules.md",
        "docs/how-to/testing.md",
        "docs/how-to/feature-registrations.md",
        "docs/how-to/oauth2-token-endpoint.md",
        "docs/extractors.md",
        "docs/errors.md",
        "docs/engineering-concepts.md",
    }
    assert required <= {page_id(page) for page in PAGES}


# -- every python block runs -----------------------------------------------------------------------


@pytest.fixture
def page_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A fresh module to run a page in, with a fresh working directory and environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = types.ModuleType("docs_page")
    module.__file__ = str(tmp_path / "docs_page.py")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    environment = dict(os.environ)
    try:
        yield module.__dict__
    finally:
        os.environ.clear()
        os.environ.update(environment)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_python_blocks_run(page: Path, page_namespace: dict[str, Any]) -> None:
    for block in python_blocks(page):
        # Padding keeps the page's line numbers in tracebacks.
        source = "\n" * (block.line - 1) + block.source
        code = compile(source, str(block.page), "exec", dont_inherit=True)
        exec(code, page_namespace)  # noqa: S102 - running the documentation is the point
    applications = [value for value in page_namespace.values() if isinstance(value, FastAPI)]
    for application in applications:
        asyncio.run(_start_and_stop(application))
    if applications:
        checks = "".join(block.source for block in python_blocks(page))
        assert "assert " in checks, f"{page_id(page)} builds an application and never checks it"


async def _start_and_stop(application: FastAPI) -> None:
    async with application.router.lifespan_context(application):
        pass


# -- the pages hold together -----------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page: Path) -> None:
    for match in _LINK.finditer(_without_code(page.read_text())):
        target, _, anchor = match["target"].partition("#")
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page_id(page)} links to a missing {match['target']}"
        if anchor:
            assert anchor in _anchors(path), f"{page_id(page)}: no heading for {match['target']}"


def _without_code(markdown: str) -> str:
    return re.sub(r"^(`{3,}|~{3,}).*?^\1", "", markdown, flags=re.M | re.S)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for the page's headings: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", _without_code(page.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_page_is_linked_from_the_index() -> None:
    index = DOCS / "index.md"
    linked = {
        (DOCS / match["target"].split("#", 1)[0]).resolve()
        for match in _LINK.finditer(index.read_text())
    }
    pages = {page.resolve() for page in DOCS.rglob("*.md")} - {index.resolve()}
    assert pages <= linked, f"not linked from docs/index.md: {sorted(pages - linked)}"
    assert linked >= {page.resolve() for page in REQUIRED_EXPLANATIONS}


def test_the_convention_catches_python_that_would_not_run(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```py\nprint('left out')\n```\n")
    with pytest.raises(AssertionError, match="not ```py"):
        python_blocks(page)
    page.write_text("```python\nprint('never closed')\n")
    with pytest.raises(AssertionError, match="unclosed code fence"):
        python_blocks(page)
    page.write_text(
        "- a list item:\n\n  ```python\n  x = 1\n  ```\n\n```python no-run\ny = 2\n```\n"
    )
    [block] = python_blocks(page)
    assert (block.line, block.source) == (4, "x = 1\n")


@pytest.mark.parametrize("settings_class", [JwtSettings, AuthRefreshSettings])
def test_every_setting_is_documented(settings_class: type[BaseSettings]) -> None:
    text = "\n".join(page.read_text() for page in PAGES)
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    undocumented = [
        name
        for name in settings_class.model_fields
        if f"`{prefix}{name.upper()}`" not in text and f"`{name}`" not in text
    ]
    assert not undocumented, f"{settings_class.__name__} settings missing from the docs"


# -- the tutorial's commands, verbatim -------------------------------------------------------------


def shell_commands(page: Path, program: str) -> list[list[str]]:
    """The ``program`` commands of the page's shell blocks, as argv, continuation lines joined."""
    commands = []
    for block in fenced_blocks(page):
        if block.language not in {"bash", "sh", "shell", "console"}:
            continue
        for command in block.source.replace("\\\n", " ").splitlines():
            if command.lstrip().startswith(f"{program} "):
                commands.append(shlex.split(command))
    return commands


def tutorial_script(page: Path, origin: str) -> str:
    """The page's shell blocks that call the demo, in order, as one script against ``origin``."""
    blocks = [
        block.source
        for block in fenced_blocks(page)
        if block.language in {"bash", "sh", "shell"} and DEMO_ORIGIN in block.source
    ]
    assert blocks, f"{page_id(page)} has no shell block calling {DEMO_ORIGIN}"
    return "".join(blocks).replace(DEMO_ORIGIN, origin)


def run_the_tutorial_flow(page: Path, origin: str) -> None:
    """The page's curl steps (log in, refresh, GET /me), verbatim, in bash against ``origin``."""
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"the tutorial's shell steps need {' and '.join(missing)} (apt-get install curl jq); "
            ".ci/run installs them"
        )
    script = tutorial_script(page, origin)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"{page_id(page)}'s steps failed:\n{result.stderr}"
    first_pair, second_pair, user = (json.loads(line) for line in result.stdout.splitlines())
    assert set(first_pair) == set(second_pair) == {"accessToken", "refreshToken"}
    assert second_pair["refreshToken"] != first_pair["refreshToken"]
    assert user == DEMO_USER
    # What the page says the last command answers is what it answers.
    assert json.dumps(user, separators=(",", ":")) in page.read_text()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """examples.sync_registration as ``make demo`` runs it: no secrets set, a port of its own."""
    unset = {"JWT_MODULE_ACCESS_SECRET": "", "JWT_MODULE_REFRESH_SECRET": ""}
    workdir = tmp_path_factory.mktemp("demo")
    with running_server(["-m", "examples.sync_registration"], workdir=workdir, env=unset) as server:
        yield server


@pytest.mark.processes
@pytest.mark.parametrize("page", TUTORIAL_PAGES, ids=page_id)
def test_the_tutorial_curl_commands_work_verbatim_against_the_demo(
    page: Path, demo: Server
) -> None:
    run_the_tutorial_flow(page, demo.base_url)


@pytest.mark.processes
def test_the_tutorial_app_serves_the_curl_commands(tmp_path: Path) -> None:
    """Getting started: "save both blocks as app.py and serve it" with its uvicorn command."""
    page = DOCS / "getting-started.md"
    (tmp_path / "app.py").write_text("".join(block.source for block in python_blocks(page)[:2]))
    [uvicorn] = shell_commands(page, "uvicorn")
    assert uvicorn.count("3000") == 1, f"expected port 3000 in {shlex.join(uvicorn)}"
    arguments = ["-m", *("{port}" if part == "3000" else part for part in uvicorn)]
    with running_server(arguments, workdir=tmp_path, env=SECRETS) as server:
        run_the_tutorial_flow(page, server.base_url)
