"""Build every driver class of the kind table against its simulator, or a peer sending garbage.

A rig is ``kind/transport`` for every transport a kind's devices.yaml model allows
(``RIGS``, derived from ``edge.drivers.factory.KINDS``); its driver is built the way the agent
builds it (devices.yaml -> ``build_driver``), so the kit checks the classes the agent runs, one
per transport, not a hand-picked one per kind. A new kind or transport without a peer here
fails ``test_the_kit_covers_every_registered_driver``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.drivers.base import Driver
from edge.drivers.factory import KINDS, Transports, build_driver
from edge.transports.modbus import ModbusBus
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto, free_port
from hil.sims.ip_speaker import IpSpeakerSim
from hil.sims.modbus_sim import ModbusTcpSim, SimUnit, lamp_unit, tilt_unit
from hil.sims.rtu_sim import RtuLineSim
from hil.sims.serial_sims import GpsSim, TtsSim
from tests.cfg import write_config

ASSETS = {
    "manhole_tilt": ("3205080106000123", "0106"), "streetlight": ("3205080118000007", "0118"),
    "loudspeaker": ("3205082105000001", "2105"), "gps": ("3205082190000003", "2190"),
}
# what a kind's device needs beyond its transport, per transport family
EXTRA: dict[tuple[str, str], dict[str, Any]] = {
    ("manhole_tilt", "mqtt"): {"model": "mqtt_json"},
    ("gps", "serial"): {"min_distance_m": 0, "max_interval_s": 1},
    ("gps", "mqtt"): {"model": "mqtt_json", "min_distance_m": 0, "max_interval_s": 1},
}
TOPIC = "things/dev"
# the peer that plays each kind on each transport family: a kind or transport missing here is
# a LookupError naming the rig, never another kind's simulator
MODBUS_UNITS: dict[str, Callable[[], SimUnit]] = {"manhole_tilt": lambda: tilt_unit(12.5),
                                                  "streetlight": lamp_unit}
SERIAL_SIMS: dict[str, Callable[[int], GpsSim | TtsSim]] = {
    "gps": lambda port: GpsSim(port, rate_hz=20), "loudspeaker": TtsSim}
MQTT_REPORTS: dict[str, Callable[[int], bytes]] = {
    # a truck moving north, 1 m a report, stamped now
    "gps": lambda n: json.dumps({"lat": 31.3105 + n * 1e-5, "lon": 120.6302,
                                 "time": time.time()}).encode(),
    "manhole_tilt": lambda _n: json.dumps({"tilt": 12.5, "battery": 3.6}).encode(),
}
FAMILIES = ("modbus_rtu", "modbus_tcp", "serial", "mqtt")


def _no_peer(rig: str) -> LookupError:
    return LookupError(f"the conformance kit has no peer or asset for {rig}: add one to "
                       "tests/conformance/harness.py")


def _peer_of(table: dict[str, Any], kind: str, rig: str) -> Any:
    if kind not in table:
        raise _no_peer(rig)
    return table[kind]


def _family(rig: str) -> str:
    transport = rig.split("/")[1]
    if transport not in FAMILIES:
        raise _no_peer(rig)
    return transport


def asset(kind: str) -> dict[str, Any]:
    code, cls = _peer_of(ASSETS, kind, kind)
    return {"code": code, "class": cls, "grid": "320508001002003", "name": kind}


def rig_ids() -> list[str]:
    """Every ``kind/transport`` of the kind table, from each kind's devices.yaml model."""
    ids: list[str] = []
    for kind in KINDS.values():
        transports = typing.get_args(typing.get_type_hints(kind.device)["transport"])
        ids += [f"{kind.name}/{transport}" for transport in transports]
    return ids


RIGS = rig_ids()


@dataclass
class Rig:
    driver: Driver[Any]
    bus: ModbusBus | None
    unit: SimUnit | None


@dataclass
class _Peer:
    """Where the device is reached, and how to stop what plays it."""

    device: dict[str, Any]
    buses: list[dict[str, Any]]
    extra: dict[str, Any]
    unit: SimUnit | None
    stop: Callable[[], Awaitable[None]]


def _device(rig: str) -> dict[str, Any]:
    kind, transport = rig.split("/")
    return {"name": "dev", "kind": kind, "transport": transport, "poll_interval_s": 0.1,
            "asset": asset(kind), **EXTRA.get((kind, transport), {})}


def _modbus_bus(transport: str, where: int | str) -> dict[str, Any]:
    if transport == "modbus_rtu":
        return {"name": "b", "type": "modbus_rtu", "port": where, "baud": 9600,
                "timeout_s": 0.3, "retries": 0}
    return {"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": where,
            "timeout_s": 0.3, "retries": 0}


def _mqtt_broker(folder: Path) -> tuple[Mosquitto, dict[str, Any]]:
    mq = Mosquitto(folder / "mosquitto", free_port(), None)
    mq.start()
    return mq, {"southbound_mqtt": {"host": "127.0.0.1", "port": mq.port, "tls": False}}


async def _publisher(port: int, payloads: Callable[[int], tuple[str, bytes]],
                     every_s: float) -> Callable[[], Awaitable[None]]:
    """Publish ``payloads(n)`` every ``every_s`` (a device pushing reports); return a stop."""
    link = MqttLink(host="127.0.0.1", port=port, client_id="conformance-peer", protocol="5",
                    keepalive_s=30, connect_timeout_s=5, tls=None)
    await link.connect()

    async def pump() -> None:
        n = 0
        while True:
            topic, payload = payloads(n)
            link.publish(topic, payload)
            n += 1
            await asyncio.sleep(every_s)

    task = asyncio.create_task(pump(), name="conformance-publisher")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await link.close()

    return stop


def unreachable(rig: str) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """The rig's device, buses and sections pointing at nothing (to build, not to run)."""
    transport = _family(rig)
    device = _device(rig)
    if transport.startswith("modbus_"):
        device |= {"bus": "b", "unit_id": 7}
        return device, [_modbus_bus(transport, "/dev/null" if transport == "modbus_rtu"
                                    else free_port())], {}
    if transport == "serial":
        return device | {"port": f"socket://127.0.0.1:{free_port()}"}, [], {}
    return device | {"topic": TOPIC}, [], {
        "southbound_mqtt": {"host": "127.0.0.1", "port": free_port(), "tls": False}}


async def _simulator(rig: str, folder: Path) -> _Peer:
    kind, transport = rig.split("/", maxsplit=1)[0], _family(rig)
    device = _device(rig)
    if transport.startswith("modbus_"):
        unit = _peer_of(MODBUS_UNITS, kind, rig)()
        device["bus"], device["unit_id"] = "b", 7
        if transport == "modbus_rtu":
            line = RtuLineSim({7: unit}, baud=9600)
            await line.start()
            return _Peer(device, [_modbus_bus(transport, line.path)], {}, unit, line.stop)
        sim = ModbusTcpSim({7: unit}, free_port())
        await sim.start()
        return _Peer(device, [_modbus_bus(transport, sim.port)], {}, unit, sim.stop)
    if transport == "serial":
        port = free_port()
        serial_sim: GpsSim | TtsSim = _peer_of(SERIAL_SIMS, kind, rig)(port)
        await serial_sim.start()
        device.update(port=f"socket://127.0.0.1:{port}", timeout_s=0.3)
        return _Peer(device, [], {}, None, serial_sim.stop)

    async def play(port: int) -> Callable[[], Awaitable[None]]:
        if kind == "loudspeaker":
            speaker = IpSpeakerSim("127.0.0.1", port, TOPIC)
            await speaker.start()
            return speaker.stop
        report = _peer_of(MQTT_REPORTS, kind, rig)
        return await _publisher(port, lambda n: (TOPIC, report(n)), 0.1)

    return await _mqtt_peer(folder, device, play)


async def _mqtt_peer(folder: Path, device: dict[str, Any],
                     play: Callable[[int], Awaitable[Callable[[], Awaitable[None]]]]) -> _Peer:
    """A private mosquitto for the device's topic, and ``play`` started on it."""
    mq, extra = _mqtt_broker(folder)
    device["topic"] = TOPIC
    try:
        stop_peer = await play(mq.port)
    except BaseException:
        mq.stop()
        raise

    async def stop() -> None:
        await stop_peer()
        mq.stop()

    return _Peer(device, [], extra, None, stop)


async def _garbage(rig: str, folder: Path, seed: int) -> _Peer:
    """A peer that answers every byte with random bytes (MQTT: publishes random payloads)."""
    rng = random.Random(seed)
    kind, transport = rig.split("/", maxsplit=1)[0], _family(rig)
    device = _device(rig)
    if transport == "mqtt":
        # a speaker reads its status topic; covers and trackers their own
        topic = f"{TOPIC}/status" if kind == "loudspeaker" else TOPIC
        return await _mqtt_peer(folder, device, lambda port: _publisher(
            port, lambda _n: (topic, rng.randbytes(rng.randrange(0, 300))), 0.02))

    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(rng.randbytes(rng.randrange(1, 40)))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await reader.read(256)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(serve(r, w))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    buses: list[dict[str, Any]] = []
    if transport == "modbus_tcp":
        device["bus"], device["unit_id"] = "b", 7
        buses = [_modbus_bus(transport, port)]
    else:
        device.update(port=f"socket://127.0.0.1:{port}", timeout_s=0.3)

    async def stop_tcp() -> None:
        server.close()
        for task in list(tasks):
            task.cancel()

    return _Peer(device, buses, {}, None, stop_tcp)


def build(folder: Path, device: dict[str, Any], buses: list[dict[str, Any]],
          extra: dict[str, Any]) -> tuple[Driver[Any], Transports]:
    """Build the device's driver as the agent does: devices.yaml, the kind table, transports."""
    loaded = write_config(folder, broker_port=1, pki=None, devices=[device], buses=buses,
                          extra=extra)
    transports = Transports(loaded.config, base_dir=loaded.base_dir)
    return build_driver(loaded.config.devices[0], loaded.config, transports), transports


@contextlib.asynccontextmanager
async def _rig(peer: _Peer, folder: Path) -> AsyncIterator[Rig]:
    try:
        driver, transports = build(folder, peer.device, peer.buses, peer.extra)
        try:
            yield Rig(driver, transports.buses.get("b"), peer.unit)
        finally:
            await driver.close()
            await transports.close()
    finally:
        await peer.stop()


@contextlib.asynccontextmanager
async def with_simulator(rig: str, folder: Path) -> AsyncIterator[Rig]:
    """The rig's driver against its real simulator (Modbus RTU: over a wire-timed pty)."""
    async with _rig(await _simulator(rig, folder), folder) as built:
        yield built


@contextlib.asynccontextmanager
async def with_garbage(rig: str, folder: Path, seed: int) -> AsyncIterator[Rig]:
    """The rig's driver against a peer that only sends random bytes."""
    async with _rig(await _garbage(rig, folder, seed), folder) as built:
        yield built
