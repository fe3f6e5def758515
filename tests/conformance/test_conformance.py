"""The conformance kit: every driver class of the kind table passes the same checks.

design/style.md; one rig per kind and transport (tests/conformance/harness.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from edge.drivers.factory import KINDS
from edge.errors import DeviceError
from hil.sims.modbus_sim import FAULTS
from tests.conformance.harness import RIGS, build, unreachable, with_garbage, with_simulator
from tests.recording_sink import RecordingSink

pytestmark = pytest.mark.reliability


MODBUS = [rig for rig in RIGS if "/modbus_" in rig]
GARBAGE = [rig for rig in RIGS if not rig.endswith("/modbus_rtu")]  # RTU: the fault modes


def test_the_kit_covers_every_registered_driver(tmp_path: Path) -> None:
    """Each rig builds through the kind table; together they build every driver class."""
    built = {type(build(tmp_path / str(i), *unreachable(rig))[0])
             for i, rig in enumerate(RIGS)}
    assert built == {cls for kind in KINDS.values() for cls in kind.drivers}
    assert len(RIGS) >= 9  # 3 for a cover, 2 for a lamp, 2 for a speaker, 2 for a tracker


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


def _declared_alarm(raised: str, alarms: tuple[str, ...]) -> bool:
    return any(raised == a or (a.endswith(":") and raised.startswith(a)) for a in alarms)


def test_each_kinds_fields_and_alarms_are_declared_and_documented() -> None:
    """The kind table names its readings' fields and its alarms; the README's device table
    lists every alarm (a fence's by its prefix)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    for name, kind in KINDS.items():
        assert kind.fields and kind.alarms, name
        rows = [line for line in readme.splitlines() if line.startswith(f"| `{name}` |")]
        assert rows, f"README.md's device table has no row for {name}"
        row = rows[0]
        for alarm in kind.alarms:  # a fence's: "geofence enter/exit"
            shown = alarm.rstrip(":").split("_") if alarm.endswith(":") else [f"`{alarm}`"]
            assert all(word in row for word in shown), (name, alarm)
        # the alarm every polled driver raises when its device goes silent is declared too
        for driver in kind.drivers:
            offline = getattr(driver, "offline_alarm", None)
            assert offline is None or offline in kind.alarms, (name, driver, offline)
    assert _declared_alarm("geofence_exit:depot", KINDS["gps"].alarms)
    assert not _declared_alarm("geofence_exit", KINDS["gps"].alarms)


@pytest.mark.parametrize("kind", RIGS)
async def test_reads_with_read_time_timestamps_and_never_merges(kind: str,
                                                                 tmp_path: Path) -> None:
    async with with_simulator(kind, tmp_path) as rig:
        sink = RecordingSink()
        before = time.time_ns()
        assert await run_for(rig.driver, sink, 1.5) is None
        after = time.time_ns()
    assert len(sink.readings) >= 2, f"{kind}: no readings from its simulator"
    stamps = [r.at_ns for r in sink.readings]
    assert all(before <= s <= after for s in stamps)
    assert len(set(stamps)) == len(stamps), "two reads were merged into one reading"
    assert all(r.device == "dev" for r in sink.readings)
    declared = KINDS[kind.partition("/")[0]]  # the kind table says what its readings hold
    assert {f for r in sink.readings for f in r.values} <= declared.fields
    assert all(_declared_alarm(a.kind, declared.alarms) for a in sink.alarms), sink.alarms
    if rig.bus is not None:
        assert not rig.bus._lock.locked(), "the bus stayed locked after cancellation"


@pytest.mark.parametrize("kind", GARBAGE)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_garbage_peer_raises_only_device_errors(kind: str, seed: int,
                                                      tmp_path: Path) -> None:
    async with with_garbage(kind, tmp_path, seed) as rig:
        sink = RecordingSink()
        error = await run_for(rig.driver, sink, 1.5)
    assert error is None or isinstance(error, DeviceError), f"{kind} raised {error!r}"
    assert not sink.readings or kind == "gps/serial", "garbage was decoded into a reading"
    stats = rig.driver.stats
    # seen and counted, not ignored: a pushed message is a parse error, a poll a failed one
    assert stats.parse_errors + stats.polls_failed + stats.bad_values >= 1, (kind, stats)
    if rig.bus is not None:
        assert not rig.bus._lock.locked()


@pytest.mark.parametrize(("kind", "fault"), [
    *[(k, f) for k in MODBUS for f in ("exception", "slow", "dead")],
    *[(k, f) for k in MODBUS if k.endswith("/modbus_rtu") for f in ("crc", "garbage",
                                                                    "wrong_unit")]])
async def test_modbus_fault_modes(kind: str, fault: str, tmp_path: Path) -> None:
    async with with_simulator(kind, tmp_path) as rig:
        assert rig.unit is not None
        rig.unit.fault = fault
        rig.unit.delay_s = 2.0
        sink = RecordingSink()
        assert await run_for(rig.driver, sink, 1.5) is None
    assert rig.driver.stats.polls_failed >= 1
    assert not sink.readings
    assert fault in FAULTS
    counter = {"crc": "bad_frames", "garbage": "bad_frames", "wrong_unit": "wrong_unit"}
    if fault in counter:  # counted and dropped, never decoded
        assert rig.bus is not None
        assert getattr(rig.bus.stats, counter[fault]) >= 1


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_manhole_tilt_walks_the_sunspec_chain_to_model_304(transport: str) -> None:
    from edge.config import ModbusRtuBus, ModbusTcpBus
    from edge.config_loader import validate
    from edge.drivers.manhole_tilt import ManholeTiltModbusDriver
    from edge.kinds.manhole_tilt import ManholeTiltDevice
    from edge.transports.modbus import ModbusBus
    from hil.broker import free_port
    from hil.sims.modbus_sim import SUNSPEC_304_ADDR, ModbusTcpSim, set_sunspec_tilt, sunspec_unit
    from hil.sims.rtu_sim import RtuLineSim
    from tests.conformance.harness import asset

    unit = sunspec_unit(15.34, -2.5)
    sim: ModbusTcpSim | RtuLineSim
    if transport == "tcp":
        sim = ModbusTcpSim({3: unit}, free_port())
        bus = ModbusBus(ModbusTcpBus(name="b", type="modbus_tcp", host="127.0.0.1",
                                     port=sim.port))
    else:
        sim = RtuLineSim({3: unit})
        bus = ModbusBus(ModbusRtuBus(name="b", type="modbus_rtu", port=sim.path))
    await sim.start()
    cfg = validate(ManholeTiltDevice, {
        "name": "ss-1", "kind": "manhole_tilt", "transport": f"modbus_{transport}", "bus": "b",
        "unit_id": 3, "model": "sunspec304", "asset": asset("manhole_tilt")})
    driver = ManholeTiltModbusDriver(cfg, bus, timeout_s=3.0)
    try:
        first = await driver.probe()
        assert await driver.discover_sunspec() == SUNSPEC_304_ADDR  # 40000 + "SunS" + model 1
        set_sunspec_tilt(unit, 70.0, 0.0)
        second = await driver.probe()
    finally:
        await bus.close()
        await sim.stop()
    assert first["tilt_x_deg"] == 15.34
    assert first["tilt_y_deg"] == -2.5
    assert first["tilt_deg"] == 15.34
    assert second["tilt_deg"] == 70.0


async def test_streetlight_reads_a_pzem004t_meter() -> None:
    from edge.config import ModbusTcpBus
    from edge.config_loader import validate
    from edge.drivers.streetlight import StreetlightDriver
    from edge.kinds.streetlight import StreetlightDevice
    from edge.transports.modbus import ModbusBus
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
    cfg = validate(StreetlightDevice, {
        "name": "meter-1", "kind": "streetlight", "transport": "modbus_tcp", "bus": "b",
        "unit_id": 1, "model": "pzem004t", "asset": asset("streetlight")})
    try:
        values = await StreetlightDriver(cfg, bus, timeout_s=2.0).probe()
    finally:
        await bus.close()
        await sim.stop()
    assert values["energy_wh"] == 70_000.0
    assert values["power_w"] == 98.5
