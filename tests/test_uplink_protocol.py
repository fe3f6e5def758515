"""MQTT protocol details: 3.1.1, birth and last will, the broker's Receive Maximum."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from hil.broker import Mosquitto, free_port
from hil.receiver.service import run_mqtt
from tests.cfg import write_config
from tests.helpers import receiver_for, start_agent, stop_agent, wait_until
from tests.uplink_rig import rig

ROOT = Path(__file__).resolve().parents[1]


async def test_mqtt_3_1_1_delivers(tmp_path: Path, plain_broker: Mosquitto) -> None:
    async with rig(tmp_path, uplink_port=plain_broker.port, receiver_port=plain_broker.port,
                   protocol="3.1.1") as r:
        await r.produce(200, 1.0, alarm_every_s=0.3)
        await r.wait_delivered(10)
        assert r.duplicates() == 0


async def test_window_respects_the_broker_receive_maximum(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mq", free_port(), None, max_inflight=3)
    broker.start()
    try:
        async with rig(tmp_path, uplink_port=broker.port, receiver_port=broker.port,
                       max_inflight=20) as r:
            await r.produce(500, 1.0)
            await r.wait_delivered(10)
            assert r.uplink.stats.window == 3
    finally:
        broker.stop()


async def test_birth_then_last_will_marks_the_gateway_offline(tmp_path: Path,
                                                              plain_broker: Mosquitto) -> None:
    loaded = write_config(tmp_path / "gw", broker_port=plain_broker.port, pki=None,
                          devices=[], buses=[], uplink={"keepalive_s": 5})
    store, receiver = receiver_for(loaded, tmp_path / "rx.db")
    ready = asyncio.Event()
    rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=plain_broker.port,
                                      tls=None, ready=ready))
    agent = start_agent(loaded.path)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await wait_until(lambda: store.gateways() and store.gateways()[0]["online"], 15,
                         "a birth message")
        birth = store.gateways()[0]["state"]
        assert birth["version"]
        assert "depth" in birth["outbox"]
        agent.send_signal(signal.SIGKILL)  # no DISCONNECT: the broker sends the last will
        agent.wait(10)
        # keepalive 5 s x 1.5 before the broker gives up
        await wait_until(lambda: not store.gateways()[0]["online"], 15, "the last will")
    finally:
        stop_agent(agent)
        rx.cancel()
        store.close()


async def test_a_clean_stop_says_goodbye(tmp_path: Path, plain_broker: Mosquitto) -> None:
    loaded = write_config(tmp_path / "gw", broker_port=plain_broker.port, pki=None,
                          devices=[], buses=[])
    store, receiver = receiver_for(loaded, tmp_path / "rx.db")
    ready = asyncio.Event()
    rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=plain_broker.port,
                                      tls=None, ready=ready))
    agent = start_agent(loaded.path)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await wait_until(lambda: store.gateways() and store.gateways()[0]["online"], 15,
                         "a birth message")
        agent.terminate()  # SIGTERM: a clean stop
        assert agent.wait(20) == 0
        # not the last will: that would take 1.5 keepalives
        await wait_until(lambda: not store.gateways()[0]["online"], 5, "a goodbye")
        assert store.gateways()[0]["state"]["reason"] == "stopped"
    finally:
        stop_agent(agent)
        rx.cancel()
        store.close()
