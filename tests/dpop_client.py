"""A DPoP client this project did not write: panva's ``dpop`` and ``jose`` under Node, installed
at their pinned versions (tests/dpop_client/package-lock.json) into a temporary directory.

``dpop_node`` is one Node process for the session: ``key(alg)`` makes a key pair there (its
public JWK and the thumbprint ``dpop`` computes), ``proof(...)`` a proof as the ``dpop``
package makes it, ``craft(...)`` a JWS with the header and claims given (signed by ``jose``),
for proofs that break one rule of RFC 9449 §4.3.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["DpopNode", "NodeKey", "dpop_node"]

CLIENT = Path(__file__).resolve().parent / "dpop_client"
INSTALL_SECONDS = 180


@dataclass(frozen=True)
class NodeKey:
    id: int
    alg: str
    jkt: str
    jwk: dict[str, Any]
    private_jwk: dict[str, Any]


class DpopNode:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def _ask(self, **request: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def key(self, alg: str = "ES256") -> NodeKey:
        made = self._ask(op="key", alg=alg)
        return NodeKey(made["id"], alg, made["jkt"], made["jwk"], made["privateJwk"])

    def proof(
        self,
        key: NodeKey,
        htm: str,
        htu: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
    ) -> str:
        answer = self._ask(
            op="proof", key=key.id, htm=htm, htu=htu, nonce=nonce, accessToken=access_token
        )
        return str(answer["proof"])

    def craft(
        self,
        key: NodeKey | None,
        header: dict[str, Any],
        claims: dict[str, Any],
        *,
        secret: str | None = None,
        crit: dict[str, bool] | None = None,
    ) -> str:
        answer = self._ask(
            op="craft", key=None if key is None else key.id, header=header, claims=claims,
            secret=secret, crit=crit,
        )  # fmt: skip
        return str(answer["proof"])


@pytest.fixture(scope="session")
def dpop_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DpopNode]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed for the DPoP client (apt-get install nodejs npm)")
    directory = tmp_path_factory.mktemp("dpop-client")
    for name in ("package.json", "package-lock.json", "proofs.mjs"):
        shutil.copy(CLIENT / name, directory / name)
    installed = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=INSTALL_SECONDS,
        check=False,
    )
    if installed.returncode != 0:
        pytest.skip(f"npm could not install the DPoP client: {installed.stderr.strip()[-300:]}")
    process = subprocess.Popen(
        [node, "proofs.mjs"],
        cwd=directory,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield DpopNode(process)
    finally:
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
