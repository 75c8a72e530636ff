"""The store: SQLite in WAL mode holding the journal of facts and the MQTT outbox.

One writer thread owns the writing connection and commits jobs in groups: every job that is
waiting when a transaction starts joins it, so a burst of events costs one fsync, and a job's
future resolves only after its transaction is durably committed. That is the moment a device
may be acknowledged. Reads use a second connection on a reader thread (WAL lets it read while
the writer writes), so neither blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from gateway.errors import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
# FULL: a commit survives power loss, not only a crash; a pad deletes its event on our ACK
SYNCHRONOUS: Final = "FULL"
# a transaction takes at most this many waiting jobs, so one commit never holds the rest long
MAX_JOBS_PER_COMMIT: Final = 512
# the reader waits this long for the writer's checkpoint instead of failing at once
READER_BUSY_TIMEOUT_MS: Final = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    device_id TEXT,
    ts TEXT NOT NULL,
    ts_epoch REAL NOT NULL,
    received_at TEXT NOT NULL,
    published INTEGER NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_kind_time ON journal (kind, ts_epoch);
CREATE INDEX IF NOT EXISTS journal_device ON journal (device_id, seq);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    event_id TEXT,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One fact for the journal. `published` facts also go to the outbox."""

    event_id: str
    kind: str
    subject: str
    device_id: str | None
    ts: str
    ts_epoch: float
    received_at: str
    payload: str
    published: bool = True
    flags: str = ""


@dataclass(frozen=True, slots=True)
class JournalRow:
    seq: int
    event_id: str
    kind: str
    subject: str
    device_id: str | None
    ts: str
    ts_epoch: float
    received_at: str
    published: bool
    flags: str
    payload: str


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message waiting for the broker. `topic` is relative to the MQTT root."""

    topic: str
    payload: bytes
    received_at: float
    event_id: str | None = None
    retain: bool = False


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    topic: str
    payload: bytes
    retain: bool
    event_id: str | None
    received_at: float


@dataclass(slots=True)
class _Counts:
    """Outbox bookkeeping of one transaction; applied only once it commits."""

    added: int = 0
    removed: int = 0
    dropped: int = 0
    new_rows: list[OutboxRow] = field(default_factory=list)


@dataclass(slots=True)
class _Job:
    run: Callable[[sqlite3.Connection, _Counts], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP: Final = object()


class _JobFailed(Exception):
    """A job failed in a batch run without savepoints: run the batch again, isolated."""


class Store:
    """The journal and the outbox. Use as `async with Store(...) as store:`."""

    def __init__(
        self,
        path: str | Path,
        *,
        outbox_max_messages: int,
        on_outbox_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.outbox_max_messages = outbox_max_messages
        self.outbox_signal = asyncio.Event()
        self.healthy = True
        self.last_error: str | None = None
        self._on_dropped = on_outbox_dropped
        self._outbox_listener: Callable[[list[OutboxRow]], None] | None = None
        self._depth = 0
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._reader: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> Store:
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[int] = self._loop.create_future()
        self._writer = threading.Thread(
            target=self._write_forever, args=(ready,), name="hallgw-store-writer", daemon=True
        )
        self._writer.start()
        self._depth = await ready
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="hallgw-store-reader")
        await self._read(lambda _conn: None)
        if self._depth:
            self.outbox_signal.set()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._reader_pool is not None:
            await self._read(self._close_reader)
            self._reader_pool.shutdown(wait=True)
            self._reader_pool = None
        if self._writer is not None:
            self._jobs.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None

    @property
    def outbox_depth(self) -> int:
        return self._depth

    def follow_outbox(self, listener: Callable[[list[OutboxRow]], None]) -> None:
        """Hear of every outbox row as soon as it is committed, in id order (the publisher keeps
        up without reading back what was just written)."""
        self._outbox_listener = listener

    def _outbox_grew(self, rows: list[OutboxRow]) -> None:
        if self._outbox_listener is not None:
            self._outbox_listener(rows)
        self.outbox_signal.set()

    async def record(
        self,
        entry: JournalEntry,
        outbox: Sequence[OutboxMessage] = (),
        cursor: tuple[str, str] | None = None,
    ) -> bool:
        """Store a fact, its outbox messages and a cursor in one commit.

        Returns False, and stores nothing more, when a fact with this `event_id` is already in the
        journal (a device sent it again): the caller may acknowledge it, but must not publish it.
        """

        def run(conn: sqlite3.Connection, counts: _Counts) -> bool:
            if cursor is not None:
                _set_cursor(conn, *cursor)
            return _insert_fact(conn, counts, entry, outbox)

        return bool(await self._write(run))

    async def record_many(
        self,
        entries: Sequence[tuple[JournalEntry, Sequence[OutboxMessage]]],
        cursor: tuple[str, str] | None = None,
    ) -> list[bool]:
        """Store several facts (a punch clock's batch) and a cursor in one commit; one flag per
        fact: new?"""

        def run(conn: sqlite3.Connection, counts: _Counts) -> list[bool]:
            if cursor is not None:
                _set_cursor(conn, *cursor)
            return [_insert_fact(conn, counts, entry, messages) for entry, messages in entries]

        return list(await self._write(run))

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        """Queue messages that are not facts (command replies) for the broker."""

        def run(conn: sqlite3.Connection, counts: _Counts) -> None:
            _insert_outbox(conn, counts, messages)

        await self._write(run)

    async def outbox_after(self, after_id: int, limit: int) -> list[OutboxRow]:
        def run(conn: sqlite3.Connection) -> list[OutboxRow]:
            rows = conn.execute(
                "SELECT id, topic, payload, retain, event_id, received_at FROM outbox"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
            return [OutboxRow(r[0], r[1], bytes(r[2]), bool(r[3]), r[4], r[5]) for r in rows]

        return await self._read(run)

    async def outbox_remove(self, ids: Sequence[int]) -> None:
        """Forget messages the broker acknowledged."""

        def run(conn: sqlite3.Connection, counts: _Counts) -> None:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                counts.removed += conn.execute(
                    f"DELETE FROM outbox WHERE id IN ({marks})",  # noqa: S608  # only ? marks
                    chunk,
                ).rowcount

        await self._write(run)

    async def cursor(self, key: str) -> str | None:
        def run(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM cursors WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self._read(run)

    async def set_cursor(self, key: str, value: str) -> None:
        await self._write(lambda conn, _counts: _set_cursor(conn, key, value))

    async def journal(
        self,
        *,
        kinds: Sequence[str] | None = None,
        device_id: str | None = None,
        since_epoch: float | None = None,
        until_epoch: float | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[JournalRow]:
        """Facts in the order they were learned (or newest first), filtered."""
        clauses: list[str] = []
        params: list[Any] = []
        if kinds is not None:
            clauses.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        if device_id is not None:
            clauses.append("device_id = ?")
            params.append(device_id)
        if since_epoch is not None:
            clauses.append("ts_epoch >= ?")
            params.append(since_epoch)
        if until_epoch is not None:
            clauses.append("ts_epoch < ?")
            params.append(until_epoch)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = " ORDER BY seq DESC" if newest_first else " ORDER BY seq"
        tail = f" LIMIT {int(limit)}" if limit is not None else ""
        # the clauses are ours; every value goes in as a ? parameter
        columns = "seq, event_id, kind, subject, device_id, ts, ts_epoch, received_at, published"
        sql = f"SELECT {columns}, flags, payload FROM journal{where}{order}{tail}"  # noqa: S608

        def run(conn: sqlite3.Connection) -> list[JournalRow]:
            return [
                JournalRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9], r[10])
                for r in conn.execute(sql, params)
            ]

        return await self._read(run)

    async def probe(self) -> None:
        """A small write, to learn whether the store is still writable."""

        def run(conn: sqlite3.Connection, _counts: _Counts) -> None:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('probe', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(time.time()),),
            )

        await self._write(run)

    async def _write(self, run: Callable[[sqlite3.Connection, _Counts], T]) -> T:
        if self._writer is None or self._loop is None:
            raise StoreError("the store is not open")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put(_Job(run, future, self._loop))  # always the loop that opened the store
        return await future

    async def _read(self, run: Callable[[sqlite3.Connection], T]) -> T:
        if self._reader_pool is None or self._loop is None:
            raise StoreError("the store is not open")
        return await self._loop.run_in_executor(self._reader_pool, self._read_sync, run)

    def _read_sync(self, run: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if self._reader is None:
                self._reader = sqlite3.connect(self.path, isolation_level=None)
                self._reader.execute(f"PRAGMA busy_timeout = {READER_BUSY_TIMEOUT_MS}")
            return run(self._reader)
        except sqlite3.Error as err:
            raise StoreError(f"cannot read {self.path}: {err}") from err

    def _close_reader(self, _conn: sqlite3.Connection) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _write_forever(self, ready: asyncio.Future[int]) -> None:
        loop = ready.get_loop()
        try:
            conn = self._open_writer()
            depth = int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except (sqlite3.Error, OSError) as err:
            failure = StoreError(f"cannot open store {self.path}: {err}")
            loop.call_soon_threadsafe(_resolve, ready, None, failure)
            return
        loop.call_soon_threadsafe(_resolve, ready, depth, None)
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    self._commit(conn, batch)
                if stop:
                    break
        finally:
            conn.close()

    def _open_writer(self) -> sqlite3.Connection:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        conn.executescript(_SCHEMA)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        return conn

    def _next_batch(self) -> tuple[list[_Job], bool]:
        first = self._jobs.get()
        if first is _STOP:
            return [], True
        assert isinstance(first, _Job)
        batch = [first]
        while len(batch) < MAX_JOBS_PER_COMMIT:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            assert isinstance(job, _Job)
            batch.append(job)
        return batch, False

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        """Run a batch in one transaction. All its jobs come from the store's own loop.

        The batch runs first as it is; only if a job fails is it rolled back and run again with
        each job in a savepoint of its own, so one bad write fails alone (savepoints cost two
        statements a job, which the common case does not pay).
        """
        try:
            outcomes, counts, trouble = self._run_batch(conn, batch, isolated=False)
        except _JobFailed:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            try:
                outcomes, counts, trouble = self._run_batch(conn, batch, isolated=True)
            except sqlite3.Error as err:
                self._fail_batch(conn, batch, err)
                return
        except sqlite3.Error as err:
            self._fail_batch(conn, batch, err)
            return
        self.healthy = trouble is None
        self.last_error = None if trouble is None else str(trouble)
        self._depth += counts.added - counts.removed - counts.dropped
        loop = batch[0].loop
        if counts.dropped and self._on_dropped is not None:
            loop.call_soon_threadsafe(self._on_dropped, counts.dropped)
        if counts.added:
            loop.call_soon_threadsafe(self._outbox_grew, counts.new_rows)
        # one hand-off to the loop for the whole commit: each one is a write to its self-pipe
        resolutions = [
            (job.future, result, error)
            for job, (result, error) in zip(batch, outcomes, strict=True)
        ]
        loop.call_soon_threadsafe(_resolve_all, resolutions)

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[_Job], *, isolated: bool
    ) -> tuple[list[tuple[Any, BaseException | None]], _Counts, sqlite3.OperationalError | None]:
        counts = _Counts()
        outcomes: list[tuple[Any, BaseException | None]] = []
        # a job that failed for want of space or I/O: the store is in trouble, not the caller
        trouble: sqlite3.OperationalError | None = None
        conn.execute("BEGIN IMMEDIATE")
        for job in batch:
            if not isolated:
                try:
                    outcomes.append((job.run(conn, counts), None))
                except Exception as err:
                    raise _JobFailed from err
                continue
            before = (counts.added, counts.removed, len(counts.new_rows))
            conn.execute("SAVEPOINT job")
            try:
                result = job.run(conn, counts)
            except Exception as err:  # one job's failure is its caller's alone
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back (disk full, I/O error): every
                    # job of the batch is lost, not only this one
                    raise _as_sqlite_error(err) from err
                conn.execute("ROLLBACK TO job")
                counts.added, counts.removed, kept = before
                del counts.new_rows[kept:]
                if isinstance(err, sqlite3.OperationalError):
                    trouble = err
                outcomes.append((None, _as_store_error(err, self.path)))
            else:
                outcomes.append((result, None))
            conn.execute("RELEASE job")
        self._trim_outbox(conn, counts)
        conn.execute("COMMIT")
        return outcomes, counts, trouble

    def _fail_batch(self, conn: sqlite3.Connection, batch: list[_Job], err: sqlite3.Error) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        self.healthy = False
        self.last_error = str(err)
        log.error("store commit failed (%s); %d writes refused", err, len(batch))
        failure: BaseException = StoreError(f"cannot write {self.path}: {err}")
        resolutions: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = [
            (job.future, None, failure) for job in batch
        ]
        batch[0].loop.call_soon_threadsafe(_resolve_all, resolutions)

    def _trim_outbox(self, conn: sqlite3.Connection, counts: _Counts) -> None:
        excess = self._depth + counts.added - counts.removed - self.outbox_max_messages
        if excess <= 0:
            return
        counts.dropped = conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
            (excess,),
        ).rowcount
        log.warning(
            "outbox is full (%d messages): dropped the %d oldest",
            self.outbox_max_messages,
            counts.dropped,
        )


def _insert_fact(
    conn: sqlite3.Connection,
    counts: _Counts,
    entry: JournalEntry,
    messages: Sequence[OutboxMessage],
) -> bool:
    inserted = conn.execute(
        "INSERT OR IGNORE INTO journal (event_id, kind, subject, device_id, ts, ts_epoch,"
        " received_at, published, flags, payload) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            entry.event_id,
            entry.kind,
            entry.subject,
            entry.device_id,
            entry.ts,
            entry.ts_epoch,
            entry.received_at,
            int(entry.published),
            entry.flags,
            entry.payload,
        ),
    ).rowcount
    if inserted:
        _insert_outbox(conn, counts, messages)
    return bool(inserted)


def _insert_outbox(
    conn: sqlite3.Connection, counts: _Counts, messages: Sequence[OutboxMessage]
) -> None:
    sql = "INSERT INTO outbox (topic, payload, retain, event_id, received_at) VALUES (?,?,?,?,?)"
    for m in messages:
        row_id = conn.execute(sql, (m.topic, m.payload, int(m.retain), m.event_id, m.received_at))
        counts.new_rows.append(
            OutboxRow(
                int(row_id.lastrowid or 0), m.topic, m.payload, m.retain, m.event_id, m.received_at
            )
        )
    counts.added += len(messages)


def _set_cursor(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO cursors (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _as_sqlite_error(err: Exception) -> sqlite3.Error:
    return err if isinstance(err, sqlite3.Error) else sqlite3.OperationalError(str(err))


def _as_store_error(err: Exception, path: Path) -> BaseException:
    if isinstance(err, sqlite3.Error):
        return StoreError(f"cannot write {path}: {err}")
    return err


def _resolve_all(
    resolutions: list[tuple[asyncio.Future[Any], Any, BaseException | None]],
) -> None:
    for future, result, error in resolutions:
        _resolve(future, result, error)


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
