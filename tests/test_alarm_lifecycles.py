"""Every alarm kind of the cover and the lamp, through the real sink into the real outbox:
raised after its debounce, no flapping at the threshold, cleared with the raise's alarm_id."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.store import Outbox
from edge.clock import Clock
from edge.config import EdgeConfig
from edge.drivers.manhole_tilt import ManholeTiltModbusDriver
from edge.drivers.streetlight import StreetlightDriver
from edge.kinds.manhole_tilt import ManholeTiltDevice
from edge.kinds.streetlight import StreetlightDevice
from edge.sink import EventSink
from edge.transports.modbus import ModbusBus
from hil.broker import free_port
from hil.sims.modbus_sim import (
    LAMP_SCENARIOS,
    SCENARIO_REGISTER,
    ModbusTcpSim,
    SimUnit,
    lamp_unit,
)
from hil.tilt import set_tilt_local
from tests.cfg import LAMP_ASSET, TILT_ASSET, lamp_device, tilt_device, write_config
from tests.helpers import ObservedBroker, wait_event, wait_until


class Pipeline:
    """Drivers → EventSink → outbox, as in the agent, without the uplink."""

    def __init__(self, config: EdgeConfig, folder: Path) -> None:
        self.config = config
        self.store = Outbox(folder / "outbox.db")
        self.outbox = AsyncOutbox(self.store, commit_max_wait_s=0.001)
        self.sink: EventSink | None = None

    def alarms(self, kind: str) -> list[dict[str, Any]]:
        events = [json.loads(p) for p in self.store.export()]
        found = [e for e in events if e["type"] == "alarm" and e["alarm"]["kind"] == kind]
        return sorted(found, key=lambda e: e["seq"])


@contextlib.asynccontextmanager
async def pipeline(tmp_path: Path, devices: list[dict[str, Any]],
                   buses: list[dict[str, Any]]) -> AsyncIterator[Pipeline]:
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=devices, buses=buses)
    pipe = Pipeline(loaded.config, tmp_path)
    await pipe.outbox.open()
    writer = asyncio.create_task(pipe.outbox.run())
    pipe.sink = EventSink(loaded.config, pipe.outbox, Clock("system"), {})
    try:
        yield pipe
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await pipe.outbox.drain()
        await pipe.outbox.close()


async def run_for(driver: Any, sink: EventSink, until: Callable[[], bool]) -> None:
    task = asyncio.create_task(driver.run(sink))
    try:
        await wait_until(until, timeout_s=15)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def lamp_pipeline(tmp_path: Path, **extra: Any
                        ) -> AsyncIterator[tuple[Pipeline, StreetlightDriver, ModbusBus]]:
    """A lamp controller simulator, its driver and the real sink/outbox pipeline."""
    port = free_port()
    sim = ModbusTcpSim({1: lamp_unit(on=True)}, port)
    await sim.start()
    bus = {"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": port,
           "timeout_s": 0.5}
    try:
        async with pipeline(tmp_path, [lamp_device("lamp-1", "b", 1, poll_interval_s=0.05,
                                                   **extra)], [bus]) as pipe:
            cfg = pipe.config.device("lamp-1")
            assert isinstance(cfg, StreetlightDevice)
            mb = ModbusBus(pipe.config.bus("b"))
            driver = StreetlightDriver(cfg, mb, timeout_s=2.0)
            driver.utc_offset_h = 8.0
            try:
                yield pipe, driver, mb
            finally:
                await mb.close()
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def mqtt_cover(tmp_path: Path, broker_port: int, cover: dict[str, Any]
                     ) -> AsyncIterator[tuple[Pipeline, Any, Any]]:
    """An MQTT cover's driver running into the real pipeline, and a publisher as the cover."""
    from edge.drivers.factory import Transports, build_driver
    from edge.transports.mqtt import MqttLink

    loaded = write_config(tmp_path / "cfg", broker_port=1, pki=None, devices=[cover], buses=[],
                          extra={"southbound_mqtt": {"host": "127.0.0.1", "port": broker_port,
                                                     "tls": False}})
    async with pipeline(tmp_path, [], []) as pipe:
        pipe.sink = EventSink(loaded.config, pipe.outbox, Clock("system"), {})
        transports = Transports(loaded.config)
        assert transports.broker is not None
        broker = ObservedBroker(transports.broker.config, base_dir=transports.broker.base_dir,
                                gateway_id=transports.broker.gateway_id)
        transports.broker = broker
        driver = build_driver(loaded.config.device(cover["name"]), loaded.config, transports)
        task = asyncio.create_task(driver.run(pipe.sink))
        pub = MqttLink(host="127.0.0.1", port=broker_port, client_id=cover["name"],
                       protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None)
        try:
            await pub.connect()
            await wait_event(broker.subscribed, 10, "the cover driver's subscription")
            yield pipe, driver, pub
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await pub.close()


def assert_one_lifecycle(found: list[dict[str, Any]]) -> None:
    states = [e["alarm"]["state"] for e in found]
    assert states == ["raised", "cleared"], states  # exactly one raise, one clear: no flapping
    assert found[0]["alarm"]["alarm_id"] == found[1]["alarm"]["alarm_id"]


async def test_cover_open_and_displaced_lifecycles(tmp_path: Path) -> None:
    port = free_port()
    unit = SimUnit()
    set_tilt_local(unit, 0.0)
    sim = ModbusTcpSim({1: unit}, port)
    await sim.start()
    bus = {"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": port,
           "timeout_s": 0.5}
    try:
        async with pipeline(tmp_path, [tilt_device("mh-1", "b", 1)], [bus]) as pipe:
            cfg = pipe.config.device("mh-1")
            assert isinstance(cfg, ManholeTiltDevice)
            mb = ModbusBus(pipe.config.bus("b"))
            driver = ManholeTiltModbusDriver(cfg, mb, timeout_s=2.0)
            assert pipe.sink is not None
            # hover right at the open threshold (15°) with dips between: a passing truck
            for tilt in (15.0, 12.0, 15.0, 12.0, 15.0, 9.0, 15.0):  # one sample each
                set_tilt_local(unit, tilt)
                await driver.on_reading(await driver.poll(), pipe.sink)
            await pipe.outbox.drain()
            assert pipe.alarms("cover_open") == []
            set_tilt_local(unit, 75.0)  # off its seat: open and displaced
            await run_for(driver, pipe.sink, lambda: len(pipe.alarms("cover_displaced")) == 1)
            set_tilt_local(unit, 0.5)
            await run_for(driver, pipe.sink, lambda: len(pipe.alarms("cover_open")) == 2
                          and len(pipe.alarms("cover_displaced")) == 2)
            await mb.close()
            opened, displaced = pipe.alarms("cover_open"), pipe.alarms("cover_displaced")
            assert_one_lifecycle(opened)
            assert_one_lifecycle(displaced)
            assert opened[0]["prio"] == 0 and displaced[0]["prio"] == 0
            assert displaced[0]["alarm"]["threshold"] == 60.0
    finally:
        await sim.stop()


@pytest.mark.parametrize(("kind", "scenario", "event_prio"), [
    ("lamp_out", "lamp_failure", 1), ("power_loss", "power_loss", 0),
    ("overcurrent", "overcurrent", 1)])
async def test_lamp_alarm_lifecycles(tmp_path: Path, kind: str, scenario: str,
                                     event_prio: int) -> None:
    async with lamp_pipeline(tmp_path, alarms={"raise_after": 3, "clear_after": 3}) as (
            pipe, driver, mb):
        assert pipe.sink is not None
        # the scenario is chosen over Modbus, as `python -m hil scenario` does
        await mb.write_register("lamp-1", 1, SCENARIO_REGISTER, LAMP_SCENARIOS.index(scenario))
        await run_for(driver, pipe.sink, lambda: len(pipe.alarms(kind)) == 1)
        await mb.write_register("lamp-1", 1, SCENARIO_REGISTER, 0)
        await run_for(driver, pipe.sink, lambda: len(pipe.alarms(kind)) == 2)
        found = pipe.alarms(kind)
    assert_one_lifecycle(found)
    assert found[0]["prio"] == event_prio


def solar_noon_lon(now: dt.datetime) -> float:
    """Return the longitude where it is about solar noon at ``now`` (the sun is surely up)."""
    hours = now.hour + now.minute / 60
    return ((12 - hours) * 15 + 180) % 360 - 180


@pytest.mark.parametrize("daytime", [True, False])
async def test_day_burn_raises_only_while_the_sun_is_up(tmp_path: Path, daytime: bool) -> None:
    lon = solar_noon_lon(dt.datetime.now(dt.UTC))
    if not daytime:
        lon = (lon + 360) % 360 - 180  # the antimeridian: midnight
    # lit, as a lamp left on all day
    async with lamp_pipeline(tmp_path, asset={**LAMP_ASSET, "lat": 0.0, "lon": round(lon, 3)},
                             ) as (pipe, driver, _mb):
        driver.utc_offset_h = round(lon / 15)
        assert pipe.sink is not None
        await run_for(driver, pipe.sink, lambda: driver.stats.polls_ok >= 8)
        assert len(pipe.alarms("day_burn")) == (1 if daytime else 0)


async def test_mqtt_cover_water_and_battery_lifecycles(tmp_path: Path, plain_broker: Any) -> None:
    cover = {"name": "cover-9", "kind": "manhole_tilt", "transport": "mqtt",
             "model": "mqtt_json", "topic": "covers/9", "poll_interval_s": 5,
             "json_map": {"tilt_deg": "d.angle", "water_level_m": "d.level_cm",
                          "battery_v": "bat"},
             "asset": {**TILT_ASSET, "code": "3205080106000999"},
             "alarms": {"water_level_high": {"threshold": 0.5, "clear_below": 0.3,
                                             "raise_after": 2, "clear_after": 2},
                        "battery_low": {"threshold": 3.3, "clear_below": 3.5,
                                        "raise_after": 2, "clear_after": 2}}}
    async with mqtt_cover(tmp_path, plain_broker.port, cover) as (pipe, driver, pub):
        # the vendor reports centimetres under level_cm; map as is and check the value
        reports = [(3.6, 0.1), (3.2, 0.6), (3.35, 0.45), (3.2, 0.6), (3.2, 0.7),
                   (3.6, 0.2), (3.6, 0.2)]
        for battery_v, level_m in reports:
            doc = {"d": {"angle": 1.0, "level_cm": level_m}, "bat": battery_v}
            await pub.publish("covers/9", json.dumps(doc).encode())
        await pub.publish("covers/9", b'{"d": {}}')  # no tilt: counted, no reading
        await wait_until(lambda: len(pipe.alarms("water_level_high")) == 2
                         and len(pipe.alarms("battery_low")) == 2
                         and driver.stats.parse_errors >= 1, timeout_s=10,
                         what="both lifecycles and the bad report counted")
        water, battery = pipe.alarms("water_level_high"), pipe.alarms("battery_low")
    assert_one_lifecycle(water)
    assert_one_lifecycle(battery)
    assert water[0]["alarm"]["event_class"] == "0406"
    assert battery[0]["alarm"]["value"] == 3.2
    assert driver.stats.parse_errors == 1


async def test_a_silent_mqtt_cover_raises_comm_lost_and_clears_when_it_reports(
        tmp_path: Path, plain_broker: Any) -> None:
    cover = {"name": "cover-7", "kind": "manhole_tilt", "transport": "mqtt",
             "model": "mqtt_json", "topic": "covers/7", "poll_interval_s": 0.2,
             "asset": {**TILT_ASSET, "code": "3205080106000997"}}
    async with mqtt_cover(tmp_path, plain_broker.port, cover) as (pipe, driver, pub):
        await pub.publish("covers/7", b'{"tilt": 1.0}')
        # then silence: three report periods without a word
        await wait_until(lambda: len(pipe.alarms("comm_lost")) == 1, 10)
        await pub.publish("covers/7", b'{"tilt": 1.0}')
        await wait_until(lambda: len(pipe.alarms("comm_lost")) == 2, 10)
        comm_lost = pipe.alarms("comm_lost")
    assert_one_lifecycle(comm_lost)
    assert driver.stats.state.value == "online"
