"""Tilt a simulated cover (or set a fault) from the command line, through Modbus itself."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from edge.config import EdgeConfig
from edge.transports.modbus import ModbusBus
from hil.sims import wire
from hil.sims.wire import FAULT_REGISTER, LAMP_SCENARIOS, SCENARIO_REGISTER
from hil.sims.wire import MODBUS_FAULTS as FAULTS

if TYPE_CHECKING:  # the simulator (pymodbus' server, aiohttp) is not loaded to tilt one
    from hil.sims.modbus_sim import SimUnit


def set_tilt_local(unit: SimUnit, tilt_deg: float) -> None:
    """Set an in-process simulator's angles (roll = tilt, pitch = 0)."""
    for offset, word in enumerate(wire.witmotion_words(tilt_deg, 0.0)):
        unit.holding[wire.WITMOTION_ANGLE_REGISTER + offset] = word


async def set_tilt(config: EdgeConfig, device_name: str, tilt_deg: float) -> None:
    """Write the angle registers of a running simulator over Modbus TCP."""
    device = config.device(device_name)
    if device.kind != "manhole_tilt" or device.bus is None or device.unit_id is None:
        raise SystemExit(f"{device_name} is not a Modbus manhole tilt sensor")
    bus = ModbusBus(config.bus(device.bus))
    try:
        words = wire.witmotion_words(tilt_deg, 0.0)
        for offset, word in enumerate(words[:2]):
            await bus.write_register(device_name, device.unit_id,
                                     wire.WITMOTION_ANGLE_REGISTER + offset, word)
    finally:
        await bus.close()


async def _write_control(config: EdgeConfig, device_name: str, register: int,
                         value: int) -> None:
    device = config.device(device_name)
    if device.bus is None or device.unit_id is None:
        raise SystemExit(f"{device_name} is not a Modbus device")
    bus = ModbusBus(config.bus(device.bus))
    try:
        await bus.write_register(device_name, device.unit_id, register, value)
    finally:
        await bus.close()


async def set_fault(config: EdgeConfig, device_name: str, fault: str) -> None:
    """Switch a running simulator unit's fault mode (hil.sims.modbus_sim.FAULTS)."""
    await _write_control(config, device_name, FAULT_REGISTER, FAULTS.index(fault))


async def set_scenario(config: EdgeConfig, device_name: str, scenario: str) -> None:
    """Put a running lamp simulator into a scenario (normal, lamp_failure, power_loss, ...)."""
    await _write_control(config, device_name, SCENARIO_REGISTER, LAMP_SCENARIOS.index(scenario))


def run(coro: object) -> None:
    """Run a coroutine to completion."""
    asyncio.run(coro)  # type: ignore[arg-type]
