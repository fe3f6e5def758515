"""End to end: real mosquitto (TLS, client certs), in-process Modbus simulator, the agent and
the reference receiver. Tilt → alarm raised at the receiver; level → cleared, same alarm_id."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from pathlib import Path

from edge.agent import Agent
from hil.broker import Mosquitto, free_port
from hil.pki import Pki
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from hil.tilt import set_tilt_local
from tests.cfg import tilt_device, write_config
from tests.helpers import receiver_for, wait_until
from tests.outbox_sql import store_of


def receiver_tls(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.cert("ca")))
    ctx.load_cert_chain(str(pki.cert("receiver")), str(pki.key("receiver")))
    return ctx


async def test_tilt_raises_and_level_clears_with_same_alarm_id(
        tmp_path: Path, broker: Mosquitto, pki: Pki) -> None:
    modbus_port = free_port()
    unit = tilt_unit()
    sim = ModbusTcpSim({80: unit}, modbus_port)
    await sim.start()
    loaded = write_config(
        tmp_path, broker_port=broker.port, pki=pki,
        buses=[{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1",
                "port": modbus_port, "timeout_s": 0.5}],
        devices=[tilt_device("manhole-1", "covers", 80)])
    store, receiver = receiver_for(loaded, tmp_path / "receiver.db")
    stop = asyncio.Event()
    agent = Agent(loaded, boot_delay_s=0)
    ready = asyncio.Event()
    try:
        async with asyncio.TaskGroup() as tg:
            rx = tg.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port,
                                         tls=receiver_tls(pki), ready=ready))
            await asyncio.wait_for(ready.wait(), 10)
            run = tg.create_task(agent.run(stop))
            # readings arrive: the gateway is connected and polling
            await wait_until(lambda: store.seq_count("gw-320508-0007")[0] >= 3, 15)
            assert store.cases() == []

            set_tilt_local(unit, 38.5)
            took = await wait_until(lambda: len(store.cases("open")) == 1, 5)
            assert took < 2.0, f"alarm took {took:.2f} s to reach the receiver"
            case = store.cases("open")[0]
            assert case["kind"] == "cover_open"
            assert case["asset_code"] == "3205080106000080"
            assert case["value"] == 38.5

            set_tilt_local(unit, 0.0)
            await wait_until(lambda: len(store.cases("closed")) == 1, 5)
            closed = store.cases("closed")[0]
            assert closed["alarm_id"] == case["alarm_id"]
            raised = [e for e in store.events(500, "alarm") if e["alarm"]["state"] == "raised"]
            cleared = [e for e in store.events(500, "alarm") if e["alarm"]["state"] == "cleared"]
            assert len(raised) == 1
            assert len(cleared) == 1
            assert raised[0]["alarm"]["alarm_id"] == cleared[0]["alarm"]["alarm_id"]
            assert raised[0]["prio"] == 0
            assert store.counters().get("rejected.signature", 0) == 0
            stop.set()
            await run
            rx.cancel()
    finally:
        stop.set()
        await sim.stop()
        store.close()
    # every event was acknowledged and deleted; nothing left behind
    assert agent.outbox.path.exists()
    count, low, high = 0, 0, 0
    with contextlib.closing(ReceiverStore(tmp_path / "receiver.db")) as again:
        count, low, high = again.seq_count("gw-320508-0007")
        assert again.seq_gaps("gw-320508-0007") == []
    assert count == high - low + 1


async def test_signed_light_command_executes_within_a_second(tmp_path: Path, broker: Mosquitto,
                                                            pki: Pki) -> None:
    from edge.drivers._codecs import sdm120
    from hil.commander import platform_key, register, send, sign_command
    from hil.sims.modbus_sim import lamp_unit
    from tests.cfg import lamp_device

    port = free_port()
    lamp = lamp_unit(on=True)
    sim = ModbusTcpSim({1: lamp}, port)
    await sim.start()
    pkey = platform_key(tmp_path / "platform.key")
    register(tmp_path / "platform-keys.json", pkey, ["lighting"])
    loaded = write_config(
        tmp_path, broker_port=broker.port, pki=pki,
        buses=[{"name": "lamps", "type": "modbus_tcp", "host": "127.0.0.1", "port": port}],
        devices=[lamp_device("lamp-07", "lamps", 1)],
        gateway={"platform_keys_file": str(tmp_path / "platform-keys.json")})
    store, receiver = receiver_for(loaded, tmp_path / "receiver.db")
    stop, ready = asyncio.Event(), asyncio.Event()
    agent = Agent(loaded, boot_delay_s=0)
    try:
        async with asyncio.TaskGroup() as tg:
            rx = tg.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port,
                                         tls=receiver_tls(pki), ready=ready))
            run = tg.create_task(agent.run(stop))
            await asyncio.wait_for(ready.wait(), 10)
            # the session starts its command reader once the cmd subscription's SUBACK is in
            await wait_until(lambda: any(t.get_name() == "uplink.commands"
                                         for t in asyncio.all_tasks()), 10,
                             "the agent's cmd subscription")
            cmd_id, env = sign_command(pkey, gateway="gw-320508-0007", device="lamp-07",
                                       action="light.set", params={"on": False, "dim_pct": 30})
            sent = time.monotonic()
            await send(env, host="127.0.0.1", port=broker.port, tls=receiver_tls(pki),
                       topic="edge/v1/gw-320508-0007/cmd")
            took = await wait_until(lambda: lamp.coils[sdm120.RELAY_COIL] is False, 5)
            assert time.monotonic() - sent < 1.5
            assert took < 1.0
            assert lamp.holding[sdm120.DIM_REGISTER] == 30
            await wait_until(lambda: any(
                e["data"].get("cmd_id") == cmd_id for e in store.events(50, "command_result")), 5)
            result = next(e for e in store.events(50, "command_result")
                          if e["data"]["cmd_id"] == cmd_id)
            assert result["data"]["status"] == "executed"
            assert result["data"]["detail"]["verified"] is True
            stop.set()
            await run
            rx.cancel()
    finally:
        stop.set()
        await sim.stop()
        store.close()


async def test_an_alarm_the_platform_missed_is_reannounced_and_opens_its_case(
        tmp_path: Path, broker: Mosquitto, pki: Pki) -> None:
    """The raise went to a broker nobody listened on (PUBACKed, so the gateway deleted it);
    the gateway's retained state, re-published on every connect and within seconds of a change
    of the active alarms (issue 20 #5), still carries it."""
    modbus_port = free_port()
    unit = tilt_unit()
    sim = ModbusTcpSim({80: unit}, modbus_port)
    await sim.start()
    loaded = write_config(
        tmp_path, broker_port=broker.port, pki=pki,
        buses=[{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1",
                "port": modbus_port, "timeout_s": 0.5}],
        devices=[tilt_device("manhole-1", "covers", 80)])
    store, receiver = receiver_for(loaded, tmp_path / "receiver.db")
    stop = asyncio.Event()
    agent = Agent(loaded, boot_delay_s=0)
    try:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(agent.run(stop))
            await asyncio.wait_for(agent.ready.wait(), 10)
            set_tilt_local(unit, 38.5)
            await wait_until(lambda: agent.sink is not None and bool(agent.sink.active), 5)
            await wait_until(lambda: store_of(agent.outbox).stats()["by_prio"].get("0") is None, 5)
            alarm_id = next(iter(agent.sink.active.values()))[0] if agent.sink else ""
            # only now does the platform subscribe: the raise is gone, the state is retained
            # (re-published within STATE_CHECK_S of the raise)
            ready = asyncio.Event()
            rx = tg.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port,
                                         tls=receiver_tls(pki), ready=ready))
            await wait_until(lambda: len(store.cases("open")) == 1, 15)
            case = store.cases("open")[0]
            assert case["alarm_id"] == alarm_id
            assert case["kind"] == "cover_open"
            assert store.counters().get("alarms.reannounced") == 1
            set_tilt_local(unit, 0.0)  # the clear closes the re-announced case as any other
            await wait_until(lambda: len(store.cases("closed")) == 1, 10)
            stop.set()
            await run
            rx.cancel()
    finally:
        stop.set()
        await sim.stop()
        store.close()
