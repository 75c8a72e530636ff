"""The store: journal and outbox in real SQLite files, across restarts, crashes and a full disk."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.store import JournalEntry, OutboxMessage, Store
from tests.support.harness import REPO


def entry(n: int, *, published: bool = True) -> JournalEntry:
    return JournalEntry(
        event_id=f"e{n}",
        kind="rating",
        subject="pad-1",
        device_id="pad-1",
        ts="2026-11-21T09:00:00+08:00",
        ts_epoch=1_795_000_000.0 + n,
        received_at="2026-11-21T09:00:00+08:00",
        payload=f'{{"n":{n}}}',
        published=published,
    )


def message(n: int) -> OutboxMessage:
    return OutboxMessage(
        topic=f"events/rating/pad-{n}", payload=b"{}", received_at=0.0, event_id=f"e{n}"
    )


async def test_a_fact_is_stored_once_and_queued_once(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db", outbox_max_messages=100) as store:
        assert await store.record(entry(1), [message(1)], cursor=("pad-1", "7:11"))
        assert not await store.record(entry(1), [message(1)], cursor=("pad-1", "7:11"))
        assert store.outbox_depth == 1
        assert await store.cursor("pad-1") == "7:11"
        rows = await store.journal(kinds=["rating"])
        assert [r.event_id for r in rows] == ["e1"]


async def test_journal_and_outbox_survive_a_restart(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db", outbox_max_messages=100) as store:
        for n in range(5):
            await store.record(entry(n), [message(n)])
        await store.record(entry(99, published=False))
        first = await store.outbox_after(0, 2)
        await store.outbox_remove([row.id for row in first])
    async with Store(tmp_path / "s.db", outbox_max_messages=100) as store:
        assert store.outbox_depth == 3
        assert store.outbox_signal.is_set()
        rows = await store.outbox_after(0, 100)
        assert [r.event_id for r in rows] == ["e2", "e3", "e4"]
        assert len(await store.journal()) == 6


async def test_the_outbox_is_bounded_and_sheds_the_oldest_counted(tmp_path: Path) -> None:
    dropped: list[int] = []
    async with Store(
        tmp_path / "s.db", outbox_max_messages=100, on_outbox_dropped=dropped.append
    ) as store:
        await asyncio.gather(*(store.record(entry(n), [message(n)]) for n in range(150)))
        assert store.outbox_depth == 100
        assert sum(dropped) == 50
        rows = await store.outbox_after(0, 1000)
        assert len(rows) == 100
        assert rows[0].event_id == "e50"
        assert len(await store.journal()) == 150, "the journal keeps every fact"


async def test_one_failing_write_does_not_fail_its_batch(tmp_path: Path) -> None:
    def broken(_conn: sqlite3.Connection, _counts: object) -> None:
        raise sqlite3.IntegrityError("boom")

    async with Store(tmp_path / "s.db", outbox_max_messages=100) as store:
        good = [store.record(entry(n), [message(n)]) for n in range(10)]
        bad = store._write(broken)  # a job that fails inside a group commit
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        assert results[:10] == [True] * 10
        assert isinstance(results[10], StoreError)
        assert store.outbox_depth == 10


async def test_a_full_disk_refuses_writes_then_recovers(tmp_path: Path) -> None:
    async with Store(tmp_path / "s.db", outbox_max_messages=1_000_000) as store:
        await store.record(entry(0), [message(0)])
        pages = await store._write(  # SQLite's own way to make a disk "full"
            lambda conn, _c: conn.execute("PRAGMA page_count").fetchone()[0]
        )
        await store._write(lambda conn, _c: conn.execute(f"PRAGMA max_page_count = {pages}"))
        big = dataclasses.replace(entry(1), payload="x" * 200_000)
        with pytest.raises(StoreError, match="full"):
            await store.record(big, [message(1)])
        assert not store.healthy
        assert store.outbox_depth == 1, "nothing half-applied"
        await store._write(lambda conn, _c: conn.execute("PRAGMA max_page_count = 1073741823"))
        assert await store.record(big, [message(1)])
        assert store.healthy


CRASHING_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from gateway.store import JournalEntry, OutboxMessage, Store

    async def main():
        async with Store(sys.argv[1], outbox_max_messages=10_000) as store:
            n = 0
            while True:
                batch = [
                    store.record(
                        JournalEntry(event_id=f"e{n + i}", kind="k", subject="s", device_id=None,
                                     ts="t", ts_epoch=0.0, received_at="t", payload="{}"),
                        [OutboxMessage(topic="t", payload=b"x", received_at=0.0)],
                    )
                    for i in range(20)
                ]
                await asyncio.gather(*batch)
                n += 20
                print(n, flush=True)

    asyncio.run(main())
    """
)


async def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WRITER,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout is not None
    acknowledged = 0
    async with asyncio.timeout(30):
        while acknowledged < 2000:
            acknowledged = int(await process.stdout.readline())
    process.send_signal(signal.SIGKILL)
    await process.wait()
    async with Store(path, outbox_max_messages=10_000) as store:
        stored = {row.event_id for row in await store.journal()}
        assert {f"e{n}" for n in range(acknowledged)} <= stored
        assert store.outbox_depth == len(stored)
