"""Start the simulators a devices.yaml points at (loopback Modbus TCP and socket:// ports)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from edge.config import EdgeConfig, ModbusTcpBus
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
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


def unit_for(model: str) -> SimUnit:
    """Return a simulated slave speaking ``model``'s register map."""
    makers: dict[str, Callable[[], SimUnit]] = {
        "witmotion": tilt_unit, "sunspec304": sunspec_unit, "lamp_controller": lamp_unit,
        "sdm120": lamp_unit, "pzem004t": pzem_unit}
    return makers[model]()


# What each simulator models: Modbus TCP has no CRC and one unit per connection's reply, so
# crc, garbage and wrong_unit exist only on the RTU line simulator (hil.sims.rtu_sim).
TCP_FAULTS = ("none", "dead", "slow", "exception")
RTU_FAULTS = FAULTS


def faults_for(config: EdgeConfig, device_name: str) -> tuple[str, ...]:
    """Return the faults the simulator behind ``device_name`` models (KeyError: no device)."""
    device = config.device(device_name)
    if device.bus is None or device.unit_id is None:
        return ()
    return TCP_FAULTS if isinstance(config.bus(device.bus), ModbusTcpBus) else RTU_FAULTS


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

    def _all(self) -> list[_Sim]:
        return [*self.modbus.values(), *self.gps.values(), *self.tts.values()]

    async def start(self) -> None:
        """Start every simulator."""
        for sim in self._all():
            await sim.start()

    async def stop(self) -> None:
        """Stop every simulator."""
        for sim in self._all():
            await sim.stop()
