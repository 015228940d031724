"""docs/how-to/deploy.md's server commands, verbatim but for the port: several uvicorn workers,
and gunicorn with uvicorn workers, serving the tutorial's flow on any worker."""

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import ACCESS_SECRET, REFRESH_SECRET
from servers import ROOT, running_server
from test_docs import shell_commands
from test_examples import run_the_tutorial_flow

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
