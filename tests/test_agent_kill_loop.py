"""R1 against the real agent: kill -9 at random moments while it ingests and forwards; R8: a
corrupt outbox at start.

R1: after every kill the outbox passes ``integrity_check``; the agent is back to READY within
10 s; every event it ever committed reaches the reference receiver (0 acknowledged events
lost) and the receiver sees no seq gap. CI kills 5 times; ``make faults`` 100 times.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from hil.broker import Mosquitto, free_port
from hil.receiver.service import run_mqtt
from hil.sims.modbus_sim import ModbusTcpSim, lamp_unit
from tests.cfg import lamp_device, write_config
from tests.figures import figure
from tests.helpers import GATEWAY, receiver_for, start_agent, stop_agent, wait_until

pytestmark = pytest.mark.reliability
DEVICES = 40  # x 20 polls/s: 800 readings/s through the outbox and the uplink


def _ready(status: Path, after: float) -> bool:
    try:
        doc = json.loads(status.read_text())
    except (OSError, ValueError):
        return False
    return bool(doc.get("written_at", 0) > after and doc.get("uplink", {}).get("connected"))


async def kill_loop(tmp_path: Path, kills: int) -> None:
    broker = Mosquitto(tmp_path / "mq", free_port(), None, persistence=True)
    broker.start()
    sim_port = free_port()
    sim = ModbusTcpSim({u: lamp_unit() for u in range(1, DEVICES + 1)}, sim_port)
    await sim.start()
    bus = {"name": "lamps", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port}
    loaded = write_config(tmp_path / "gw", broker_port=broker.port, pki=None, buses=[bus],
                          devices=[lamp_device(f"lamp-{u}", "lamps", u, poll_interval_s=0.05)
                                   for u in range(1, DEVICES + 1)])
    store, receiver = receiver_for(loaded, tmp_path / "receiver.db")
    ready = asyncio.Event()
    rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port, tls=None,
                                      ready=ready, retry_s=0.2))
    await asyncio.wait_for(ready.wait(), 10)
    rng = random.Random(int(os.environ.get("KILL_SEED", "11")))
    db_path, status = loaded.state_dir / "outbox.db", loaded.state_dir / "status.json"
    committed: set[str] = set()
    ready_s: list[float] = []
    log = tmp_path / "agent.log"
    agent = start_agent(loaded.path, log)
    try:
        for _ in range(kills):
            started = time.time()
            ready_s.append(await wait_until(lambda s=started: _ready(status, s), 10,  # type: ignore[misc]
                                            "READY with the uplink connected"))
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            db = sqlite3.connect(db_path)
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            committed |= {json.loads(p)["id"] for (p,) in db.execute("SELECT payload FROM events")}
            db.close()
            agent = start_agent(loaded.path, log)
        await wait_until(lambda: _ready(status, time.time() - 1), 10)
        stop_agent(agent)  # a clean stop drains nothing more than it has: the outbox keeps it
        agent = start_agent(loaded.path, log)
        delivered = await wait_until(
            lambda: committed <= {r[0] for r in store.db.execute("SELECT id FROM events")}, 60,
            "every committed event at the receiver")
        gaps = store.seq_gaps(GATEWAY)
        total, _low, _high = store.seq_count(GATEWAY)
        figure("R1", f"{kills} x kill -9 at {DEVICES * 20} readings/s: 0 corrupt, "
                     f"{len(committed - {r[0] for r in store.db.execute('SELECT id FROM events')})}"
                     f" of {len(committed)} committed-at-kill lost, {len(gaps)} seq gaps in "
                     f"{total} events, {store.counters().get('events.duplicates', 0)} duplicates,"
                     f" READY in ≤ {max(ready_s):.1f} s, final drain {delivered:.1f} s")
        assert not gaps, f"seq gaps at the receiver: {gaps[:5]}"
        assert max(ready_s) <= 10
    finally:
        stop_agent(agent)
        rx.cancel()
        await sim.stop()
        broker.stop()
        store.close()


async def test_kill_9_agent_loop_short(tmp_path: Path) -> None:
    await kill_loop(tmp_path, 5)


@pytest.mark.faults
@pytest.mark.timeout(1800)
async def test_kill_9_agent_loop_r1_100_kills(tmp_path: Path) -> None:
    await kill_loop(tmp_path, 100)


async def test_corrupt_outbox_at_start_is_moved_aside_and_alarmed(tmp_path: Path) -> None:
    """R8: garbage instead of the outbox: the agent starts a fresh one and raises an alarm."""
    broker = Mosquitto(tmp_path / "mq", free_port(), None)
    broker.start()
    loaded = write_config(tmp_path / "gw", broker_port=broker.port, pki=None, buses=[],
                          devices=[])
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    db_path = loaded.state_dir / "outbox.db"
    db_path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))  # a torn, garbled file
    store, receiver = receiver_for(loaded, tmp_path / "receiver.db")
    ready = asyncio.Event()
    rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port, tls=None,
                                      ready=ready, retry_s=0.2))
    await asyncio.wait_for(ready.wait(), 10)
    started = time.monotonic()
    agent = start_agent(loaded.path, tmp_path / "agent.log")
    try:
        def alarmed() -> bool:
            return any("store_corrupt" in doc for (doc,) in store.db.execute(
                "SELECT doc FROM events WHERE type='alarm'"))
        took = await wait_until(alarmed, 20, "a store_corrupt alarm at the receiver")
        assert agent.poll() is None, "the agent exited instead of starting a fresh outbox"
        aside = list(loaded.state_dir.glob("outbox.db.corrupt-*"))
        assert aside, "the corrupt file was not kept for inspection"
        check = sqlite3.connect(db_path)
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()
        figure("R8", f"garbage outbox moved aside ({aside[0].name}), fresh store, alarm at the "
                     f"receiver {took:.1f} s after start ({time.monotonic() - started:.1f} s)")
    finally:
        stop_agent(agent)
        rx.cancel()
        broker.stop()
        store.close()
