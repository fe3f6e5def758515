"""light.schedule: stored on the gateway, applied with verify, running with no uplink at all."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path

import pytest

from edge.buffer.device_state import DeviceStateStore
from edge.commands.safety import SafetyRules
from edge.config import ModbusTcpBus
from edge.drivers import streetlight as streetlight_mod
from edge.drivers._codecs import sdm120
from edge.drivers.streetlight import SCHEDULE_FILE_MAX_BYTES, StreetlightDriver
from edge.drivers.sun import sun_times
from edge.kinds.streetlight import LightStep, StreetlightDevice
from edge.light_schedule import Step, in_force, step_time
from edge.shape_check import check
from edge.transports.modbus import ModbusBus
from hil.broker import free_port
from hil.sims.modbus_sim import FAULT_REGISTER, FAULTS, ModbusTcpSim, lamp_unit
from tests.cfg import LAMP_ASSET, lamp_device, write_config
from tests.helpers import wait_until
from tests.recording_sink import RecordingSink

SUZHOU = (31.31, 120.63)
CST = 8.0


def at_utc(local: str, day: str = "2026-11-26") -> dt.datetime:
    return dt.datetime.fromisoformat(f"{day}T{local}+08:00").astimezone(dt.UTC)


def test_the_step_in_force_looks_back_to_yesterday() -> None:
    steps = [Step("18:30", on=True, dim_pct=100), Step("23:00", on=True, dim_pct=40),
             Step("06:10", on=False)]
    assert in_force(steps, at_utc("02:00"), CST, None, None)[0] == steps[1]  # type: ignore[index]
    assert in_force(steps, at_utc("12:00"), CST, None, None)[0] == steps[2]  # type: ignore[index]
    assert in_force(steps, at_utc("18:30"), CST, None, None)[0] == steps[0]  # type: ignore[index]
    assert in_force([], at_utc("12:00"), CST, None, None) is None


def test_astronomical_steps_follow_the_local_sunset() -> None:
    day = dt.date(2026, 11, 26)
    _rise, sunset = sun_times(*SUZHOU, day, CST)
    assert sunset is not None
    # published almanacs give 16:55 CST for Suzhou on this day; refraction models differ by ~1 min
    expected = dt.datetime(2026, 11, 26, 16, 55, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert abs((sunset - expected).total_seconds()) < 120
    when = step_time("sunset+15", day, CST, *SUZHOU)
    assert when == sunset + dt.timedelta(minutes=15)
    assert step_time("sunrise-10", day, CST, None, None) is None  # no position, no sunrise
    steps = [Step("sunset+15", on=True), Step("sunrise-10", on=False)]
    lit = in_force(steps, sunset + dt.timedelta(minutes=16), CST, *SUZHOU)
    dark = in_force(steps, sunset + dt.timedelta(minutes=14), CST, *SUZHOU)
    assert lit is not None and lit[0].on
    assert dark is not None and not dark[0].on


def test_polar_night_has_no_sunset_step() -> None:
    assert step_time("sunset", dt.date(2026, 12, 21), 1.0, 78.2, 15.6) is None


def _config(tmp_path: Path, port: int, **extra: object) -> StreetlightDevice:
    bus = {"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": port}
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[bus],
                          devices=[lamp_device("lamp-1", "b", 1, **extra)])
    cfg = loaded.config.device("lamp-1")
    assert isinstance(cfg, StreetlightDevice)
    return cfg


def _driver(cfg: StreetlightDevice, port: int, state: Path) -> tuple[StreetlightDriver, ModbusBus]:
    bus = ModbusBus(ModbusTcpBus(name="b", type="modbus_tcp", host="127.0.0.1", port=port,
                                 timeout_s=0.3))
    driver = StreetlightDriver(cfg, bus, timeout_s=2.0)
    driver.utc_offset_h = CST
    driver.stored = DeviceStateStore(state, max_bytes=SCHEDULE_FILE_MAX_BYTES)
    return driver, bus


def _now_local_minus(minutes: int) -> str:
    local = dt.datetime.now(dt.UTC) + dt.timedelta(hours=CST) - dt.timedelta(minutes=minutes)
    return local.strftime("%H:%M")


async def test_a_stored_schedule_runs_after_a_restart_with_no_uplink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streetlight_mod, "SCHEDULE_TICK_S", 0.05)
    port = free_port()
    unit = lamp_unit(on=False)
    sim = ModbusTcpSim({1: unit}, port)
    await sim.start()
    cfg = _config(tmp_path, port)
    state = tmp_path / "state" / "schedules"
    try:
        # the platform sent light.schedule; the gateway stored it and then lost power
        first, bus1 = _driver(cfg, port, state)
        first.store_schedule([LightStep(at=_now_local_minus(3), on=False, dim_pct=100),
                              LightStep(at=_now_local_minus(1), on=True, dim_pct=40)])
        await bus1.close()
        assert (state / "lamp-1.json").exists()
        # a new process: no uplink exists at all; only the driver and its stored schedule
        second, bus2 = _driver(cfg, port, state)
        sink = RecordingSink()
        task = asyncio.create_task(second.run(sink))
        try:
            await wait_until(lambda: sink.results, timeout_s=10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await bus2.close()
        assert unit.coils[sdm120.RELAY_COIL] is True
        assert unit.holding[sdm120.DIM_REGISTER] == 40
        assert sink.results[0]["status"] == "executed"
        assert sink.results[0]["verified"] is True
        assert len(sink.results) == 1  # applied once, not every tick
    finally:
        await sim.stop()


async def test_a_failing_step_is_reported_once_and_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streetlight_mod, "SCHEDULE_TICK_S", 0.05)
    port = free_port()
    unit = lamp_unit(on=False)
    unit.fault = "exception"
    sim = ModbusTcpSim({1: unit}, port)
    await sim.start()
    cfg = _config(tmp_path, port, schedule=[{"at": _now_local_minus(1), "on": True}])
    try:
        driver, bus = _driver(cfg, port, tmp_path / "schedules")
        sink = RecordingSink()
        task = asyncio.create_task(driver.run_schedule(sink))
        try:
            await wait_until(lambda: sink.results, timeout_s=10)
            tried = unit.requests  # several more ticks reach the controller, still failing
            await wait_until(lambda: unit.requests >= tried + 3, timeout_s=10,
                             what="three more ticks")
            assert [r["status"] for r in sink.results] == ["failed"]
            unit.fault = FAULTS[0]  # the controller recovers: the next tick applies the step
            await wait_until(lambda: len(sink.results) == 2, timeout_s=10)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await bus.close()
        assert sink.results[1]["status"] == "executed"
        assert unit.coils[sdm120.RELAY_COIL] is True
        assert FAULT_REGISTER in unit.holding
    finally:
        await sim.stop()


def test_safety_refuses_dim_below_the_driver_minimum_and_sunset_without_position(
        tmp_path: Path) -> None:
    from edge.drivers.streetlight import LightSchedule, LightSet

    bus = {"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1}
    nowhere = {k: v for k, v in LAMP_ASSET.items() if k not in ("lat", "lon")}
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[bus], devices=[
        lamp_device("lamp-1", "b", 1, min_dim_pct=20),
        lamp_device("lamp-2", "b", 2, asset={**nowhere, "code": "3205080118000008"})])
    rules = SafetyRules(loaded.config, clock_trusted=lambda: True)
    why = rules.check("lamp-1", "light.set", LightSet(on=True, dim_pct=10), {"lighting"})
    assert why is not None and "below lamp-1's minimum 20 %" in why
    assert rules.check("lamp-1", "light.set", LightSet(on=False, dim_pct=0), {"lighting"}) is None
    sunset = check(LightSchedule, {"steps": [{"at": "sunset+10", "on": True}]})
    why = rules.check("lamp-2", "light.schedule", sunset, {"lighting"})
    assert why is not None and "lat/lon" in why
    assert rules.check("lamp-1", "light.schedule", sunset, {"lighting"}) is None
