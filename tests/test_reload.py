"""Live reload: changed devices restart alone, the others keep polling; an invalid file is
rejected with line numbers and the running config stays; the file is never rewritten."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from ruamel.yaml import YAML

from edge.agent import Agent
from edge.cli import EX_INVALID, EX_OK, main
from edge.drivers.base import PollingDriver
from hil.broker import Mosquitto, free_port
from hil.sims.modbus_sim import ModbusTcpSim, tilt_unit
from tests.cfg import tilt_device, write_config
from tests.helpers import start_agent, stop_agent, wait_until_sync

ROOT = Path(__file__).resolve().parents[1]


def rewrite(path: Path, devices: list[dict[str, object]]) -> None:
    yaml = YAML()
    doc = yaml.load(path.read_text())
    doc["devices"] = devices
    with path.open("w") as fh:
        yaml.dump(doc, fh)


async def polls(agent: Agent, name: str, more_than: int, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while agent.drivers[name].stats.polls_ok <= more_than:
        assert time.monotonic() < deadline, f"{name} is not polling"
        await asyncio.sleep(0.05)


async def test_reload_restarts_only_what_changed(tmp_path: Path, plain_broker: Mosquitto) -> None:
    port = free_port()
    sim = ModbusTcpSim({u: tilt_unit() for u in (1, 2, 3, 4)}, port)
    await sim.start()
    bus = [{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": port}]
    a, b, c, d = (tilt_device(n, "covers", u) for n, u in
                  (("mh-a", 1), ("mh-b", 2), ("mh-c", 3), ("mh-d", 4)))
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, buses=bus,
                          devices=[a, b, d])
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        await polls(agent, "mh-d", 3)
        kept, before = agent.drivers["mh-d"], agent.drivers["mh-b"]
        rewrite(loaded.path, [{**b, "poll_interval_s": 0.2}, c, d])  # a removed, b changed
        text = loaded.path.read_text()
        assert await agent.reload() == []
        assert set(agent.drivers) == {"mh-b", "mh-c", "mh-d"}
        assert agent.drivers["mh-d"] is kept, "an unchanged device was restarted"
        assert agent.drivers["mh-b"] is not before
        restarted = agent.drivers["mh-b"]
        assert isinstance(restarted, PollingDriver)
        assert restarted.poll_interval_s == 0.2
        polled = kept.stats.polls_ok
        await polls(agent, "mh-c", 2)
        await polls(agent, "mh-d", polled)
        assert agent.last_reload["removed"] == ["mh-a"]
        # an invalid file: rejected with its lines, nothing changes
        loaded.path.write_text(text.replace("unit_id: 3", "unit_id: 300"))
        problems = await agent.reload()
        assert any("devices[mh-c].unit_id: must be <= 247 (got 300)" in p for p in problems)
        assert any(p.startswith("devices.yaml:") for p in problems)
        assert set(agent.drivers) == {"mh-b", "mh-c", "mh-d"}
        assert agent.generation == 1
        assert "unit_id: 300" in loaded.path.read_text(), "the agent rewrote the file"
    finally:
        stop.set()
        await run
        await sim.stop()


def test_edge_reload_command_signals_the_running_agent(tmp_path: Path,
                                                       plain_broker: Mosquitto) -> None:
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, devices=[],
                          buses=[])
    agent = start_agent(loaded.path)
    try:
        wait_until_sync((loaded.state_dir / "status.json").exists, 20, "the status file")
        assert main(["reload", "--config", str(loaded.path)]) == EX_OK
        bad = tmp_path / "bad.yaml"
        bad.write_text(loaded.path.read_text().replace("county_code: '320508'",
                                                       "county_code: 'x'"))
        assert main(["reload", "--config", str(bad)]) == EX_INVALID
    finally:
        stop_agent(agent)


async def test_reload_says_platform_keys_take_effect_at_restart(tmp_path: Path) -> None:
    """Issue 19 re-test #8: `edge reload` said ✔ and silently kept the old platform keys
    while `edge check` said the file was refused. Since issue 20 re-test #1 a reload applies
    a valid file (tests/test_contract_behaviour.py) and says when it refuses one."""
    from edge.security.signing import Ed25519PrivateKey
    from hil.commander import register

    keys_file = tmp_path / "platform-keys.json"
    register(keys_file, Ed25519PrivateKey.generate(), ["lighting"])
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[],
                          gateway={"platform_keys_file": "platform-keys.json"})
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        assert await agent.reload() == []
        assert agent.last_reload["needs_restart"] == []  # nothing changed: nothing said
        register(keys_file, Ed25519PrivateKey.generate(), ["broadcast"])  # a new key
        assert await agent.reload() == []
        assert agent.last_reload["needs_restart"] == []  # applied by the reload
        keys_file.chmod(0o666)  # now refused by `edge check`
        assert await agent.reload() == []
        [note] = agent.last_reload["needs_restart"]
        assert "refused" in note
        assert "others can write" in note
    finally:
        stop.set()
        await run
