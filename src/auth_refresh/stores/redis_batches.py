"""Script calls batched per event loop and server: the calls asked for while a pipeline is
under way go together in the next, one write and one read for the batch (redis-py's public
pipelines).

Each call comes with its step's deadline, and a batch gives up at its earliest (one timer a
batch, not one a step): the calls in it fail with ``TimeoutError``. A batch under way ends by
the deadlines of calls asked for before the next batch's, so each call is answered or failed
by its own. A caller that stopped waiting has its reply skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.client import Pipeline

from auth_refresh.stores.redis_core import ScriptCall, run_scripts

__all__ = ["ScriptBatches"]

# A call, the future its caller awaits, and when it gives up (the loop's time).
_Waiting = tuple[ScriptCall, asyncio.Future[Any], float]


class ScriptBatches:
    """One event loop's script calls to one server, sent through ``pipeline()``; with
    ``single``, a batch of one call is sent by it instead (a pipeline costs more CPU)."""

    def __init__(
        self,
        pipeline: Callable[[], Pipeline],
        single: Callable[[ScriptCall], Awaitable[Any]] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._single = single
        self._waiting: list[_Waiting] = []
        self._sending: asyncio.Task[None] | None = None

    def submit(self, call: ScriptCall, deadline: float) -> asyncio.Future[Any]:
        """The call's answer, or the error it got, once its batch is sent; ``TimeoutError`` at
        ``deadline`` (the loop's ``time()``) if none came."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._waiting.append((call, answer, deadline))
        if self._sending is None:
            self._sending = loop.create_task(self._send_all())
        return answer

    async def finish(self) -> None:
        """Wait for the batch under way (its deadline bounds it)."""
        if self._sending is not None and not self._sending.done():
            await asyncio.wait([self._sending])

    async def _send_all(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await self._send(batch)
                except Exception as error:  # each caller raises it, as if it had sent alone
                    for _, answer, _ in batch:
                        if not answer.done():
                            answer.set_exception(error)
        finally:
            self._sending = None

    async def _send(self, batch: list[_Waiting]) -> None:
        async with asyncio.timeout_at(min(deadline for _, _, deadline in batch)):
            if self._single is not None and len(batch) == 1:
                replies = [await self._single(batch[0][0])]
            else:
                async with self._pipeline() as pipe:
                    replies = await run_scripts(pipe, [call for call, _, _ in batch])
        for (_, answer, _), reply in zip(batch, replies, strict=True):
            if answer.done():
                continue  # a step that gave up (its deadline) has its reply skipped
            if isinstance(reply, Exception):
                answer.set_exception(reply)
            else:
                answer.set_result(reply)
