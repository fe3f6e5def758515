"""Build every registered driver against its simulator, or against a peer that only sends
garbage (the conformance kit's fixtures)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from edge.config import (
    GpsDevice,
    LoudspeakerDevice,
    ManholeTiltDevice,
    ModbusRtuBus,
    ModbusTcpBus,
    StreetlightDevice,
)
from edge.config_loader import validate
from edge.drivers.base import Driver
from edge.drivers.gps import GpsSerialDriver
from edge.drivers.loudspeaker import LoudspeakerDriver
from edge.drivers.manhole_tilt import ManholeTiltModbusDriver
from edge.drivers.speaker_units import Syn6288Unit
from edge.drivers.streetlight import StreetlightDriver
from edge.transports.modbus import ModbusBus
from edge.transports.serial import SerialPort
from hil.broker import free_port
from hil.sims.modbus_sim import ModbusTcpSim, SimUnit, lamp_unit, tilt_unit
from hil.sims.rtu_sim import RtuLineSim
from hil.sims.serial_sims import GpsSim, TtsSim

ASSETS = {
    "manhole_tilt": ("3205080106000123", "0106"), "streetlight": ("3205080118000007", "0118"),
    "loudspeaker": ("3205082105000001", "2105"), "gps": ("3205082190000003", "2190"),
}


def asset(kind: str) -> dict[str, Any]:
    code, cls = ASSETS[kind]
    return {"code": code, "class": cls, "grid": "320508001002003", "name": kind}


@dataclass
class Rig:
    driver: Driver[Any]
    bus: ModbusBus | None
    unit: SimUnit | None


def _modbus_driver(kind: str, port: int | str, unit_id: int) -> tuple[Driver[Any], ModbusBus]:
    """A Modbus driver on TCP (``port`` a number) or RTU (``port`` a pty path)."""
    transport = "modbus_rtu" if isinstance(port, str) else "modbus_tcp"
    bus = ModbusBus(ModbusRtuBus(name="b", type="modbus_rtu", port=port, baud=9600,
                                 timeout_s=0.3, retries=0) if isinstance(port, str) else
                    ModbusTcpBus(name="b", type="modbus_tcp", host="127.0.0.1", port=port,
                                 timeout_s=0.3, retries=0))
    common = {"name": "dev", "transport": transport, "bus": "b", "unit_id": unit_id,
              "poll_interval_s": 0.1, "asset": asset(kind)}
    if kind == "manhole_tilt":
        cfg_t = validate(ManholeTiltDevice, {**common, "kind": kind})
        return ManholeTiltModbusDriver(cfg_t, bus, timeout_s=1.0), bus
    cfg_s = validate(StreetlightDevice, {**common, "kind": kind})
    return StreetlightDriver(cfg_s, bus, timeout_s=2.0), bus


def _serial_driver(kind: str, port: int) -> Driver[Any]:
    url = f"socket://127.0.0.1:{port}"
    common = {"name": "dev", "transport": "serial", "port": url, "poll_interval_s": 0.1,
              "timeout_s": 0.3, "asset": asset(kind)}
    if kind == "gps":
        return GpsSerialDriver(validate(GpsDevice, {**common, "kind": kind,
                                                    "min_distance_m": 0,
                                                    "max_interval_s": 1}),
                               SerialPort(url, 9600))
    cfg = validate(LoudspeakerDevice, {**common, "kind": kind})
    return LoudspeakerDriver(cfg, Syn6288Unit("dev", SerialPort(url, 9600), 0.3))


@contextlib.asynccontextmanager
async def with_simulator(kind: str) -> AsyncIterator[Rig]:
    """The driver against its real simulator (``manhole_tilt/rtu``: over a wire-timed pty)."""
    port = free_port()
    if kind.endswith("/rtu"):
        unit = tilt_unit(12.5) if kind.startswith("manhole_tilt") else lamp_unit()
        line = RtuLineSim({7: unit}, baud=9600)
        await line.start()
        driver, bus = _modbus_driver(kind.removesuffix("/rtu"), line.path, 7)
        try:
            yield Rig(driver, bus, unit)
        finally:
            await bus.close()
            await line.stop()
        return
    if kind in ("manhole_tilt", "streetlight"):
        unit = tilt_unit(12.5) if kind == "manhole_tilt" else lamp_unit()
        sim = ModbusTcpSim({7: unit}, port)
        await sim.start()
        driver, bus = _modbus_driver(kind, port, 7)
        try:
            yield Rig(driver, bus, unit)
        finally:
            await bus.close()
            await sim.stop()
        return
    serial_sim: GpsSim | TtsSim = GpsSim(port, rate_hz=20) if kind == "gps" else TtsSim(port)
    await serial_sim.start()
    driver = _serial_driver(kind, port)
    try:
        yield Rig(driver, None, None)
    finally:
        await driver.close()
        await serial_sim.stop()


@contextlib.asynccontextmanager
async def with_garbage(kind: str, seed: int) -> AsyncIterator[Rig]:
    """The driver against a peer that answers every byte with random bytes."""
    rng = random.Random(seed)

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

    tasks: set[asyncio.Task[None]] = set()

    def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(serve(r, w))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bus = None
    if kind in ("manhole_tilt", "streetlight"):
        driver, bus = _modbus_driver(kind, port, 7)
    else:
        driver = _serial_driver(kind, port)
    try:
        yield Rig(driver, bus, None)
    finally:
        await driver.close()
        if bus is not None:
            await bus.close()
        server.close()
        for task in list(tasks):
            task.cancel()


KINDS: list[str] = ["manhole_tilt", "streetlight", "loudspeaker", "gps"]
Factory = Callable[[str], contextlib.AbstractAsyncContextManager[Rig]]
