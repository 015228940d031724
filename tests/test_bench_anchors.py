"""The benchmark's by-hand anchors (bench/by_hand.py) are correct: each refresh token they mint
rotates once, and of two requests presenting it at once, one gets the pair."""

import asyncio
from pathlib import Path

import pytest
from bench.apps import raw_app
from bench.by_hand import tokens

from conftest import serve

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["sqlite", "redis", "postgres", "redis-cluster"])
def anchor(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """A store kind and a fresh store URL of it, as the benchmark gives its anchor."""
    if request.param == "sqlite":
        return "sqlite", f"sqlite:///{tmp_path / 'anchor.db'}"
    url: str = request.getfixturevalue(request.param.replace("-", "_") + "_url")
    return request.param, url


async def test_a_minted_token_rotates_once_and_its_successor_works(
    anchor: tuple[str, str],
) -> None:
    async with serve(raw_app(tokens(*anchor))) as client:
        [token] = (await client.post("/bench/mint", json={"count": 1})).json()["tokens"]
        answers = await asyncio.gather(
            *(client.post("/auth/refresh", json={"refreshToken": token}) for _ in range(2))
        )
        assert sorted(answer.status_code for answer in answers) == [200, 401]
        [pair] = [answer.json() for answer in answers if answer.status_code == 200]
        assert set(pair) == {"accessToken", "refreshToken"}
        successor = await client.post("/auth/refresh", json={"refreshToken": pair["refreshToken"]})
        assert successor.status_code == 200
        again = await client.post("/auth/refresh", json={"refreshToken": token})
        assert again.status_code == 401
