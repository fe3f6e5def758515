"""Modbus TCP simulators on pymodbus' real server, with fault modes.

Each unit is a ``SimUnit`` holding plain register dicts (no pymodbus off-by-one), a scenario
state (tilt angles, lamp power) and a fault mode: ``dead`` (never answers), ``slow``
(answers after ``delay_s``), ``exception`` (Modbus exception 0x04), ``none``; on the RTU line
also ``crc`` (reply with a broken CRC), ``garbage`` (noise instead of a reply) and
``wrong_unit`` (a valid reply from another unit id) — TCP has no CRC, so ``python -m hil fault``
refuses them for a device on a Modbus TCP simulator (hil.sims.runner.faults_for).
Writes arrive through Modbus itself (fault register 0x7F00, scenario register 0x7F01), so
``python -m hil fault|scenario`` need no side channel.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.datastore.context import ModbusBaseDeviceContext
from pymodbus.server import ModbusTcpServer

from hil.sims import wire

FAULTS = wire.MODBUS_FAULTS
# Holding registers a simulator exposes to choose its fault mode and scenario over Modbus.
FAULT_REGISTER = wire.FAULT_REGISTER
SCENARIO_REGISTER = wire.SCENARIO_REGISTER
LAMP_SCENARIOS = wire.LAMP_SCENARIOS


@dataclass
class LampModel:
    """A lamp behind the controller: what the meter reads follows relay, dim and scenario."""

    rated_w: float = 98.5
    supply_v: float = 230.1
    scenario: str = "normal"

    def meter(self, on: bool, dim_pct: int) -> tuple[float, float, float]:
        """Return (voltage V, current A, power W) the meter would read."""
        volts = 150.0 if self.scenario == "power_loss" else self.supply_v
        if not on or self.scenario in ("lamp_failure", "power_loss"):
            return volts, 0.0, 0.0
        power = self.rated_w * max(dim_pct, 1) / 100
        amps = 3.5 if self.scenario == "overcurrent" else power / volts
        return volts, amps, power


@dataclass
class SimUnit(ModbusBaseDeviceContext):  # type: ignore[misc]
    """One simulated slave."""

    holding: dict[int, int] = field(default_factory=dict)
    inputs: dict[int, int] = field(default_factory=dict)
    coils: dict[int, bool] = field(default_factory=dict)
    fault: str = "none"
    delay_s: float = 1.0
    requests: int = 0
    lamp: LampModel | None = None

    def control(self, address: int, value: int) -> bool:
        """Handle a write to a control register; return whether it was one."""
        if address == FAULT_REGISTER:
            self.fault = FAULTS[value % len(FAULTS)]
            return True
        if address == SCENARIO_REGISTER and self.lamp is not None:
            self.lamp.scenario = LAMP_SCENARIOS[value % len(LAMP_SCENARIOS)]
            self.refresh()
            return True
        return False

    def control_value(self, address: int) -> int:
        """Return what a control register holds (the fault or scenario index)."""
        if address == FAULT_REGISTER:
            return FAULTS.index(self.fault)
        return LAMP_SCENARIOS.index(self.lamp.scenario) if self.lamp is not None else 0

    def refresh(self) -> None:
        """Recompute the meter from relay, dim and scenario (a lamp controller only)."""
        if self.lamp is not None:
            volts, amps, watts = self.lamp.meter(
                bool(self.coils.get(wire.LAMP_RELAY_COIL)),
                int(self.holding.get(wire.LAMP_DIM_REGISTER, 100)))
            set_lamp(self, voltage_v=volts, current_a=amps, power_w=watts)

    def write(self, table: dict[int, int] | dict[int, bool], address: int,
              values: list[int] | list[bool]) -> None:
        """Store written values and let the lamp follow."""
        for offset, value in enumerate(values):
            table[address + offset] = value  # type: ignore[assignment]
        self.refresh()

    def _table(self, fc: int) -> dict[int, int] | dict[int, bool]:
        kind = self.decode(fc)
        if kind in ("c", "d"):
            return self.coils
        return self.inputs if kind == "i" else self.holding

    async def async_getValues(self, func_code: int, address: int,  # noqa: N802 - pymodbus API
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        """Serve a read according to the fault mode."""
        self.requests += 1
        if address in (FAULT_REGISTER, SCENARIO_REGISTER):
            # pymodbus reads a written register back for the reply: the control registers
            # answer in every mode, or `hil fault ... dead` could never report success
            return [self.control_value(address)]
        if self.fault == "dead":
            await asyncio.sleep(3600)
        if self.fault == "slow":
            await asyncio.sleep(self.delay_s)
        if self.fault == "exception":
            return ExcCodes.DEVICE_FAILURE
        table = self._table(func_code)
        try:
            return [table[a] for a in range(address, address + count)]  # type: ignore[return-value]
        except KeyError:
            return ExcCodes.ILLEGAL_ADDRESS

    async def async_setValues(self, func_code: int, address: int,  # noqa: N802
                              values: list[int] | list[bool]) -> ExcCodes | None:
        """Serve a write; the fault register switches the fault mode."""
        if self.decode(func_code) == "h" and self.control(address, int(values[0])):
            return None
        if self.fault == "dead":
            await asyncio.sleep(3600)
        self.write(self._table(func_code), address, values)
        return None

    def getValues(self, func_code: int, address: int, count: int = 1  # noqa: N802
                  ) -> list[int] | list[bool] | ExcCodes:
        """Sync read (unused by the async server; kept for pymodbus' interface)."""
        table = self._table(func_code)
        try:
            return [table[a] for a in range(address, address + count)]  # type: ignore[return-value]
        except KeyError:
            return ExcCodes.ILLEGAL_ADDRESS

    def setValues(self, func_code: int, address: int,  # noqa: N802
                  values: list[int] | list[bool]) -> ExcCodes | None:
        """Sync write."""
        table = self._table(func_code)
        for offset, value in enumerate(values):
            table[address + offset] = value  # type: ignore[assignment]
        return None

    def reset(self) -> None:
        """Pymodbus interface; nothing to reset."""


def tilt_unit(tilt_x_deg: float = 0.0, tilt_y_deg: float = 0.0) -> SimUnit:
    """Return a WitMotion-style inclinometer (firmware_notes/witmotion-inclinometer.md)."""
    unit = SimUnit()
    for offset, word in enumerate(wire.witmotion_words(tilt_x_deg, tilt_y_deg)):
        unit.holding[wire.WITMOTION_ANGLE_REGISTER + offset] = word
    unit.holding[FAULT_REGISTER] = 0
    return unit


def set_lamp(unit: SimUnit, *, voltage_v: float, current_a: float, power_w: float) -> None:
    """Set a lamp controller's meter registers (SDM120 float32 ABCD)."""
    for reg in range(0x4C):
        unit.inputs.setdefault(reg, 0)
    for reg, value in ((wire.SDM120_VOLTAGE, voltage_v), (wire.SDM120_CURRENT, current_a),
                       (wire.SDM120_POWER, power_w)):
        unit.inputs[reg], unit.inputs[reg + 1] = wire.float32_abcd(value)


def lamp_unit(*, on: bool = True, power_w: float = 98.5) -> SimUnit:
    """Return a lamp controller: SDM120 meter + relay coil 0 + dim register 0x0100."""
    unit = SimUnit(lamp=LampModel(rated_w=power_w))
    unit.coils[wire.LAMP_RELAY_COIL] = on
    unit.holding[wire.LAMP_DIM_REGISTER] = 100
    unit.holding[FAULT_REGISTER] = 0
    unit.holding[SCENARIO_REGISTER] = 0
    unit.refresh()
    return unit


def pzem_unit(*, voltage_v: float = 230.1, current_a: float = 0.452,
              power_w: float = 98.5, energy_wh: int = 0) -> SimUnit:
    """Return a PZEM-004T v3 meter (firmware_notes/pzem004t.md)."""
    unit = SimUnit()
    unit.inputs.update(enumerate(wire.pzem004t_words(voltage_v=voltage_v, current_a=current_a,
                                                     power_w=power_w, energy_wh=energy_wh)))
    unit.holding[FAULT_REGISTER] = 0
    return unit


SUNSPEC_BASE = 40000
SUNSPEC_304_ADDR = SUNSPEC_BASE + 2 + 2 + 66  # after "SunS" and model 1 (ID, L = 66)


def sunspec_unit(tilt_x_deg: float = 0.0, tilt_y_deg: float = 0.0) -> SimUnit:
    """Return a SunSpec inclinometer: "SunS", model 1 (common), model 304, end marker."""
    unit = SimUnit()
    unit.holding.update({SUNSPEC_BASE: wire.SUNSPEC_MARKER[0],
                         SUNSPEC_BASE + 1: wire.SUNSPEC_MARKER[1],
                         SUNSPEC_BASE + 2: 1, SUNSPEC_BASE + 3: 66})
    unit.holding.update({SUNSPEC_BASE + 4 + i: 0 for i in range(66)})
    end = SUNSPEC_304_ADDR + 8
    unit.holding.update({end: wire.SUNSPEC_END, end + 1: 0})
    set_sunspec_tilt(unit, tilt_x_deg, tilt_y_deg)
    unit.holding[FAULT_REGISTER] = 0
    return unit


def set_sunspec_tilt(unit: SimUnit, tilt_x_deg: float, tilt_y_deg: float) -> None:
    """Set a SunSpec unit's model 304 group (int32 high word first, sf -2)."""
    words = wire.sunspec304_words(tilt_x_deg, tilt_y_deg)
    unit.holding.update({SUNSPEC_304_ADDR + i: w for i, w in enumerate(words)})


class ModbusTcpSim:
    """A Modbus TCP server for several units on one port."""

    def __init__(self, units: dict[int, SimUnit], port: int, host: str = "127.0.0.1") -> None:
        self.units = units
        self.port = port
        context = ModbusServerContext(devices=units, single=False)
        self._server = ModbusTcpServer(context, address=(host, port),
                                       ignore_missing_devices=True)

    async def start(self) -> None:
        """Listen (returns once the socket is bound)."""
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        """Stop listening and drop connections."""
        await self._server.shutdown()
