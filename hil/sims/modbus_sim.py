"""Modbus TCP simulators on pymodbus' real server, with fault modes.

Each unit is a ``SimUnit`` holding plain register dicts (no pymodbus off-by-one), a scenario
state (tilt angles, lamp power) and a fault mode: ``dead`` (never answers), ``slow``
(answers after ``delay_s``), ``exception`` (Modbus exception 0x04), ``none``.
Writes arrive through Modbus itself, so ``python -m hil tilt`` needs no side channel.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.datastore.context import ModbusBaseDeviceContext
from pymodbus.server import ModbusTcpServer

from edge.drivers._codecs import sdm120, witmotion

FAULTS = ("none", "dead", "slow", "exception")
# A holding register a simulator exposes to choose its fault mode over Modbus (tests, CLI).
FAULT_REGISTER = 0x7F00


@dataclass
class SimUnit(ModbusBaseDeviceContext):  # type: ignore[misc]
    """One simulated slave."""

    holding: dict[int, int] = field(default_factory=dict)
    inputs: dict[int, int] = field(default_factory=dict)
    coils: dict[int, bool] = field(default_factory=dict)
    fault: str = "none"
    delay_s: float = 1.0
    requests: int = 0

    def _table(self, fc: int) -> dict[int, int] | dict[int, bool]:
        kind = self.decode(fc)
        if kind in ("c", "d"):
            return self.coils
        return self.inputs if kind == "i" else self.holding

    async def async_getValues(self, func_code: int, address: int,  # noqa: N802 - pymodbus API
                              count: int = 1) -> list[int] | list[bool] | ExcCodes:
        """Serve a read according to the fault mode."""
        self.requests += 1
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
        if address == FAULT_REGISTER and self.decode(func_code) == "h":
            self.fault = FAULTS[int(values[0]) % len(FAULTS)]
            return None
        if self.fault == "dead":
            await asyncio.sleep(3600)
        table = self._table(func_code)
        for offset, value in enumerate(values):
            table[address + offset] = value  # type: ignore[assignment]
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
    for offset, word in enumerate(witmotion.encode_angles(tilt_x_deg, tilt_y_deg)):
        unit.holding[witmotion.ANGLE_REGISTER + offset] = word
    unit.holding[FAULT_REGISTER] = 0
    return unit


def set_lamp(unit: SimUnit, *, voltage_v: float, current_a: float, power_w: float) -> None:
    """Set a lamp controller's meter registers (SDM120 float32 ABCD)."""
    for reg in range(0x4C):
        unit.inputs.setdefault(reg, 0)
    for reg, value in ((0x00, voltage_v), (0x06, current_a), (0x0C, power_w)):
        high, low = sdm120.encode_float_abcd(value)
        unit.inputs[reg], unit.inputs[reg + 1] = high, low


def lamp_unit(*, on: bool = True, power_w: float = 98.5) -> SimUnit:
    """Return a lamp controller: SDM120 meter + relay coil 0 + dim register 0x0100."""
    unit = SimUnit()
    set_lamp(unit, voltage_v=230.1, current_a=power_w / 230.1 if on else 0.0,
             power_w=power_w if on else 0.0)
    unit.coils[sdm120.RELAY_COIL] = on
    unit.holding[sdm120.DIM_REGISTER] = 100
    unit.holding[FAULT_REGISTER] = 0
    return unit


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
