"""The conformance kit: every driver in DRIVERS passes the same checks (design/style.md)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from edge.drivers import DRIVERS
from edge.errors import DeviceError
from hil.sims.modbus_sim import FAULTS
from tests.conformance.harness import KINDS, with_garbage, with_simulator
from tests.recording_sink import RecordingSink


def test_the_kit_covers_every_registered_driver() -> None:
    assert sorted(KINDS) == sorted(DRIVERS)


async def run_for(driver: object, sink: RecordingSink, seconds: float) -> BaseException | None:
    task = asyncio.create_task(driver.run(sink))  # type: ignore[attr-defined]
    await asyncio.sleep(seconds)
    if task.done():
        return task.exception()
    task.cancel()
    started = time.monotonic()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0, "did not stop within 1 s of cancellation"
    return None


@pytest.mark.parametrize("kind", KINDS)
async def test_reads_with_read_time_timestamps_and_never_merges(kind: str) -> None:
    async with with_simulator(kind) as rig:
        sink = RecordingSink()
        before = time.time_ns()
        assert await run_for(rig.driver, sink, 1.5) is None
        after = time.time_ns()
    assert len(sink.readings) >= 2, f"{kind}: no readings from its simulator"
    stamps = [r.at_ns for r in sink.readings]
    assert all(before <= s <= after for s in stamps)
    assert len(set(stamps)) == len(stamps), "two reads were merged into one reading"
    assert all(r.device == "dev" for r in sink.readings)
    if rig.bus is not None:
        assert not rig.bus._lock.locked(), "the bus stayed locked after cancellation"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_garbage_peer_raises_only_device_errors(kind: str, seed: int) -> None:
    async with with_garbage(kind, seed) as rig:
        sink = RecordingSink()
        error = await run_for(rig.driver, sink, 1.5)
    assert error is None or isinstance(error, DeviceError), f"{kind} raised {error!r}"
    assert not sink.readings or kind == "gps", "garbage was decoded into a reading"
    if rig.bus is not None:
        assert not rig.bus._lock.locked()


@pytest.mark.parametrize("kind", ["manhole_tilt", "streetlight"])
@pytest.mark.parametrize("fault", ["exception", "slow", "dead"])
async def test_modbus_fault_modes(kind: str, fault: str) -> None:
    async with with_simulator(kind) as rig:
        assert rig.unit is not None
        rig.unit.fault = fault
        rig.unit.delay_s = 2.0
        sink = RecordingSink()
        assert await run_for(rig.driver, sink, 1.5) is None
    assert rig.driver.stats.polls_failed >= 1
    assert not sink.readings
    assert fault in FAULTS


async def test_streetlight_reads_a_pzem004t_meter() -> None:
    from edge.config import ModbusTcpBus, StreetlightDevice
    from edge.drivers._modbus import ModbusBus
    from edge.drivers.streetlight import StreetlightDriver
    from hil.broker import free_port
    from hil.sims.modbus_sim import ModbusTcpSim, SimUnit
    from tests.conformance.harness import asset

    unit = SimUnit()
    for reg, word in enumerate([0x08FD, 0x01C4, 0, 0x03D9, 0, 0x1170, 0x0001, 0x01F4, 0x5F, 0]):
        unit.inputs[reg] = word
    port = free_port()
    sim = ModbusTcpSim({1: unit}, port)
    await sim.start()
    bus = ModbusBus(ModbusTcpBus(name="b", type="modbus_tcp", host="127.0.0.1", port=port))
    cfg = StreetlightDevice.model_validate({
        "name": "meter-1", "kind": "streetlight", "transport": "modbus_tcp", "bus": "b",
        "unit_id": 1, "model": "pzem004t", "asset": asset("streetlight")})
    try:
        values = await StreetlightDriver(cfg, bus, timeout_s=2.0).probe()
    finally:
        await bus.close()
        await sim.stop()
    assert values["energy_wh"] == 70_000.0
    assert values["power_w"] == 98.5
