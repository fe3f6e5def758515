"""Observability: metric names and values after a scripted scenario; no listening port unless
configured (reliability.md R15, S8)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import ClientSession

from edge.agent import Agent
from hil.broker import Mosquitto, free_port
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from hil.tilt import set_tilt_local
from tests.cfg import tilt_device, write_config
from tests.helpers import start_agent, stop_agent, wait_until, wait_until_sync

ROOT = Path(__file__).resolve().parents[1]


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels}")


async def test_metrics_after_a_scripted_alarm(tmp_path: Path, plain_broker: Mosquitto) -> None:
    sim_port, metrics_port = free_port(), free_port()
    unit = tilt_unit()
    sim = ModbusTcpSim({80: unit}, sim_port)
    await sim.start()
    loaded = write_config(
        tmp_path, broker_port=plain_broker.port, pki=None,
        buses=[{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": sim_port}],
        devices=[tilt_device("manhole-1", "covers", 80)])
    text = loaded.path.read_text() + f"observability:\n  metrics_port: {metrics_port}\n"
    loaded.path.write_text(text)
    from edge.config_loader import load_config

    agent = Agent(load_config(loaded.path), boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        set_tilt_local(unit, 40.0)
        await wait_until(lambda: agent.sink and agent.sink.alarms_raised, 10, "the alarm")
        # what the assertions below read, in the agent itself: then /metrics must show it
        await wait_until(lambda: agent.uplink is not None and agent.uplink.stats.connected
                         and agent.uplink.stats.events_acked >= 5
                         and agent.drivers["manhole-1"].stats.polls_ok >= 5, 10,
                         "5 polls and 5 events acknowledged")
        async with ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as resp:
                assert resp.status == 200
                body = await resp.text()
            async with session.get(f"http://127.0.0.1:{metrics_port}/healthz") as resp:
                assert resp.status == 200
                assert (await resp.json())["ok"] is True
            # health checks often probe with HEAD: it answers like GET, without a body
            for path in ("/metrics", "/healthz"):
                async with session.head(f"http://127.0.0.1:{metrics_port}{path}") as resp:
                    assert resp.status == 200, path
            async with session.get(f"http://127.0.0.1:{metrics_port}/nope") as resp:
                assert resp.status == 404
    finally:
        stop.set()
        await run
        await sim.stop()
    assert metric(body, "edge_uplink_connected") == 1
    assert metric(body, "edge_device_polls_ok_total", device="manhole-1") >= 5
    assert metric(body, "edge_device_online", device="manhole-1") == 1
    assert metric(body, "edge_uplink_events_acked_total") >= 5
    assert metric(body, "edge_time_synced") == 1
    for name in ("edge_outbox_events", "edge_outbox_dead_letters", "edge_device_overruns_total",
                 "edge_device_poll_latency_seconds", "edge_uplink_failures_total"):
        assert f"# TYPE {name} " in body
    assert re.search(r'edge_outbox_events\{prio="0"\} \d', body)


def listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"):
        with Path(table).open() as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" or table.endswith(("udp", "udp6")):  # LISTEN, or bound UDP
                    inodes.add(fields[9])
    return inodes


def test_no_listening_port_unless_configured(tmp_path: Path, plain_broker: Mosquitto) -> None:
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, devices=[],
                          buses=[])
    log = tmp_path / "agent.log"
    agent = start_agent(loaded.path, log)
    try:
        # logged once every configured server is up, and once the uplink's socket is open
        wait_until_sync(lambda: "running: gateway" in log.read_text()
                        and "uplink: connected" in log.read_text(), 20,
                        "the agent running and connected")
        sockets = set()
        for fd in Path(f"/proc/{agent.pid}/fd").iterdir():
            target = str(fd.readlink())
            if target.startswith("socket:["):
                sockets.add(target[8:-1])
        assert sockets, "the agent has no socket at all: the check proves nothing"
        assert not sockets & listening_inodes(), "the agent listens on a port"
    finally:
        stop_agent(agent)


def test_refused_values_and_gnss_time_are_exported() -> None:
    from edge.ops.metrics import render

    body = render({
        "outbox": {"by_prio": {}, "dead_letters": 0, "drops": {}, "rejected": {"3": 2}},
        "uplink": None, "devices": {}, "buses": {}, "commands": {}, "time_quality": "synced",
        "readings_rejected": 4, "gnss_time_rejected": 7})
    assert metric(body, "edge_outbox_rejected_total", prio="3") == 2
    assert metric(body, "edge_readings_rejected_total") == 4
    assert metric(body, "edge_gnss_time_rejected_total") == 7
