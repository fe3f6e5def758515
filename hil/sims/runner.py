"""Start the simulators a devices.yaml points at (loopback Modbus TCP and socket:// ports)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edge.config import EdgeConfig, ModbusTcpBus
from hil.sims import wire
from hil.sims.modbus_sim import (
    FAULTS,
    ModbusTcpSim,
    SimUnit,
    lamp_unit,
    pzem_unit,
    sunspec_unit,
    tilt_unit,
)
from hil.sims.serial_sims import GpsSim, TtsSim


class _Sim(Protocol):
    port: int

    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class SimPortError(RuntimeError):
    """A simulator's fixed port (D10) cannot be bound: the message is one line for the user."""


# a simulated slave per Modbus model (tests/test_hil_rig.py holds it equal to READ_PLANS)
SIM_UNITS: dict[str, Callable[[], SimUnit]] = {
    "witmotion": tilt_unit, "sunspec304": sunspec_unit, "lamp_controller": lamp_unit,
    "sdm120": lamp_unit, "pzem004t": pzem_unit}


def unit_for(model: str) -> SimUnit:
    """Return a simulated slave speaking ``model``'s register map."""
    return SIM_UNITS[model]()


# What each simulator models (wire.py says why TCP models fewer)
TCP_FAULTS = wire.TCP_FAULTS
RTU_FAULTS = FAULTS
# every mode `python -m hil fault` accepts; each simulator refuses those it does not model
ALL_FAULTS = tuple(dict.fromkeys((*FAULTS, *GpsSim.FAULTS, *TtsSim.FAULTS)))


def simulator_of(config: EdgeConfig, device_name: str) -> tuple[str, tuple[str, ...]] | None:
    """Return (what simulates ``device_name``, the faults it models), or None.

    KeyError when there is no such device.
    """
    device = config.device(device_name)
    if device.bus is not None and device.unit_id is not None:
        if isinstance(config.bus(device.bus), ModbusTcpBus):
            return "a Modbus TCP simulator", TCP_FAULTS
        return "the RTU line simulator", RTU_FAULTS
    if _socket_port(device.port) is not None:
        if device.kind == "gps":
            return "the GPS simulator", GpsSim.FAULTS
        if device.kind == "loudspeaker":
            return "the loudspeaker simulator", TtsSim.FAULTS
    return None


def faults_for(config: EdgeConfig, device_name: str) -> tuple[str, ...]:
    """Return the faults the simulator behind ``device_name`` models (KeyError: no device)."""
    sim = simulator_of(config, device_name)
    return () if sim is None else sim[1]


async def set_serial_fault(config: EdgeConfig, device_name: str, mode: str,
                           timeout_s: float = 5.0) -> None:
    """Switch a running GPS or loudspeaker simulator's fault, in-band over its socket."""
    device = config.device(device_name)
    port = _socket_port(device.port)
    if port is None:
        raise KeyError(device_name)
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if device.kind == "gps":
                writer.write(wire.nmea_sentence(f"{wire.SIM_FAULT_SENTENCE},{mode}")
                             .encode("ascii"))
                await writer.drain()
                answer = f"${wire.SIM_FAULT_SENTENCE},".encode("ascii")
                while True:  # the simulator's sentences stream on; its answer comes among them
                    line = await reader.readline()
                    if not line:
                        raise ConnectionError(f"{device_name}: the simulator hung up")
                    if line.startswith(answer):
                        break
            else:
                writer.write(wire.syn6288_frame(wire.SIM_CONTROL, mode.encode("ascii")))
                await writer.drain()
                await reader.readexactly(1)  # SYN_OK: the unit switched
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _socket_port(url: str | None) -> int | None:
    if url is None or not url.startswith("socket://127.0.0.1:"):
        return None
    return int(url.rsplit(":", 1)[1])


@dataclass
class SimSet:
    """Every simulator for one config."""

    modbus: dict[str, ModbusTcpSim] = field(default_factory=dict)
    units: dict[str, SimUnit] = field(default_factory=dict)  # device name -> unit
    gps: dict[str, GpsSim] = field(default_factory=dict)
    tts: dict[str, TtsSim] = field(default_factory=dict)
    _started: list[_Sim] = field(default_factory=list)

    @classmethod
    def for_config(cls, config: EdgeConfig) -> SimSet:
        """Build (not start) simulators for the loopback devices of ``config``."""
        sims = cls()
        per_bus: dict[str, dict[int, SimUnit]] = {}
        for device in config.devices:
            if device.transport == "modbus_tcp" and device.bus and device.unit_id:
                unit = unit_for(device.model)
                per_bus.setdefault(device.bus, {})[device.unit_id] = unit
                sims.units[device.name] = unit
            port = _socket_port(device.port)
            if port is not None and device.kind == "gps":
                sims.gps[device.name] = GpsSim(port)
            if port is not None and device.kind == "loudspeaker":
                sims.tts[device.name] = TtsSim(port)
        for bus in config.buses:
            if isinstance(bus, ModbusTcpBus) and bus.name in per_bus and \
                    bus.host in ("127.0.0.1", "localhost"):
                sims.modbus[bus.name] = ModbusTcpSim(per_bus[bus.name], bus.port)
        return sims

    def _all(self) -> list[tuple[str, _Sim]]:
        return [*((f"Modbus TCP bus {n}", s) for n, s in self.modbus.items()),
                *((f"GPS {n}", s) for n, s in self.gps.items()),
                *((f"loudspeaker {n}", s) for n, s in self.tts.items())]

    async def start(self) -> None:
        """Start every simulator; SimPortError (one line, the port) if a port is taken.

        pymodbus says only "Could not start listen, please check address." and asyncio an
        errno: the user needs the port and what to do (f14 #3). The ports stay fixed (D10).
        """
        # pymodbus logs its own WARNING for a taken port before it raises: ours says it all
        quiet = logging.getLogger("pymodbus.logging")
        for what, sim in self._all():
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                await sim.start()
            except (OSError, RuntimeError) as exc:
                await self.stop()
                raise SimPortError(
                    f"cannot start the {what} simulator on 127.0.0.1:{sim.port}: the port is "
                    f"in use (another demo still running?); stop what holds it (`ss -ltnp "
                    f"'sport = :{sim.port}'` names it) and run again") from exc
            finally:
                quiet.setLevel(level)
            self._started.append(sim)

    async def stop(self) -> None:
        """Stop every simulator that started."""
        while self._started:
            await self._started.pop().stop()
