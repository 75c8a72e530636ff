"""The gateway dies between storing a clock's upload and answering it: the clock, which never
saw the `OK`, sends the batch again to the restarted gateway, and consumers get exactly one fact
per record (a fact delivered twice carries the same event_id and the same payload)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.ids import stable_id
from simulators.zk_push import SimClock
from tests.support.harness import API_TOKEN, REPO, GatewayProcess, write_config
from tests.support.mosquitto import Mosquitto
from tests.support.mqtt import Recorder
from tests.support.zk import clock_hall, device_url

# runs `hallgw run`, with the driver's fault seam set to SIGKILL the process right after the
# first upload's commit and before its answer
KILLED_AFTER_COMMIT = """
import os, signal, sys
from drivers.zk_push.driver import PushServer
PushServer.fault_after_commit = lambda: os.kill(os.getpid(), signal.SIGKILL)
from gateway.cli import main
sys.exit(main(["run", "-c", sys.argv[1]]))
"""
RECORDS = 7


@contextlib.asynccontextmanager
async def killed_after_commit(
    config_path: Path, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {**os.environ, "HALLGW_TEST_TOKEN": API_TOKEN, "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            KILLED_AFTER_COMMIT,
            str(config_path),
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(REPO),
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def stored_punch_ids(db: Path) -> set[str]:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {row[0] for row in conn.execute("SELECT event_id FROM journal WHERE kind = 'punch'")}
    finally:
        conn.close()


@pytest.mark.fault
async def test_a_batch_resent_after_a_kill_between_commit_and_answer_is_one_fact_per_record(
    tmp_path: Path, broker: Mosquitto
) -> None:
    data = clock_hall(tmp_path, mqtt_port=broker.port, delay_s=0.3)
    config_path = write_config(tmp_path / "hall.yaml", data)
    config = load_config(config_path)
    db = tmp_path / "hallgw.db"
    log = tmp_path / "gateway.log"
    sim = SimClock("CK0001", device_url(config), error_delay_s=0.2)
    now = sim.now()
    records = [sim.punch(str(1001 + n % 4), at=now.replace(second=n)) for n in range(RECORDS)]
    expected = {stable_id(config.site, "CK0001", r.pin, r.stamp) for r in records}
    assert len(expected) == RECORDS

    async with Recorder(broker.port, ["hall/test-hall/events/punch/#"]) as mqtt:
        async with killed_after_commit(config_path, log) as first, sim:
            async with asyncio.timeout(20):
                status = await first.wait()
            assert status == -signal.SIGKILL, log.read_text()
            # stored, never answered: the clock still holds every record
            assert stored_punch_ids(db) == expected
            assert sim.acknowledged == []
            assert len(sim.pending) == RECORDS

            second = GatewayProcess(config_path, log)
            await second.start()
            try:
                await second.wait_healthy(config.http.port)
                async with asyncio.timeout(20):
                    await sim.flushed()
                assert sim.ok_counts[-1] == RECORDS
                await mqtt.wait_for(
                    lambda: {m.json()["event_id"] for m in mqtt.messages} == expected,
                    timeout=20,
                    what="a fact for every record",
                )
            finally:
                assert await second.stop() == 0
        assert stored_punch_ids(db) == expected
        by_id: dict[str, set[bytes]] = {}
        for message in mqtt.messages:
            by_id.setdefault(message.json()["event_id"], set()).add(message.payload)
        # a fact that reached the broker twice is the very same message
        assert all(len(payloads) == 1 for payloads in by_id.values()), by_id
        assert sim.failures >= 1
        assert sorted(r.pin for r in sim.acknowledged) == sorted(r.pin for r in records)
