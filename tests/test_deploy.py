"""docs/how-to/deploy.md's server commands, verbatim but for the port: several uvicorn workers,
and gunicorn with uvicorn workers, serving the tutorial's flow on any worker; and its frozen
heap."""

import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from auth_refresh import AuthRefreshModule
from conftest import ACCESS_SECRET, REFRESH_SECRET, InMemoryUsers
from servers import ROOT, running_server
from test_docs import fenced_blocks, shell_commands
from test_examples import run_the_tutorial_flow

# Each test starts processes of its own: make quick leaves them out.
pytestmark = pytest.mark.processes

PAGE = ROOT / "docs" / "how-to" / "deploy.md"
PAGE_PORT = "8000"


@pytest.mark.parametrize("program", ["uvicorn", "gunicorn"])
def test_the_page_serves_the_tutorial_flow_on_every_worker(program: str, tmp_path: Path) -> None:
    [command] = shell_commands(PAGE, program)
    assert "--workers" in command
    assert sum(part.count(PAGE_PORT) for part in command) == 1
    arguments = ["-m", *(part.replace(PAGE_PORT, "{port}") for part in command)]
    env = {
        "JWT_MODULE_ACCESS_SECRET": ACCESS_SECRET,
        "JWT_MODULE_REFRESH_SECRET": REFRESH_SECRET,
        # A store the workers share: the default SQLite file, in this test's directory.
        "AUTH_REFRESH_STORE_URL": f"sqlite:///{tmp_path / 'auth-refresh.db'}",
    }
    with running_server(arguments, workdir=tmp_path, env=env) as server:
        statuses = [run_the_tutorial_flow(server.base_url) for _ in range(10)]
        started = workers_started(server.output)
        output = server.output()
    assert statuses == [[200, 200, 200]] * 10, output
    assert started == 4, output  # the page's --workers 4


def workers_started(output: Callable[[], str]) -> int:
    """How many workers finished startup, once all four have (or 30 s have passed)."""
    deadline = time.monotonic() + 30
    while (count := output().count("Application startup complete")) < 4:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return count


@pytest.mark.anyio
async def test_the_frozen_heap_starts_after_the_modules_and_freezes_their_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, users: InMemoryUsers
) -> None:
    [block] = [block for block in fenced_blocks(PAGE) if "gc.freeze()" in block.source]
    monkeypatch.setenv("AUTH_REFRESH_STORE_URL", f"sqlite:///{tmp_path / 'families.db'}")
    monkeypatch.setenv("AUTH_REFRESH_ROTATION", "true")
    app = FastAPI()
    module = AuthRefreshModule.for_root(user_lookup_service=users)
    module.attach(app)
    page: dict[str, Any] = {}
    exec(compile(block.source, str(PAGE), "exec"), page)  # noqa: S102 - the page's own code
    app.include_router(page["frozen_heap_router"])  # last, as the page says
    try:
        async with app.router.lifespan_context(app):
            store = module.container.store()
            # Frozen objects are out of every collection, so out of what it tracks.
            assert gc.get_freeze_count() > 0
            assert all(tracked is not store for tracked in gc.get_objects())
    finally:
        gc.unfreeze()
