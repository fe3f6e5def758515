"""R6: kill -9 of the real agent during a broker outage; after a restart everything it had
committed arrives at the receiver (paho's memory queue is irrelevant by design)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from hil.broker import Mosquitto, free_port
from hil.receiver.service import run_mqtt
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from tests.cfg import tilt_device, write_config
from tests.figures import figure
from tests.helpers import receiver_for, start_agent, wait_until

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]


async def test_kill_9_during_outage_then_restart_delivers_everything(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mq", free_port(), None, persistence=True)
    broker.start()
    sim_port = free_port()
    sim = ModbusTcpSim({80: tilt_unit()}, sim_port)
    await sim.start()
    loaded = write_config(
        tmp_path / "gw", broker_port=broker.port, pki=None,
        buses=[{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port}],
        devices=[tilt_device("manhole-1", "covers", 80, poll_interval_s=0.05)])
    store, receiver = receiver_for(loaded, tmp_path / "receiver.db")
    ready = asyncio.Event()
    rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port, tls=None,
                                      ready=ready, retry_s=0.2))
    agent = start_agent(loaded.path, tmp_path / "agent.log")
    try:
        await asyncio.wait_for(ready.wait(), 10)
        deadline = time.monotonic() + 20
        while store.seq_count("gw-320508-0007")[0] < 20:
            assert time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
            await asyncio.sleep(0.1)
        broker.stop()

        def queued() -> int:  # a reader beside the agent's writer (WAL)
            with contextlib.closing(sqlite3.connect(loaded.state_dir / "outbox.db",
                                                    timeout=5)) as db:
                return int(db.execute("SELECT count(*) FROM events").fetchone()[0])

        await wait_until(lambda: queued() >= 30, 20, "30 readings queued in the outbox")
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        db = sqlite3.connect(loaded.state_dir / "outbox.db")
        committed = {json.loads(p)["id"] for (p,) in db.execute("SELECT payload FROM events")}
        db.close()
        assert len(committed) >= 20, "the outage produced too few events to prove anything"
        broker.start()
        agent = start_agent(loaded.path, tmp_path / "agent.log")
        deadline = time.monotonic() + 30
        while True:
            got = {r[0] for r in store.db.execute("SELECT id FROM events")}
            if committed <= got:
                break
            assert time.monotonic() < deadline, f"{len(committed - got)} committed events lost"
            await asyncio.sleep(0.2)
        figure("R6", f"{len(committed)} events committed during the outage, all delivered after "
              f"restart; {store.counters().get('events.duplicates', 0)} duplicates")
    finally:
        if agent.poll() is None:
            agent.terminate()
            agent.wait(15)
        rx.cancel()
        await sim.stop()
        broker.stop()
        store.close()
