"""The PostgreSQL store's rotations in batches, against a real server: at most one statement per
refresh and fewer under concurrency, one family twice in a batch decided in arrival order, two
processes batching the same families crosswise (or one batching, one logging a subject out
everywhere) without a deadlock, and a close() while batches are under way that answers them and
leaves no connection open."""

from __future__ import annotations

import asyncio
import copy
import gc
import secrets
import threading
import time
import warnings
from collections.abc import Awaitable, Callable

import pytest

from auth_refresh import RefreshTokenStore, RotationOutcome, StoreUnavailableError, open_store
from auth_refresh.stores.postgres import STEP_DEADLINE_SECONDS
from auth_refresh.stores.postgres_batches import BATCH_LIMIT
from postgres_server import PostgresServer
from store_fixtures import Family, opened

# Most tests here start a server of their own: make quick leaves them out.
pytestmark = [pytest.mark.anyio, pytest.mark.servers]

CLOSE_WITHIN_SECONDS = 2.0


@pytest.fixture
def server(faulty_postgres: PostgresServer) -> PostgresServer:
    return faulty_postgres


def statement_calls(server: PostgresServer, url: str) -> tuple[int, int]:
    """Statements run in ``url``'s database since the last reset, and how many were rotation
    batches."""
    database = url.rsplit("/", 1)[1]
    in_database = f"dbid = (SELECT oid FROM pg_database WHERE datname = '{database}')"  # noqa: S608
    every = server.psql(
        f"SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE {in_database}"  # noqa: S608
    )
    batches = server.psql(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "  # noqa: S608
        f"WHERE {in_database} AND query LIKE '%FROM auth_refresh_rotate_batch(%'"
    )
    return int(every), int(batches)


async def test_a_refresh_is_at_most_one_statement_and_concurrent_ones_share_statements(
    server: PostgresServer,
) -> None:
    url = server.fresh_database()
    async with opened(url) as store:
        family = await Family(store).start()
        _, _, live = await family.rotate(family.first_token)  # the statement is prepared by now
        families = [await Family(store).start() for _ in range(32)]
        server.psql("SELECT pg_stat_statements_reset()")
        for _ in range(20):
            outcome, _, live = await family.rotate(live.token_id)
            assert outcome is RotationOutcome.ROTATED
        assert statement_calls(server, url) == (20, 20)

        server.psql("SELECT pg_stat_statements_reset()")
        rotations = await asyncio.gather(*(f.rotate(f.first_token) for f in families))
        every, batches = statement_calls(server, url)
        assert every == batches < len(families)
        assert [outcome for outcome, _, _ in rotations] == [RotationOutcome.ROTATED] * 32
        # Each family rotated once: its successor is live, its first token a repeat.
        for each, (_, _, offered) in zip(families, rotations, strict=True):
            assert (await each.rotate(offered.token_id))[0] is RotationOutcome.ROTATED


@pytest.mark.parametrize(
    ("grace", "second"), [(5.0, RotationOutcome.GRACE), (0.0, RotationOutcome.REUSED)]
)
async def test_one_family_twice_in_a_batch_is_decided_in_arrival_order(
    server: PostgresServer, grace: float, second: RotationOutcome
) -> None:
    url = server.fresh_database()
    async with opened(url) as store:
        family = await Family(store).start()
        other = await Family(store).start()
        await other.rotate(other.first_token)  # the statement is prepared by now
        server.psql("SELECT pg_stat_statements_reset()")
        first, repeat = await asyncio.gather(
            family.rotate(family.first_token, grace=grace),
            family.rotate(family.first_token, grace=grace),
        )
        assert statement_calls(server, url) == (1, 1)  # one batch held both
        assert (first[0], first[1]) == (RotationOutcome.ROTATED, first[2].pair)
        if second is RotationOutcome.GRACE:
            # The second saw the first's rotation: the pair it handed out, not its own.
            assert (repeat[0], repeat[1]) == (second, first[2].pair)
        else:
            assert (repeat[0], repeat[1]) == (second, None)
            assert (await family.rotate(first[2].token_id))[0] is RotationOutcome.REVOKED


async def test_two_processes_batching_the_same_families_crosswise_do_not_deadlock(
    postgres_url: str,
) -> None:
    async with opened(postgres_url) as store:
        families = [await Family(store).start() for _ in range(BATCH_LIMIT)]
    ready = threading.Barrier(2)

    def process(order: list[Family]) -> set[RotationOutcome]:
        # A store of its own on a loop of its own, as another worker process has.
        async def refresh_rounds() -> set[RotationOutcome]:
            outcomes: set[RotationOutcome] = set()
            async with opened(postgres_url) as store:
                warm_up = await Family(store).start()
                await warm_up.rotate(warm_up.first_token)
                mine = [copy.copy(family) for family in order]
                for family in mine:
                    family.store = store
                for _ in range(10):
                    ready.wait()
                    # Each round is one batch, locking every family's row: in opposite orders
                    # on the two sides, it would deadlock unless the server sorts them.
                    rotations = await asyncio.gather(
                        *(family.rotate(family.first_token) for family in mine)
                    )
                    outcomes.update(outcome for outcome, _, _ in rotations)
            return outcomes

        return asyncio.run(refresh_rounds())

    # A 503 (the deadlock detector or the statement timeout ending a batch) raises here.
    outcomes = await asyncio.gather(
        asyncio.to_thread(process, families), asyncio.to_thread(process, families[::-1])
    )
    assert set.union(*outcomes) == {RotationOutcome.ROTATED, RotationOutcome.GRACE}


async def test_closing_while_a_batch_is_under_way_leaves_no_connection_open(
    server: PostgresServer,
) -> None:
    url = server.fresh_database()
    store = open_store(url + "?application_name=closing-mid-batch")
    family = await Family(store).start()
    server.pause()
    try:
        step = asyncio.ensure_future(family.rotate(family.first_token))
        await asyncio.sleep(0.1)  # its batch is sent and waits for the reply
        started = time.monotonic()
        await store.close()
        assert time.monotonic() - started < CLOSE_WITHIN_SECONDS
    finally:
        server.resume()
    with pytest.raises(StoreUnavailableError):
        await step
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'closing-mid-batch'"
    for _ in range(50):
        if server.psql(query) == "0":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("a connection of the closed store is still open")
    # An unclosed socket is a ResourceWarning when collected: an error under this suite.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        gc.collect()


async def test_a_rotation_asked_while_a_batch_hangs_is_answered_by_its_own_deadline(
    server: PostgresServer,
) -> None:
    # A rotation has no timer of its own: the batch before it ends at its first caller's
    # deadline, and its own batch at its own. The server is frozen throughout.
    url = server.fresh_database()
    async with opened(url) as store:
        hung, asked = await Family(store).start(), await Family(store).start()
        # Connections open already, so the second batch waits on the frozen server's reply,
        # not on a connect timeout of its own.
        await asyncio.gather(*(family.active() for family in (hung, asked) * 2))
        server.pause()
        try:
            first = asyncio.ensure_future(hung.rotate(hung.first_token))
            await asyncio.sleep(STEP_DEADLINE_SECONDS / 3)  # its batch is sent and waits
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                await asked.rotate(asked.first_token)
            waited = time.monotonic() - started
            with pytest.raises(StoreUnavailableError):
                await first
        finally:
            server.resume()
        # Answered after the batch before it failed, and by its own deadline (slack for a
        # loaded machine); nothing written: both first tokens are still live.
        assert STEP_DEADLINE_SECONDS / 2 < waited < STEP_DEADLINE_SECONDS + 0.4
        for family in (hung, asked):
            assert (await family.rotate(family.first_token))[0] is RotationOutcome.ROTATED


async def test_closing_while_batches_are_under_way_answers_every_refresh_in_them(
    postgres_url: str,
) -> None:
    store = open_store(postgres_url)
    families = [await Family(store).start() for _ in range(BATCH_LIMIT + 20)]
    # More than one batch holds: one is sent, the rest wait for it.
    refreshes = [asyncio.ensure_future(f.rotate(f.first_token)) for f in families]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await store.close()
    outcomes = [outcome for outcome, _, _ in await asyncio.gather(*refreshes)]
    assert outcomes == [RotationOutcome.ROTATED] * len(families)


async def log_out_everywhere(store: RefreshTokenStore, subject: str) -> None:
    await store.revoke_subject(subject, now=time.time())


async def log_out_the_others(store: RefreshTokenStore, subject: str) -> None:
    await store.revoke_other_sessions(subject, None, now=time.time())


async def log_in_beyond_a_cap_of_one(store: RefreshTokenStore, subject: str) -> None:
    await Family(store, subject).start(max_sessions=1)


@pytest.mark.parametrize(
    "end_sessions", [log_out_everywhere, log_out_the_others, log_in_beyond_a_cap_of_one]
)
async def test_ending_a_subjects_sessions_beside_a_batch_of_them_does_not_deadlock(
    postgres_url: str, end_sessions: Callable[[RefreshTokenStore, str], Awaitable[None]]
) -> None:
    rounds = 10
    async with opened(postgres_url) as store:
        subjects = ["subject-" + secrets.token_hex(4) for _ in range(rounds)]
        families = [
            [await Family(store, subject).start() for _ in range(BATCH_LIMIT)]
            for subject in subjects
        ]
    ready = threading.Barrier(2)

    def process(work: Callable[[RefreshTokenStore, int], Awaitable[object]]) -> None:
        async def each_round() -> None:
            async with opened(postgres_url) as store:
                await store.revoke_family("none")  # connected, statements prepared
                for index in range(rounds):
                    ready.wait()
                    await work(store, index)

        asyncio.run(each_round())

    async def rotate_all(store: RefreshTokenStore, index: int) -> object:
        mine = [copy.copy(family) for family in families[index]]
        for family in mine:
            family.store = store
        # One batch, in family id order; the logout's rows in the order the index gives them
        # (a login's beyond the cap in the order of their last refresh).
        return await asyncio.gather(*(family.rotate(family.first_token) for family in mine))

    async def end_them(store: RefreshTokenStore, index: int) -> None:
        await end_sessions(store, subjects[index])

    # A 503 (the deadlock detector or the statement timeout) raises here.
    await asyncio.gather(
        asyncio.to_thread(process, rotate_all), asyncio.to_thread(process, end_them)
    )
