"""The benchmark's DPoP configuration measures what it says: ``/bench/mint`` with a key's
thumbprint gives refresh tokens bound to that key, which refresh only with a proof of it."""

from pathlib import Path

import pytest
from bench.apps import library_app, raw_app
from bench.configurations import BY_NAME, environment
from bench.dpop_proofs import ProofMaker

from conftest import serve

pytestmark = pytest.mark.anyio

URL = "http://testserver/auth/refresh"


@pytest.fixture
def dpop_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the harness serves ``library-memory-dpop`` with."""
    for name, value in environment(BY_NAME["library-memory-dpop"], tmp_path, None).items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("dpop_environment")
async def test_minted_tokens_are_bound_to_the_named_key_and_refresh_with_its_proofs() -> None:
    client_key, other_key = ProofMaker(), ProofMaker()
    async with serve(library_app()) as client:
        minted = await client.post("/bench/mint", json={"count": 2, "jkt": client_key.thumbprint})
        first, second = minted.json()["tokens"]
        # Without a proof, or with another key's, the bound token does not refresh...
        assert (await client.post("/auth/refresh", json={"refreshToken": first})).status_code == 401
        thief = {"DPoP": other_key.proof("POST", URL).decode()}
        answer = await client.post("/auth/refresh", json={"refreshToken": first}, headers=thief)
        assert answer.status_code == 401
        # ...and the session lives on: the client's own proof refreshes it, bound again.
        own = {"DPoP": client_key.proof("POST", URL).decode()}
        answer = await client.post("/auth/refresh", json={"refreshToken": first}, headers=own)
        assert answer.status_code == 200
        assert answer.json()["tokenType"] == "DPoP"
        # A proof is single-use: the same header with the other minted token is a replay.
        answer = await client.post("/auth/refresh", json={"refreshToken": second}, headers=own)
        assert answer.status_code == 401


async def test_a_configuration_that_cannot_bind_refuses_to_mint_for_a_key() -> None:
    # A harness asking the wrong server for bound tokens fails loudly, not with unbound ones.
    async with serve(raw_app()) as client:
        answer = await client.post("/bench/mint", json={"count": 1, "jkt": "a-thumbprint"})
        assert answer.status_code == 400
