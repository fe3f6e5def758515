"""R6: kill -9 of the real agent during a broker outage; after a restart everything it had
committed arrives at the receiver (paho's memory queue is irrelevant by design)."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from edge.keys import describe, load_key
from hil.broker import Mosquitto, free_port
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from tests.cfg import tilt_device, write_config

ROOT = Path(__file__).resolve().parents[1]


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)


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
    key = describe(load_key(loaded.resolve("keys/gateway.key")))
    store = ReceiverStore(tmp_path / "receiver.db")
    receiver = Receiver(store, load_gateway_keys({"gw-320508-0007": key["public_key_hex"]}))
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
        await asyncio.sleep(3.0)  # readings pile up in the outbox
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
        print(f"R6: {len(committed)} events committed during the outage, all delivered after "
              f"restart; {store.counters().get('events.duplicates', 0)} duplicates")
    finally:
        if agent.poll() is None:
            agent.terminate()
            agent.wait(15)
        rx.cancel()
        await sim.stop()
        broker.stop()
        store.close()
